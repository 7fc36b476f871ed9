"""Writes of the audit app: the access log, API tokens, and the second-factor devices behind a sign-in.

Other apps call ``record_access`` for every download or export of serials, inside their own transaction, so the
log row commits or rolls back with the work it describes.
"""

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from axes.helpers import get_client_ip_address
from django.contrib.auth.models import AbstractBaseUser
from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from django_otp import verify_token
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit import chain
from audit.exceptions import Conflict, DomainError
from audit.models import AccessEvent, ApiToken, Incident, IncidentLink, IncidentNote

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
    counted_serials: int = 0,
    api_token: ApiToken | None = None,
) -> AccessEvent:
    """Append one row to the access log.

    ``user`` defaults to the request's authenticated user unless ``username`` is given: that is for attempts that
    belong to whoever was typed in (a failed sign-in), not to whoever holds the session. IP address, user agent, the
    door (admin, portal, API…) and the API key come from ``request`` (a Django or DRF request). Values under keys
    that name a secret (password, token, key, code…) are replaced, so a careless caller cannot log one.
    ``counted_serials`` is for ``audit.pilferage`` only, which records serial hand-outs under the account's lock.
    ``api_token`` names the key when the request does not carry it yet (while it is being authenticated).
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
        door=door_of(request),
        api_token=api_token or api_token_of(request),
        counted_serials=counted_serials,
    )


_DOORS = {
    "admin": AccessEvent.Door.ADMIN,
    "portal": AccessEvent.Door.PORTAL,
    "api": AccessEvent.Door.API,
    "accounts": AccessEvent.Door.SIGN_IN,
}


def door_of(request: HttpRequest | None) -> str:
    """The front door of ``request`` by the first segment of its path (see config/urls.py); SYSTEM without one."""
    if request is None:
        return AccessEvent.Door.SYSTEM
    first_segment = request.path_info.lstrip("/").split("/", 1)[0]
    return _DOORS.get(first_segment, AccessEvent.Door.WEB)


def api_token_of(request: HttpRequest | None) -> ApiToken | None:
    """The API token ``request`` was authenticated with, once DRF has authenticated it (else None)."""
    # DRF copies ``auth`` onto the Django request when authentication is done. Reading the DRF request's own
    # ``auth`` property instead would start authentication again when called from inside it (token_used events).
    django_request = getattr(request, "_request", request)
    auth = getattr(django_request, "auth", None)
    return auth if isinstance(auth, ApiToken) else None


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
    request: HttpRequest | None = None,
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
                request=request,
                target=f"api token {token.pk}",
                details={"name": name, "prefix": token.key_prefix, "for_user": user.get_username()},
            )
    except IntegrityError as exc:  # a concurrent create with the same name slipped past the check
        raise duplicate from exc
    return token, raw_key


def revoke_api_token(*, token: ApiToken, actor: AbstractBaseUser, request: HttpRequest | None = None) -> ApiToken:
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
            request=request,
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
                api_token=token,
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


def confirm_totp_enrolment(
    *, user: AbstractBaseUser, device: TOTPDevice, token: str, request: HttpRequest | None = None
) -> SecondFactorCheck:
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
            kind=AccessEvent.Kind.MFA_ENROLLED,
            user=user,
            request=request,
            details={"device": device.name, "backups_issued": len(codes)},
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
    links: Iterable = (),
    owner: AbstractBaseUser | None = None,
    note: str = "",
) -> Incident:
    """Open an incident about ``subject`` (any model instance), unless an unresolved one of the same kind and
    title is already open for it — a scheduled check that finds the same problem every 15 minutes raises it once.

    ``links`` names more objects it is about (model instances or ``(label, id)`` pairs; the subject is linked too);
    when the incident is already open, new ones are added to it. ``owner`` and a first ``note`` are optional.
    """
    subject_type = subject._meta.label_lower if subject is not None else ""
    subject_id = str(subject.pk) if subject is not None else ""
    wanted_links = _link_keys([subject] if subject is not None else []) + _link_keys(links)
    open_statuses = [Incident.Status.OPEN, Incident.Status.INVESTIGATING]
    with transaction.atomic():
        existing = Incident.objects.filter(
            kind=kind, title=title, subject_type=subject_type, subject_id=subject_id, status__in=open_statuses
        ).first()
        if existing is not None:
            _add_links(existing, wanted_links)
            return existing
        incident = Incident(
            kind=kind,
            title=title[: Incident._meta.get_field("title").max_length],
            severity=severity,
            details=_without_secrets(details or {}),
            subject_type=subject_type,
            subject_id=subject_id,
            raised_by=actor,
            owner=owner,
        )
        incident._history_user = actor
        incident.save()
        _add_links(incident, wanted_links)
        if note.strip():
            IncidentNote.objects.create(incident=incident, author=actor, text=note.strip())
    return incident


def _link_keys(objects: Iterable) -> list[tuple[str, str]]:
    """``(label, id)`` pairs for model instances or pairs, in order, without repeats."""
    keys = []
    for obj in objects:
        if isinstance(obj, (tuple, list)):
            label, object_id = obj
        else:
            label, object_id = obj._meta.label_lower, obj.pk
        key = (str(label).lower(), str(object_id))
        if not key[0] or not key[1] or key[1] == "None":
            raise DomainError(f"A linked object needs a model label and an id; got {obj!r}.", field="links")
        if key not in keys:
            keys.append(key)
    return keys


def _add_links(incident: Incident, keys: list[tuple[str, str]]) -> None:
    IncidentLink.objects.bulk_create(
        [IncidentLink(incident=incident, object_type=label, object_id=object_id) for label, object_id in keys],
        ignore_conflicts=True,  # a link already there stays as it is
    )


# Statuses only move forward along this path (a step may be skipped, e.g. a false alarm closed at once).
INCIDENT_FLOW = [
    Incident.Status.OPEN,
    Incident.Status.INVESTIGATING,
    Incident.Status.RESOLVED,
    Incident.Status.CLOSED,
]
_NOTE_REQUIRED_FOR = {Incident.Status.RESOLVED, Incident.Status.CLOSED}


def next_incident_statuses(status: str) -> list[str]:
    """The statuses an incident in ``status`` may move to."""
    return [str(s) for s in INCIDENT_FLOW[INCIDENT_FLOW.index(status) + 1 :]]


def _lock_open_incident(incident: Incident) -> Incident:
    locked = Incident.objects.select_for_update().get(pk=incident.pk)
    if locked.status == Incident.Status.CLOSED:
        raise Conflict(
            f"Incident {locked.pk} is closed and can no longer change. Raise a new incident and link this one if "
            "there is more to do.",
            field="status",
        )
    return locked


def _copy_back(incident: Incident, locked: Incident) -> Incident:
    for f in Incident._meta.concrete_fields:
        setattr(incident, f.attname, getattr(locked, f.attname))
    return incident


def check_incident_transition(*, incident: Incident, status: str, note: str = "") -> None:
    """Raise the error ``transition_incident`` would raise for this move (forms check before they save)."""
    if status not in Incident.Status.values:
        raise DomainError(
            f"Unknown incident status {status!r}; use one of {', '.join(Incident.Status.values)}.", field="status"
        )
    if incident.status == Incident.Status.CLOSED:
        raise Conflict(
            f"Incident {incident.pk} is closed and can no longer change. Raise a new incident and link this one if "
            "there is more to do.",
            field="status",
        )
    current, wanted = INCIDENT_FLOW.index(incident.status), INCIDENT_FLOW.index(status)
    if wanted == current:
        raise Conflict(f"Incident {incident.pk} is already {incident.get_status_display().lower()}.", field="status")
    if wanted < current:
        raise Conflict(
            f"Incident {incident.pk} is {incident.get_status_display().lower()}; statuses only move forward "
            f"(open → investigating → resolved → closed), so it cannot go back to {status}. Raise a new incident "
            "if the problem came back.",
            field="status",
        )
    if status in _NOTE_REQUIRED_FOR and not (note or "").strip():
        raise DomainError(
            f"Add a note saying what was found and done before the incident is {status}: regulators read it.",
            field="note",
        )


def transition_incident(*, incident: Incident, status: str, actor: AbstractBaseUser, note: str = "") -> Incident:
    """Move ``incident`` forward: open → investigating → resolved → closed, never back (a step may be skipped).
    Resolving and closing need a ``note`` (what was found and done); any note is kept with the incident, the move
    in its history."""
    note = (note or "").strip()
    with transaction.atomic():
        locked = Incident.objects.select_for_update().get(pk=incident.pk)
        check_incident_transition(incident=locked, status=status, note=note)
        previous, now = locked.status, timezone.now()
        locked.status = status
        if INCIDENT_FLOW.index(status) >= INCIDENT_FLOW.index(Incident.Status.RESOLVED) and locked.resolved_at is None:
            locked.resolved_at = now
        if status == Incident.Status.CLOSED:
            locked.closed_at = now
        locked._history_user = actor
        locked._change_reason = f"{previous} → {status}"
        locked.save(update_fields=["status", "resolved_at", "closed_at"])
        if note:
            IncidentNote.objects.create(incident=locked, author=actor, text=note)
    return _copy_back(incident, locked)


def assign_incident(*, incident: Incident, owner: AbstractBaseUser | None, actor: AbstractBaseUser) -> Incident:
    """Make ``owner`` responsible for ``incident`` (None: nobody). Recorded in the incident's history."""
    if owner is not None and not owner.is_active:
        raise DomainError(f"User {owner.get_username()} is inactive; choose an active owner.", field="owner")
    with transaction.atomic():
        locked = _lock_open_incident(incident)
        if locked.owner_id != (owner.pk if owner is not None else None):
            locked.owner = owner
            locked._history_user = actor
            locked._change_reason = f"owner: {owner.get_username() if owner is not None else 'nobody'}"
            locked.save(update_fields=["owner"])
    return _copy_back(incident, locked)


def set_incident_severity(*, incident: Incident, severity: str, actor: AbstractBaseUser) -> Incident:
    """Re-grade ``incident``. Recorded in its history."""
    if severity not in Incident.Severity.values:
        raise DomainError(
            f"Unknown severity {severity!r}; use one of {', '.join(Incident.Severity.values)}.", field="severity"
        )
    with transaction.atomic():
        locked = _lock_open_incident(incident)
        if locked.severity != severity:
            locked._change_reason = f"severity: {locked.severity} → {severity}"
            locked.severity = severity
            locked._history_user = actor
            locked.save(update_fields=["severity"])
    return _copy_back(incident, locked)


def add_incident_note(*, incident: Incident, text: str, actor: AbstractBaseUser) -> IncidentNote:
    """Add a note (who, when, what) to ``incident``; notes are never edited afterwards."""
    text = (text or "").strip()
    if not text:
        raise DomainError("The note is empty; write what was found or done.", field="note")
    with transaction.atomic():
        locked = _lock_open_incident(incident)
        return IncidentNote.objects.create(incident=locked, author=actor, text=text)


def link_incident_objects(*, incident: Incident, objects: Iterable, actor: AbstractBaseUser) -> int:
    """Link more objects (instances or ``(label, id)`` pairs) to ``incident``; returns how many were new."""
    keys = _link_keys(objects)
    with transaction.atomic():
        locked = _lock_open_incident(incident)
        before = locked.links.count()
        _add_links(locked, keys)
        return locked.links.count() - before


# --- Audit chain ------------------------------------------------------------------------------------------------


def audit_chain_head(*, using: str = DEFAULT_DB_ALIAS) -> dict:
    """The end of the tamper-evident audit chain, after sealing what is pending: ``{"sequence": n, "hash": "…"}``.

    A backup records it, a restore is compared with it: equal heads mean the same history, link for link.
    """
    chain.seal_chain(using=using)
    return chain.chain_head(using=using)


def verify_audit_chain(*, using: str = DEFAULT_DB_ALIAS, actor: AbstractBaseUser | None = None):
    """Verify the whole audit chain (``audit.chain.verify_chain``); a break raises a critical audit-chain incident
    naming each place (table, row id, sequence). Returns ``(report, incident or None)``."""
    report = chain.verify_chain(using=using)
    if report.ok:
        return report, None
    # The title names the first break only, so a scheduled run that finds the same break again adds to the open
    # incident instead of opening another one.
    incident = raise_incident(
        kind=Incident.Kind.AUDIT_CHAIN,
        title=f"Audit chain broken: {report.problems[0].message}"[:255],
        severity=Incident.Severity.CRITICAL,
        details={
            "problem_count": report.problem_count,
            "links_checked": report.links_checked,
            "head": {"sequence": report.head_sequence, "hash": report.head_hash},
            "problems": [problem.as_dict() for problem in report.problems[:100]],
        },
        links=[(p.table, p.row_id) for p in report.problems[:50] if p.row_id is not None],
        actor=actor,
    )
    return report, incident
