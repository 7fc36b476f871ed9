"""Reads of the outbox, scoped like every other read (invariant 5): a company member sees the submissions of its own
company — the MAH the document reports for — and a CMO therefore sees none of its MAHs'; the operator's staff see
all. Out of scope answers like "does not exist" (404).

The dashboard's counts come from one aggregate query whatever the number of submissions.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from masterdata.selectors import apply_filters, get_visible, scope_to_company
from serialization.outbox_models import Endpoint, Submission

Status = Submission.Status
SUBMISSION_FILTERS = {"status": "status", "market": "market__code", "batch": "batch_id", "kind": "kind"}
RECENT_LIMIT = 25
# How often the dashboards (admin and portal) ask for a fresh panel.
DASHBOARD_POLL_SECONDS = 5


def scope_submissions(queryset: QuerySet[Submission], *, user) -> QuerySet[Submission]:
    """``queryset`` narrowed to the submissions ``user`` may see (for the admin, which brings its own queryset)."""
    return scope_to_company(queryset, user=user, company_field="company_id")


def list_submissions(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[Submission]:
    queryset = Submission.objects.select_related("market", "batch__product", "endpoint", "created_by")
    return apply_filters(scope_submissions(queryset, user=user), filters, SUBMISSION_FILTERS)


def get_submission(*, user, pk: Any) -> Submission:
    return get_visible(list_submissions(user=user), pk, "submission")


def late_before(now: datetime | None = None) -> datetime:
    """Open submissions created before this moment are late (OUTBOX_LATE_AFTER_MINUTES)."""
    return (now or timezone.now()) - timedelta(minutes=settings.OUTBOX_LATE_AFTER_MINUTES)


def _late(now: datetime | None = None) -> Q:
    return Q(status__in=Submission.OPEN_STATUSES, created_at__lt=late_before(now))


@dataclass(frozen=True)
class OutboxCounts:
    """How many submissions are in each state the dashboard shows. ``late`` is part of pending, sending and failed
    (still open past the threshold)."""

    pending: int
    sending: int
    failed: int
    dead: int
    rejected: int
    accepted: int
    late: int

    @property
    def total(self) -> int:
        return self.pending + self.sending + self.failed + self.dead + self.rejected + self.accepted

    @property
    def needs_attention(self) -> int:
        return self.late + self.failed + self.dead + self.rejected


def count_submissions(*, user, now: datetime | None = None) -> OutboxCounts:
    """The dashboard's counts for ``user``'s submissions, in one query."""
    counts = scope_submissions(Submission.objects.all(), user=user).aggregate(
        **{status: Count("pk", filter=Q(status=status)) for status in Status.values},
        late=Count("pk", filter=_late(now)),
    )
    return OutboxCounts(**counts)


def list_attention(*, user, now: datetime | None = None, limit: int = RECENT_LIMIT) -> QuerySet[Submission]:
    """Submissions someone should look at: late, failed (retrying), dead or rejected — most recent change first."""
    queryset = list_submissions(user=user).filter(
        _late(now) | Q(status__in=[Status.FAILED, Status.DEAD, Status.REJECTED])
    )
    return queryset.order_by("-updated_at", "-pk")[:limit]


def list_recent(*, user, limit: int = RECENT_LIMIT) -> QuerySet[Submission]:
    return list_submissions(user=user).order_by("-updated_at", "-pk")[:limit]


def get_outbox_dashboard(*, user) -> dict:
    """What both dashboards (admin and portal) show for ``user``: counts by state, what needs attention, the latest
    changes, and the late threshold. Four queries."""
    now = timezone.now()
    return {
        "counts": count_submissions(user=user, now=now),
        "attention": list(list_attention(user=user, now=now)),
        "recent": list(list_recent(user=user)),
        "late_before": late_before(now),
        "late_minutes": settings.OUTBOX_LATE_AFTER_MINUTES,
        "now": now,
        "poll_seconds": DASHBOARD_POLL_SECONDS,
    }


def list_endpoints(*, user) -> QuerySet[Endpoint]:
    """Endpoints are the operator's configuration, like markets: every signed-in user may read them."""
    if not user or not user.is_authenticated:
        return Endpoint.objects.none()
    return Endpoint.objects.select_related("market")
