"""Reads of the audit app."""

from datetime import timedelta

from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Max, QuerySet
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticToken

from audit.models import AccessEvent, ApiToken


def get_api_token_by_key(*, raw_key: str) -> ApiToken | None:
    """The token whose key is ``raw_key`` (revoked and expired ones included, so callers can say why it fails)."""
    return ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_key(raw_key)).first()


def list_access_events(*, user: AbstractBaseUser, filters: dict | None = None) -> QuerySet[AccessEvent]:
    """The access log as ``user`` may read it: all of it with ``audit.view_accessevent``, else nothing."""
    if not user.has_perm("audit.view_accessevent"):
        return AccessEvent.objects.none()
    events = AccessEvent.objects.all()
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
