"""Reads of the audit app."""

from datetime import datetime, timedelta

from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Max, Prefetch, Q, QuerySet, Sum
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticToken

from audit.models import AccessEvent, ApiToken, ExportBlock, Incident, IncidentNote


def get_api_token_by_key(*, raw_key: str) -> ApiToken | None:
    """The token whose key is ``raw_key`` (revoked and expired ones included, so callers can say why it fails)."""
    return ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_key(raw_key)).first()


def list_access_events(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet[AccessEvent]:
    """The access log as ``user`` may read it (``audit.view_accessevent`` needed), scoped by ``scope_access_events``."""
    if not user.has_perm("audit.view_accessevent"):
        return AccessEvent.objects.none()
    events = scope_access_events(AccessEvent.objects.all(), user=user)
    filters = filters or {}
    if filters.get("kind"):
        events = events.filter(kind=filters["kind"])
    if filters.get("username"):
        events = events.filter(username=filters["username"])
    if filters.get("created_after"):
        events = events.filter(created_at__gte=filters["created_after"])
    if filters.get("created_before"):
        events = events.filter(created_at__lt=filters["created_before"])
    return events.order_by("-created_at", "-id")


def get_company_id(*, user: AbstractBaseUser) -> int | None:
    """The company ``user`` works for (masterdata's CompanyMembership), or None."""
    # Through the membership's reverse accessor: audit imports no domain app. A missing membership raises
    # RelatedObjectDoesNotExist, an AttributeError, so getattr's default covers it.
    membership = getattr(user, "membership", None)
    return membership.company_id if membership is not None else None


def _confining_company_id(user: AbstractBaseUser) -> int | None:
    """The masterdata scope rule for the audit app's rows about people: a company member — staff or not — sees only
    rows about users of their own company; superusers and the operator's own accounts (no company: stewards,
    auditors, a SIEM's API account) see every row. The company to confine ``user`` to, or None for every row."""
    return None if user.is_superuser else get_company_id(user=user)


def scope_access_events(events: QuerySet[AccessEvent], *, user: AbstractBaseUser) -> QuerySet[AccessEvent]:
    """Access-log rows ``user`` may see (``_confining_company_id``). Rows of no user — a failed sign-in of a name as
    typed — belong to the company of the user of that name."""
    company_id = _confining_company_id(user)
    if company_id is None:
        return events
    colleagues = get_user_model().objects.filter(membership__company_id=company_id).values("username")
    return events.filter(Q(user__membership__company_id=company_id) | Q(user__isnull=True, username__in=colleagues))


def scope_export_blocks(blocks: QuerySet[ExportBlock], *, user: AbstractBaseUser) -> QuerySet[ExportBlock]:
    """Export blocks ``user`` may see: those of accounts of their company, or all (``_confining_company_id``)."""
    company_id = _confining_company_id(user)
    return blocks if company_id is None else blocks.filter(user__membership__company_id=company_id)


def sum_counted_serials(*, user: AbstractBaseUser, since: datetime) -> int:
    """Serials handed to ``user`` since ``since`` that count towards the hourly export limit, in one SUM."""
    total = AccessEvent.objects.filter(user=user, created_at__gte=since).aggregate(total=Sum("counted_serials"))
    return total["total"] or 0


def get_active_export_block(*, user: AbstractBaseUser) -> ExportBlock | None:
    """The block that bars ``user`` from getting serials out now, or None."""
    return ExportBlock.objects.filter(user=user, lifted_at__isnull=True).first()


def get_last_block_lift(*, user: AbstractBaseUser) -> datetime | None:
    """When the most recent export block of ``user`` was lifted (a fresh hour of allowance starts then)."""
    return ExportBlock.objects.filter(user=user, lifted_at__isnull=False).aggregate(last=Max("lifted_at"))["last"]


def count_backup_codes(*, user: AbstractBaseUser) -> int:
    """How many unused one-time backup codes ``user`` has left."""
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def get_lockout_remaining(*, username: str) -> timedelta | None:
    """How long the sign-in lockout of ``username`` still lasts (django-axes), or None if it only ends by an admin."""
    cool_off = get_cool_off()
    if cool_off is None:
        return None
    latest = AccessAttempt.objects.filter(username=username).aggregate(latest=Max("attempt_time"))["latest"]
    if latest is None:
        return timedelta(0)
    return max(latest + cool_off - timezone.now(), timedelta(0))


def list_incidents(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet:
    """Incidents as ``user`` may read them (``audit.view_incident``: the steward, QA and auditor roles), newest first,
    with owner, notes and linked objects fetched in a fixed number of queries."""
    if not user.has_perm("audit.view_incident"):
        return Incident.objects.none()
    incidents = Incident.objects.select_related("owner", "raised_by").prefetch_related(
        "links", Prefetch("notes", queryset=IncidentNote.objects.select_related("author"))
    )
    filters = filters or {}
    for name in ("kind", "severity", "status"):
        if filters.get(name):
            incidents = incidents.filter(**{name: filters[name]})
    if filters.get("owner"):
        incidents = incidents.filter(owner__username=filters["owner"])
    if filters.get("created_after"):
        incidents = incidents.filter(created_at__gte=filters["created_after"])
    if filters.get("created_before"):
        incidents = incidents.filter(created_at__lt=filters["created_before"])
    return incidents.order_by("-created_at", "-id")
