"""The outbox: a market report becomes a Submission only once it passed every check, and django-q2 sends it.

- ``create_submission`` builds and validates the market's document for a batch (or a US shipment), stores the file
  with its SHA-256, records the export in the access log, and queues the first attempt after the commit.
- ``send_submission`` makes one attempt (claimed under a row lock, so a task delivered twice sends once; the HTTP
  call itself runs outside any transaction). Accepted ends it; rejected ends it and raises an incident; a failure is
  tried again after ``OUTBOX_RETRY_BASE_SECONDS × 2^(attempts − 1)`` (capped at ``OUTBOX_RETRY_MAX_SECONDS``) through a
  one-off django-q2 schedule, until ``OUTBOX_MAX_ATTEMPTS``: then it is dead and an incident is raised.
- ``send_due_submissions`` (every 5 minutes) sends whatever is due but was not picked up — a schedule lost with a
  queue — and gives back attempts a stopped worker left in "sending".
- ``resubmit_submission`` lets a steward send a rejected, dead or failed submission again (with a reason), as it is
  or rebuilt from the current master data.

Every change of a submission is saved with a change reason in its history.
"""

import logging
import re
import tempfile
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task, schedule

from audit import services as audit_services
from audit.exceptions import Conflict, DomainError, PermissionDenied
from masterdata.models import Market
from masterdata.selectors import get_user_company_id
from serialization import transports
from serialization.models import Batch, LineReport
from serialization.outbox_models import Endpoint, Submission
from serialization.reports import BuiltReport, Problem, ReportRefused, build_report, check_report, report_module
from serialization.services.batches import REASON_MAX, clean_reason

logger = logging.getLogger(__name__)

Status = Submission.Status
# An attempt still "sending" this long after its endpoint's timeout was abandoned by its worker.
ABANDONED_AFTER = timedelta(minutes=10)
DUE_BATCH = 500
HISTORY = "the submission's history"


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failed attempt: exponential, capped."""
    seconds = settings.OUTBOX_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, settings.OUTBOX_RETRY_MAX_SECONDS))


def _save(submission: Submission, *, reason: str, actor=None, fields: list[str] | None = None) -> None:
    submission._change_reason = reason[:REASON_MAX]
    submission._history_user = actor
    if fields is None:
        submission.save()
    else:
        submission.save(update_fields=[*fields, "updated_at"])


# --- building ----------------------------------------------------------------------------------------------------


def active_endpoint(market: Market) -> Endpoint | None:
    return Endpoint.objects.filter(market=market, is_active=True).first()


def _refuse_foreign_batch(batch: Batch, actor) -> None:
    company_id = get_user_company_id(user=actor) if actor is not None else None
    if company_id is not None and company_id != batch.product.owner_id:
        raise PermissionDenied(
            f"Batch {batch.lot} is reported by {batch.product.owner}, the product's MAH; your company cannot submit it."
        )


def _refuse_duplicate(batch: Batch, market: Market, shipping_report: LineReport | None) -> None:
    same = Submission.objects.filter(
        batch=batch,
        market=market,
        shipping_report=shipping_report,
        status__in=[*Submission.OPEN_STATUSES, Status.ACCEPTED],
    ).first()
    if same is not None:
        raise Conflict(
            f"Batch {batch.lot} already has submission {same.pk} to {market.code} ({same.get_status_display().lower()})"
            "; follow it in the outbox, or resubmit it from the admin if it must go again.",
            details={"submission": same.pk, "status": same.status},
        )


def _storage_name(built: BuiltReport, market: Market, batch: Batch) -> str:
    lot = re.sub(r"[^A-Za-z0-9_-]+", "_", batch.lot)[:20]
    return f"submissions/{market.code}-{built.kind}-{lot}-{built.sha256[:12]}.{built.extension}"


def _build_and_store(*, market: Market, batch: Batch, shipping_report: LineReport | None) -> tuple[BuiltReport, str]:
    # A named file, so a large EPCIS document is validated as a stream from disk.
    with tempfile.NamedTemporaryFile(prefix="submission-") as scratch:
        built = build_report(market=market, batch=batch, shipping_report=shipping_report, out=scratch)
        name = default_storage.save(_storage_name(built, market, batch), File(scratch))
    return built, name


def create_submission(
    *, market: Market, batch: Batch, actor, shipping_report: LineReport | None = None, request=None
) -> Submission:
    """Build ``market``'s report for ``batch`` (or the shipment ``shipping_report``), validate it, store it and queue
    it. ReportRefused (400) lists every problem — the endpoint's included — and nothing is stored; Conflict (409)
    when the batch already has an open or accepted submission to the market."""
    _refuse_foreign_batch(batch, actor)
    endpoint = active_endpoint(market)
    if endpoint is None:
        problems = [
            Problem(
                "endpoint",
                f"market {market.code} has no active endpoint — add one in the admin (Serialization → Endpoints).",
            ),
            *check_report(market=market, batch=batch, shipping_report=shipping_report),
        ]
        raise ReportRefused(problems, what=f"report of batch {batch.lot} for {market.code}")
    module = report_module(market)
    if not getattr(module, "NEEDS_SHIPMENT", False):
        shipping_report = None  # only a shipment's report is scoped by one
    _refuse_duplicate(batch, market, shipping_report)
    # The document is written before the transaction: a long write must not hold the database.
    built, name = _build_and_store(market=market, batch=batch, shipping_report=shipping_report)
    try:
        with transaction.atomic():
            submission = Submission(
                market=market,
                company_id=batch.product.owner_id,
                batch=batch,
                shipping_report=shipping_report,
                endpoint=endpoint,
                kind=built.kind,
                file=name,
                content_type=built.content_type,
                sha256=built.sha256,
                size=built.size,
                items=built.items,
                status=Status.PENDING,
                next_attempt_at=timezone.now(),
                created_by=actor,
            )
            try:
                with transaction.atomic():
                    _save(submission, reason="built and validated; queued", actor=actor)
            except IntegrityError as exc:  # the same batch submitted concurrently: the constraint caught it
                raise Conflict(
                    f"Batch {batch.lot} was just submitted to {market.code} by another request; follow that one."
                ) from exc
            audit_services.record_access(
                kind="export",
                user=actor,
                request=request,
                target=f"submission {submission.pk}",
                quantity=built.items,
                details={
                    "market": market.code,
                    "kind": built.kind,
                    "batch": batch.pk,
                    "sha256": built.sha256,
                    "endpoint": endpoint.name,
                },
            )
            transaction.on_commit(lambda: _queue(submission.pk))
    except BaseException:
        default_storage.delete(name)
        raise
    return submission


def _queue(submission_id: int) -> None:
    async_task("serialization.tasks.send_submission", submission_id, task_name=f"submission {submission_id}")


# --- sending -----------------------------------------------------------------------------------------------------


def _claim(submission_id: int, now: datetime) -> Submission | None:
    """Mark the submission as sending and count the attempt, or None when it is not due (delivered twice, early,
    or already finished)."""
    with transaction.atomic():
        submission = Submission.objects.select_for_update().select_related("endpoint").get(pk=submission_id)
        if submission.status not in (Status.PENDING, Status.FAILED):
            return None
        if submission.next_attempt_at is not None and submission.next_attempt_at > now:
            return None
        submission.status = Status.SENDING
        submission.attempts += 1
        submission.last_attempt_at = now
        submission.next_attempt_at = None
        _save(
            submission,
            reason=f"attempt {submission.attempts} to {submission.endpoint.name}",
            fields=["status", "attempts", "last_attempt_at", "next_attempt_at"],
        )
    return submission


def _document(submission: Submission, handle) -> transports.Document:
    return transports.Document(
        file=handle,
        filename=submission.file.name.rsplit("/", 1)[-1],
        content_type=submission.content_type,
        size=submission.size,
        sha256=submission.sha256,
        idempotency_key=f"submission-{submission.pk}-{submission.sha256[:16]}",
    )


def _attempt(submission: Submission) -> transports.Delivery:
    try:
        handle = default_storage.open(submission.file.name, "rb")
    except OSError as exc:
        return transports.Delivery(transports.FAILED, error=f"The stored document cannot be read: {exc.strerror}.")
    with handle:
        try:
            return transports.deliver(endpoint=submission.endpoint, document=_document(submission, handle))
        except Exception:  # a transport bug must not leave the submission "sending" for good
            logger.exception("submission %s: delivery failed unexpectedly", submission.pk)
            return transports.Delivery(
                transports.FAILED, error="The delivery failed unexpectedly; the worker log has the details."
            )


def send_submission(*, submission_id: int) -> Submission:
    """One attempt for ``submission_id`` if it is due; returns the submission as it is afterwards."""
    now = timezone.now()
    claimed = _claim(submission_id, now)
    if claimed is None:
        return Submission.objects.get(pk=submission_id)
    delivery = _attempt(claimed)
    return _record(submission_id, delivery)


def _record(submission_id: int, delivery: transports.Delivery) -> Submission:
    now = timezone.now()
    with transaction.atomic():
        submission = (
            Submission.objects.select_for_update().select_related("market", "batch", "endpoint").get(pk=submission_id)
        )
        submission.response_status = delivery.status_code
        submission.response_body = delivery.body
        submission.last_error = delivery.error
        attempt = f"attempt {submission.attempts}"
        if delivery.outcome == transports.ACCEPTED:
            submission.status, submission.finished_at = Status.ACCEPTED, now
            reason = f"{attempt}: accepted" + (f" (HTTP {delivery.status_code})" if delivery.status_code else "")
        elif delivery.outcome == transports.REJECTED:
            submission.status, submission.finished_at = Status.REJECTED, now
            submission.incident = _incident(submission, "rejected by the receiver", delivery)
            reason = f"{attempt}: rejected" + (f" (HTTP {delivery.status_code})" if delivery.status_code else "")
        elif submission.attempts >= settings.OUTBOX_MAX_ATTEMPTS:
            submission.status, submission.finished_at = Status.DEAD, now
            submission.incident = _incident(submission, f"dead after {submission.attempts} failed attempts", delivery)
            reason = f"{attempt}: failed; no attempts left, dead"
        else:
            submission.status = Status.FAILED
            submission.next_attempt_at = now + retry_delay(submission.attempts)
            reason = f"{attempt}: failed; next try at {submission.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
            next_try = (submission.pk, submission.attempts + 1, submission.next_attempt_at)
            transaction.on_commit(lambda: _schedule_retry(*next_try))
        _save(submission, reason=reason)
    if submission.status in (Status.REJECTED, Status.DEAD):
        logger.warning(
            "submission %s to %s: %s — %s", submission.pk, submission.market.code, submission.status, delivery.error
        )
    return submission


def _schedule_retry(submission_id: int, attempt: int, at: datetime) -> Schedule:
    return schedule(
        "serialization.tasks.send_submission",
        submission_id,
        name=f"outbox: submission {submission_id} attempt {attempt} at {at:%Y%m%d%H%M%S}",
        schedule_type=Schedule.ONCE,
        next_run=at,
    )


def _incident(submission: Submission, what: str, delivery: transports.Delivery):
    return audit_services.raise_incident(
        kind="submission",
        title=f"Submission {submission.pk} to {submission.market.code} {what}",
        severity="high",
        details={
            "submission": submission.pk,
            "market": submission.market.code,
            "kind": submission.kind,
            "batch": submission.batch.lot,
            "endpoint": submission.endpoint.name,
            "attempts": submission.attempts,
            "response_status": delivery.status_code,
            "error": delivery.error,
            "response_excerpt": delivery.body[:500],
        },
        subject=submission,
    )


def send_due_submissions(*, now: datetime | None = None) -> int:
    """Queue an attempt for every submission that is due, first giving back attempts abandoned in "sending" by a
    worker that stopped; returns how many were queued."""
    now = now or timezone.now()
    abandoned = Submission.objects.filter(status=Status.SENDING, last_attempt_at__lt=now - ABANDONED_AFTER)
    for submission_id in abandoned.values_list("pk", flat=True)[:DUE_BATCH]:
        _give_back(submission_id, now)
    due = list(
        Submission.objects.filter(status__in=[Status.PENDING, Status.FAILED], next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:DUE_BATCH]
    )
    for submission_id in due:
        _queue(submission_id)
    return len(due)


def _give_back(submission_id: int, now: datetime) -> None:
    with transaction.atomic():
        submission = Submission.objects.select_for_update().select_related("endpoint").get(pk=submission_id)
        deadline = timedelta(seconds=submission.endpoint.timeout_seconds) + ABANDONED_AFTER
        if submission.status != Status.SENDING or submission.last_attempt_at > now - deadline:
            return
        submission.status = Status.FAILED
        submission.next_attempt_at = now
        submission.last_error = "The attempt never finished (its worker stopped); it is tried again."
        _save(submission, reason=f"attempt {submission.attempts} abandoned by its worker; retry")


# --- steward actions ---------------------------------------------------------------------------------------------


def resubmit_submission(
    *, submission: Submission, actor, reason: str, rebuild: bool = False, request=None
) -> Submission:
    """Send a rejected, dead or failed submission again, with ``reason`` in its history: the stored document as it
    is, or (``rebuild``) a new one built and validated from the current master data — the usual fix after a
    rejection. The attempt count starts again."""
    reason = clean_reason(reason, required=True, what="resubmitting", kept_in=HISTORY)
    built = name = None
    if rebuild:
        _refuse_foreign_batch(submission.batch, actor)
        built, name = _build_and_store(
            market=submission.market, batch=submission.batch, shipping_report=submission.shipping_report
        )
    try:
        with transaction.atomic():
            locked = Submission.objects.select_for_update().get(pk=submission.pk)
            if locked.status not in Submission.RESUBMITTABLE_STATUSES:
                raise Conflict(
                    f"Submission {locked.pk} is {locked.get_status_display().lower()}; only a rejected, failed or dead "
                    "submission can be resubmitted."
                )
            if built is not None:
                locked.file, locked.sha256, locked.size, locked.items = name, built.sha256, built.size, built.items
            locked.status = Status.PENDING
            locked.attempts = 0
            locked.next_attempt_at = timezone.now()
            locked.finished_at = None
            locked.last_error = ""
            try:
                with transaction.atomic():
                    _save(locked, reason=f"{'rebuilt and ' if rebuild else ''}resubmitted: {reason}", actor=actor)
            except IntegrityError as exc:
                raise Conflict(
                    f"Batch {locked.batch.lot} has another live submission to {locked.market.code}; follow that one "
                    "instead of resubmitting this one."
                ) from exc
            if built is not None:
                audit_services.record_access(
                    kind="export",
                    user=actor,
                    request=request,
                    target=f"submission {locked.pk}",
                    quantity=built.items,
                    details={
                        "market": locked.market.code,
                        "kind": locked.kind,
                        "sha256": built.sha256,
                        "rebuilt": True,
                    },
                )
            transaction.on_commit(lambda: _queue(locked.pk))
    except BaseException:
        if name is not None:
            default_storage.delete(name)
        raise
    return locked


def change_submission_endpoint(*, submission: Submission, endpoint: Endpoint, actor, reason: str) -> Submission:
    """Route a submission that is not accepted to another endpoint of its market, with ``reason`` in its history."""
    reason = clean_reason(reason, required=True, what="changing the endpoint", kept_in=HISTORY)
    with transaction.atomic():
        locked = Submission.objects.select_for_update().get(pk=submission.pk)
        if endpoint.market_id != locked.market_id:
            raise DomainError(
                f"Endpoint {endpoint.name} serves market {endpoint.market.code}, not {locked.market.code}.",
                field="endpoint",
            )
        if locked.status in (Status.ACCEPTED, Status.SENDING):
            raise Conflict(f"Submission {locked.pk} is {locked.get_status_display().lower()}; its endpoint stays.")
        locked.endpoint = endpoint
        _save(locked, reason=f"endpoint → {endpoint.name}: {reason}", actor=actor, fields=["endpoint"])
    return locked
