"""EPCIS capture (GS1 REST binding ``POST /capture``): each event of a posted document becomes one line report,
applied by ``serialization.services.line_reports.apply_line_report`` — one rulebook for lines and for EPCIS.

``start_capture`` reads the document while the request is open (400 malformed, 413 too large, 409 already captured),
stores it with a CaptureJob and queues ``serialization.tasks.run_capture``; ``run_capture`` applies the events and
leaves every outcome on the job.

Which event is which report (CBV terms; ``serialization.cbv`` is the one table, read backwards here):

=====================================================  ================================================================
event                                                  line report
=====================================================  ================================================================
ObjectEvent ADD ``commissioning`` (``active``)       commissioning: SGTINs as units, SSCCs as containers
AggregationEvent ADD ``packing``                       aggregation: parentID (an SSCC) and its childEPCs
AggregationEvent DELETE ``unpacking``                  unpacking: the childEPCs, or everything when none are listed
ObjectEvent OBSERVE ``shipping``                       shipping
ObjectEvent OBSERVE/DELETE with the bizStep and        decommissioning, with the reason whose step that is
disposition of a decommissioning reason                (``decommissioning``/``inactive`` → line_reject, ``destroying`` →
                                                       destroyed, ``sampling`` → sample, ``holding``/
                                                       ``non_sellable_other`` → locked, ``dispensing`` → dispensed…;
                                                       the first of ``cbv.DECOMMISSION`` where two share a step)
=====================================================  ================================================================

Anything else — TransactionEvent, TransformationEvent, AssociationEvent, bizSteps of other trades (receiving…),
class-level quantities, sensor data, EPCs that are no SGTIN or SSCC — is refused with the reason, never half-applied.

The packaging order of an event (a line report is always about one order), first that applies:

1. a ``bizTransactionList`` entry of CBV type ``prodorder`` (production order) naming the order: its number, bare
   or as the last segment of a URI (``urn:epcglobal:cbv:bt:<GLN>:<number>``, ``https://…/<number>``) — what a line
   system that knows its work order sends;
2. otherwise the order its packs belong to: for a pack already commissioned (aggregation, unpacking, shipping,
   decommissioning — for aggregations the parent) the order that commissioned it; for a serial or SSCC not
   commissioned yet the order whose allocation holds it (the serials a line got for the order);
3. for a commissioning, otherwise the lot in ``ilmd`` (``cbvmda:lotNumber``) with the units' GTIN: that batch's one
   open order (or, with several, the one on the line the readPoint/bizLocation SGLN names).

The order must be one the sender may report on (``find_order_for_report``). A commissioning's ilmd lot and expiry,
when sent, must be the order's batch's. A container's level (bundle 1, case 2, pallet 3) is the one the order asked
its SSCCs for (``request_order_serials``), else the product's only SSCC packaging level.

Captured twice: an event whose eventID, or whose content (``CaptureEvent.content_hash``: the same event in JSON or
XML, under another eventID…), is already applied is refused — the whole document with 409 at POST when
``GS1-Capture-Error-Behaviour`` is ``rollback`` (or when every event is a repeat), that event alone (status 409 in the
job) with ``proceed``. A unique constraint on applied reports backs both checks against races.

Error declarations (EPCIS 2.0 ``errorDeclaration``, naming the erroneous event by eventID or by identical content):
GS1 says the erroneous event is to be treated as though it never happened and the corrective events say what did.
Here the declaration undoes its effect on the packs through the same rulebook — a commissioning by decommissioning
the packs as ``line_reject`` (a serial is never reused, so they cannot just vanish), an aggregation by unpacking the
children from that parent, an unpacking by packing them back — and marks the original report with the declaration
(shown on the event by ``GET /events``). A shipping or decommissioning cannot be undone by a line (a shipped pack is
gone from it; the EU hub reactivates a pack only within 10 days, through the MAH): declaring one is refused.
Declarations are applied before the other events of their document, so corrective events sent with them find the
packs as if the erroneous event had never been applied.

``GS1-Capture-Error-Behaviour``: ``rollback`` (default) applies the whole document or nothing — every event is
tried, so the job lists every problem, then all is rolled back if any failed; ``proceed`` applies each event on its
own and reports the others.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from functools import partial

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from audit.exceptions import Conflict, DomainError
from masterdata import gs1
from masterdata.models import PackagingLevel
from masterdata.selectors import get_user_company_id
from serialization import cbv
from serialization.epcis.capture import (
    CaptureDocument,
    CaptureEvent,
    PackRef,
    read_capture_document,
)
from serialization.exceptions import UnknownSerial
from serialization.models import Allocation, Batch, CaptureJob, LineReport, Pack, PackagingOrder, PackEvent, SerialPool
from serialization.services.batches import expiry_date
from serialization.services.line_reports import (
    InvalidReport,
    apply_line_report,
    find_order_for_report,
    pool_indices,
    scope_line_reports,
)
from serialization.services.lookup import lookup_serial, lookup_sscc

logger = logging.getLogger(__name__)

Kind = LineReport.Kind
ErrorBehaviour = CaptureJob.ErrorBehaviour

ERROR_BEHAVIOUR_HEADER = "GS1-Capture-Error-Behaviour"
MAX_SHOWN_DUPLICATES = 20
MAX_PROBLEMS_PER_EVENT = 100
# eventIDs assigned to events sent without one: uuid5 of their content hash, so the same content gets the same id.
_EVENT_IDS = uuid.UUID("0b6a8a53-7e0c-4a5e-8d1f-2f4a3c9e61d7")
_LEVEL_REQUEST = re.compile(r":L([1-3])$")  # request_order_serials' SSCC request ids
_DECOMMISSION_STEPS = {step.biz_step for step in cbv.DECOMMISSION.values()}
SUPPORTED_EVENTS = (
    "ObjectEvent ADD commissioning, AggregationEvent ADD packing, AggregationEvent DELETE unpacking, ObjectEvent "
    f"OBSERVE shipping, ObjectEvent OBSERVE/DELETE {'/'.join(sorted(_DECOMMISSION_STEPS))}"
)
PROBLEM_TYPES = {
    400: "epcisException:ValidationException",
    404: "epcisException:NoSuchResourceException",
    409: "epcisException:ResourceAlreadyExistsException",
    422: "epcisException:ValidationException",
    500: "epcisException:ImplementationException",
}


_REPEAT = "Event captured before"


class DuplicateEvents(Conflict):
    code = "duplicate_event"


class InvalidErrorBehaviour(DomainError):
    code = "invalid_capture_error_behaviour"


def error_behaviour_from_header(value: str | None) -> str:
    """The ``GS1-Capture-Error-Behaviour`` header's value (``rollback`` when absent); 400 for anything else."""
    if value is None or not value.strip():
        return ErrorBehaviour.ROLLBACK
    behaviour = value.strip().lower()
    if behaviour not in ErrorBehaviour.values:
        raise InvalidErrorBehaviour(
            f"{ERROR_BEHAVIOUR_HEADER} {value!r} is not known; send rollback (all or nothing, the default) or "
            "proceed (apply the good events, report the bad).",
            field=ERROR_BEHAVIOUR_HEADER,
        )
    return behaviour


def assigned_event_id(event: CaptureEvent) -> str:
    """The event's eventID, or — for an event sent without one, as EPCIS 2.0 allows — one made from its content."""
    return event.event_id or f"urn:uuid:{uuid.uuid5(_EVENT_IDS, event.content_hash)}"


# --- POST /capture --------------------------------------------------------------------------------------------------


def start_capture(*, document: bytes, format: str, error_behaviour: str, actor) -> CaptureJob:
    """Check ``document`` while the request is open, store it and queue its capture job (run after the commit).

    Raises ``CaptureDocumentError`` (400) for a malformed document, ``CaptureTooLarge`` (413), ``DuplicateEvents``
    (409) when events were captured before (any of them with ``rollback``, all of them with ``proceed``)."""
    parsed = read_capture_document(document, format=format)
    _refuse_repeats(parsed, error_behaviour)
    job = CaptureJob(
        error_behaviour=error_behaviour,
        document_format=format,
        document_sha256=hashlib.sha256(document).hexdigest(),
        event_count=len(parsed.events),
        company_id=get_user_company_id(user=actor),
        created_by=actor,
    )
    # The file is written before the transaction: no storage I/O while the database holds anything for us.
    job.document.save(f"{job.document_sha256[:16]}.{format}", ContentFile(document), save=False)
    with transaction.atomic():
        job.save()
        transaction.on_commit(partial(async_task, "serialization.tasks.run_capture", job.pk))
    return job


def _refuse_repeats(parsed: CaptureDocument, error_behaviour: str) -> None:
    events = [e for e in parsed.events if e.error_declaration is None]
    repeats = _already_applied(events)
    seen: dict[str, int] = {}
    for event in events:
        for key in (event.event_id, event.content_hash):
            if key and key in seen and event.index not in repeats:
                repeats[event.index] = f"it repeats event {seen[key] + 1} of this document"
            elif key:
                seen.setdefault(key, event.index)
    if not repeats:
        return
    every_event_repeats = len(repeats) == len(parsed.events)
    if error_behaviour == ErrorBehaviour.PROCEED and not every_event_repeats:
        return  # the job refuses the repeats one by one and applies the rest
    shown = [f"{parsed.events[i].label}: {why}" for i, why in sorted(repeats.items())[:MAX_SHOWN_DUPLICATES]] + (
        [f"… and {len(repeats) - MAX_SHOWN_DUPLICATES} more"] if len(repeats) > MAX_SHOWN_DUPLICATES else []
    )
    advice = (
        "Nothing was captured."
        if every_event_repeats
        else "Nothing was captured: send the document without them, or with GS1-Capture-Error-Behaviour: proceed "
        "to capture only the new events."
    )
    raise DuplicateEvents(
        f"{len(repeats)} of the document's {len(parsed.events)} events were captured before ({'; '.join(shown)}). "
        + advice,
        details={
            "type": PROBLEM_TYPES[409],
            "events": [{"event": i + 1, "eventID": parsed.events[i].event_id or None} for i in sorted(repeats)],
        },
    )


def _already_applied(events: list[CaptureEvent]) -> dict[int, str]:
    """Events of ``events`` whose eventID or content an applied report has already: index → why."""
    by_id = defaultdict(list)
    by_hash = defaultdict(list)
    for event in events:
        if event.event_id:
            by_id[event.event_id].append(event.index)
        by_hash[event.content_hash].append(event.index)
    found: dict[int, str] = {}
    applied = LineReport.objects.filter(status=LineReport.Status.APPLIED)
    for index, column, what in ((by_id, "event_id", "its eventID"), (by_hash, "event_hash", "its content")):
        keys = list(index)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            for key in applied.filter(**{f"{column}__in": chunk}).values_list(column, flat=True):
                for position in index[key]:
                    found.setdefault(position, f"{what} was captured before")
    return found


# --- the job --------------------------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    event: CaptureEvent
    status: str  # applied, declared, refused, duplicate (rolled_back is set afterwards)
    report: LineReport | None = None
    problem: dict | None = None

    @property
    def failed(self) -> bool:
        return self.problem is not None

    def summary(self) -> dict:
        return {
            "event": self.event.index + 1,
            "eventID": assigned_event_id(self.event),
            "status": self.status,
            "lineReport": self.report.report_id if self.report is not None else None,
        }


class _Refused(Exception):
    """An event this system does not apply: ``detail`` says why and what to send instead."""

    def __init__(self, detail: str, *, status: int = 400, title: str = "Event refused", problems=None, count=0):
        super().__init__(detail)
        self.detail, self.status, self.title = detail, status, title
        self.problems, self.count = problems or [], count

    def problem(self, event: CaptureEvent) -> dict:
        entry = {
            "type": PROBLEM_TYPES.get(self.status, PROBLEM_TYPES[400]),
            "title": self.title,
            "status": self.status,
            "detail": f"{event.label}: {self.detail}",
            "event": event.index + 1,
            "eventID": event.event_id or None,
        }
        if event.event_id:
            entry["instance"] = event.event_id
        if self.problems:
            entry["problems"] = self.problems[:MAX_PROBLEMS_PER_EVENT]
            entry["problemCount"] = self.count or len(self.problems)
        return entry


@dataclass
class _Capture:
    job: CaptureJob
    actor: object
    applied_ids: set[str] = field(default_factory=set)
    applied_hashes: set[str] = field(default_factory=set)


def run_capture(*, job_id: int) -> CaptureJob:
    """django-q2 entry point: claim job ``job_id``, apply its document's events, leave the outcome on the job.

    A job already started (a task delivered twice) is left alone."""
    claimed = CaptureJob.objects.filter(pk=job_id, started_at__isnull=True).update(started_at=timezone.now())
    job = CaptureJob.objects.select_related("created_by").get(pk=job_id)
    if not claimed:
        return job
    try:
        with job.document.open("rb") as stream:
            parsed = read_capture_document(stream.read(), format=job.document_format)
        outcomes = _capture_events(_Capture(job=job, actor=job.created_by), parsed.events)
    except DomainError as exc:
        _finish(job, outcomes=[], errors=[_document_problem(exc.status_code, exc.message)])
    except Exception:
        logger.exception("EPCIS capture job %s failed", job_id)
        problem = "The capture stopped on an internal error; nothing was captured. Send the document again."
        _finish(job, outcomes=[], errors=[_document_problem(500, problem)])
    else:
        _finish(job, outcomes=outcomes, errors=[o.problem for o in outcomes if o.problem is not None])
    job.refresh_from_db()
    return job


def _document_problem(status: int, detail: str) -> dict:
    kind = PROBLEM_TYPES.get(status, "epcisException:ImplementationException")
    return {"type": kind, "title": "Document refused", "status": status, "detail": detail}


def _finish(job: CaptureJob, *, outcomes: list[_Outcome], errors: list[dict]) -> None:
    applied = sum(1 for o in outcomes if o.status in ("applied", "declared"))
    CaptureJob.objects.filter(pk=job.pk).update(
        status=CaptureJob.Status.FAILED if errors else CaptureJob.Status.SUCCEEDED,
        applied_count=applied,
        error_count=len(errors),
        errors=errors,
        events=[o.summary() for o in outcomes],
        finished_at=timezone.now(),
    )


def _capture_events(capture: _Capture, events: list[CaptureEvent]) -> list[_Outcome]:
    # Declarations first: corrective events in the same document then find the packs as if the erroneous event
    # had never been applied.
    ordered = sorted(events, key=lambda e: (e.error_declaration is None, e.index))
    if capture.job.error_behaviour == ErrorBehaviour.PROCEED:
        outcomes = [_capture_one_or_fail(capture, event) for event in ordered]
    else:
        with transaction.atomic():
            outcomes = [_capture_one(capture, event) for event in ordered]
            rolled_back = any(o.failed for o in outcomes)
            if rolled_back:
                transaction.set_rollback(True)
        if rolled_back:
            for outcome in outcomes:
                if not outcome.failed:
                    outcome.status, outcome.report = "rolled_back", None
    return sorted(outcomes, key=lambda o: o.event.index)


def _capture_one_or_fail(capture: _Capture, event: CaptureEvent) -> _Outcome:
    """``proceed``: an unexpected error fails its event only — the events applied before it stay applied, and the
    job must say so."""
    try:
        return _capture_one(capture, event)
    except Exception:
        logger.exception("EPCIS capture job %s: event %s failed", capture.job.pk, event.index + 1)
        refusal = _Refused(
            "an internal error stopped it; it was not applied (the worker log has the details). Send it again.",
            status=500,
            title="Internal error",
        )
        return _Outcome(event, "refused", problem=refusal.problem(event))


def _capture_one(capture: _Capture, event: CaptureEvent) -> _Outcome:
    """One event in its own savepoint: applied, or refused with nothing of it left behind (the problems of a report
    the rulebook rejected are kept on the job, not as a REJECTED report)."""
    try:
        with transaction.atomic():
            if event.error_declaration is not None:
                return _declare_error(capture, event)
            return _apply_event(capture, event)
    except _Refused as refusal:
        status = "duplicate" if refusal.title == _REPEAT else "refused"
        return _Outcome(event, status, problem=refusal.problem(event))
    except IntegrityError as exc:
        if not _is_repeat(exc):
            raise
        # A concurrent capture applied the same event first: the unique constraint on applied reports said so.
        refusal = _Refused(
            "the same event was captured by another request at the same moment.", status=409, title=_REPEAT
        )
        return _Outcome(event, "duplicate", problem=refusal.problem(event))


# The unique constraints that make an event applied once, as PostgreSQL and SQLite name them in their errors.
_REPEAT_CONSTRAINTS = (
    "line_report_event_id_applied_once",
    "line_report_event_hash_applied_once",
    "serialization_linereport.event_id",
    "serialization_linereport.event_hash",
)


def _is_repeat(exc: IntegrityError) -> bool:
    return any(name in str(exc) for name in _REPEAT_CONSTRAINTS)


def _apply_event(capture: _Capture, event: CaptureEvent) -> _Outcome:
    if event.problems:
        raise _Refused(" ".join(event.problems))
    event_id = assigned_event_id(event)
    _refuse_repeat(capture, event, event_id)
    kind, reason = _kind_of(event)
    if event.unsupported:
        raise _Refused(
            f"it carries {', '.join(event.unsupported)}, which this system does not record; it records "
            "serialised units and SSCCs only. Send the instance EPCs in epcList/childEPCs without them."
        )
    _check_packs(event, kind)
    order = _order_of(capture, event, kind)
    lines = _lines(event, kind, reason, order)
    report = _apply(
        capture,
        report_id=f"epcis-{capture.job.pk}-{event.index + 1}",
        kind=kind,
        order=order,
        lines=lines,
        occurred_at=event.event_time,
    )
    LineReport.objects.filter(pk=report.pk).update(
        source=LineReport.Source.EPCIS,
        capture_job=capture.job,
        event_id=event_id,
        event_hash=event.content_hash,
        event=event.envelope(),
    )
    capture.applied_ids.add(event_id)
    capture.applied_hashes.add(event.content_hash)
    return _Outcome(event, "applied", report=report)


def _apply(capture: _Capture, *, report_id: str, kind: str, order: PackagingOrder, lines: list, occurred_at):
    """apply_line_report, with a rejection or a domain error turned into this event's refusal."""
    try:
        report = apply_line_report(
            report_id=report_id, kind=kind, order=order, lines=lines, actor=capture.actor, occurred_at=occurred_at
        )
    except DomainError as exc:
        status = exc.status_code if exc.status_code in (400, 404, 409, 422) else 400
        raise _Refused(exc.message, status=status) from None
    if report.status == LineReport.Status.REJECTED:
        # The rejected report goes with the event's savepoint: the job keeps its problems.
        count = report.result.get("error_count", 0)
        raise _Refused(
            f"the {kind} rules refused it ({count} problem{'s' if count != 1 else ''}; in each, line n is the n-th "
            "EPC of the event, or its parent for an aggregation).",
            status=422,
            title="Event rejected by the line-report rules",
            problems=report.result.get("errors", []),
            count=count,
        )
    return report


def _refuse_repeat(capture: _Capture, event: CaptureEvent, event_id: str) -> None:
    repeat_id = event_id in capture.applied_ids or (
        event.event_id and LineReport.objects.filter(status=LineReport.Status.APPLIED, event_id=event_id).exists()
    )
    repeat_content = event.content_hash in capture.applied_hashes or (
        LineReport.objects.filter(status=LineReport.Status.APPLIED, event_hash=event.content_hash).exists()
    )
    if repeat_id or repeat_content:
        what = "its eventID" if repeat_id else "the same content (under another eventID or none)"
        raise _Refused(f"{what} was captured before; an event is captured once.", status=409, title=_REPEAT)


# --- which rule -----------------------------------------------------------------------------------------------------


def _decommission_reason(biz_step: str, disposition: str) -> str | None:
    """The decommissioning reason whose CBV step is ``biz_step`` (and ``disposition``, when given): the first of
    ``cbv.DECOMMISSION`` where two share one (line_reject before exported, sample before free_sample)."""
    for reason, step in cbv.DECOMMISSION.items():
        if step.biz_step == biz_step and (not disposition or step.disposition == disposition):
            return reason
    return None


def _kind_of(event: CaptureEvent) -> tuple[str, str | None]:
    """(line-report kind, decommissioning reason) of an event, or a refusal naming what is applied here."""
    kind, action, step, disposition = event.type, event.action, event.biz_step, event.disposition
    if kind not in ("ObjectEvent", "AggregationEvent"):
        raise _Refused(
            f"{kind or 'an event without a type'} is not captured here: this system records what packaging lines do "
            f"to serialised units and SSCCs ({SUPPORTED_EVENTS})."
        )
    if not step:
        raise _Refused(f"it has no bizStep; this system applies {SUPPORTED_EVENTS}.")
    if not cbv.is_biz_step(step):
        raise _Refused(f"bizStep {step!r} is not a CBV business step this system knows; it applies {SUPPORTED_EVENTS}.")
    if kind == "AggregationEvent":
        if action == "ADD" and step == cbv.PACKED.biz_step:
            return Kind.AGGREGATION, None
        if action == "DELETE" and step == cbv.UNPACKED.biz_step:
            return Kind.UNPACKING, None
    elif action == "ADD" and step == cbv.COMMISSIONED.biz_step:
        if disposition not in ("", cbv.COMMISSIONED.disposition):
            raise _Refused(
                f"a commissioning with disposition {disposition!r}: a commissioned pack is "
                f"{cbv.COMMISSIONED.disposition}; send that disposition or none."
            )
        return Kind.COMMISSIONING, None
    elif action == "OBSERVE" and step == cbv.SHIPPED.biz_step:
        if disposition not in ("", cbv.SHIPPED.disposition):
            raise _Refused(
                f"a shipping with disposition {disposition!r}: a shipped pack is {cbv.SHIPPED.disposition}; send "
                "that disposition or none."
            )
        return Kind.SHIPPING, None
    elif action in ("OBSERVE", "DELETE") and step in _DECOMMISSION_STEPS:
        reason = _decommission_reason(step, disposition)
        if reason is None:
            pairs = ", ".join(f"{s.disposition}" for s in cbv.DECOMMISSION.values() if s.biz_step == step)
            raise _Refused(
                f"bizStep {step} with disposition {disposition!r} is no decommissioning reason here; with {step} "
                f"send disposition {pairs}."
            )
        return Kind.DECOMMISSIONING, reason
    raise _Refused(
        f"{kind} {action or '(no action)'} with bizStep {step} is not applied here; this system applies "
        f"{SUPPORTED_EVENTS}."
    )


# --- which order ----------------------------------------------------------------------------------------------------


def _production_order(event: CaptureEvent) -> str | None:
    for kind, value in event.biz_transactions:
        if kind == "prodorder" and value:
            return value
    return None


def _order_candidates(value: str) -> list[str]:
    """An order number as written in a bizTransaction: whole, or the last segment of a URN or URL."""
    candidates = [value]
    for separator in ("/", ":"):
        tail = value.rstrip(separator).rsplit(separator, 1)[-1]
        if tail and tail not in candidates:
            candidates.append(tail)
    return candidates


def _order_of(capture: _Capture, event: CaptureEvent, kind: str) -> PackagingOrder:
    named = _production_order(event)
    if named is not None:
        for candidate in _order_candidates(named):
            try:
                return find_order_for_report(user=capture.actor, reference=candidate)
            except InvalidReport:
                continue
        raise _Refused(
            f"its production order {named!r} (bizTransaction of type prodorder) is no packaging order visible to you; "
            "name the order by its number."
        )
    subject = event.parent if kind in (Kind.AGGREGATION, Kind.UNPACKING) else event.packs[0]
    order_id = _order_of_pack(subject, kind) or (_order_of_lot(event, subject) if kind == Kind.COMMISSIONING else None)
    number = PackagingOrder.objects.filter(pk=order_id).values_list("number", flat=True).first() if order_id else None
    if number is not None:
        try:
            return find_order_for_report(user=capture.actor, reference=number)
        except InvalidReport:
            pass  # the same answer as for a pack of no order: another company's order is not named
    raise _Refused(
        f"no packaging order visible to you holds {subject}. Name the order in bizTransactionList as "
        '{"type": "prodorder", "bizTransaction": "<order number>"}, or report only serials allocated to one of your '
        "orders."
    )


def _order_of_pack(pack: PackRef, kind: str) -> int | None:
    """The order that commissioned ``pack``, else the order whose allocation holds its serial."""
    if kind != Kind.COMMISSIONING:
        order_id = (
            Pack.objects.filter(product_code=pack.product_code, serial=pack.serial)
            .values_list("order_id", flat=True)
            .first()
        )
        if order_id is not None:
            return order_id
    try:
        status = (
            lookup_sscc(sscc=pack.serial)
            if pack.is_container
            else lookup_serial(product_code=pack.product_code, serial=pack.serial)
        )
    except UnknownSerial:
        return None
    allocation = status.allocation
    if allocation is None:
        return None
    if allocation.packaging_order_id is not None:
        return allocation.packaging_order_id
    if allocation.purpose == Allocation.Purpose.PACKAGING_ORDER and allocation.reference:
        return PackagingOrder.objects.filter(number=allocation.reference).values_list("pk", flat=True).first()
    return None


def _order_of_lot(event: CaptureEvent, unit: PackRef) -> int | None:
    lot = event.ilmd.get("lotNumber")
    if not lot or unit.is_container:
        return None
    orders = PackagingOrder.objects.filter(
        batch__product__product_code=unit.product_code, batch__lot=lot, status=PackagingOrder.Status.OPEN
    )
    ids = list(orders.values_list("pk", flat=True)[:2])
    if len(ids) == 1:
        return ids[0]
    gln = _gln(event.biz_location) or _gln(event.read_point)
    if ids and gln:
        return orders.filter(line__gln=gln).values_list("pk", flat=True).first()
    return None


def _gln(sgln: str) -> str | None:
    try:
        return gs1.parse_sgln_urn(sgln)[0] if sgln else None
    except gs1.GS1Error:
        return None


# --- the lines ------------------------------------------------------------------------------------------------------


def _check_packs(event: CaptureEvent, kind: str) -> None:
    """The shape a line report of ``kind`` needs: a parent SSCC for (un)packing, packs to act on."""
    if kind in (Kind.AGGREGATION, Kind.UNPACKING):
        if event.parent is None or not event.parent.is_container:
            raise _Refused(
                f"its parentID {event.parent_id or '(none)'} is no SSCC; cases and pallets are identified by SSCC here."
            )
        if kind == Kind.AGGREGATION and not event.packs:
            raise _Refused("its childEPCs list is empty; list the units or SSCCs packed into the parent.")
    elif not event.packs:
        raise _Refused("its epcList is empty; list the units or SSCCs it is about.")


def _lines(event: CaptureEvent, kind: str, reason: str | None, order: PackagingOrder) -> list[dict]:
    packs: list[PackRef] = [p for p in event.packs if p is not None]
    if kind in (Kind.AGGREGATION, Kind.UNPACKING):
        if not packs:  # an unpacking that names no children empties the parent
            return [{"parent_sscc": event.parent.serial}]
        return [{"parent_sscc": event.parent.serial, "children": [p.line() for p in packs]}]
    if kind == Kind.DECOMMISSIONING:
        return [{**p.line(), "reason": reason} for p in packs]
    if kind == Kind.SHIPPING:
        return [p.line() for p in packs]
    _check_ilmd(event, order)
    levels = _container_levels(order, [p.serial for p in packs if p.is_container])
    return [p.line() if not p.is_container else {"sscc": p.serial, "level": levels[p.serial]} for p in packs]


def _check_ilmd(event: CaptureEvent, order: PackagingOrder) -> None:
    batch: Batch = order.batch
    lot = event.ilmd.get("lotNumber")
    if lot is not None and lot != batch.lot:
        raise _Refused(
            f"its ilmd lotNumber {lot!r} is not the lot of order {order.number} ({batch.lot}); the lot printed is "
            "the batch's."
        )
    expiry = event.ilmd.get("itemExpirationDate")
    if expiry is not None:
        try:
            sent = date.fromisoformat(expiry)
        except ValueError:
            raise _Refused(f"its ilmd itemExpirationDate {expiry!r} is no date (YYYY-MM-DD).") from None
        printed = expiry_date(batch.expiry)
        if sent != printed:
            raise _Refused(
                f"its ilmd itemExpirationDate {expiry} is not the expiry of lot {batch.lot} ({printed.isoformat()}, "
                f"printed {batch.expiry}); the expiry reported must be the one printed."
            )


def _container_levels(order: PackagingOrder, ssccs: list[str]) -> dict[str, int]:
    """Each SSCC's packaging level: the level the order asked it for (``request_order_serials`` allocates SSCCs per
    level), else the product's only SSCC level. Found set-based: one FF1 inversion per SSCC pool."""
    if not ssccs:
        return {}
    levels: dict[str, int] = {}
    allocations = (
        Allocation.objects.filter(
            Q(packaging_order=order)
            | Q(packaging_order__isnull=True, purpose=Allocation.Purpose.PACKAGING_ORDER, reference=order.number),
            pool__kind=SerialPool.Kind.SSCC,
        )
        .select_related("pool")
        .prefetch_related("ranges")
    )
    by_pool: dict[int, list[Allocation]] = defaultdict(list)
    for allocation in allocations:
        if _LEVEL_REQUEST.search(allocation.request_id) and allocation.pool.is_generated:
            by_pool[allocation.pool_id].append(allocation)
    for pool_allocations in by_pool.values():
        pool = pool_allocations[0].pool
        head = pool.sscc_extension_digit + pool.sscc_prefix
        mine = [s for s in ssccs if s.startswith(head) and len(s) == 18]
        indices = pool_indices(pool, [s[len(head) : 17] for s in mine])
        for allocation in pool_allocations:
            level = int(_LEVEL_REQUEST.search(allocation.request_id).group(1))
            for held in allocation.ranges.all():
                inside = (indices >= held.first_index) & (indices < held.first_index + held.count)
                for position in inside.nonzero()[0].tolist():
                    levels[mine[position]] = level
    missing = [s for s in ssccs if s not in levels]
    if missing:
        product_levels = list(
            PackagingLevel.objects.filter(product_id=order.batch.product_id, uses_sscc=True).values_list(
                "level", flat=True
            )
        )
        if len(product_levels) != 1:
            shown = ", ".join(missing[:5]) + ("…" if len(missing) > 5 else "")
            has = ", ".join(str(lv) for lv in sorted(product_levels)) or "none"
            raise _Refused(
                f"the packaging level of SSCC {shown} is unknown: it was not requested for a level of order "
                f"{order.number}, and product {order.batch.product.product_code} has {has} SSCC levels. Request the "
                "order's SSCCs per level (POST /api/v1/orders/{id}/serials/ with sscc) before commissioning them."
            )
        levels.update(dict.fromkeys(missing, product_levels[0]))
    return levels


# --- error declarations ---------------------------------------------------------------------------------------------


def _declare_error(capture: _Capture, event: CaptureEvent) -> _Outcome:
    if event.problems:
        raise _Refused(" ".join(event.problems))
    original = _erroneous_report(capture, event)
    if original.error_declaration:
        declared = original.error_declaration.get("declarationTime") or "before"
        raise _Refused(
            f"event {original.event_id} was declared erroneous already ({declared}); it is corrected once.",
            status=409,
            title=_REPEAT,
        )
    kind, lines = _undoing(original)
    declaration = event.error_declaration
    report = _apply(
        capture,
        report_id=f"epcis-{capture.job.pk}-{event.index + 1}-undo",
        kind=kind,
        order=original.order,
        lines=lines,
        occurred_at=declaration.declaration_time or timezone.now(),
    )
    LineReport.objects.filter(pk=report.pk).update(
        source=LineReport.Source.EPCIS, capture_job=capture.job, corrects=original
    )
    LineReport.objects.filter(pk=original.pk).update(error_declaration=declaration.as_json())
    return _Outcome(event, "declared", report=report)


def _erroneous_report(capture: _Capture, event: CaptureEvent) -> LineReport:
    """The applied, captured report an error declaration is about: by eventID, else by identical content."""
    reports = scope_line_reports(
        LineReport.objects.filter(status=LineReport.Status.APPLIED, source=LineReport.Source.EPCIS).select_related(
            "order"
        ),
        user=capture.actor,
    )
    if event.event_id:
        original = reports.filter(event_id=event.event_id).first()
        what = f"eventID {event.event_id}"
    else:
        original = reports.filter(event_hash=event.content_hash).first()
        what = "the same content"
    if original is None:
        raise _Refused(
            f"it declares an error in the event with {what}, and no event captured here and visible to you has it. "
            "An error declaration repeats the erroneous event (its eventID, or all its fields) with an "
            "errorDeclaration added.",
            status=404,
            title="Erroneous event not found",
        )
    return original


def _undoing(original: LineReport) -> tuple[str, list[dict]]:
    """The line report that undoes ``original``'s effect on the packs."""
    rows = PackEvent.objects.filter(report=original)
    if original.kind == Kind.COMMISSIONING:
        packs = rows.filter(action=PackEvent.Action.COMMISSIONED).values_list("pack__product_code", "pack__serial")
        return Kind.DECOMMISSIONING, [
            {**PackRef(code, serial).line(), "reason": "line_reject"} for code, serial in packs.iterator()
        ]
    if original.kind in (Kind.AGGREGATION, Kind.UNPACKING):
        action = PackEvent.Action.PACKED if original.kind == Kind.AGGREGATION else PackEvent.Action.UNPACKED
        children: dict[str, list[dict]] = defaultdict(list)
        for parent, code, serial in (
            rows.filter(action=action).values_list("parent__serial", "pack__product_code", "pack__serial").iterator()
        ):
            children[parent].append(PackRef(code, serial).line())
        kind = Kind.UNPACKING if original.kind == Kind.AGGREGATION else Kind.AGGREGATION
        return kind, [{"parent_sscc": parent, "children": packs} for parent, packs in children.items()]
    raise _Refused(
        f"event {original.event_id} is a {original.get_kind_display().lower()}, which a line cannot undo: a shipped "
        "pack has left the line, and a decommissioned pack is reactivated only by the MAH (the EU hub allows it "
        "within 10 days). Nothing was changed; ask the MAH's steward to correct it.",
        status=409,
        title="Event cannot be undone",
    )
