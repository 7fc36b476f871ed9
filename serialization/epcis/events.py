"""What the packaging lines reported, as EPCIS events (the mapping of DOMAIN.md, terms from ``serialization.cbv``).

One LineReport gives one event per group of its PackEvent rows that share a step, a parent and a reason:

===============  =====================================================================================================
PackEvent        EPCIS event
===============  =====================================================================================================
commissioned     ObjectEvent ADD ``commissioning``/``active``: one for the units, with the batch's lot and expiry
                 (``cbvmda:lotNumber``, ``cbvmda:itemExpirationDate``) in ilmd, one for the containers (no ilmd)
packed           AggregationEvent ADD ``packing``/``in_progress``, one per parent with its childEPCs
unpacked         AggregationEvent DELETE ``unpacking``, one per parent (a decommissioning report unpacks the packs it
                 takes out of their containers first, and so does the document)
shipped          ObjectEvent OBSERVE ``shipping``/``in_transit`` naming the packs the report shipped — the top of each
                 tree: what is inside them ships with them, as their AggregationEvents say
decommissioned   ObjectEvent per reason (``cbv.DECOMMISSION``): DELETE for ``decommissioning``/``destroying``, OBSERVE
                 for the reasons that leave the pack in existence (sample, dispensed, locked)
===============  =====================================================================================================

Scopes (``EpcisScope``): a batch (the events of its packs), a packaging order (the events of its packs), or a
shipment — a shipping LineReport: the packs it shipped and everything below them, with every event of theirs up to
and including that shipment. A ``visible_to`` user narrows any scope to reports on the orders they may see
(``scope_orders``): a CMO exporting a batch gets what its own lines reported, not another packer's.

Streaming: the scope's events come from one query ordered by report, step, reason and parent and read with
``.iterator()`` (a server-side cursor on PostgreSQL); consecutive rows with the same key form an event
(``itertools.groupby``) and its EPCs are produced as the rows arrive. What is held in memory is per report, order,
batch, product and pool (their locations, lot and expiry, URN prefixes) — never per pack. Events come in the order
the reports were applied (LineReport id), which is the order the packs' states changed in.

EPCs: units as SGTIN URNs (the product's company prefix length from master data), containers as SSCC URNs (their
pool's company prefix), both through ``masterdata.gs1``. readPoint is the line's SGLN, bizLocation its site's.
eventTime is PackEvent.occurred_at in UTC (offset ``+00:00``: the line's local offset is not stored). eventIDs are
``urn:uuid`` values derived from the report id and the group, so exporting again gives the same ids.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import Case, Count, Exists, IntegerField, Min, OuterRef, Q, QuerySet, Value, When

from masterdata import gs1
from masterdata.models import Product
from serialization import cbv
from serialization.epcis import EpcisError
from serialization.models import Batch, LineReport, PackagingOrder, PackEvent, SerialPool
from serialization.selectors import scope_orders
from serialization.services.batches import expiry_date

Action = PackEvent.Action

OBJECT_EVENT = "ObjectEvent"
AGGREGATION_EVENT = "AggregationEvent"
# Rows fetched from the server-side cursor at a time: 5,000 kept ~4 MB more resident in the benchmark
# (bench_epcis_export.py) for no measurable gain in speed.
CHUNK_ROWS = 2_000
# Namespace of the eventIDs (uuid5 of the report id and the group).
_EVENT_IDS = uuid.UUID("5f0c7a52-4b1e-4d6e-9a43-6c2d8e0f7b19")
# Within one report: a decommissioning report's unpacking comes before the decommissioning itself.
_STEP_ORDER = [Action.COMMISSIONED, Action.UNPACKED, Action.PACKED, Action.SHIPPED, Action.DECOMMISSIONED]
_STEP_RANK = Case(
    *(When(action=action, then=Value(rank)) for rank, action in enumerate(_STEP_ORDER)),
    default=Value(len(_STEP_ORDER)),
    output_field=IntegerField(),
)
# No per-row time: every event of a report has the report's time, read once per report. (Converting a timestamp is
# the most expensive column there is; without one, Django applies no converter to these rows at all.)
_COLUMNS = (
    "report_id",
    "action",
    "reason",
    "parent_id",
    "pack__level",
    "pack__batch_id",
    "pack__pool_id",
    "pack__product_code",
    "pack__serial",
    "parent__pool_id",
    "parent__product_code",
    "parent__serial",
)
_POOL, _CODE, _SERIAL = 6, 7, 8


@dataclass(frozen=True)
class EpcisScope:
    """What a document is about: exactly one of a batch, a packaging order, or a shipment (a shipping LineReport:
    its shipped containers and everything below them)."""

    batch_id: int | None = None
    order_id: int | None = None
    shipping_report_id: int | None = None

    @property
    def label(self) -> str:
        """``batch 4``, ``order 7`` or ``shipment 12`` (the LineReport id), for file names and the access log."""
        if self.batch_id is not None:
            return f"batch {self.batch_id}"
        if self.order_id is not None:
            return f"order {self.order_id}"
        return f"shipment {self.shipping_report_id}"


@dataclass(frozen=True)
class EventHeader:
    """Everything of one EPCIS event but its EPCs."""

    event_type: str  # OBJECT_EVENT or AGGREGATION_EVENT
    action: str  # ADD, OBSERVE or DELETE
    biz_step: str  # a CBV term, bare ("commissioning")
    disposition: str | None  # a CBV term, bare, or None
    event_time: datetime
    event_id: str
    parent_epc: str | None = None  # AggregationEvent only
    read_point: str | None = None
    biz_location: str | None = None
    lot: str | None = None  # ilmd, commissioned units only
    expiry: date | None = None


@dataclass
class EpcisEvent:
    """One event: its header, and its EPCs (epcList, or childEPCs of an AggregationEvent) as an iterator that reads
    the rows as it goes — consume it before asking for the next event."""

    header: EventHeader
    epcs: Iterator[str]


def check_scope(scope: EpcisScope) -> None:
    """Refuse a scope that names nothing, more than one thing, or a line report that is not an applied shipment."""
    named = [v for v in (scope.batch_id, scope.order_id, scope.shipping_report_id) if v is not None]
    if len(named) != 1:
        raise EpcisError("Name exactly one of a batch, a packaging order or a shipment.", field="scope")
    if scope.shipping_report_id is None:
        return
    report = LineReport.objects.filter(pk=scope.shipping_report_id).only("report_id", "kind", "status").first()
    if report is None:
        raise EpcisError(f"There is no line report {scope.shipping_report_id}.", field="shipment")
    if report.kind != LineReport.Kind.SHIPPING or report.status != LineReport.Status.APPLIED:
        raise EpcisError(
            f"Line report {report.report_id} is {'a rejected' if report.status != 'applied' else 'an'} "
            f"{report.get_kind_display().lower()} report; a shipment is an applied shipping report.",
            field="shipment",
        )


def scoped_events(scope: EpcisScope, *, visible_to=None) -> QuerySet[PackEvent]:
    """The PackEvent rows a document of ``scope`` is made of (shipped rows: only the top of each shipped tree)."""
    if scope.batch_id is not None:
        condition = Q(pack__batch_id=scope.batch_id)
    elif scope.order_id is not None:
        condition = Q(pack__order_id=scope.order_id)
    else:
        # The packs the shipment shipped, each with its events up to and including its shipped event (event ids
        # grow with time for one pack: its rows are written one report after the other, under the pack's lock).
        shipped = PackEvent.objects.filter(
            report_id=scope.shipping_report_id,
            action=Action.SHIPPED,
            pack_id=OuterRef("pack_id"),
            pk__gte=OuterRef("pk"),
        )
        condition = Q(Exists(shipped))
    condition &= ~Q(action=Action.SHIPPED) | Q(parent__isnull=True)
    queryset = PackEvent.objects.filter(condition)
    if visible_to is not None:
        queryset = queryset.filter(report__order__in=scope_orders(PackagingOrder.objects.all(), user=visible_to))
    return queryset


class EventSource:
    """The events of one scope: counted when made (``total_epcs``, one aggregate query that also names the reports),
    then read once with ``events()``."""

    def __init__(self, scope: EpcisScope, *, visible_to=None) -> None:
        check_scope(scope)
        self.scope = scope
        self._queryset = scoped_events(scope, visible_to=visible_to)
        # Per report: its rows in scope, and its time (a line report's events all carry the report's time).
        per_report = list(
            self._queryset.order_by()
            .values("report_id")
            .annotate(rows=Count("pk"), at=Min("occurred_at"))
            .values_list("report_id", "rows", "at")
        )
        self.total_epcs = sum(rows for _, rows, _ in per_report)
        self._times: dict[int, datetime] = {report_id: at for report_id, _, at in per_report}
        self._reports: dict[int, LineReport] = {}
        self._load_reports(self._times)
        self._locations: dict[int | None, tuple[str | None, str | None]] = {}
        self._batches: dict[int, tuple[str, date]] = {}
        self._prefix_lengths: dict[str, int] = {}
        self._sgtin_bases: dict[str, str] = {}
        self._sscc_lengths: dict[int, int] = {}

    def events(self) -> Iterator[EpcisEvent]:
        rows = (
            self._queryset.annotate(step_rank=_STEP_RANK)
            .order_by("report_id", "step_rank", "reason", "parent_id", "pack__level", "pack__batch_id", "pk")
            .values_list(*_COLUMNS)
            .iterator(chunk_size=CHUNK_ROWS)
        )
        for _, group in itertools.groupby(rows, key=_group_key):
            # The group is read once: its first row for the header, then (with that row again) for the EPCs.
            first = next(group)
            yield EpcisEvent(self._header(first), self._epcs(itertools.chain((first,), group)))  # noqa: B031

    # --- events ---------------------------------------------------------------------------------------------------

    def _header(self, row: tuple) -> EventHeader:
        report_pk, action, reason, _, level, batch_id = row[:6]
        is_container = level > 0
        report = self._report(report_pk)
        read_point, biz_location = self._location(report.order_id)
        parent_epc = lot = expiry = None
        if action == Action.COMMISSIONED:
            step, event_type, epcis_action = cbv.COMMISSIONED, OBJECT_EVENT, "ADD"
            if not is_container and batch_id is not None:
                lot, expiry = self._batch(batch_id)
        elif action in (Action.PACKED, Action.UNPACKED):
            step = cbv.PACKED if action == Action.PACKED else cbv.UNPACKED
            event_type, epcis_action = AGGREGATION_EVENT, "ADD" if action == Action.PACKED else "DELETE"
            parent_epc = self.epc(row[9], row[10], row[11])
        elif action == Action.SHIPPED:
            step, event_type, epcis_action = cbv.SHIPPED, OBJECT_EVENT, "OBSERVE"
        elif action == Action.DECOMMISSIONED:
            try:
                step = cbv.decommission_step(reason)
            except KeyError as exc:
                raise EpcisError(f"Line report {report.report_id}: {exc.args[0]}.") from None
            event_type, epcis_action = OBJECT_EVENT, cbv.object_event_action(step)
        else:
            raise EpcisError(f"Line report {report.report_id} holds a pack event {action!r} EPCIS has no event for.")
        group = (report.report_id, action, reason, parent_epc or "", int(is_container and lot is None), lot or "")
        return EventHeader(
            event_type=event_type,
            action=epcis_action,
            biz_step=step.biz_step,
            disposition=step.disposition,
            event_time=self._times[report_pk],
            event_id=f"urn:uuid:{uuid.uuid5(_EVENT_IDS, '|'.join(map(str, group)))}",
            parent_epc=parent_epc,
            read_point=read_point,
            biz_location=biz_location,
            lot=lot,
            expiry=expiry,
        )

    def _epcs(self, rows: Iterable[tuple]) -> Iterator[str]:
        bases = self._sgtin_bases
        for row in rows:
            code, serial = row[_CODE], row[_SERIAL]
            base = bases.get(code) if code else None
            # Alphanumeric serials need no URN escaping: the prefix built once per product code is all there is.
            if base is not None and serial.isalnum():
                yield base + serial
            else:
                yield self.epc(row[_POOL], code, serial)

    def epc(self, pool_id: int, product_code: str, serial: str) -> str:
        """The EPC URN of a pack: SGTIN for a unit (product code + serial), SSCC for a container."""
        if product_code:
            length = self._prefix_length(product_code)
            return gs1.sgtin_urn(product_code, serial, length)
        return gs1.sscc_urn(serial, self._sscc_length(pool_id))

    # --- what is looked up once per report, order, batch, product, pool ------------------------------------------

    def _load_reports(self, report_ids: Iterable[int]) -> None:
        ids = sorted(report_ids)
        for start in range(0, len(ids), 1_000):
            for report in LineReport.objects.filter(pk__in=ids[start : start + 1_000]).only("report_id", "order_id"):
                self._reports[report.pk] = report

    def _report(self, pk: int) -> LineReport:
        if pk not in self._reports:  # applied after the count: read now
            self._load_reports([pk])
            self._times[pk] = PackEvent.objects.filter(report_id=pk).aggregate(at=Min("occurred_at"))["at"]
        return self._reports[pk]

    def _location(self, order_id: int | None) -> tuple[str | None, str | None]:
        """(readPoint, bizLocation): the SGLNs of the order's line and of the line's site, where they are known."""
        if order_id not in self._locations:
            order = (
                PackagingOrder.objects.select_related("line__company", "line__parent__company")
                .filter(pk=order_id)
                .first()
            )
            line = order.line if order is not None else None
            site = line.parent if line is not None else None
            self._locations[order_id] = (
                (line.sgln or None) if line is not None else None,
                (site.sgln or None) if site is not None else None,
            )
        return self._locations[order_id]

    def _batch(self, batch_id: int) -> tuple[str, date]:
        if batch_id not in self._batches:
            lot, expiry = Batch.objects.filter(pk=batch_id).values_list("lot", "expiry").get()
            try:
                self._batches[batch_id] = (lot, expiry_date(expiry))
            except ValueError:
                raise EpcisError(
                    f"Batch {lot} has the expiry {expiry!r}, which is no date; correct the batch's expiry (YYMMDD)."
                ) from None
        return self._batches[batch_id]

    def _prefix_length(self, product_code: str) -> int:
        if product_code not in self._prefix_lengths:
            length = Product.objects.filter(product_code=product_code).values_list("company_prefix_length").first()
            if length is None or length[0] is None:
                raise EpcisError(
                    f"Product {product_code} has no company prefix length in master data, and an SGTIN URN needs it: "
                    "set the product's company prefix length first.",
                    field="product",
                )
            self._prefix_lengths[product_code] = length[0]
            # The URN up to its serial, made once by the gs1 helper (the placeholder serial "0" is cut off again).
            self._sgtin_bases[product_code] = gs1.sgtin_urn(product_code, "0", length[0])[:-1]
        return self._prefix_lengths[product_code]

    def _sscc_length(self, pool_id: int) -> int:
        if pool_id not in self._sscc_lengths:
            prefix = SerialPool.objects.filter(pk=pool_id).values_list("sscc_prefix", flat=True).get()
            self._sscc_lengths[pool_id] = len(prefix)
        return self._sscc_lengths[pool_id]


def _group_key(row: tuple) -> tuple:
    """Rows of one event: same report, step, reason and parent; commissioning also splits units (per batch, for the
    ilmd) from containers."""
    report_id, action, reason, parent_id, level, batch_id = row[:6]
    if action == Action.COMMISSIONED:
        return report_id, action, level > 0, None if level > 0 else batch_id
    return report_id, action, reason, parent_id
