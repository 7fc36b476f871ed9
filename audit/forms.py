from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.views.decorators.debug import sensitive_variables


class PasswordStepForm(AuthenticationForm):
    """Step 1 of the sign-in: username and password, checked through ``authenticate(request=…)`` so django-axes
    counts failures. ``locked_out`` tells the view that axes refused the attempt."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Wrong username or password. Both are case-sensitive.",
        "locked_out": "This account is locked after too many failed sign-in attempts.",
    }

    def __init__(self, request=None, *args, **kwargs):
        super().__init__(request, *args, **kwargs)
        self.locked_out = False
        self.fields["username"].widget.attrs["autocomplete"] = "username"

    @sensitive_variables()
    def clean(self):
        try:
            return super().clean()
        except ValidationError:
            if getattr(self.request, "axes_locked_out", False):
                self.locked_out = True
                raise ValidationError(self.error_messages["locked_out"], code="locked_out") from None
            raise


class _CodeInput(forms.TextInput):
    """A refused one-time code is never shown again: the field comes back empty for the next attempt."""

    def format_value(self, value):
        return None


class CodeForm(forms.Form):
    """Step 2: a 6-digit code from the authenticator app or, at sign-in, a one-time backup code."""

    code = forms.CharField(
        label="Code",
        max_length=32,
        widget=_CodeInput(
            attrs={"autocomplete": "one-time-code", "autofocus": True, "spellcheck": "false", "autocapitalize": "off"}
        ),
    )
