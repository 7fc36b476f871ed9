"""Writes of the audit app: the access log, API tokens, and the second-factor devices behind a sign-in.

Other apps call ``record_access`` for every download or export of serials, inside their own transaction, so the
log row commits or rolls back with the work it describes.
"""

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from axes.helpers import get_client_ip_address
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from django_otp import verify_token
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.exceptions import Conflict, DomainError
from audit.models import AccessEvent, ApiToken, Incident

BACKUP_CODE_COUNT = 10
TOTP_DEVICE_NAME = "Authenticator app"
BACKUP_DEVICE_NAME = "Backup codes"
# last_used_at (and the token_used event) is written at most this often per token, not on every request.
TOKEN_USE_RESOLUTION = timedelta(minutes=1)

# ``details`` keys whose values never reach the log, whatever a caller passes: any key with one of these words in it
# (``pool_key``, ``api_token``) or exactly one of the names below (``product_code`` is fine, ``code`` is not).
_SECRET_WORDS = {"password", "passwd", "secret", "token", "tokens", "otp", "key", "keys", "credential", "credentials"}
_SECRET_NAMES = {"code", "codes", "backup_code", "backup_codes", "pin"}
_TOTP_SHAPE = re.compile(r"^\d{6}$")


# --- Access log ------------------------------------------------------------------------------------------------


def record_access(
    *,
    kind: str,
    user: AbstractBaseUser | None = None,
    request: HttpRequest | None = None,
    target: str = "",
    quantity: int | None = None,
    details: dict | None = None,
    username: str = "",
) -> AccessEvent:
    """Append one row to the access log.

    ``user`` defaults to the request's authenticated user unless ``username`` is given: that is for attempts that
    belong to whoever was typed in (a failed sign-in), not to whoever holds the session. IP address and user agent
    come from ``request`` (a Django or DRF request). Values under keys that name a secret (password, token, key,
    code…) are replaced, so a careless caller cannot log one.
    """
    if kind not in AccessEvent.Kind.values:
        raise DomainError(f"Unknown access event kind {kind!r}; use one of AccessEvent.Kind.", field="kind")
    if user is None and not username and request is not None:
        request_user = getattr(request, "user", None)
        if request_user is not None and request_user.is_authenticated:
            user = request_user
    ip, user_agent = None, ""
    if request is not None:
        ip = get_client_ip_address(request) or None
        user_agent = request.META.get("HTTP_USER_AGENT", "")[:255]
    return AccessEvent.objects.create(
        kind=kind,
        user=user,
        username=(user.get_username() if user is not None else username)[:150],
        ip=ip,
        user_agent=user_agent,
        target=target[:255],
        quantity=quantity,
        details=_without_secrets(details or {}),
    )


def _is_secret_name(key: str) -> bool:
    key = key.lower()
    return key in _SECRET_NAMES or not _SECRET_WORDS.isdisjoint(re.split(r"[^a-z0-9]+", key))


def _without_secrets(details: dict) -> dict:
    return {
        key: "[removed]"
        if _is_secret_name(str(key))
        else (_without_secrets(value) if isinstance(value, dict) else value)
        for key, value in details.items()
    }


# --- API tokens -------------------------------------------------------------------------------------------------


def create_api_token(
    *,
    user: AbstractBaseUser,
    name: str,
    expires_at: datetime | None = None,
    actor: AbstractBaseUser | None = None,
) -> tuple[ApiToken, str]:
    """Create a token for ``user`` and return it with its raw key. The raw key is not stored and cannot be recovered."""
    name = (name or "").strip()
    if not name:
        raise DomainError("Give the token a name that says what uses it, e.g. “line 1”.", field="name")
    if not user.is_active:
        raise DomainError(f"User {user.get_username()} is inactive; activate it before creating a token.", field="user")
    now = timezone.now()
    if expires_at is not None and expires_at <= now:
        raise DomainError("The expiry date is in the past; choose a future date or none.", field="expires_at")
    raw_key = secrets.token_urlsafe(32)
    duplicate = Conflict(
        f"User {user.get_username()} already has an active token named “{name}”. Revoke it first or choose another "
        "name.",
        field="name",
    )
    try:
        with transaction.atomic():
            if ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).exists():
                raise duplicate
            token = ApiToken.objects.create(
                user=user,
                name=name,
                key_prefix=raw_key[:8],
                key_hash=ApiToken.hash_key(raw_key),
                created_at=now,
                created_by=actor,
                expires_at=expires_at,
            )
            record_access(
                kind=AccessEvent.Kind.TOKEN_CREATED,
                user=actor or user,
                target=f"api token {token.pk}",
                details={"name": name, "prefix": token.key_prefix, "for_user": user.get_username()},
            )
    except IntegrityError as exc:  # a concurrent create with the same name slipped past the check
        raise duplicate from exc
    return token, raw_key


def revoke_api_token(*, token: ApiToken, actor: AbstractBaseUser) -> ApiToken:
    """Revoke a token for good; requests with its key are refused from now on."""
    with transaction.atomic():
        locked = ApiToken.objects.select_for_update().get(pk=token.pk)
        if locked.revoked_at is not None:
            raise Conflict(f"API token “{locked.name}” ({locked.key_prefix}…) was already revoked.")
        locked.revoked_at = timezone.now()
        locked.revoked_by = actor
        locked.save(update_fields=["revoked_at", "revoked_by"])
        record_access(
            kind=AccessEvent.Kind.TOKEN_REVOKED,
            user=actor,
            target=f"api token {locked.pk}",
            details={"name": locked.name, "prefix": locked.key_prefix, "for_user": locked.user.get_username()},
        )
    token.revoked_at, token.revoked_by = locked.revoked_at, locked.revoked_by
    return token


def mark_api_token_used(*, token: ApiToken, request: HttpRequest | None = None) -> bool:
    """Note that ``token`` was used, at most once per TOKEN_USE_RESOLUTION, so busy clients do not write per request.

    Returns True when this call wrote (and logged a token_used event).
    """
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < TOKEN_USE_RESOLUTION:
        return False
    with transaction.atomic():
        # A conditional UPDATE, so of several concurrent requests exactly one wins the minute.
        updated = (
            ApiToken.objects.filter(pk=token.pk)
            .exclude(last_used_at__gt=now - TOKEN_USE_RESOLUTION)
            .update(last_used_at=now)
        )
        if updated:
            record_access(
                kind=AccessEvent.Kind.TOKEN_USED,
                user=token.user,
                request=request,
                target=f"api token {token.pk}",
                details={"name": token.name, "prefix": token.key_prefix},
            )
    token.last_used_at = now if updated else token.last_used_at
    return bool(updated)


# --- Second factor ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecondFactorCheck:
    """The outcome of one code: the device that accepted it (or None), and when to retry if devices are throttled."""

    device: Device | None
    method: str  # "app" (6-digit TOTP code) or "backup" (one-time backup code)
    retry_at: datetime | None = None
    backup_codes: list[str] = field(default_factory=list)  # only after an enrolment: show once, never store

    @property
    def ok(self) -> bool:
        return self.device is not None


def start_totp_enrolment(*, user: AbstractBaseUser) -> TOTPDevice:
    """The unconfirmed authenticator device to show as a QR code; reused, so reloading the page keeps the same QR."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=False)
    return device


def confirm_totp_enrolment(*, user: AbstractBaseUser, device: TOTPDevice, token: str) -> SecondFactorCheck:
    """Confirm ``device`` with a code from the app and issue new one-time backup codes (in the result, shown once).

    The backup codes replace any earlier ones. A wrong code leaves the device unconfirmed.
    """
    if device.user_id != user.pk or device.confirmed:
        raise DomainError("This authenticator is not waiting for confirmation; start the enrolment again.")
    allowed, data = device.verify_is_allowed()
    if not allowed:
        return SecondFactorCheck(None, "app", retry_at=(data or {}).get("locked_until"))
    with transaction.atomic():
        if verify_token(user, device.persistent_id, _normalise_code(token)) is None:
            return SecondFactorCheck(None, "app")
        TOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
        device.confirmed = True
        # Abandoned enrolments leave unconfirmed devices behind; they are useless and hold secrets.
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        codes = _replace_backup_codes(user=user)
        record_access(
            kind=AccessEvent.Kind.MFA_ENROLLED, user=user, details={"device": device.name, "backups_issued": len(codes)}
        )
    return SecondFactorCheck(device, "app", backup_codes=codes)


def _replace_backup_codes(*, user: AbstractBaseUser) -> list[str]:
    static, _ = StaticDevice.objects.get_or_create(user=user, name=BACKUP_DEVICE_NAME, defaults={"confirmed": True})
    static.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(BACKUP_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=static, token=code) for code in codes)
    if not static.confirmed:
        static.confirmed = True
        static.save(update_fields=["confirmed"])
    return codes


def verify_second_factor(*, user: AbstractBaseUser, token: str) -> SecondFactorCheck:
    """Check a 6-digit app code or a one-time backup code against the confirmed devices of ``user``.

    A code is tried only against devices of its shape, so a mistyped app code does not also throttle the backup
    codes. Each device throttles itself after wrong codes (django-otp's exponential back-off); when every candidate
    device is throttled, the result says when to retry. A backup code is used up by a successful check.
    """
    token = _normalise_code(token)
    is_app_code = bool(_TOTP_SHAPE.match(token))
    method = "app" if is_app_code else "backup"
    device_model = TOTPDevice if is_app_code else StaticDevice
    devices = list(device_model.objects.devices_for_user(user, confirmed=True))
    throttled_until = []
    for device in devices:
        allowed, data = device.verify_is_allowed()
        if not allowed:
            throttled_until.append((data or {}).get("locked_until") or timezone.now())
            continue
        verified = verify_token(user, device.persistent_id, token)
        if verified is not None:
            return SecondFactorCheck(verified, method)
    if devices and len(throttled_until) == len(devices):
        return SecondFactorCheck(None, method, retry_at=min(throttled_until))
    return SecondFactorCheck(None, method)


def _normalise_code(token: str) -> str:
    return re.sub(r"[\s-]", "", token or "").lower()


# --- Incidents -------------------------------------------------------------------------------------------------


def raise_incident(
    *,
    kind: str,
    title: str,
    severity: str = "medium",
    details: dict | None = None,
    subject=None,
    actor: AbstractBaseUser | None = None,
) -> Incident:
    """Open an incident about ``subject`` (any model instance), unless an unresolved one of the same kind and
    title is already open for it — a scheduled check that finds the same problem every 15 minutes raises it once."""
    subject_type = subject._meta.label_lower if subject is not None else ""
    subject_id = str(subject.pk) if subject is not None else ""
    open_statuses = [Incident.Status.OPEN, Incident.Status.INVESTIGATING]
    existing = Incident.objects.filter(
        kind=kind, title=title, subject_type=subject_type, subject_id=subject_id, status__in=open_statuses
    ).first()
    if existing is not None:
        return existing
    incident = Incident(
        kind=kind,
        title=title,
        severity=severity,
        details=_without_secrets(details or {}),
        subject_type=subject_type,
        subject_id=subject_id,
        raised_by=actor,
    )
    incident._history_user = actor
    incident.save()
    return incident
