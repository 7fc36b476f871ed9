"""The EPCIS events query (GS1 REST binding ``GET /events``) over what the lines reported and what was captured.

Both are LineReports underneath, so both are answered alike: the events of the applied reports on orders the user
may see (``scope_orders``: an MAH its products' orders, a CMO the orders run on its lines), as EPCIS out writes them
(``serialization.epcis.events``: the same eventIDs, EPC URNs, locations, lot and expiry). A captured event keeps
what it was sent with: its eventID, eventTimeZoneOffset, readPoint, bizLocation, bizTransactionList, sourceList and
destinationList, and an errorDeclaration received for it.

Filters (the binding's names; a list is ``a|b`` or the parameter repeated): ``eventType``, ``GE_eventTime``,
``LT_eventTime``, ``EQ_action``, ``EQ_bizStep``, ``EQ_disposition``, ``MATCH_epc`` (epcList / childEPCs),
``MATCH_parentID``, ``MATCH_anyEPC`` (either). An EPC is a URN or Digital Link of an SGTIN or SSCC, or an EPC pattern
(``urn:epc:idpat:sgtin:0614141.107346.*``, ``urn:epc:idpat:sgtin:0614141.*.*``, ``urn:epc:idpat:sscc:0614141.*``).
Other query parameters of the binding are refused (400) rather than ignored: an ignored filter returns events the
caller did not ask for.

Pagination: events come in the order their reports were applied (report id), each report's in EPCIS out's order;
``perPage`` (default 30, at most 1000) events per page, and a signed ``nextPageToken`` — the position after the
last event given, tied to the filters — while more remain.

Set-based: reports are chosen by one query (their time, kind and — through an EXISTS on their pack events — EPCs),
a page's events are read by one query over those reports; what is looked up per order, batch, product and pool is
cached by the event source. A report's events are matched exactly against the filters once they are built.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.core import signing
from django.db.models import Exists, OuterRef, Q, QuerySet

from audit.exceptions import DomainError
from masterdata import gs1
from serialization import cbv
from serialization.epcis.capture import EpcReader, PackRef
from serialization.epcis.events import AGGREGATION_EVENT, OBJECT_EVENT, EpcisEvent, EpcisScope, EventSource
from serialization.epcis.writer import JSONLD_CONTEXT, format_time
from serialization.models import LineReport, PackagingOrder, PackEvent
from serialization.selectors import scope_orders

Kind = LineReport.Kind

DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 1000
MAX_MATCH_VALUES = 100
REPORTS_PER_READ = 200
LIST_PARAMETERS = (
    "eventType",
    "EQ_action",
    "EQ_bizStep",
    "EQ_disposition",
    "MATCH_epc",
    "MATCH_parentID",
    "MATCH_anyEPC",
)
TIME_PARAMETERS = ("GE_eventTime", "LT_eventTime")
PAGE_PARAMETERS = ("perPage", "nextPageToken")
# "format" is DRF's content negotiation override, not a filter.
KNOWN_PARAMETERS = frozenset((*LIST_PARAMETERS, *TIME_PARAMETERS, *PAGE_PARAMETERS, "format"))
_PAGE_SIGNING_NAMESPACE = "serialization.epcis.query.next-page"  # signing salt: not a secret

# Which report kinds can produce an event of each type, action, bizStep and disposition (a decommissioning report
# also unpacks the units it takes out of their cases: an AggregationEvent DELETE ``unpacking``; a commissioning
# report that names parents also packs: an AggregationEvent ADD ``packing``).
_KINDS_BY_TYPE = {
    OBJECT_EVENT: {Kind.COMMISSIONING, Kind.SHIPPING, Kind.DECOMMISSIONING},
    AGGREGATION_EVENT: {Kind.AGGREGATION, Kind.UNPACKING, Kind.DECOMMISSIONING, Kind.COMMISSIONING},
}
_KINDS_BY_ACTION = {
    "ADD": {Kind.COMMISSIONING, Kind.AGGREGATION},
    "DELETE": {Kind.UNPACKING, Kind.DECOMMISSIONING},
    "OBSERVE": {Kind.SHIPPING, Kind.DECOMMISSIONING},
}
_KINDS_BY_STEP = {
    cbv.COMMISSIONED.biz_step: {Kind.COMMISSIONING},
    cbv.PACKED.biz_step: {Kind.AGGREGATION, Kind.COMMISSIONING},
    cbv.UNPACKED.biz_step: {Kind.UNPACKING, Kind.DECOMMISSIONING},
    cbv.SHIPPED.biz_step: {Kind.SHIPPING},
    **{step.biz_step: {Kind.DECOMMISSIONING} for step in cbv.DECOMMISSION.values()},
}
_KINDS_BY_DISPOSITION: dict[str, set[str]] = {
    cbv.COMMISSIONED.disposition: {Kind.COMMISSIONING},
    cbv.PACKED.disposition: {Kind.AGGREGATION, Kind.COMMISSIONING},
    cbv.SHIPPED.disposition: {Kind.SHIPPING},
}
for _step in cbv.DECOMMISSION.values():
    _KINDS_BY_DISPOSITION.setdefault(_step.disposition, set()).add(Kind.DECOMMISSIONING)
# The event of a captured report that is the event it was captured from (the others are consequences: the units a
# decommissioning took out of their case, the containers of a commissioning that also named units).
_MAIN_STEP = {
    Kind.COMMISSIONING: cbv.COMMISSIONED.biz_step,
    Kind.AGGREGATION: cbv.PACKED.biz_step,
    Kind.UNPACKING: cbv.UNPACKED.biz_step,
    Kind.SHIPPING: cbv.SHIPPED.biz_step,
}
_ID_PATTERN = re.compile(r"^urn:epc:idpat:(sgtin|sscc):(.+)$")


class InvalidQuery(DomainError):
    code = "invalid_query"


# --- parameters -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpcMatcher:
    """One value of a MATCH_ parameter: an EPC (``pack``), or a pattern (a GTIN, or a company prefix of units or
    SSCCs)."""

    pack: PackRef | None = None
    gtin: str = ""
    unit_prefix: str = ""
    sscc_prefix: str = ""

    def matches(self, pack: PackRef | None) -> bool:
        if pack is None:
            return False
        if self.pack is not None:
            return pack == self.pack
        if self.gtin:
            return pack.product_code == self.gtin
        if self.unit_prefix:
            return not pack.is_container and pack.product_code[1 : 1 + len(self.unit_prefix)] == self.unit_prefix
        return pack.is_container and pack.serial[1 : 1 + len(self.sscc_prefix)] == self.sscc_prefix

    def pack_filter(self, prefix: str) -> Q:
        """The packs this value matches, as a filter on PackEvent through ``prefix`` (``pack__`` or ``parent__``)."""
        if self.pack is not None:
            return Q(**{f"{prefix}product_code": self.pack.product_code, f"{prefix}serial": self.pack.serial})
        if self.gtin:
            return Q(**{f"{prefix}product_code": self.gtin})
        if self.unit_prefix:
            return ~Q(**{f"{prefix}product_code": ""}) & Q(
                **{f"{prefix}product_code__regex": f"^.{re.escape(self.unit_prefix)}"}
            )
        return Q(**{f"{prefix}product_code": "", f"{prefix}serial__regex": f"^.{re.escape(self.sscc_prefix)}"})


@dataclass(frozen=True)
class EventQuery:
    """A validated events query."""

    event_types: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    biz_steps: frozenset[str] = frozenset()
    dispositions: frozenset[str] = frozenset()
    match_epc: tuple[EpcMatcher, ...] = ()
    match_parent: tuple[EpcMatcher, ...] = ()
    match_any: tuple[EpcMatcher, ...] = ()
    from_time: datetime | None = None
    until_time: datetime | None = None
    per_page: int = DEFAULT_PER_PAGE
    after: tuple[int, int] | None = None  # (report id, events of it already given)
    digest: str = ""  # what the filters were, for the page token
    filters: dict = field(default_factory=dict)


def parse_query(params: Mapping[str, list[str]]) -> EventQuery:
    """An EventQuery from the request's parameters (name → values); 400 naming the parameter and the fix."""
    unknown = sorted(set(params) - KNOWN_PARAMETERS)
    if unknown:
        raise InvalidQuery(
            f"Query parameter {', '.join(unknown)} is not supported here; the events query takes "
            f"{', '.join((*LIST_PARAMETERS, *TIME_PARAMETERS, *PAGE_PARAMETERS))}.",
            field=unknown[0],
        )
    lists = {name: _list(params.get(name, [])) for name in LIST_PARAMETERS}
    filters = {name: values for name, values in lists.items() if values}
    for name in TIME_PARAMETERS:
        if params.get(name):
            filters[name] = params[name][-1]
    digest = hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]
    return EventQuery(
        event_types=frozenset(lists["eventType"]),
        actions=frozenset(_action(v) for v in lists["EQ_action"]),
        biz_steps=frozenset(
            _cbv_value(v, "urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-") for v in lists["EQ_bizStep"]
        ),
        dispositions=frozenset(
            _cbv_value(v, "urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-") for v in lists["EQ_disposition"]
        ),
        match_epc=_matchers("MATCH_epc", lists["MATCH_epc"]),
        match_parent=_matchers("MATCH_parentID", lists["MATCH_parentID"]),
        match_any=_matchers("MATCH_anyEPC", lists["MATCH_anyEPC"]),
        from_time=_time("GE_eventTime", filters.get("GE_eventTime")),
        until_time=_time("LT_eventTime", filters.get("LT_eventTime")),
        per_page=_per_page(params.get("perPage")),
        after=_position(params.get("nextPageToken"), digest),
        digest=digest,
        filters=filters,
    )


def _list(values: list[str]) -> list[str]:
    """A pipeDelimited list parameter (``a|b``), given once or repeated."""
    return [item.strip() for value in values for item in value.split("|") if item.strip()]


def _action(value: str) -> str:
    if value not in ("ADD", "OBSERVE", "DELETE"):
        raise InvalidQuery(f"EQ_action {value!r} is no EPCIS action; use ADD, OBSERVE or DELETE.", field="EQ_action")
    return value


def _cbv_value(value: str, *prefixes: str) -> str:
    for prefix in prefixes:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


def _matchers(name: str, values: list[str]) -> tuple[EpcMatcher, ...]:
    if len(values) > MAX_MATCH_VALUES:
        raise InvalidQuery(f"{name} takes at most {MAX_MATCH_VALUES} values; it got {len(values)}.", field=name)
    reader = EpcReader()
    matchers = []
    for value in values:
        pattern = _ID_PATTERN.match(value)
        if pattern is not None:
            matchers.append(_pattern(name, value, pattern.group(1), pattern.group(2)))
            continue
        pack = reader.read(value)
        if pack is None:
            raise InvalidQuery(
                f"{name} value {value!r} is no EPC this system tracks ({reader.problem}); give an SGTIN or SSCC as URN "
                "or Digital Link, or a pattern such as urn:epc:idpat:sgtin:0614141.107346.*.",
                field=name,
            )
        matchers.append(EpcMatcher(pack=pack))
    return tuple(matchers)


def _pattern(name: str, value: str, scheme: str, body: str) -> EpcMatcher:
    parts = body.split(".")
    try:
        if scheme == "sgtin" and len(parts) == 3 and parts[2] == "*":
            if parts[1] == "*" and parts[0].isdigit():
                return EpcMatcher(unit_prefix=parts[0])
            return EpcMatcher(gtin=gs1.parse_sgtin_urn(f"urn:epc:id:sgtin:{parts[0]}.{parts[1]}.0")[0])
        if scheme == "sscc" and len(parts) == 2 and parts[1] == "*" and parts[0].isdigit():
            return EpcMatcher(sscc_prefix=parts[0])
    except gs1.GS1Error as exc:
        raise InvalidQuery(f"{name} pattern {value!r}: {exc}", field=name) from None
    raise InvalidQuery(
        f"{name} pattern {value!r} is not supported; use urn:epc:idpat:sgtin:<prefix>.<item>.*, "
        "urn:epc:idpat:sgtin:<prefix>.*.* or urn:epc:idpat:sscc:<prefix>.*.",
        field=name,
    )


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))  # an unencoded "+" arrives as a space
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidQuery(
            f"{name} {value!r} is no time with a zone; write it like 2025-03-03T08:00:00Z or "
            "2025-03-03T09:00:00%2B01:00.",
            field=name,
        )
    return parsed


def _per_page(values: list[str] | None) -> int:
    if not values:
        return DEFAULT_PER_PAGE
    value = values[-1]
    if not value.isdigit() or int(value) < 1:
        raise InvalidQuery(f"perPage {value!r} is no positive whole number.", field="perPage")
    return min(int(value), MAX_PER_PAGE)


def _position(values: list[str] | None, digest: str) -> tuple[int, int] | None:
    if not values:
        return None
    try:
        token = signing.loads(values[-1], salt=_PAGE_SIGNING_NAMESPACE)
        position = (int(token["r"]), int(token["o"]))
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise InvalidQuery(
            "nextPageToken is not one this server gave out; follow the Link header of the previous page.",
            field="nextPageToken",
        ) from None
    if token.get("q") != digest:
        raise InvalidQuery(
            "nextPageToken belongs to a query with other filters; repeat the query's filters with it.",
            field="nextPageToken",
        )
    return position


def next_page_token(query: EventQuery, position: tuple[int, int]) -> str:
    return signing.dumps({"r": position[0], "o": position[1], "q": query.digest}, salt=_PAGE_SIGNING_NAMESPACE)


# --- the query ------------------------------------------------------------------------------------------------------


@dataclass
class EventPage:
    """One page of the answer: the EPCIS query document, how many EPCs it names, and the next page's token."""

    document: dict
    events: int
    epcs: int
    next_token: str | None


class _ReportEvents(EventSource):
    """EPCIS out's event source over chosen line reports (a page of the query) instead of a batch, order or shipment,
    remembering which report each event comes from.

    EventSource is made for a scope; here its rows, report rows and report times are set to the page's (the reports
    are already read, and a report's time is its ``occurred_at``), so the page costs EPCIS out's one rows query and
    its cached look-ups. test_epcis_query pins the result against EPCIS out's own documents (same eventIDs)."""

    def __init__(self, reports: list[LineReport]) -> None:
        super().__init__(EpcisScope(order_id=0))  # a scope with no pack: the base class's one count finds nothing
        self._queryset = PackEvent.objects.filter(report_id__in=[r.pk for r in reports]).filter(
            ~Q(action=PackEvent.Action.SHIPPED) | Q(parent__isnull=True)
        )
        self._reports.update((report.pk, report) for report in reports)
        self._times.update((report.pk, report.occurred_at) for report in reports)
        self.report_id: int | None = None

    def _header(self, row: tuple):
        self.report_id = row[0]  # the first column of EPCIS out's rows is the report's id
        return super()._header(row)


def query_events(*, user, query: EventQuery) -> EventPage:
    """A page of the events ``user`` may see that match ``query``, as an EPCIS 2.0 query document."""
    reports = _reports(user, query)
    events: list[dict] = []
    epcs = 0
    last: tuple[int, int] | None = None
    more = False
    after = Q(pk__gte=query.after[0]) if query.after is not None else Q()
    while not more and after is not None:
        chosen = list(reports.filter(after)[:REPORTS_PER_READ])
        # A short read is the last one: no query just to find nothing more.
        after = Q(pk__gt=chosen[-1].pk) if len(chosen) == REPORTS_PER_READ else None
        by_id = {report.pk: report for report in chosen}
        source = _ReportEvents(chosen)
        ordinal, current, main_given = 0, None, False
        stream = source.events()
        try:
            for event in stream:
                if source.report_id != current:
                    current, ordinal, main_given = source.report_id, 0, False
                ordinal += 1
                main = not main_given and _is_main(by_id[current], event.header)
                main_given = main_given or main
                if query.after is not None and (current, ordinal) <= query.after:
                    continue  # given on an earlier page (its rows are skipped unread)
                rendered = _matching(query, by_id[current], event, main=main)
                if rendered is None:
                    continue
                if len(events) == query.per_page:
                    more = True
                    break
                events.append(rendered)
                epcs += len(rendered.get("epcList", rendered.get("childEPCs", [])))
                last = (current, ordinal)
        finally:
            stream.close()  # a page that ends early closes the server-side cursor now, not when collected
    document = {
        "@context": [JSONLD_CONTEXT],
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": format_time(datetime.now(UTC)),
        "epcisBody": {"queryResults": {"queryName": "SimpleEventQuery", "resultsBody": {"eventList": events}}},
    }
    token = next_page_token(query, last) if more and last is not None else None
    return EventPage(document=document, events=len(events), epcs=epcs, next_token=token)


def _reports(user, query: EventQuery) -> QuerySet[LineReport]:
    """The applied reports on orders ``user`` may see that can hold a matching event, in the order applied."""
    reports = LineReport.objects.filter(
        status=LineReport.Status.APPLIED, order__in=scope_orders(PackagingOrder.objects.all(), user=user)
    )
    kinds = set(Kind.values)
    for values, table in (
        (query.event_types, _KINDS_BY_TYPE),
        (query.actions, _KINDS_BY_ACTION),
        (query.biz_steps, _KINDS_BY_STEP),
        (query.dispositions, _KINDS_BY_DISPOSITION),
    ):
        if values:
            kinds &= set().union(*(table.get(value, set()) for value in values))
    if kinds != set(Kind.values):
        reports = reports.filter(kind__in=sorted(kinds))
    if query.from_time is not None:
        reports = reports.filter(occurred_at__gte=query.from_time)
    if query.until_time is not None:
        reports = reports.filter(occurred_at__lt=query.until_time)
    for matchers, prefixes in (
        (query.match_epc, ("pack__",)),
        (query.match_parent, ("parent__",)),
        (query.match_any, ("pack__", "parent__")),
    ):
        if matchers:
            condition = Q()
            for matcher in matchers:
                for prefix in prefixes:
                    condition |= matcher.pack_filter(prefix)
            reports = reports.filter(Exists(PackEvent.objects.filter(condition, report_id=OuterRef("pk"))))
    return reports.order_by("pk")


def _matching(query: EventQuery, report: LineReport, event: EpcisEvent, *, main: bool) -> dict | None:
    """The event as EPCIS JSON if it matches ``query`` exactly, else None (its EPCs are read only when needed)."""
    header = event.header
    if query.event_types and header.event_type not in query.event_types:
        return None
    if query.actions and header.action not in query.actions:
        return None
    if query.biz_steps and header.biz_step not in query.biz_steps:
        return None
    if query.dispositions and header.disposition not in query.dispositions:
        return None
    epcs = list(event.epcs)
    if query.match_epc or query.match_parent or query.match_any:
        reader = EpcReader()
        packs = [reader.read(epc) for epc in epcs]
        parent = reader.read(header.parent_epc) if header.parent_epc else None
        if query.match_epc and not _any_match(query.match_epc, packs):
            return None
        if query.match_parent and not _any_match(query.match_parent, [parent]):
            return None
        if query.match_any and not _any_match(query.match_any, [*packs, parent]):
            return None
    return _event_json(report, event, epcs, main=main)


def _any_match(matchers: tuple[EpcMatcher, ...], packs: list[PackRef | None]) -> bool:
    return any(matcher.matches(pack) for pack in packs for matcher in matchers)


def _is_main(report: LineReport, header) -> bool:
    """Whether this event can be the one a captured report was captured from: of the captured step (for a
    decommissioning: its ObjectEvent, not the unpacking it caused). The caller takes the report's first such event."""
    if report.source != LineReport.Source.EPCIS or not report.event_id:
        return False
    step = _MAIN_STEP.get(report.kind)
    if step is None:
        return header.event_type == OBJECT_EVENT
    return header.biz_step == step


def _event_json(report: LineReport, event: EpcisEvent, epcs: list[str], *, main: bool) -> dict:
    header = event.header
    captured = (report.event or {}) if main else {}
    data: dict = {
        "type": header.event_type,
        "eventTime": format_time(header.event_time),
        "eventTimeZoneOffset": captured.get("eventTimeZoneOffset") or "+00:00",
        "recordTime": format_time(report.received_at),
        "eventID": report.event_id if main else header.event_id,
    }
    if main and report.error_declaration:
        data["errorDeclaration"] = {k: v for k, v in report.error_declaration.items() if v is not None}
    if header.parent_epc is not None:
        data["parentID"] = header.parent_epc
    data["childEPCs" if header.event_type == AGGREGATION_EVENT else "epcList"] = epcs
    data["action"] = header.action
    data["bizStep"] = header.biz_step
    if header.disposition is not None:
        data["disposition"] = header.disposition
    read_point = (captured.get("readPoint") or {}).get("id") or header.read_point
    biz_location = (captured.get("bizLocation") or {}).get("id") or header.biz_location
    if read_point:
        data["readPoint"] = {"id": read_point}
    if biz_location:
        data["bizLocation"] = {"id": biz_location}
    for key in ("bizTransactionList", "sourceList", "destinationList"):
        if captured.get(key):
            data[key] = captured[key]
    if header.lot is not None:
        data["ilmd"] = {"cbvmda:lotNumber": header.lot, "cbvmda:itemExpirationDate": header.expiry.isoformat()}
    return data
