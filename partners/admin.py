"""The steward's admin of partnerships and serial assignments.

Partnerships are created and changed through ``partners.services`` (so the CMO's group gets its object permissions
and the rules are the API's); revoking is an action that asks for the reason. Object permissions per partnership
are visible and editable through guardian's object-permission admin; history per object through SimpleHistoryAdmin.
Rows are scoped by the same selectors as the API. Assignments are made through the API (or the services) — here
they are read-only."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from guardian.admin import GuardedModelAdminMixin
from simple_history.admin import SimpleHistoryAdmin

from audit.exceptions import DomainError
from masterdata import selectors as masterdata_selectors
from masterdata.models import Company
from partners import selectors, services
from partners.models import Partnership, SerialAssignment


def _add_service_error(form: forms.Form, exc: Exception) -> None:
    """Show a service's DomainError or model ValidationError on the field it names (or above the form)."""
    if isinstance(exc, DomainError):
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
    elif isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            for message in errors:
                form.add_error(field if field in form.fields else None, message)
    else:
        form.add_error(None, exc)


class PartnershipForm(forms.ModelForm):
    status = forms.ChoiceField(
        choices=[(s.value, s.label) for s in services.EDITABLE_STATUSES],
        help_text="Revoking is final and needs a reason: use the “Revoke” action of the list.",
    )

    class Meta:
        model = Partnership
        fields = ["mah", "cmo", "status", "started_on", "products", "markets"]

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        if "mah" in self.fields:
            self.fields["mah"].queryset = masterdata_selectors.list_companies(user=user, filters={"is_mah": True})
        if "cmo" in self.fields:
            self.fields["cmo"].queryset = Company.objects.filter(is_cmo=True)
        if "products" in self.fields:  # a read-only page (revoked, or view permission only) has no fields
            self.fields["products"].queryset = masterdata_selectors.list_products(user=user).select_related("owner")
            self.fields["products"].required = False
        if "markets" in self.fields:
            self.fields["markets"].required = False

    def clean(self):
        cleaned = super().clean()
        mah = cleaned.get("mah") or (self.instance.mah if self.instance.mah_id else None)
        if mah is not None and cleaned.get("products") is not None:
            try:
                services.check_partnership_products(mah, cleaned["products"])
            except ValidationError as exc:
                _add_service_error(self, exc)
        return cleaned


class SerialAssignmentInline(admin.TabularInline):
    model = SerialAssignment
    fields = ["product", "quantity", "request_id", "allocation", "partner_pool", "created_by", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class RevokeForm(forms.Form):
    reason = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Kept with the partnership, e.g. “contract ended 2026-12-31”",
    )


@admin.register(Partnership)
class PartnershipAdmin(GuardedModelAdminMixin, SimpleHistoryAdmin):
    form = PartnershipForm
    list_display = ["__str__", "mah", "cmo", "status", "started_on", "product_count", "revoked_at"]
    list_filter = ["status", "mah", "cmo"]
    search_fields = ["mah__name", "cmo__name", "products__product_code", "products__name"]
    list_select_related = ["mah", "cmo"]
    filter_horizontal = ["products", "markets"]
    inlines = [SerialAssignmentInline]
    actions = ["revoke"]

    def get_queryset(self, request):
        return selectors.scope_partnerships(super().get_queryset(request), user=request.user)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)

        class ScopedForm(form_class):
            def __init__(self, *args, **kw):
                super().__init__(*args, user=request.user, **kw)

        return ScopedForm

    def get_readonly_fields(self, request, obj=None):
        readonly = ["created_by", "created_at", "revoked_at", "revoke_reason"]
        return [*readonly, "mah", "cmo"] if obj is not None else readonly

    def get_fieldsets(self, request, obj=None):
        main = ["mah", "cmo", "status", "started_on"]
        fieldsets = [(None, {"fields": main}), ("What the CMO may pack", {"fields": ["products", "markets"]})]
        if obj is not None:
            fieldsets.append(("Record", {"fields": ["created_by", "created_at", "revoked_at", "revoke_reason"]}))
        return fieldsets

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.status == Partnership.Status.REVOKED:
            return False  # revoked is final: the page shows it read-only
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # partnerships are revoked, never deleted

    @admin.display(description="products")
    def product_count(self, obj: Partnership) -> int:
        return obj.products.count()

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            updated = services.update_partnership(
                partnership=obj,
                actor=request.user,
                data={"status": data["status"], "started_on": data.get("started_on")},
                products=data.get("products"),
                markets=data.get("markets"),
            )
        else:
            updated = services.create_partnership(
                mah=data["mah"],
                cmo=data["cmo"],
                products=data.get("products") or [],
                markets=data.get("markets") or [],
                started_on=data.get("started_on"),
                status=data["status"],
                actor=request.user,
            )
        obj.pk = updated.pk
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        # Products and markets were set by the service (with its checks and history); inlines are read-only.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm("partners.change_partnership")

    @admin.action(description="Revoke the selected partnerships", permissions=["revoke"])
    def revoke(self, request, queryset):
        form = RevokeForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason, revoked = form.cleaned_data["reason"], 0
            for partnership in queryset.order_by("pk"):
                try:
                    services.revoke_partnership(partnership=partnership, actor=request.user, reason=reason)
                except (DomainError, ValidationError) as exc:
                    message = exc.message if isinstance(exc, DomainError) else "; ".join(exc.messages)
                    self.message_user(request, f"{partnership}: {message}", messages.WARNING)
                else:
                    revoked += 1
                    self.log_change(request, partnership, f"Revoked: {reason}")
            self.message_user(request, f"Revoked {revoked} partnership(s).", messages.SUCCESS)
            return HttpResponseRedirect(request.get_full_path())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Revoke partnerships",
            "form": form,
            "objects": queryset.order_by("pk"),
            "action": "revoke",
            "submit_label": "Revoke partnerships",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/partners/partnership/revoke.html", context)


@admin.register(SerialAssignment)
class SerialAssignmentAdmin(SimpleHistoryAdmin):
    list_display = [
        "id",
        "partnership",
        "product",
        "quantity",
        "request_id",
        "partner_pool",
        "created_by",
        "created_at",
    ]
    list_filter = ["created_at"]
    search_fields = ["request_id", "product__product_code", "partnership__cmo__name", "partnership__mah__name"]
    list_select_related = ["partnership__mah", "partnership__cmo", "product", "partner_pool", "created_by"]
    fields = [
        "partnership",
        "product",
        "quantity",
        "request_id",
        "allocation",
        "partner_pool",
        "created_by",
        "created_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return selectors.scope_assignments(super().get_queryset(request), user=request.user)

    def has_add_permission(self, request) -> bool:
        return False  # assignments are made through the API or the services, which allocate the serials

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
