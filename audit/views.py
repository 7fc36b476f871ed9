"""Sign-in with password and second factor, enrolment of an authenticator app, sign-out.

One flow for every door (admin now, partner portal later):

1. ``login``: username and password. Success does NOT sign the user in: the session only holds a pending sign-in
   (user id, a hash of the password, where to go next, when it started) under a private key for a few minutes.
2. ``verify`` (user has a confirmed device): a 6-digit app code or a one-time backup code; or
   ``enrol`` (no device yet): scan a QR code, confirm with a code, note the backup codes shown once.
   Only then ``auth.login`` + ``django_otp.login`` make the session a verified one.

Wrong passwords and wrong codes both count towards django-axes' lockout (AXES_FAILURE_LIMIT per username).
"""

import base64
import math
import time
from dataclasses import dataclass

import qrcode
import qrcode.image.svg
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_credentials, get_failure_limit
from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django_otp import login as otp_login
from django_otp import user_has_device
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit import selectors, services
from audit.forms import CodeForm, PasswordStepForm
from audit.models import AccessEvent

PENDING_SESSION_KEY = "_audit_pending_sign_in"
PENDING_MAX_AGE_SECONDS = 10 * 60  # long enough to install an app and scan a QR code, short enough to be stale soon
BACKUP_WARNING_THRESHOLD = 3


@dataclass(frozen=True)
class PendingSignIn:
    user: AbstractBaseUser
    backend: str
    next_url: str


# --- Step 1: password -------------------------------------------------------------------------------------------


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
def login_view(request: HttpRequest) -> HttpResponse:
    next_url = _safe_next_url(request, request.POST.get("next") or request.GET.get("next"))
    form = PasswordStepForm(request, data=request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if form.is_valid():
            user = form.get_user()
            if request.user.is_authenticated:
                auth.logout(request)  # a fresh start: never mix a pending sign-in with someone else's session
            _start_pending(request, user, next_url)
            if user_has_device(user, confirmed=True):
                return redirect("accounts:verify")
            return redirect("accounts:enrol")
        username = (form.cleaned_data.get("username") or request.POST.get("username", ""))[:150]
        if form.locked_out:
            return _locked_out_response(request, username)
        if form.non_field_errors():  # the password was checked (not just a field left empty)
            services.record_access(
                kind=AccessEvent.Kind.LOGIN_FAILED,
                username=username,
                request=request,
                details={"reason": "wrong username or password"},
            )
    signed_in_as = request.user if request.user.is_authenticated and request.user.is_verified() else None
    return render(request, "accounts/login.html", {"form": form, "next": next_url, "signed_in_as": signed_in_as})


# --- Step 2: code from the app or a backup code ---------------------------------------------------------------


@csrf_protect
@never_cache
def verify_view(request: HttpRequest) -> HttpResponse:
    pending = _get_pending(request)
    if pending is None:
        return _restart(request)
    user = pending.user
    if not user_has_device(user, confirmed=True):
        return redirect("accounts:enrol")
    if AxesProxyHandler.is_locked(request, get_credentials(user.get_username())):
        return _locked_out_response(request, user.get_username())
    form = CodeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        check = services.verify_second_factor(user=user, token=form.cleaned_data["code"])
        if check.ok:
            details = {"method": check.method}
            if check.method == "backup":
                details["backups_left"] = selectors.count_backup_codes(user=user)
            services.record_access(kind=AccessEvent.Kind.OTP_VERIFIED, user=user, request=request, details=details)
            _complete_sign_in(request, pending, check.device, check.method)
            if details.get("backups_left", BACKUP_WARNING_THRESHOLD + 1) <= BACKUP_WARNING_THRESHOLD:
                messages.warning(
                    request,
                    f"You have {details['backups_left']} backup codes left. Ask an administrator for new ones.",
                )
            return redirect(pending.next_url)
        response = _code_refused(request, form, user, check, stage="sign-in")
        if response is not None:
            return response
    return render(request, "accounts/verify.html", {"form": form, "pending_user": user})


# --- Step 2 for a user without a device: enrol an authenticator app ---------------------------------------------


@csrf_protect
@never_cache
def enrol_view(request: HttpRequest) -> HttpResponse:
    pending = _get_pending(request)
    if pending is None:
        return _restart(request)
    user = pending.user
    if user_has_device(user, confirmed=True):
        # A password alone must never add a device to an account that already has one.
        return redirect("accounts:verify")
    device = services.start_totp_enrolment(user=user)
    form = CodeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        check = services.confirm_totp_enrolment(
            user=user, device=device, token=form.cleaned_data["code"], request=request
        )
        if check.ok:
            _complete_sign_in(request, pending, check.device, "enrolment")
            return render(
                request,
                "accounts/backup_codes.html",
                {"codes": check.backup_codes, "next": pending.next_url},
            )
        _code_refused(request, form, user, check, stage="enrolment")
    return render(
        request,
        "accounts/enrol.html",
        {
            "form": form,
            "pending_user": user,
            "qr_svg": _qr_svg(device.config_url),
            "secret": _grouped_secret(device),
            "issuer": settings.OTP_TOTP_ISSUER,
        },
    )


# --- Sign-out ---------------------------------------------------------------------------------------------------


@csrf_protect
@never_cache
def logout_view(request: HttpRequest) -> HttpResponse:
    """Sign out (POST; GET shows a confirmation). The admin's "Log out" comes here too (BackofficeAdminSite.logout)."""
    if request.method != "POST":
        return render(request, "accounts/logout.html")
    if request.user.is_authenticated:
        services.record_access(kind=AccessEvent.Kind.LOGOUT, user=request.user, request=request)
    auth.logout(request)
    messages.info(request, "You have been signed out.")
    return redirect(settings.LOGOUT_REDIRECT_URL)


# --- Helpers ----------------------------------------------------------------------------------------------------


def _safe_next_url(request: HttpRequest, candidate: str | None) -> str:
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def _start_pending(request: HttpRequest, user, next_url: str) -> None:
    request.session.cycle_key()  # a new session id for the new privilege level (no fixation)
    request.session[PENDING_SESSION_KEY] = {
        "user_id": user.pk,
        "backend": user.backend,
        "auth_hash": user.get_session_auth_hash(),
        "next": next_url,
        "started": int(time.time()),
    }


def _get_pending(request: HttpRequest) -> PendingSignIn | None:
    data = request.session.get(PENDING_SESSION_KEY)
    if not isinstance(data, dict):
        return None
    if time.time() - data.get("started", 0) > PENDING_MAX_AGE_SECONDS:
        request.session.pop(PENDING_SESSION_KEY, None)
        return None
    user = get_user_model()._default_manager.filter(pk=data.get("user_id"), is_active=True).first()
    # A password changed since step 1 (or a deactivated account) ends the pending sign-in.
    if user is None or not constant_time_compare(user.get_session_auth_hash(), data.get("auth_hash", "")):
        request.session.pop(PENDING_SESSION_KEY, None)
        return None
    return PendingSignIn(user=user, backend=data["backend"], next_url=data["next"])


def _restart(request: HttpRequest) -> HttpResponse:
    messages.error(request, "Your sign-in has expired or was not started. Enter your username and password again.")
    return redirect("accounts:login")


def _complete_sign_in(request: HttpRequest, pending: PendingSignIn, device, method: str) -> None:
    request.session.pop(PENDING_SESSION_KEY, None)
    auth.login(request, pending.user, backend=pending.backend)  # new session id; axes resets the failure count
    otp_login(request, device)
    services.record_access(
        kind=AccessEvent.Kind.LOGIN, user=pending.user, request=request, details={"second_factor": method}
    )


def _code_refused(request: HttpRequest, form: CodeForm, user, check, *, stage: str) -> HttpResponse | None:
    """Record a refused code, count it towards the lockout, and explain it on the form (or return the lockout page)."""
    details = {"stage": stage, "method": check.method, "reason": "throttled" if check.retry_at else "wrong code"}
    services.record_access(kind=AccessEvent.Kind.OTP_FAILED, user=user, request=request, details=details)
    if check.retry_at:
        seconds = max(1, int((check.retry_at - timezone.now()).total_seconds()) + 1)
        wait = f"{seconds} second{'' if seconds == 1 else 's'}"
        form.add_error("code", f"Too many wrong codes. Wait {wait}, then try again with a new code.")
        return None
    if stage == "sign-in":
        # django-axes keeps the POST body of failed attempts and masks only password and username: mask the code.
        masked_post = request.POST.copy()
        masked_post["code"] = "********"
        request.POST = masked_post
        user_login_failed.send(sender=__name__, credentials=get_credentials(user.get_username()), request=request)
        if getattr(request, "axes_locked_out", False):
            return _locked_out_response(request, user.get_username())
        form.add_error(
            "code", "That code is not right. Enter the current 6-digit code from your app, or one of your backup codes."
        )
    else:
        form.add_error(
            "code", "That code is not right. Check the phone's clock is set automatically and enter the current code."
        )
    return None


def _locked_out_response(request: HttpRequest, username: str) -> HttpResponse:
    request.session.pop(PENDING_SESSION_KEY, None)
    remaining = selectors.get_lockout_remaining(username=username)
    services.record_access(
        kind=AccessEvent.Kind.LOCKED_OUT,
        username=username,
        request=request,
        details={"failures": getattr(request, "axes_failures_since_start", None)},
    )
    response = render(
        request,
        "accounts/locked_out.html",
        {
            "username": username,
            "failure_limit": get_failure_limit(request, get_credentials(username)),
            "remaining_minutes": None if remaining is None else max(1, math.ceil(remaining.total_seconds() / 60)),
        },
        status=429,
    )
    # This page replaces django-axes' plain-text lockout response; tell AxesMiddleware not to swap it.
    request.axes_locked_out = False
    return response


def _qr_svg(data: str) -> str:
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    return mark_safe(image.to_string(encoding="unicode"))  # noqa: S308 - generated here from our own data


def _grouped_secret(device: TOTPDevice) -> str:
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
