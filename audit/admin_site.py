"""The one admin site: django-otp's OTPAdminSite, so only users who passed a second factor get in."""

from django.contrib.auth import REDIRECT_FIELD_NAME
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode
from django_otp.admin import OTPAdminSite


class BackofficeAdminSite(OTPAdminSite):
    site_header = "Serialization back-office"
    site_title = "Serialization back-office"
    index_title = "Administration"

    def login(self, request, extra_context=None):
        # One login flow for every door: password, then TOTP (or enrolment for a user without a device).
        next_url = request.GET.get(REDIRECT_FIELD_NAME) or reverse("admin:index", current_app=self.name)
        return redirect(f"{reverse('accounts:login')}?{urlencode({REDIRECT_FIELD_NAME: next_url})}")

    def register(self, model_or_iterable, admin_class=None, **options):
        # Every admin's delete checks retention and legal holds first, whoever wrote the admin (audit.retention).
        from django.contrib.admin import ModelAdmin

        from audit.retention import guarded_admin_class

        super().register(model_or_iterable, guarded_admin_class(admin_class or ModelAdmin), **options)

    def logout(self, request, extra_context=None):
        # The same sign-out as everywhere else, so it is recorded in the access log.
        from audit.views import logout_view

        return logout_view(request)
