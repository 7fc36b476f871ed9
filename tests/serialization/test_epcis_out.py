"""EPCIS out: documents of a batch, an order and a shipment, made from production data created through the real
services (batch, order, serial request, line reports), checked event by event in all three syntaxes and validated
against the official JSON schema / XSDs; the validator itself; the export job, its API, downloads and their log."""

import datetime as dt
import hashlib
import io
import itertools
import json

import pytest
from django.urls import reverse
from lxml import etree

from audit.models import AccessEvent, ExportBlock
from masterdata import gs1
from masterdata.permissions import grant_company_object_permissions
from serialization import cbv
from serialization.epcis import EpcisError
from serialization.epcis.events import EpcisScope, EventSource
from serialization.epcis.validation import validate_epcis_document
from serialization.epcis.writer import write_epcis_document
from serialization.models import Allocation, EpcisExportJob, LineReport, PackagingOrder
from serialization.selectors import get_batch
from serialization.services import allocate_serials
from serialization.services.epcis_exports import create_epcis_export, list_epcis_exports
from serialization.services.line_reports import apply_line_report
from serialization.services.materialise import iter_serial_chunks
from tests.factories import make_company, make_location, make_membership, make_user
from tests.serialization.test_batches import Plant

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 3, 3, 8, 0, tzinfo=dt.UTC)
FORMATS = [("2.0", "json"), ("2.0", "xml"), ("1.2", "xml")]
_numbers = itertools.count(1)


def serials_of(allocation: Allocation) -> list[str]:
    return [value.decode() for chunk in iter_serial_chunks(allocation) for value in chunk.tolist()]


class Production:
    """A batch (expiry 270600: day 00, the end of June 2027) with one order, produced through the real services:

    R1 commissioning   units 0–23, cases 0–2 (level 2), the pallet (level 3)
    R2 aggregation     case 0 ← units 0–9, case 1 ← units 10–19, case 2 ← units 20–21
    R3 decommissioning unit 22 destroyed, unit 23 line reject (both loose), unit 5 sample (taken out of case 0)
    R4 aggregation     pallet ← cases 0 and 1
    R5 unpacking       case 2 (units 20 and 21 come out)
    R6 shipping        the pallet and unit 20
    """

    def __init__(self) -> None:
        self.plant = Plant(markets=("US",), fill=200, sscc_fill=40)
        self.product = self.plant.product
        self.code = self.product.product_code
        self.prefix_length = self.product.company_prefix_length
        self.batch = self.plant.batch(expiry="270600")
        self.order = self.plant.order(self.batch, planned_quantity=100)
        granted = self.plant.serials(self.order, 30, sscc={2: 3, 3: 1})
        self.units = serials_of(granted.units)
        self.cases = serials_of(granted.ssccs[2])
        self.pallet = serials_of(granted.ssccs[3])[0]
        self.line_user = make_user(roles=["Line system"])
        self.reports: dict[str, LineReport] = {}
        self.run()

    def report(self, name: str, kind: str, lines: list, *, order: PackagingOrder | None = None) -> LineReport:
        minutes = len(self.reports) * 10
        report = apply_line_report(
            report_id=f"{name}-{next(_numbers)}",
            kind=kind,
            order=order or self.order,
            lines=lines,
            actor=self.line_user,
            occurred_at=T0 + dt.timedelta(minutes=minutes),
        )
        assert report.status == LineReport.Status.APPLIED, report.result
        self.reports[name] = report
        return report

    def unit(self, i: int) -> dict:
        return {"product_code": self.code, "serial": self.units[i]}

    def run(self) -> None:
        self.report(
            "R1",
            "commissioning",
            [self.unit(i) for i in range(24)]
            + [{"sscc": sscc, "level": 2} for sscc in self.cases]
            + [{"sscc": self.pallet, "level": 3}],
        )
        self.report(
            "R2",
            "aggregation",
            [
                {"parent_sscc": self.cases[0], "children": [self.unit(i) for i in range(10)]},
                {"parent_sscc": self.cases[1], "children": [self.unit(i) for i in range(10, 20)]},
                {"parent_sscc": self.cases[2], "children": [self.unit(20), self.unit(21)]},
            ],
        )
        self.report(
            "R3",
            "decommissioning",
            [
                {**self.unit(22), "reason": "destroyed"},
                {**self.unit(23), "reason": "line_reject"},
                {**self.unit(5), "reason": "sample"},
            ],
        )
        self.report(
            "R4",
            "aggregation",
            [{"parent_sscc": self.pallet, "children": [{"sscc": self.cases[0]}, {"sscc": self.cases[1]}]}],
        )
        self.report("R5", "unpacking", [{"parent_sscc": self.cases[2]}])
        self.report("R6", "shipping", [{"sscc": self.pallet}, self.unit(20)])

    # --- the EPCs, as the standard writes them ---------------------------------------------------------------

    def sgtin(self, i: int) -> str:
        return gs1.sgtin_urn(self.code, self.units[i], self.prefix_length)

    def sgtins(self, indices) -> list[str]:
        return [self.sgtin(i) for i in indices]

    def sscc(self, value: str) -> str:
        return gs1.sscc_urn(value, len(self.plant.sscc_pool.sscc_prefix))

    @property
    def read_point(self) -> str:
        return gs1.sgln_urn(self.plant.line.gln, self.prefix_length, "0")

    @property
    def biz_location(self) -> str:
        return gs1.sgln_urn(self.plant.site.gln, self.prefix_length, "0")

    def time(self, name: str) -> str:
        minutes = list(self.reports).index(name) * 10
        return (T0 + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@pytest.fixture
def production():
    return Production()


def document(scope: EpcisScope, version="2.0", syntax="json", **kwargs) -> bytes:
    out = io.BytesIO()
    write_epcis_document(out, scope=scope, version=version, syntax=syntax, **kwargs)
    return out.getvalue()


# --- reading documents back: the same summary from every syntax ---------------------------------------------------


def summarise_json(content: bytes) -> list[dict]:
    doc = json.loads(content)
    assert doc["@context"] == ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"]
    assert (doc["type"], doc["schemaVersion"]) == ("EPCISDocument", "2.0")
    events = []
    for event in doc["epcisBody"]["eventList"]:
        events.append(
            {
                "type": event["type"],
                "time": event["eventTime"],
                "offset": event["eventTimeZoneOffset"],
                "id": event["eventID"],
                "action": event["action"],
                "bizStep": event["bizStep"],
                "disposition": event.get("disposition"),
                "parent": event.get("parentID"),
                "epcs": event.get("childEPCs") if event["type"] == "AggregationEvent" else event["epcList"],
                "readPoint": event.get("readPoint", {}).get("id"),
                "bizLocation": event.get("bizLocation", {}).get("id"),
                "ilmd": event.get("ilmd"),
            }
        )
    return events


def summarise_xml(content: bytes, version: str) -> list[dict]:
    root = etree.fromstring(content)
    namespace = {"1.2": "urn:epcglobal:epcis:xsd:1", "2.0": "urn:epcglobal:epcis:xsd:2"}[version]
    assert root.tag == f"{{{namespace}}}EPCISDocument"
    assert root.get("schemaVersion") == version
    mda = "{urn:epcglobal:cbv:mda}"
    events = []
    for event in root.find("EPCISBody/EventList"):
        aggregation = event.tag == "AggregationEvent"
        ilmd = event.find("ilmd" if version == "2.0" else "extension/ilmd")
        events.append(
            {
                "type": event.tag,
                "time": event.findtext("eventTime"),
                "offset": event.findtext("eventTimeZoneOffset"),
                "id": event.findtext("eventID" if version == "2.0" else "baseExtension/eventID"),
                "action": event.findtext("action"),
                "bizStep": event.findtext("bizStep").removeprefix("urn:epcglobal:cbv:bizstep:"),
                "disposition": (event.findtext("disposition") or "").removeprefix("urn:epcglobal:cbv:disp:") or None,
                "parent": event.findtext("parentID"),
                "epcs": [epc.text for epc in event.find("childEPCs" if aggregation else "epcList")],
                "readPoint": event.findtext("readPoint/id"),
                "bizLocation": event.findtext("bizLocation/id"),
                "ilmd": None
                if ilmd is None
                else {
                    "cbvmda:lotNumber": ilmd.findtext(f"{mda}lotNumber"),
                    "cbvmda:itemExpirationDate": ilmd.findtext(f"{mda}itemExpirationDate"),
                },
            }
        )
    return events


def summarise(content: bytes, version: str, syntax: str) -> list[dict]:
    return summarise_json(content) if syntax == "json" else summarise_xml(content, version)


def steps(events: list[dict]) -> list[tuple]:
    """(type, action, bizStep, disposition, parent, epcs) of each event: what the mapping decides."""
    return [(e["type"], e["action"], e["bizStep"], e["disposition"], e["parent"], e["epcs"]) for e in events]


def expected_batch_steps(p: Production) -> list[tuple]:
    case0, case1, case2, pallet = (*(p.sscc(c) for c in p.cases), p.sscc(p.pallet))
    return [
        ("ObjectEvent", "ADD", "commissioning", "active", None, p.sgtins(range(24))),
        ("ObjectEvent", "ADD", "commissioning", "active", None, [case0, case1, case2, pallet]),
        ("AggregationEvent", "ADD", "packing", "in_progress", case0, p.sgtins(range(10))),
        ("AggregationEvent", "ADD", "packing", "in_progress", case1, p.sgtins(range(10, 20))),
        ("AggregationEvent", "ADD", "packing", "in_progress", case2, p.sgtins([20, 21])),
        # A decommissioned unit leaves its case first, then is decommissioned, each reason its own event.
        ("AggregationEvent", "DELETE", "unpacking", None, case0, p.sgtins([5])),
        ("ObjectEvent", "DELETE", "destroying", "destroyed", None, p.sgtins([22])),
        ("ObjectEvent", "DELETE", "decommissioning", "inactive", None, p.sgtins([23])),
        ("ObjectEvent", "OBSERVE", "sampling", "non_sellable_other", None, p.sgtins([5])),
        ("AggregationEvent", "ADD", "packing", "in_progress", pallet, [case0, case1]),
        ("AggregationEvent", "DELETE", "unpacking", None, case2, p.sgtins([20, 21])),
        # The shipment names the top of each shipped tree: what is inside ships with it.
        ("ObjectEvent", "OBSERVE", "shipping", "in_transit", None, [p.sgtin(20), pallet]),
    ]


# --- the mapping, in every syntax ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "syntax"), FORMATS)
def test_batch_document_maps_every_report_and_validates(production, version, syntax):
    p = production
    content = document(EpcisScope(batch_id=p.batch.pk), version, syntax)

    assert validate_epcis_document(content, version=version, syntax=syntax) == []
    events = summarise(content, version, syntax)
    assert steps(events) == expected_batch_steps(p)
    # Lot and expiry in ilmd on the units' commissioning only; expiry 270600 (day 00) is the end of June 2027.
    assert [e["ilmd"] for e in events] == [
        {"cbvmda:lotNumber": p.batch.lot, "cbvmda:itemExpirationDate": "2027-06-30"},
        *[None] * 11,
    ]
    assert {(e["readPoint"], e["bizLocation"]) for e in events} == {(p.read_point, p.biz_location)}
    assert p.read_point.startswith("urn:epc:id:sgln:") and p.read_point != p.biz_location
    assert [e["time"] for e in events] == [
        p.time(name) for name in ["R1"] * 2 + ["R2"] * 3 + ["R3"] * 4 + ["R4", "R5", "R6"]
    ]
    assert {e["offset"] for e in events} == {"+00:00"}
    assert len({e["id"] for e in events}) == 12 and all(e["id"].startswith("urn:uuid:") for e in events)


def test_units_are_sgtin_urns_with_the_company_prefix_and_containers_sscc_urns(production):
    p = production
    events = summarise_json(document(EpcisScope(batch_id=p.batch.pk)))
    prefix = p.code[1 : 1 + p.prefix_length]
    item = p.code[0] + p.code[1 + p.prefix_length : 13]
    assert events[0]["epcs"][0] == f"urn:epc:id:sgtin:{prefix}.{item}.{p.units[0]}"
    sscc_prefix = p.plant.sscc_pool.sscc_prefix
    assert events[1]["epcs"][-1] == f"urn:epc:id:sscc:{sscc_prefix}.{p.pallet[0]}{p.pallet[1 + len(sscc_prefix) : 17]}"


def test_every_syntax_says_the_same_and_event_ids_are_stable(production):
    scope = EpcisScope(batch_id=production.batch.pk)
    summaries = [summarise(document(scope, v, s), v, s) for v, s in FORMATS]
    assert summaries[0] == summaries[1] == summaries[2]
    assert summarise_json(document(scope)) == summaries[0]  # exported again: the same eventIDs


@pytest.mark.parametrize(("version", "syntax"), FORMATS)
def test_shipment_document_holds_the_shipped_trees_and_their_history_only(production, version, syntax):
    p = production
    content = document(EpcisScope(shipping_report_id=p.reports["R6"].pk), version, syntax)

    assert validate_epcis_document(content, version=version, syntax=syntax) == []
    case0, case1, case2, pallet = (*(p.sscc(c) for c in p.cases), p.sscc(p.pallet))
    shipped_units = [i for i in range(21) if i != 5]  # unit 5 left case 0 as a sample; unit 20 ships loose
    assert steps(summarise(content, version, syntax)) == [
        ("ObjectEvent", "ADD", "commissioning", "active", None, p.sgtins(shipped_units)),
        ("ObjectEvent", "ADD", "commissioning", "active", None, [case0, case1, pallet]),
        ("AggregationEvent", "ADD", "packing", "in_progress", case0, p.sgtins([0, 1, 2, 3, 4, 6, 7, 8, 9])),
        ("AggregationEvent", "ADD", "packing", "in_progress", case1, p.sgtins(range(10, 20))),
        ("AggregationEvent", "ADD", "packing", "in_progress", case2, p.sgtins([20])),
        ("AggregationEvent", "ADD", "packing", "in_progress", pallet, [case0, case1]),
        ("AggregationEvent", "DELETE", "unpacking", None, case2, p.sgtins([20])),
        ("ObjectEvent", "OBSERVE", "shipping", "in_transit", None, [p.sgtin(20), pallet]),
    ]


def test_order_document_leaves_out_the_batchs_other_orders(production):
    p = production
    other = p.plant.order(p.batch, planned_quantity=10)
    units = serials_of(p.plant.serials(other, 2).units)
    p.report("R7", "commissioning", [{"product_code": p.code, "serial": s} for s in units], order=other)

    order_doc = summarise_json(document(EpcisScope(order_id=p.order.pk)))
    other_doc = summarise_json(document(EpcisScope(order_id=other.pk)))
    batch_doc = summarise_json(document(EpcisScope(batch_id=p.batch.pk)))

    assert steps(order_doc) == expected_batch_steps(p)
    new_units = [gs1.sgtin_urn(p.code, s, p.prefix_length) for s in units]
    assert steps(other_doc) == [("ObjectEvent", "ADD", "commissioning", "active", None, new_units)]
    assert steps(batch_doc) == [*expected_batch_steps(p), *steps(other_doc)]


def test_a_cmo_gets_only_what_its_own_lines_reported(production):
    p = production
    cmo = make_company(is_mah=False, is_cmo=True)
    cmo_order = PackagingOrder.objects.create(
        number=f"PO-CMO-{next(_numbers)}",
        batch=p.batch,
        line=make_location(company=cmo, kind="line"),
        planned_quantity=10,
    )
    allocation = allocate_serials(
        pool=p.plant.unit_pool,
        quantity=3,
        actor=p.plant.actor,
        request_id=f"cmo-{next(_numbers)}",
        purpose=Allocation.Purpose.PACKAGING_ORDER,
        reference=cmo_order.number,
    )
    Allocation.objects.filter(pk=allocation.pk).update(packaging_order=cmo_order)
    for shared in (p.batch, cmo_order):  # what create_packaging_order grants when an order goes to a CMO's line
        grant_company_object_permissions(company=cmo, obj=shared)
    cmo_units = serials_of(allocation)
    p.report("CMO", "commissioning", [{"product_code": p.code, "serial": s} for s in cmo_units], order=cmo_order)
    cmo_user = make_user()
    make_membership(user=cmo_user, company=cmo)
    mah_user = make_user()
    make_membership(user=mah_user, company=p.plant.owner)

    scope = EpcisScope(batch_id=p.batch.pk)
    as_cmo = summarise_json(document(scope, visible_to=cmo_user))
    as_mah = summarise_json(document(scope, visible_to=mah_user))

    assert [e["epcs"] for e in as_cmo] == [[gs1.sgtin_urn(p.code, s, p.prefix_length) for s in cmo_units]]
    assert len(as_mah) == 13
    assert EventSource(scope, visible_to=cmo_user).total_epcs == 3


def test_event_source_counts_the_epcs_it_writes(production):
    p = production
    source = EventSource(EpcisScope(batch_id=p.batch.pk))
    written = []
    events = write_epcis_document(
        io.BytesIO(), scope=source.scope, source=source, progress=written.append, version="1.2", syntax="xml"
    )
    # 24 + 4 commissioned, 22 packed, 1 + 2 unpacked, 3 decommissioned, 2 onto the pallet, 2 shipped roots.
    assert (events, source.total_epcs, written[-1]) == (12, 60, 60)


def test_the_document_is_written_while_the_rows_are_read(production, monkeypatch):
    from serialization.epcis import writer

    monkeypatch.setattr(writer, "EPC_BLOCK", 4)
    monkeypatch.setattr(writer, "FLUSH_BYTES", 256)
    writes: list[int] = []

    class Sink:
        def write(self, data: bytes) -> int:
            writes.append(len(data))
            return len(data)

    write_epcis_document(Sink(), scope=EpcisScope(batch_id=production.batch.pk), version="2.0", syntax="json")
    # Many small writes, none holding the document: the output never waits for the whole batch.
    assert len(writes) > 10
    assert max(writes) < 1_000


# --- refusals -----------------------------------------------------------------------------------------------------


def test_epcis_1_2_json_is_refused_naming_the_syntax(production):
    with pytest.raises(EpcisError) as caught:
        document(EpcisScope(batch_id=production.batch.pk), "1.2", "json")
    assert caught.value.field == "syntax"
    assert caught.value.message == (
        'EPCIS 1.2 has no JSON binding: ask for syntax "xml", or for version "2.0" to get JSON-LD.'
    )


@pytest.mark.parametrize(
    ("scope", "field", "message"),
    [
        (EpcisScope(), "scope", "Name exactly one of a batch, a packaging order or a shipment."),
        (EpcisScope(batch_id=1, order_id=1), "scope", "Name exactly one of a batch, a packaging order or a shipment."),
    ],
)
def test_a_scope_naming_nothing_or_two_things_is_refused(scope, field, message):
    with pytest.raises(EpcisError) as caught:
        document(scope)
    assert (caught.value.field, caught.value.message) == (field, message)


def test_a_shipment_must_be_a_shipping_report(production):
    report = production.reports["R2"]
    with pytest.raises(EpcisError) as caught:
        document(EpcisScope(shipping_report_id=report.pk))
    assert caught.value.field == "shipment"
    assert caught.value.message == (
        f"Line report {report.report_id} is an aggregation report; a shipment is an applied shipping report."
    )


# --- the validator finds what is wrong ----------------------------------------------------------------------------


def test_validator_names_a_misspelt_bizstep_and_a_broken_epc_in_json(production):
    doc = json.loads(document(EpcisScope(batch_id=production.batch.pk)))
    doc["epcisBody"]["eventList"][0]["bizStep"] = "comissioning"
    doc["epcisBody"]["eventList"][2]["childEPCs"][0] = "not a uri"
    doc["epcisBody"]["eventList"][3]["action"] = "ADDED"

    problems = validate_epcis_document(json.dumps(doc), version="2.0", syntax="json")

    assert "epcisBody.eventList[0].bizStep: 'comissioning' is not a CBV business step (did you mean " in "\n".join(
        problems
    )
    assert any(p.startswith("epcisBody.eventList[2].childEPCs[0]: 'not a uri' is not a 'uri'") for p in problems)
    assert any(p.startswith("epcisBody.eventList[3].action: 'ADDED' is not one of") for p in problems)


def test_validator_names_what_the_xsd_and_the_cbv_lists_refuse_in_xml(production):
    content = document(EpcisScope(batch_id=production.batch.pk), "1.2", "xml").decode()
    content = content.replace("urn:epcglobal:cbv:disp:in_transit", "urn:epcglobal:cbv:disp:in_transport", 1)
    content = content.replace("<action>ADD</action>", "<action>ADDED</action>", 1)

    problems = validate_epcis_document(content, version="1.2", syntax="xml")

    assert len(problems) == 2
    assert "Element 'action': [facet 'enumeration'] The value 'ADDED' is not an element of the set" in problems[0]
    assert problems[0].startswith("line ")
    assert problems[1].endswith("disposition: 'in_transport' is not a CBV disposition (did you mean 'in_transit'?).")


def test_validator_refuses_a_2_0_document_checked_as_1_2(production):
    content = document(EpcisScope(batch_id=production.batch.pk), "2.0", "xml")
    assert validate_epcis_document(content, version="1.2", syntax="xml") == [
        "The root element is {urn:epcglobal:epcis:xsd:2}EPCISDocument; an EPCIS 1.2 document has "
        "{urn:epcglobal:epcis:xsd:1}EPCISDocument."
    ]


def test_validator_streams_large_xml_and_still_finds_problems(production, monkeypatch, tmp_path):
    from serialization.epcis import validation

    monkeypatch.setattr(validation, "TREE_LIMIT_BYTES", 100)
    path = tmp_path / "doc.xml"
    path.write_bytes(document(EpcisScope(batch_id=production.batch.pk), "1.2", "xml"))
    assert validate_epcis_document(path, version="1.2", syntax="xml") == []

    path.write_text(path.read_text().replace("urn:epcglobal:cbv:bizstep:shipping", "shipping"))
    assert validate_epcis_document(path, version="1.2", syntax="xml") == [
        "bizStep: 'shipping' is a bare CBV term; in XML write it as a URI, urn:epcglobal:cbv:bizstep:shipping."
    ]


def test_validator_reads_json_as_a_stream_and_names_each_problem_where_it_is(production, tmp_path):
    doc = json.loads(document(EpcisScope(batch_id=production.batch.pk)))
    events = doc["epcisBody"]["eventList"]
    doc["creationDate"] = "yesterday"  # outside the events
    events[-1]["eventTime"] = "2025-13-01T00:00:00Z"  # in the last event
    events[-1]["epcList"].append(events[-1]["epcList"][0])  # the same EPC twice in one list
    events.append("an event")  # not an object
    path = tmp_path / "doc.jsonld"
    path.write_text(json.dumps(doc))
    last = len(events) - 2

    problems = validate_epcis_document(path, version="2.0", syntax="json")

    assert problems[0] == "creationDate: 'yesterday' is not a 'date-time'"
    assert f"epcisBody.eventList[{last}].eventTime: '2025-13-01T00:00:00Z' is not a 'date-time'" in problems
    repeated = "the list holds an item more than once; each may appear once."
    assert f"epcisBody.eventList[{last}].epcList: {repeated}" in problems
    assert f"epcisBody.eventList[{last + 1}]: 'an event' is not of type 'object'" in problems
    assert len(problems) == 4  # each named once, though several rules of the schema refuse the non-object


def test_validator_checks_every_epc_of_a_long_list(production):
    """The schema's references are inlined for speed: an EPC far down a long list is still held to the rule."""
    doc = json.loads(document(EpcisScope(batch_id=production.batch.pk)))
    event = doc["epcisBody"]["eventList"][0]
    event["epcList"] = [f"urn:epc:id:sgtin:952123.0454321.S{n}" for n in range(5_000)]
    event["epcList"][4_321] = "not a uri"

    problems = validate_epcis_document(json.dumps(doc), version="2.0", syntax="json")

    assert "epcisBody.eventList[0].epcList[4321]: 'not a uri' is not a 'uri'" in problems
    # The only other complaint is the schema's alternative to a valid epcList (a quantityList), no other EPC.
    assert [p for p in problems if "epcList[" in p] == [
        "epcisBody.eventList[0].epcList[4321]: 'not a uri' is not a 'uri'"
    ]


def test_validator_checks_long_epc_lists_a_part_at_a_time(production, monkeypatch, tmp_path):
    """Memory holds one part of a long list at a time; each EPC is still checked, repeats are found across parts."""
    from serialization.epcis import validation

    monkeypatch.setattr(validation, "EPC_CHUNK", 3)
    doc = json.loads(document(EpcisScope(batch_id=production.batch.pk)))
    events = doc["epcisBody"]["eventList"]
    commissioning = next(i for i, e in enumerate(events) if len(e.get("epcList", ())) > 7)
    epcs = events[commissioning]["epcList"]
    path = tmp_path / "doc.jsonld"
    path.write_text(json.dumps(doc))
    assert validate_epcis_document(path, version="2.0", syntax="json") == []

    epcs[5] = {"epc": "x", "of": "a map"}  # in the second part
    epcs[7] = "not a uri"  # in the third part
    epcs[-1] = epcs[1]  # a repeat of an EPC of the first part
    path.write_text(json.dumps(doc))

    problems = validate_epcis_document(path, version="2.0", syntax="json")

    where = f"epcisBody.eventList[{commissioning}].epcList"
    assert f"{where}[7]: 'not a uri' is not a 'uri'" in problems
    assert f"{where}: the list holds an item more than once; each may appear once." in problems
    assert [p for p in problems if "epcList[" in p] == [
        f"{where}[5]: {{'epc': 'x', 'of': 'a map'}} is not of type 'string'",
        f"{where}[7]: 'not a uri' is not a 'uri'",
    ]


def test_validator_says_when_the_document_is_not_json_or_xml():
    assert validate_epcis_document(b"{", version="2.0", syntax="json")[0].startswith("The document is not JSON")
    assert validate_epcis_document(b"<a>", version="2.0", syntax="xml")[0].startswith(
        "The document is not well-formed XML"
    )


def test_validator_accepts_the_official_examples():
    from serialization.epcis.validation import standards_dir

    examples = sorted((standards_dir() / "examples").iterdir())
    assert len(examples) >= 8
    for path in examples:
        syntax = "json" if path.suffix == ".jsonld" else "xml"
        assert validate_epcis_document(path, version="2.0", syntax=syntax) == [], path.name


# --- export jobs, through the API ---------------------------------------------------------------------------------


@pytest.fixture
def steward(make_api_client):
    return make_api_client(make_user(roles=("Steward",)))


def test_api_export_job_writes_validates_and_offers_the_document(
    production, steward, django_capture_on_commit_callbacks
):
    p = production
    with django_capture_on_commit_callbacks(execute=True):
        response = steward.post(f"/api/v1/batches/{p.batch.pk}/epcis-exports/", {"version": "1.2", "syntax": "xml"})
    assert response.status_code == 202, response.json()
    job_id = response.json()["id"]
    assert response["Location"] == f"/api/v1/epcis-exports/{job_id}/"

    status = steward.get(f"/api/v1/epcis-exports/{job_id}/").json()
    assert {k: status[k] for k in ("batch", "version", "syntax", "status", "total", "written", "events")} == {
        "batch": p.batch.pk,
        "version": "1.2",
        "syntax": "xml",
        "status": "done",
        "total": 60,
        "written": 60,
        "events": 12,
    }
    assert (status["progress"], status["validated"], status["error"]) == (1.0, True, "")
    assert status["download_url"] == f"/api/v1/epcis-exports/{job_id}/download/"

    download = steward.get(status["download_url"])
    assert download.status_code == 200
    content = b"".join(download.streaming_content)
    assert download["Content-Type"] == "application/xml"
    assert download["X-Content-SHA256"] == hashlib.sha256(content).hexdigest() == status["sha256"]
    assert download["X-EPC-Count"] == "60"
    assert validate_epcis_document(content, version="1.2", syntax="xml") == []
    assert steps(summarise_xml(content, "1.2")) == expected_batch_steps(p)

    export, sent = AccessEvent.objects.filter(details__epcis_export=job_id).order_by("pk")
    assert (export.kind, export.target) == ("export", f"EPCIS batch {p.batch.pk}")
    assert (sent.kind, sent.quantity, sent.details["sha256"], sent.details["events"]) == (
        "download",
        60,
        status["sha256"],
        12,
    )


def test_api_export_of_an_order_and_of_a_shipment(production, steward, django_capture_on_commit_callbacks):
    p = production
    with django_capture_on_commit_callbacks(execute=True):
        by_order = steward.post(f"/api/v1/orders/{p.order.pk}/epcis-exports/", {})
        shipment = steward.post(
            f"/api/v1/line-reports/{p.reports['R6'].report_id}/epcis-exports/", {"syntax": "xml"}, format="json"
        )
    assert (by_order.status_code, shipment.status_code) == (202, 202)
    order_job = EpcisExportJob.objects.get(pk=by_order.json()["id"])
    shipment_job = EpcisExportJob.objects.get(pk=shipment.json()["id"])
    assert (order_job.status, order_job.version, order_job.syntax, order_job.events) == ("done", "2.0", "json", 12)
    assert (shipment_job.status, shipment_job.shipping_report_id, shipment_job.events) == (
        "done",
        p.reports["R6"].pk,
        8,
    )
    assert shipment.json()["shipment"] == p.reports["R6"].report_id


def test_api_refuses_epcis_1_2_as_json_naming_the_field_and_creates_nothing(production, steward):
    response = steward.post(
        f"/api/v1/batches/{production.batch.pk}/epcis-exports/", {"version": "1.2", "syntax": "json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "syntax": ['EPCIS 1.2 has no JSON binding: ask for syntax "xml", or for version "2.0" to get JSON-LD.']
    }
    assert EpcisExportJob.objects.count() == 0


def test_api_shipment_export_of_another_kind_of_report_says_so(production, steward):
    report = production.reports["R1"]
    response = steward.post(f"/api/v1/line-reports/{report.report_id}/epcis-exports/", {})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "shipment": [
            f"Line report {report.report_id} is a commissioning report; an EPCIS shipment document is made of an "
            "applied shipping report."
        ]
    }


def test_api_product_without_prefix_length_is_refused_before_a_job_is_queued(production, steward):
    type(production.product).objects.filter(pk=production.product.pk).update(company_prefix_length=None)
    response = steward.post(f"/api/v1/batches/{production.batch.pk}/epcis-exports/", {})
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["product"]
    assert EpcisExportJob.objects.count() == 0


def test_download_before_the_job_is_done_is_409(production, steward):
    job = create_epcis_export(batch=production.batch, version="2.0", syntax="json", actor=production.plant.actor)
    response = steward.get(f"/api/v1/epcis-exports/{job.pk}/download/")
    assert response.status_code == 409
    assert response.json()["error"]["message"] == (
        f"EPCIS export {job.pk} is pending, so it has no file yet; poll its status and download it when it is done."
    )


def test_a_job_whose_document_fails_validation_is_failed_and_offers_nothing(
    production, steward, monkeypatch, django_capture_on_commit_callbacks
):
    from serialization.services import epcis_exports

    monkeypatch.setattr(epcis_exports, "validate_epcis_document", lambda *a, **k: ["line 3: something is wrong"])
    with django_capture_on_commit_callbacks(execute=True):
        response = steward.post(f"/api/v1/batches/{production.batch.pk}/epcis-exports/", {"syntax": "xml"})
    job = EpcisExportJob.objects.get(pk=response.json()["id"])
    assert (job.status, job.file.name, job.validated) == ("failed", "", False)
    assert job.error == (
        "The document failed validation against the EPCIS 2.0 schema, so it is not offered: line 3: something is wrong"
    )
    assert steward.get(f"/api/v1/epcis-exports/{job.pk}/download/").status_code == 409


def test_api_synchronous_document_is_recorded_and_bounded(production, steward, settings):
    p = production
    response = steward.get(f"/api/v1/batches/{p.batch.pk}/epcis/", {"version": "2.0", "syntax": "xml"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/xml"
    assert response["X-EPC-Count"] == "60"
    assert validate_epcis_document(response.content, version="2.0", syntax="xml") == []
    sent = AccessEvent.objects.get(kind="download", target=f"EPCIS batch {p.batch.pk}")
    assert (sent.quantity, sent.details["sha256"]) == (60, hashlib.sha256(response.content).hexdigest())

    shipment = steward.get(f"/api/v1/line-reports/{p.reports['R6'].report_id}/epcis/")
    assert shipment.status_code == 200
    assert len(summarise_json(shipment.content)) == 8

    settings.EPCIS_SYNC_MAX_EPCS = 59
    too_big = steward.get(f"/api/v1/orders/{p.order.pk}/epcis/")
    assert too_big.status_code == 409
    assert too_big.json()["error"]["details"] == {"epcs": 60, "sync_max": 59}


def test_other_companies_get_404_for_the_batch_its_jobs_and_their_files(
    production, make_api_client, django_capture_on_commit_callbacks
):
    p = production
    owner = make_user(roles=("Steward",))
    make_membership(user=owner, company=p.plant.owner)
    outsider = make_user(roles=("Steward",))
    make_membership(user=outsider, company=make_company())
    own, other = make_api_client(owner), make_api_client(outsider)
    with django_capture_on_commit_callbacks(execute=True):
        job_id = own.post(f"/api/v1/batches/{p.batch.pk}/epcis-exports/", {}).json()["id"]

    assert own.get(f"/api/v1/epcis-exports/{job_id}/download/").status_code == 200
    for url in [
        f"/api/v1/batches/{p.batch.pk}/epcis/",
        f"/api/v1/epcis-exports/{job_id}/",
        f"/api/v1/epcis-exports/{job_id}/download/",
        f"/api/v1/line-reports/{p.reports['R6'].report_id}/epcis/",
    ]:
        assert other.get(url).status_code == 404, url
    assert other.post(f"/api/v1/batches/{p.batch.pk}/epcis-exports/", {}).status_code == 404
    assert other.get("/api/v1/epcis-exports/").json()["count"] == 0
    assert [row["id"] for row in own.get("/api/v1/epcis-exports/").json()["results"]] == [job_id]


def test_a_cmo_packing_the_batch_does_not_see_the_mahs_export_of_it(production):
    p = production
    cmo = make_company(is_mah=False, is_cmo=True)
    cmo_order = PackagingOrder.objects.create(
        number=f"PO-CMO-{next(_numbers)}",
        batch=p.batch,
        line=make_location(company=cmo, kind="line"),
        planned_quantity=1,
    )
    for shared in (p.batch, cmo_order):
        grant_company_object_permissions(company=cmo, obj=shared)
    cmo_user = make_user(roles=("CMO user",))
    make_membership(user=cmo_user, company=cmo)
    assert get_batch(user=cmo_user, pk=p.batch.pk) == p.batch
    assert EventSource(EpcisScope(batch_id=p.batch.pk), visible_to=cmo_user).total_epcs == 0
    job = create_epcis_export(batch=p.batch, version="2.0", syntax="json", actor=p.plant.actor)

    assert list(list_epcis_exports(user=cmo_user)) == []  # the CMO sees the batch, not a document made for others
    assert list(list_epcis_exports(user=make_user(is_superuser=True))) == [job]


def test_reading_job_status_needs_the_view_permission(production, make_api_client):
    job = create_epcis_export(batch=production.batch, version="2.0", syntax="json", actor=production.plant.actor)
    nobody = make_api_client(make_user())
    assert nobody.get(reverse("api-v1:epcis-export-detail", args=[job.pk])).status_code == 403


# --- the admin ----------------------------------------------------------------------------------------------------


def test_admin_batch_action_exports_and_the_job_page_offers_the_recorded_download(
    production, make_verified_client, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.MEDIA_ROOT = tmp_path
    p = production
    client = make_verified_client(make_user(is_staff=True, roles=("Steward",)))
    changelist = reverse("admin:serialization_batch_changelist")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            changelist, {"action": "export_epcis_1_2_xml", "_selected_action": [p.batch.pk]}, follow=True
        )

    job = EpcisExportJob.objects.get()
    assert (job.batch_id, job.version, job.syntax, job.status, job.events, job.written) == (
        p.batch.pk,
        "1.2",
        "xml",
        "done",
        12,
        60,
    )
    assert f"Batch {p.batch.lot}: EPCIS export {job.pk} is being written" in response.text
    page = client.get(reverse("admin:serialization_epcisexportjob_change", args=[job.pk]))
    assert "Download (12 events, 60 EPCs)" in page.text

    download = client.get(reverse("admin:serialization_epcisexportjob_download", args=[job.pk]))
    content = b"".join(download.streaming_content)
    assert hashlib.sha256(content).hexdigest() == job.sha256
    assert validate_epcis_document(content, version="1.2", syntax="xml") == []
    sent = AccessEvent.objects.get(kind="download", details__epcis_export=job.pk)
    assert (sent.quantity, sent.details["sha256"]) == (60, job.sha256)


def test_admin_export_action_is_not_offered_without_the_permission(production, make_verified_client):
    auditor = make_verified_client(make_user(is_staff=True, roles=("Auditor",)))
    page = auditor.get(reverse("admin:serialization_batch_changelist"))
    assert page.status_code == 200
    assert "export_epcis_json" not in page.text


def test_job_progress_is_written_while_the_document_is_written(production, monkeypatch):
    from serialization.epcis import writer
    from serialization.services import epcis_exports

    monkeypatch.setattr(writer, "PROGRESS_EVERY", 7)
    seen: list[tuple[int, int]] = []
    real_write = epcis_exports.write_epcis_document

    def watching_write(out, **kwargs):
        def progress(written: int) -> None:
            kwargs_progress(written)
            seen.append(tuple(EpcisExportJob.objects.values_list("written", "total").get()))

        kwargs_progress = kwargs.pop("progress")
        return real_write(out, progress=progress, **kwargs)

    monkeypatch.setattr(epcis_exports, "write_epcis_document", watching_write)
    job = create_epcis_export(batch=production.batch, version="2.0", syntax="xml", actor=production.plant.actor)
    job = epcis_exports.run_epcis_export(job_id=job.pk)

    assert (job.status, job.written, job.total, job.events) == ("done", 60, 60, 12)
    # Readers see the job move: EPCs written so far against the EPCs in scope, counted before the first event.
    assert len(seen) >= 4
    assert [total for _, total in seen] == [60] * len(seen)
    assert [written for written, _ in seen] == sorted(written for written, _ in seen)
    assert 0 < seen[0][0] < 60 and seen[-1][0] == 60


@pytest.mark.parametrize(("version", "syntax"), FORMATS)
def test_each_decommissioning_reason_is_its_own_event_as_cbv_maps_it(version, syntax):
    plant = Plant(markets=("US",), fill=50, sscc_fill=5)
    batch = plant.batch()
    order = plant.order(batch)
    units = serials_of(plant.serials(order, len(cbv.DECOMMISSION)).units)
    code, length = plant.product.product_code, plant.product.company_prefix_length
    actor = make_user(roles=["Line system"])
    for kind, lines in [
        ("commissioning", [{"product_code": code, "serial": s} for s in units]),
        (
            "decommissioning",
            [{"product_code": code, "serial": s, "reason": r} for s, r in zip(units, cbv.DECOMMISSION, strict=True)],
        ),
    ]:
        report = apply_line_report(report_id=f"D-{next(_numbers)}", kind=kind, order=order, lines=lines, actor=actor)
        assert report.status == LineReport.Status.APPLIED, report.result

    content = document(EpcisScope(order_id=order.pk), version, syntax)

    assert validate_epcis_document(content, version=version, syntax=syntax) == []
    by_reason = dict(zip(cbv.DECOMMISSION, units, strict=True))
    expected = [
        (
            "ObjectEvent",
            "DELETE" if step.biz_step in ("decommissioning", "destroying") else "OBSERVE",
            step.biz_step,
            step.disposition,
            None,
            [gs1.sgtin_urn(code, by_reason[reason], length)],
        )
        for reason, step in sorted(cbv.DECOMMISSION.items())
    ]
    assert steps(summarise(content, version, syntax))[1:] == expected


def test_epcis_documents_count_against_the_hourly_serial_limit(
    production, steward, settings, django_capture_on_commit_callbacks
):
    # A document names every serial of its scope: taking it out is a serial hand-out like a CSV list.
    p = production
    settings.SERIAL_EXPORT_LIMIT_PER_HOUR = 100
    first = steward.get(f"/api/v1/batches/{p.batch.pk}/epcis/")
    assert first.status_code == 200
    assert AccessEvent.objects.get(kind="download", target=f"EPCIS batch {p.batch.pk}").counted_serials == 60

    with django_capture_on_commit_callbacks(execute=True):
        job = steward.post(f"/api/v1/batches/{p.batch.pk}/epcis-exports/", {"version": "2.0", "syntax": "json"})
    refused = steward.get(f"/api/v1/epcis-exports/{job.json()['id']}/download/")

    assert refused.status_code == 403
    assert "blocked" in refused.json()["error"]["message"]
    assert (
        ExportBlock.objects.filter(user__username=steward.api_token.user.username, lifted_at__isnull=True).count() == 1
    )
    assert AccessEvent.objects.filter(kind="download").count() == 1  # the refused download handed nothing out
