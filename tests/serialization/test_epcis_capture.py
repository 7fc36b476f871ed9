"""EPCIS capture (POST /api/v1/epcis/capture/, GET /api/v1/epcis/capture/{id}/): documents in EPCIS 2.0 JSON-LD and
1.2/2.0 XML applied through the line-report rules, capture jobs, repeats (409), error declarations, the
GS1-Capture-Error-Behaviour header, safe XML, size limits and permissions.

``Plant`` (also used by test_epcis_query and test_epcis_capture_examples) is an MAH packing one EU product 10 to a
case and 4 cases to a pallet, on an open order that asked for unit serials and SSCCs per level."""

import itertools
import json
import uuid

import pytest
from django.urls import reverse

from masterdata import gs1
from masterdata.models import PackagingLevel
from serialization.models import Batch, CaptureJob, LineReport, Pack, PackagingOrder, PackEvent
from serialization.services import create_generated_pool
from serialization.services.batches import request_order_serials
from serialization.services.line_reports import apply_line_report
from serialization.services.materialise import iter_serial_chunks
from tests.factories import make_company, make_location, make_membership, make_product, make_user

pytestmark = pytest.mark.django_db

CAPTURE = "/api/v1/epcis/capture/"
CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
T0 = "2025-03-03T08:00:00.000Z"
T1 = "2025-03-03T09:00:00.000Z"
T2 = "2025-03-03T10:00:00.000Z"
_numbers = itertools.count(1)


def serials_of(allocation) -> list[str]:
    return [s.decode() for chunk in iter_serial_chunks(allocation) for s in chunk.tolist()]


class Plant:
    """An MAH, its line system (API user), an EU product (case of 10, pallet of 4 cases), a randomised unit pool, an
    SSCC pool, a batch and an open order that requested ``units`` serials, ``cases`` case and ``pallets`` pallet
    SSCCs."""

    def __init__(self, *, units: int = 30, cases: int = 4, pallets: int = 2) -> None:
        n = next(_numbers)
        self.company = make_company(name=f"Plant company {n}")
        self.prefix = self.company.prefixes.get()
        self.user = make_user(username=f"line_system_{n}", roles=["Line system"])
        make_membership(user=self.user, company=self.company)
        self.product = make_product(owner=self.company, markets=("EU",))
        PackagingLevel.objects.create(product=self.product, level=2, quantity=10, uses_sscc=True)
        PackagingLevel.objects.create(product=self.product, level=3, quantity=4, uses_sscc=True)
        self.gtin = self.product.product_code
        create_generated_pool(owner=self.company, actor=self.user, product=self.product, initial_fill=units * 3)
        create_generated_pool(
            owner=self.company,
            actor=self.user,
            sscc_prefix=self.prefix,
            extension_digit="3",
            initial_fill=(cases + pallets) * 3,
        )
        self.line = make_location(company=self.company, kind="line")
        self.batch = Batch.objects.create(product=self.product, lot=f"LOT{n}", expiry="270600")
        self.order = PackagingOrder.objects.create(
            number=f"PO-{n:04d}", batch=self.batch, line=self.line, planned_quantity=1000
        )
        got = request_order_serials(
            order=self.order,
            quantity=units,
            actor=self.user,
            request_id=f"plant-{n}",
            sscc_quantities={2: cases, 3: pallets},
        )
        self.units = serials_of(got.units)
        self.cases = serials_of(got.ssccs[2])
        self.pallets = serials_of(got.ssccs[3])

    # EPCs
    def unit(self, i: int) -> str:
        return gs1.sgtin_urn(self.gtin, self.units[i], self.prefix.length)

    def unit_link(self, i: int) -> str:
        return gs1.build_digital_link({"01": self.gtin, "21": self.units[i]})

    def case(self, i: int) -> str:
        return gs1.sscc_urn(self.cases[i], self.prefix.length)

    def pallet(self, i: int) -> str:
        return gs1.sscc_urn(self.pallets[i], self.prefix.length)

    # events (EPCIS 2.0 JSON)
    def commissioning(self, units=(), cases=(), pallets=(), **fields) -> dict:
        epcs = [self.unit(i) for i in units] + [self.case(i) for i in cases] + [self.pallet(i) for i in pallets]
        ilmd = {"cbvmda:lotNumber": self.batch.lot, "cbvmda:itemExpirationDate": "2027-06-30"} if units else {}
        return event("ObjectEvent", "ADD", "commissioning", "active", epcList=epcs, ilmd=ilmd, **fields)

    def packing(self, parent: str, children: list[str], **fields) -> dict:
        return event("AggregationEvent", "ADD", "packing", "in_progress", parentID=parent, childEPCs=children, **fields)

    def unpacking(self, parent: str, children: list[str] = (), **fields) -> dict:
        extra = {"childEPCs": list(children)} if children else {}
        return event("AggregationEvent", "DELETE", "unpacking", None, parentID=parent, **extra, **fields)

    def shipping(self, epcs: list[str], **fields) -> dict:
        return event("ObjectEvent", "OBSERVE", "shipping", "in_transit", epcList=epcs, **fields)

    def pack(self, i: int) -> Pack:
        return Pack.objects.get(product_code=self.gtin, serial=self.units[i])

    def container(self, sscc: str) -> Pack:
        return Pack.objects.get(product_code="", serial=sscc)


def event(kind: str, action: str, biz_step: str | None, disposition: str | None, **fields) -> dict:
    data = {
        "type": kind,
        "eventTime": fields.pop("eventTime", T0),
        "eventTimeZoneOffset": "+01:00",
        "eventID": fields.pop("eventID", f"urn:uuid:{uuid.uuid4()}"),
        "action": action,
    }
    if data["eventID"] is None:
        del data["eventID"]
    if biz_step is not None:
        data["bizStep"] = biz_step
    if disposition is not None:
        data["disposition"] = disposition
    data.update({key: value for key, value in fields.items() if value not in ({}, None)})
    return data


def document(*events: dict) -> dict:
    return {
        "@context": [CONTEXT],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": T0,
        "epcisBody": {"eventList": list(events)},
    }


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Captured documents are stored as files: keep them out of the project's media folder."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def plant():
    return Plant()


@pytest.fixture
def line_client(plant, make_api_client):
    return make_api_client(plant.user)


@pytest.fixture
def post(django_capture_on_commit_callbacks):
    """post(client, body, behaviour=None, content_type=…) → response, with the capture task run (django-q sync)."""

    def send(client, body, *, behaviour: str | None = None, content_type: str = "application/ld+json"):
        data = json.dumps(body) if isinstance(body, dict) else body
        headers = {"HTTP_GS1_CAPTURE_ERROR_BEHAVIOUR": behaviour} if behaviour else {}
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(CAPTURE, data=data, content_type=content_type, **headers)

    return send


def job_of(response) -> CaptureJob:
    assert response.status_code == 202, response.content
    return CaptureJob.objects.get(pk=int(response.json()["captureID"]))


def outcomes(job: CaptureJob) -> list[tuple[int, str]]:
    return [(entry["event"], entry["status"]) for entry in job.events]


def problems(job: CaptureJob) -> list[tuple[int, int, str]]:
    return [(entry["event"], entry["status"], entry["detail"]) for entry in job.errors]


def statuses(plant: Plant, units) -> list[str]:
    return [plant.pack(i).status for i in units]


# --- capture through the rulebook -----------------------------------------------------------------------------------


def test_capture_applies_commissioning_packing_and_shipping_as_line_reports(plant, line_client, post):
    body = document(
        plant.commissioning(
            units=range(3), cases=[0], pallets=[0], eventID="urn:uuid:11111111-0000-4000-8000-000000000001"
        ),
        plant.packing(plant.case(0), [plant.unit(0), plant.unit(1)], eventTime=T1),
        plant.packing(plant.pallet(0), [plant.case(0)], eventTime=T1),
        plant.shipping([plant.pallet(0), plant.unit(2)], eventTime=T2),
    )

    response = post(line_client, body)

    job = job_of(response)
    assert response["Location"] == f"http://testserver{reverse('api-v1:epcis-capture-job', kwargs={'pk': job.pk})}"
    assert response["GS1-EPCIS-Capture-Limit"] == "10000"
    assert (job.status, job.event_count, job.applied_count, job.error_count) == ("succeeded", 4, 4, 0)
    assert outcomes(job) == [(1, "applied"), (2, "applied"), (3, "applied"), (4, "applied")]
    reports = list(LineReport.objects.filter(capture_job=job).order_by("pk"))
    assert [(r.report_id, r.kind, r.status, r.source, r.order_id) for r in reports] == [
        (f"epcis-{job.pk}-1", "commissioning", "applied", "epcis", plant.order.pk),
        (f"epcis-{job.pk}-2", "aggregation", "applied", "epcis", plant.order.pk),
        (f"epcis-{job.pk}-3", "aggregation", "applied", "epcis", plant.order.pk),
        (f"epcis-{job.pk}-4", "shipping", "applied", "epcis", plant.order.pk),
    ]
    assert reports[0].event_id == "urn:uuid:11111111-0000-4000-8000-000000000001"
    assert reports[0].result == {"counts": {"units": 3, "containers": 2}}
    assert reports[0].occurred_at.isoformat() == "2025-03-03T08:00:00+00:00"
    assert reports[0].event["ilmd"] == {"cbvmda:lotNumber": plant.batch.lot, "cbvmda:itemExpirationDate": "2027-06-30"}
    # The SSCCs got the levels the order asked them for: case 2, pallet 3.
    assert (plant.container(plant.cases[0]).level, plant.container(plant.pallets[0]).level) == (2, 3)
    assert statuses(plant, range(3)) == ["shipped", "shipped", "shipped"]
    assert plant.pack(0).parent.serial == plant.cases[0]
    assert plant.container(plant.cases[0]).parent.serial == plant.pallets[0]


def test_capture_job_answers_in_the_shape_of_the_binding(plant, line_client, post):
    job = job_of(
        post(
            line_client,
            document(plant.commissioning(units=[0], eventID="urn:uuid:aaaaaaaa-0000-4000-8000-000000000001")),
        )
    )

    body = line_client.get(reverse("api-v1:epcis-capture-job", kwargs={"pk": job.pk})).json()

    assert body == {
        "captureID": str(job.pk),
        "running": False,
        "success": True,
        "captureErrorBehaviour": "rollback",
        "createdAt": body["createdAt"],
        "finishedAt": body["finishedAt"],
        "state": "succeeded",
        "eventCount": 1,
        "appliedCount": 1,
        "errorCount": 0,
        "errors": [],
        "events": [
            {
                "event": 1,
                "eventID": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001",
                "status": "applied",
                "lineReport": f"epcis-{job.pk}-1",
            }
        ],
    }
    assert body["finishedAt"] is not None


def test_capture_takes_digital_link_epcs_and_events_without_event_id(plant, line_client, post):
    commissioning = plant.commissioning(units=[0], eventID=None)
    commissioning["epcList"] = [plant.unit_link(0)]

    job = job_of(post(line_client, document(commissioning)))

    assert outcomes(job) == [(1, "applied")]
    report = LineReport.objects.get(capture_job=job)
    # An event sent without eventID gets one made from its content (EPCIS 2.0: the server populates it).
    assert report.event_id == job.events[0]["eventID"]
    assert report.event_id.startswith("urn:uuid:")
    assert plant.pack(0).status == "commissioned"


XML_12 = """<?xml version="1.0" encoding="UTF-8"?>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:1" xmlns:cbvmda="urn:epcglobal:cbv:mda"
    schemaVersion="1.2" creationDate="2025-03-03T08:00:00Z">
  <EPCISBody>
    <EventList>
      <ObjectEvent>
        <eventTime>2025-03-03T09:00:00.000+01:00</eventTime>
        <eventTimeZoneOffset>+01:00</eventTimeZoneOffset>
        <baseExtension><eventID>urn:uuid:22222222-0000-4000-8000-000000000001</eventID></baseExtension>
        <epcList><epc>{unit0}</epc><epc>{unit1}</epc></epcList>
        <action>ADD</action>
        <bizStep>urn:epcglobal:cbv:bizstep:commissioning</bizStep>
        <disposition>urn:epcglobal:cbv:disp:active</disposition>
        <bizTransactionList>
          <bizTransaction type="urn:epcglobal:cbv:btt:prodorder">urn:epcglobal:cbv:bt:{gln}:{order}</bizTransaction>
        </bizTransactionList>
        <extension>
          <ilmd><cbvmda:lotNumber>{lot}</cbvmda:lotNumber><cbvmda:itemExpirationDate>2027-06-30</cbvmda:itemExpirationDate></ilmd>
        </extension>
      </ObjectEvent>
      <AggregationEvent>
        <eventTime>2025-03-03T09:05:00.000+01:00</eventTime>
        <eventTimeZoneOffset>+01:00</eventTimeZoneOffset>
        <parentID>{case0}</parentID>
        <childEPCs><epc>{unit0}</epc><epc>{unit1}</epc></childEPCs>
        <action>ADD</action>
        <bizStep>urn:epcglobal:cbv:bizstep:packing</bizStep>
      </AggregationEvent>
    </EventList>
  </EPCISBody>
</epcis:EPCISDocument>
"""


def xml_12(plant: Plant) -> str:
    return XML_12.format(
        unit0=plant.unit(0),
        unit1=plant.unit(1),
        case0=plant.case(0),
        gln=plant.line.gln,
        order=plant.order.number,
        lot=plant.batch.lot,
    )


def test_capture_applies_an_epcis_1_2_xml_document(plant, line_client, post):
    apply_line_report(
        report_id="commission-case",
        kind="commissioning",
        order=plant.order,
        lines=[{"sscc": plant.cases[0], "level": 2}],
        actor=plant.user,
    )

    job = job_of(post(line_client, xml_12(plant), content_type="application/xml"))

    assert (job.status, job.document_format, outcomes(job)) == ("succeeded", "xml", [(1, "applied"), (2, "applied")])
    report = LineReport.objects.get(capture_job=job, kind="commissioning")
    assert report.event_id == "urn:uuid:22222222-0000-4000-8000-000000000001"
    assert report.event["bizTransactionList"] == [
        {"type": "prodorder", "bizTransaction": f"urn:epcglobal:cbv:bt:{plant.line.gln}:{plant.order.number}"}
    ]
    assert report.occurred_at.isoformat() == "2025-03-03T08:00:00+00:00"
    assert plant.pack(1).parent.serial == plant.cases[0]


def test_capture_applies_an_epcis_2_0_xml_document_sent_as_text_xml(plant, line_client, post):
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" schemaVersion="2.0" creationDate="2025-03-03T08:00:00Z">
  <EPCISBody><EventList>
    <ObjectEvent>
      <eventTime>2025-03-03T08:00:00Z</eventTime><eventTimeZoneOffset>+00:00</eventTimeZoneOffset>
      <eventID>urn:uuid:33333333-0000-4000-8000-000000000001</eventID>
      <epcList><epc>{plant.case(1)}</epc></epcList>
      <action>ADD</action><bizStep>commissioning</bizStep><disposition>active</disposition>
    </ObjectEvent>
  </EventList></EPCISBody>
</epcis:EPCISDocument>"""

    job = job_of(post(line_client, body, content_type="text/xml"))

    assert outcomes(job) == [(1, "applied")]
    assert plant.container(plant.cases[1]).level == 2


def test_capture_maps_decommissioning_steps_to_their_reasons(plant, line_client, post):
    apply_line_report(
        report_id="c-1",
        kind="commissioning",
        order=plant.order,
        lines=[{"product_code": plant.gtin, "serial": s} for s in plant.units[:4]],
        actor=plant.user,
    )
    body = document(
        event("ObjectEvent", "DELETE", "decommissioning", "inactive", epcList=[plant.unit(0)]),
        event("ObjectEvent", "OBSERVE", "destroying", "destroyed", epcList=[plant.unit(1)]),
        event("ObjectEvent", "OBSERVE", "sampling", None, epcList=[plant.unit(2)]),
        event("ObjectEvent", "DELETE", "decommissioning", "stolen", epcList=[plant.unit(3)]),
    )

    job = job_of(post(line_client, body))

    assert outcomes(job) == [(1, "applied"), (2, "applied"), (3, "applied"), (4, "applied")]
    assert [(plant.pack(i).status, plant.pack(i).reason, plant.pack(i).eu_state) for i in range(4)] == [
        ("decommissioned", "line_reject", "Destroyed"),
        ("decommissioned", "destroyed", "Destroyed"),
        ("decommissioned", "sample", "Sample"),
        ("decommissioned", "stolen", "Stolen"),
    ]


def test_capture_unpacks_everything_when_an_unpacking_names_no_children(plant, line_client, post):
    apply_line_report(
        report_id="c-2",
        kind="commissioning",
        order=plant.order,
        lines=[
            *({"product_code": plant.gtin, "serial": s} for s in plant.units[:2]),
            {"sscc": plant.cases[0], "level": 2},
        ],
        actor=plant.user,
    )
    apply_line_report(
        report_id="a-2",
        kind="aggregation",
        order=plant.order,
        lines=[
            {
                "parent_sscc": plant.cases[0],
                "children": [{"product_code": plant.gtin, "serial": s} for s in plant.units[:2]],
            }
        ],
        actor=plant.user,
    )

    job = job_of(post(line_client, document(plant.unpacking(plant.case(0)))))

    assert outcomes(job) == [(1, "applied")]
    assert [plant.pack(i).parent_id for i in range(2)] == [None, None]
    assert statuses(plant, range(2)) == ["commissioned", "commissioned"]


# --- which order ----------------------------------------------------------------------------------------------------


def test_capture_finds_the_order_by_the_lot_in_ilmd_when_the_serial_is_no_order_s(plant, line_client, post):
    # A second open order of the same batch on another line: the SGLN of the bizLocation picks the first order.
    other = PackagingOrder.objects.create(
        number=f"{plant.order.number}-B",
        batch=plant.batch,
        line=make_location(company=plant.company, kind="line"),
        planned_quantity=10,
    )
    request_order_serials(order=other, quantity=2, actor=plant.user, request_id="other-order")
    unit = plant.commissioning(units=[0])
    assert PackagingOrder.objects.filter(batch=plant.batch, status="open").count() == 2

    job = job_of(post(line_client, document(unit)))

    assert outcomes(job) == [(1, "applied")]
    assert plant.pack(0).order_id == plant.order.pk


def test_capture_refuses_an_event_naming_a_production_order_that_is_not_visible(plant, line_client, post):
    other = Plant()
    body = document(
        plant.commissioning(units=[0], bizTransactionList=[{"type": "prodorder", "bizTransaction": other.order.number}])
    )

    job = job_of(post(line_client, body))

    assert problems(job) == [
        (
            1,
            400,
            f"event 1 ({body['epcisBody']['eventList'][0]['eventID']}): its production order {other.order.number!r} "
            "(bizTransaction of type prodorder) is no packaging order visible to you; name the order by its number.",
        )
    ]
    assert not Pack.objects.exists()


def test_capture_refuses_a_lot_or_expiry_that_is_not_the_batch_s(plant, line_client, post):
    wrong_lot = plant.commissioning(units=[0], eventID="urn:uuid:44444444-0000-4000-8000-000000000001")
    wrong_lot["ilmd"]["cbvmda:lotNumber"] = "OTHER"
    wrong_expiry = plant.commissioning(units=[1], eventID="urn:uuid:44444444-0000-4000-8000-000000000002")
    wrong_expiry["ilmd"]["cbvmda:itemExpirationDate"] = "2027-06-29"

    job = job_of(post(line_client, document(wrong_lot, wrong_expiry), behaviour="proceed"))

    assert problems(job) == [
        (
            1,
            400,
            "event 1 (urn:uuid:44444444-0000-4000-8000-000000000001): its ilmd lotNumber 'OTHER' is not the lot of "
            f"order {plant.order.number} ({plant.batch.lot}); the lot printed is the batch's.",
        ),
        (
            2,
            400,
            "event 2 (urn:uuid:44444444-0000-4000-8000-000000000002): its ilmd itemExpirationDate 2027-06-29 is not "
            f"the expiry of lot {plant.batch.lot} (2027-06-30, printed 270600); the expiry reported must be the one "
            "printed.",
        ),
    ]
    assert not Pack.objects.exists()


def test_capture_refuses_a_serial_of_no_order_with_the_way_to_name_one(plant, line_client, post):
    body = document(
        event(
            "ObjectEvent",
            "ADD",
            "commissioning",
            "active",
            epcList=[gs1.sgtin_urn(plant.gtin, "NOSUCH1", plant.prefix.length)],
            eventID="urn:uuid:55555555-0000-4000-8000-000000000001",
        )
    )

    job = job_of(post(line_client, body))

    assert problems(job) == [
        (
            1,
            400,
            "event 1 (urn:uuid:55555555-0000-4000-8000-000000000001): no packaging order visible to you holds serial "
            f"NOSUCH1 of {plant.gtin}. Name the order in bizTransactionList as "
            '{"type": "prodorder", "bizTransaction": "<order number>"}, or report only serials allocated to one of '
            "your orders.",
        )
    ]


# --- rollback and proceed -------------------------------------------------------------------------------------------


def _good_and_bad(plant: Plant) -> dict:
    good = plant.commissioning(units=[0, 1], eventID="urn:uuid:66666666-0000-4000-8000-000000000001")
    # Packing units that are not commissioned: the aggregation rules reject it.
    bad = plant.packing(plant.case(0), [plant.unit(5)], eventID="urn:uuid:66666666-0000-4000-8000-000000000002")
    receiving = event(
        "ObjectEvent",
        "OBSERVE",
        "receiving",
        "in_progress",
        epcList=[plant.unit(0)],
        eventID="urn:uuid:66666666-0000-4000-8000-000000000003",
    )
    return document(good, bad, receiving)


def test_rollback_applies_nothing_when_one_event_fails_and_lists_every_problem(plant, line_client, post):
    job = job_of(post(line_client, _good_and_bad(plant)))

    assert (job.status, job.error_behaviour, job.applied_count, job.error_count) == ("failed", "rollback", 0, 2)
    assert outcomes(job) == [(1, "rolled_back"), (2, "refused"), (3, "refused")]
    assert [(e["event"], e["status"], e["type"]) for e in job.errors] == [
        (2, 422, "epcisException:ValidationException"),
        (3, 400, "epcisException:ValidationException"),
    ]
    assert [(p["line"], p["code"], p["serial"]) for p in job.errors[0]["problems"]] == [
        (1, "not_commissioned", plant.cases[0]),
        (1, "not_commissioned", plant.units[5]),
    ]
    assert job.errors[1]["detail"].startswith(
        "event 3 (urn:uuid:66666666-0000-4000-8000-000000000003): ObjectEvent OBSERVE with bizStep receiving is not "
        "applied here; this system applies ObjectEvent ADD commissioning"
    )
    assert not Pack.objects.exists()
    assert not LineReport.objects.exists()


def test_proceed_applies_the_good_events_and_reports_the_bad(plant, line_client, post):
    job = job_of(post(line_client, _good_and_bad(plant), behaviour="proceed"))

    assert (job.status, job.error_behaviour, job.applied_count, job.error_count) == ("failed", "proceed", 1, 2)
    assert outcomes(job) == [(1, "applied"), (2, "refused"), (3, "refused")]
    assert statuses(plant, [0, 1]) == ["commissioned", "commissioned"]
    assert list(LineReport.objects.values_list("report_id", "status")) == [(f"epcis-{job.pk}-1", "applied")]
    body = line_client.get(reverse("api-v1:epcis-capture-job", kwargs={"pk": job.pk})).json()
    assert (body["running"], body["success"], body["captureErrorBehaviour"]) == (False, False, "proceed")


def test_rejected_event_reports_the_line_report_problems(plant, line_client, post):
    body = document(
        plant.packing(plant.case(0), [plant.unit(5)], eventID="urn:uuid:77777777-0000-4000-8000-000000000001")
    )

    job = job_of(post(line_client, body))

    (error,) = job.errors
    assert (error["title"], error["status"], error["problemCount"]) == (
        "Event rejected by the line-report rules",
        422,
        2,
    )
    assert error["detail"] == (
        "event 1 (urn:uuid:77777777-0000-4000-8000-000000000001): the aggregation rules refused it (2 problems; in "
        "each, line n is the n-th EPC of the event, or its parent for an aggregation)."
    )
    assert error["problems"][1] == {
        "line": 1,
        "code": "not_commissioned",
        "serial": plant.units[5],
        "problem": f"Serial {plant.units[5]} of {plant.gtin} is not commissioned; commission it before packing.",
    }
    assert error["instance"] == "urn:uuid:77777777-0000-4000-8000-000000000001"


def test_an_unknown_error_behaviour_header_is_refused(plant, line_client, post):
    response = post(line_client, document(plant.commissioning(units=[0])), behaviour="sometimes")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "GS1-Capture-Error-Behaviour 'sometimes' is not known; send rollback (all or nothing, the default) or proceed "
        "(apply the good events, report the bad)."
    )
    assert not CaptureJob.objects.exists()


# --- captured twice -------------------------------------------------------------------------------------------------


def test_an_event_captured_twice_is_refused_with_409_and_nothing_changes(plant, line_client, post):
    body = document(plant.commissioning(units=[0], eventID="urn:uuid:88888888-0000-4000-8000-000000000001"))
    job_of(post(line_client, body))

    again = post(line_client, body)

    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_event"
    assert again.json()["error"]["message"] == (
        "1 of the document's 1 events were captured before (event 1 (urn:uuid:88888888-0000-4000-8000-000000000001): "
        "its eventID was captured before). Nothing was captured."
    )
    assert CaptureJob.objects.count() == 1
    assert LineReport.objects.count() == 1


def test_the_same_content_under_another_event_id_or_in_xml_is_a_repeat(plant, line_client, post):
    first = plant.commissioning(units=[0, 1], eventID="urn:uuid:99999999-0000-4000-8000-000000000001")
    job_of(post(line_client, document(first)))
    renamed = {**first, "eventID": "urn:uuid:99999999-0000-4000-8000-000000000002", "epcList": first["epcList"][::-1]}
    as_xml = f"""<?xml version="1.0"?>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" xmlns:cbvmda="urn:epcglobal:cbv:mda" schemaVersion="2.0"
    creationDate="2025-03-03T08:00:00Z"><EPCISBody><EventList><ObjectEvent>
  <eventTime>2025-03-03T09:00:00+01:00</eventTime><eventTimeZoneOffset>+01:00</eventTimeZoneOffset>
  <epcList><epc>{plant.unit_link(1)}</epc><epc>{plant.unit(0)}</epc></epcList>
  <action>ADD</action><bizStep>urn:epcglobal:cbv:bizstep:commissioning</bizStep>
  <disposition>urn:epcglobal:cbv:disp:active</disposition>
  <ilmd><cbvmda:lotNumber>{plant.batch.lot}</cbvmda:lotNumber><cbvmda:itemExpirationDate>2027-06-30</cbvmda:itemExpirationDate></ilmd>
</ObjectEvent></EventList></EPCISBody></epcis:EPCISDocument>"""

    by_content = post(line_client, document(renamed))
    by_xml = post(line_client, as_xml, content_type="application/xml")

    assert by_content.status_code == 409
    assert "its content was captured before" in by_content.json()["error"]["message"]
    assert by_xml.status_code == 409
    assert by_xml.json()["error"]["details"]["events"] == [{"event": 1, "eventID": None}]
    assert LineReport.objects.count() == 1


def test_a_gs1_event_hash_id_sent_again_with_other_content_is_a_repeat(plant, line_client, post):
    hash_id = "ni:///sha-256;df7bb3c352fef055578554f09f5e2aa41782150ced7bd0b8af24dd3ccb30ba69?ver=CBV2.0"
    job_of(post(line_client, document(plant.commissioning(units=[0], eventID=hash_id))))

    response = post(line_client, document(plant.commissioning(units=[1], eventID=hash_id)))

    assert response.status_code == 409
    assert f"event 1 ({hash_id}): its eventID was captured before" in response.json()["error"]["message"]


def test_with_proceed_only_the_repeated_event_is_refused(plant, line_client, post):
    first = plant.commissioning(units=[0], eventID="urn:uuid:aaaaaaaa-0000-4000-8000-0000000000a1")
    job_of(post(line_client, document(first)))
    new = plant.commissioning(units=[1], eventID="urn:uuid:aaaaaaaa-0000-4000-8000-0000000000a2")

    job = job_of(post(line_client, document(first, new), behaviour="proceed"))

    assert outcomes(job) == [(1, "duplicate"), (2, "applied")]
    assert [(e["event"], e["status"], e["type"], e["title"]) for e in job.errors] == [
        (1, 409, "epcisException:ResourceAlreadyExistsException", "Event captured before")
    ]
    assert statuses(plant, [0, 1]) == ["commissioned", "commissioned"]


def test_an_event_repeated_inside_one_document_is_refused(plant, line_client, post):
    once = plant.commissioning(units=[0], eventID="urn:uuid:bbbbbbbb-0000-4000-8000-0000000000b1")

    response = post(line_client, document(once, {**once, "eventID": "urn:uuid:bbbbbbbb-0000-4000-8000-0000000000b2"}))

    assert response.status_code == 409
    assert (
        "event 2 (urn:uuid:bbbbbbbb-0000-4000-8000-0000000000b2): it repeats event 1 of this document"
        in (response.json()["error"]["message"])
    )


# --- error declarations ---------------------------------------------------------------------------------------------


def declared(original: dict, *, corrective=(), reason="incorrect_data") -> dict:
    return {
        **original,
        "errorDeclaration": {
            "declarationTime": "2025-03-04T08:00:00.000Z",
            "reason": reason,
            "correctiveEventIDs": list(corrective),
        },
    }


def test_an_error_declaration_undoes_a_commissioning_and_marks_it(plant, line_client, post):
    wrong = plant.commissioning(units=[0, 1], eventID="urn:uuid:cccccccc-0000-4000-8000-0000000000c1")
    job_of(post(line_client, document(wrong)))
    corrective = plant.commissioning(units=[2, 3], eventID="urn:uuid:cccccccc-0000-4000-8000-0000000000c2")

    job = job_of(post(line_client, document(corrective, declared(wrong, corrective=[corrective["eventID"]]))))

    assert outcomes(job) == [(1, "applied"), (2, "declared")]
    original = LineReport.objects.get(event_id=wrong["eventID"])
    assert original.error_declaration == {
        "declarationTime": "2025-03-04T08:00:00+00:00",
        "reason": "incorrect_data",
        "correctiveEventIDs": ["urn:uuid:cccccccc-0000-4000-8000-0000000000c2"],
    }
    undo = LineReport.objects.get(corrects=original)
    assert (undo.report_id, undo.kind, undo.status) == (f"epcis-{job.pk}-2-undo", "decommissioning", "applied")
    assert [(plant.pack(i).status, plant.pack(i).reason) for i in range(4)] == [
        ("decommissioned", "line_reject"),
        ("decommissioned", "line_reject"),
        ("commissioned", ""),
        ("commissioned", ""),
    ]


def test_an_error_declaration_moves_units_to_the_case_the_corrective_event_names(plant, line_client, post):
    setup = document(
        plant.commissioning(units=[0, 1], cases=[0, 1]),
        plant.packing(
            plant.case(0), [plant.unit(0), plant.unit(1)], eventID="urn:uuid:dddddddd-0000-4000-8000-0000000000d1"
        ),
    )
    job_of(post(line_client, setup))
    wrong = setup["epcisBody"]["eventList"][1]
    # The corrective event comes first in the document: declarations are applied before the other events.
    corrective = plant.packing(
        plant.case(1), [plant.unit(0), plant.unit(1)], eventID="urn:uuid:dddddddd-0000-4000-8000-0000000000d2"
    )

    job = job_of(post(line_client, document(corrective, declared(wrong, corrective=[corrective["eventID"]]))))

    assert outcomes(job) == [(1, "applied"), (2, "declared")]
    assert [plant.pack(i).parent.serial for i in range(2)] == [plant.cases[1], plant.cases[1]]
    assert [e.action for e in PackEvent.objects.filter(pack=plant.pack(0)).order_by("pk")] == [
        "commissioned",
        "packed",
        "unpacked",
        "packed",
    ]


def test_an_error_declaration_of_a_shipping_is_refused_and_changes_nothing(plant, line_client, post):
    shipping = plant.shipping([plant.unit(0)], eventID="urn:uuid:eeeeeeee-0000-4000-8000-0000000000e1", eventTime=T1)
    job_of(post(line_client, document(plant.commissioning(units=[0]), shipping)))

    job = job_of(post(line_client, document(declared(shipping))))

    assert problems(job) == [
        (
            1,
            409,
            "event 1 (urn:uuid:eeeeeeee-0000-4000-8000-0000000000e1): event "
            "urn:uuid:eeeeeeee-0000-4000-8000-0000000000e1 is a shipping, which a line cannot undo: a shipped pack has "
            "left the line, and a decommissioned pack is reactivated only by the MAH (the EU hub allows it within 10 "
            "days). Nothing was changed; ask the MAH's steward to correct it.",
        )
    ]
    assert plant.pack(0).status == "shipped"
    assert LineReport.objects.get(event_id=shipping["eventID"]).error_declaration is None


def test_an_error_declaration_of_an_unknown_event_or_declared_twice_is_refused(plant, line_client, post):
    wrong = plant.commissioning(units=[0], eventID="urn:uuid:ffffffff-0000-4000-8000-0000000000f1")
    unknown = declared(plant.commissioning(units=[1], eventID="urn:uuid:ffffffff-0000-4000-8000-0000000000f2"))
    job_of(post(line_client, document(wrong)))
    job_of(post(line_client, document(declared(wrong))))

    job = job_of(post(line_client, document(declared(wrong), unknown), behaviour="proceed"))

    assert [(e["event"], e["status"], e["title"]) for e in job.errors] == [
        (1, 409, "Event captured before"),
        (2, 404, "Erroneous event not found"),
    ]
    assert job.errors[0]["detail"] == (
        "event 1 (urn:uuid:ffffffff-0000-4000-8000-0000000000f1): event urn:uuid:ffffffff-0000-4000-8000-0000000000f1 "
        "was declared erroneous already (2025-03-04T08:00:00+00:00); it is corrected once."
    )
    assert not Pack.objects.filter(serial=plant.units[1]).exists()


# --- malformed, unsafe and too large documents ----------------------------------------------------------------------


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" schemaVersion="2.0" creationDate="2025-03-03T08:00:00Z">
<EPCISBody><EventList><ObjectEvent><eventTime>2025-03-03T08:00:00Z</eventTime>
<eventTimeZoneOffset>+00:00</eventTimeZoneOffset><epcList><epc>&lol9;</epc></epcList><action>ADD</action>
</ObjectEvent></EventList></EPCISBody></epcis:EPCISDocument>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE epcis:EPCISDocument [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" schemaVersion="2.0" creationDate="2025-03-03T08:00:00Z">
<EPCISBody><EventList><ObjectEvent><eventTime>2025-03-03T08:00:00Z</eventTime>
<eventTimeZoneOffset>+00:00</eventTimeZoneOffset><epcList><epc>&xxe;</epc></epcList><action>ADD</action>
</ObjectEvent></EventList></EPCISBody></epcis:EPCISDocument>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE epcis:EPCISDocument SYSTEM "http://127.0.0.1:9/epcis.dtd">
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" schemaVersion="2.0" creationDate="2025-03-03T08:00:00Z">
<EPCISBody><EventList/></EPCISBody></epcis:EPCISDocument>"""

DTD_REFUSED = (
    "The document has a DOCTYPE that declares entities or elements or names an external DTD; EPCIS documents need "
    "none, and they are not accepted (nothing in it was expanded or fetched). Send the document without the DOCTYPE."
)


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD], ids=["billion-laughs", "xxe", "dtd"])
def test_xml_with_entities_or_a_dtd_is_refused_unexpanded(plant, line_client, post, body):
    response = post(line_client, body, content_type="application/xml")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == DTD_REFUSED
    assert b"lollol" not in response.content
    assert b"root:" not in response.content
    assert not CaptureJob.objects.exists()


def test_malformed_xml_is_refused_naming_line_and_column(plant, line_client, post):
    body = (
        b'<?xml version="1.0"?>\n<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2">\n  <EPCISBody>\n'
        b"</epcis:EPCISDocument>"
    )

    response = post(line_client, body, content_type="application/xml")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == (
        "The body is not well-formed XML: Opening and ending tag mismatch: EPCISBody line 3 and epcis:EPCISDocument "
        "(line 4, column 23)."
    )
    assert error["details"] == {"line": 4, "column": 23}


def test_xml_that_fails_the_xsd_is_refused_naming_the_line(plant, line_client, post):
    body = b"""<?xml version="1.0"?>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" schemaVersion="2.0" creationDate="2025-03-03T08:00:00Z">
<EPCISBody><EventList><ObjectEvent>
<eventTime>2025-03-03T08:00:00Z</eventTime><eventTimeZoneOffset>+00:00</eventTimeZoneOffset>
<epcList/><action>SOMETIMES</action>
</ObjectEvent></EventList></EPCISBody></epcis:EPCISDocument>"""

    response = post(line_client, body, content_type="application/xml")

    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("The document does not follow the EPCIS 2.0 XSD: line 5, column 0: Element 'action': ")
    assert "'SOMETIMES' is not an element of the set" in message


def test_malformed_json_is_refused_naming_line_and_column(plant, line_client, post):
    response = post(line_client, '{\n  "type": "EPCISDocument",\n  "epcisBody": {\n}', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "The body is not valid JSON: Expecting ',' delimiter at line 4, column 2."
    )


def test_json_that_fails_the_schema_is_refused_naming_the_field(plant, line_client, post):
    body = document(plant.commissioning(cases=[0]))
    body["epcisBody"]["eventList"][0]["action"] = "SOMETIMES"

    response = post(line_client, body)

    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "The document does not follow the EPCIS 2.0 JSON schema: epcisBody.eventList[0].action: 'SOMETIMES' does "
        "not match '^OBSERVE$'; epcisBody.eventList[0].action: 'SOMETIMES' is not one of ['OBSERVE', 'ADD', 'DELETE']"
    )


def test_a_document_without_events_is_refused(plant, line_client, post):
    response = post(line_client, document())

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("The document holds no events (an empty eventList).")


def test_an_empty_body_and_other_media_types_are_refused(plant, line_client, post):
    empty = post(line_client, "", content_type="application/json")
    csv = post(line_client, "serial\nA1\n", content_type="text/csv")

    assert (empty.status_code, empty.json()["error"]["message"]) == (
        400,
        "The body is empty; send an EPCIS document (JSON, JSON-LD or XML).",
    )
    assert csv.status_code == 415
    assert not CaptureJob.objects.exists()


def test_a_document_over_the_size_limit_is_refused_with_413(plant, line_client, post, settings):
    settings.EPCIS_CAPTURE_MAX_BYTES = 1_000
    body = document(plant.commissioning(units=range(30)))

    response = post(line_client, body)

    assert response.status_code == 413
    assert response.json()["error"]["message"] == (
        "The document has more than 1,000 bytes, the most the capture interface takes "
        "(GS1-EPCIS-Capture-File-Size-Limit); split it into several documents."
    )
    assert not CaptureJob.objects.exists()


def test_a_document_over_the_event_limit_is_refused_with_413(plant, line_client, post, settings):
    settings.EPCIS_CAPTURE_MAX_EVENTS = 2
    body = document(*(plant.commissioning(units=[i]) for i in range(3)))

    response = post(line_client, body)

    assert response.status_code == 413
    assert response.json()["error"]["message"] == (
        "The document holds 3 events; the capture interface takes at most 2 per document "
        "(GS1-EPCIS-Capture-Limit). Split it into several documents."
    )


# --- refused per event ----------------------------------------------------------------------------------------------


def test_events_this_system_does_not_record_are_refused_with_their_reason(plant, line_client, post):
    transformation = {
        "type": "TransformationEvent",
        "eventTime": T0,
        "eventTimeZoneOffset": "+00:00",
        "eventID": "urn:uuid:12121212-0000-4000-8000-000000000001",
        "inputEPCList": [plant.unit(0)],
        "outputEPCList": [plant.unit(1)],
    }
    sensor = plant.commissioning(units=[2], eventID="urn:uuid:12121212-0000-4000-8000-000000000002")
    sensor["sensorElementList"] = [{"sensorReport": [{"type": "Temperature", "value": 26, "uom": "CEL"}]}]
    unknown_step = event(
        "ObjectEvent",
        "OBSERVE",
        "https://example.com/steps/polishing",
        None,
        epcList=[plant.unit(3)],
        eventID="urn:uuid:12121212-0000-4000-8000-000000000003",
    )
    not_an_sgtin = event(
        "ObjectEvent",
        "ADD",
        "commissioning",
        "active",
        epcList=["urn:epc:id:giai:0614141.12345"],
        eventID="urn:uuid:12121212-0000-4000-8000-000000000004",
    )

    job = job_of(post(line_client, document(transformation, sensor, unknown_step, not_an_sgtin), behaviour="proceed"))

    details = [e["detail"] for e in job.errors]
    assert outcomes(job) == [(1, "refused"), (2, "refused"), (3, "refused"), (4, "refused")]
    assert details[0].startswith(
        "event 1 (urn:uuid:12121212-0000-4000-8000-000000000001): TransformationEvent is not captured here"
    )
    assert details[1] == (
        "event 2 (urn:uuid:12121212-0000-4000-8000-000000000002): it carries sensor data (sensorElementList), which "
        "this system does not record; it records serialised units and SSCCs only. Send the instance EPCs in "
        "epcList/childEPCs without them."
    )
    assert details[2].startswith(
        "event 3 (urn:uuid:12121212-0000-4000-8000-000000000003): bizStep 'https://example.com/steps/polishing' is "
        "not a CBV business step this system knows"
    )
    assert details[3] == (
        "event 4 (urn:uuid:12121212-0000-4000-8000-000000000004): 1 of its EPCs cannot be taken: "
        "'urn:epc:id:giai:0614141.12345' is neither a serialised unit (SGTIN) nor an SSCC; this system tracks only "
        "those."
    )
    assert not Pack.objects.exists()


# --- permissions ----------------------------------------------------------------------------------------------------


def test_capture_needs_the_line_report_permission(plant, make_api_client, post):
    reader = make_user(roles=["Auditor"])
    make_membership(user=reader, company=plant.company)

    response = post(make_api_client(reader), document(plant.commissioning(units=[0])))

    assert response.status_code == 403
    assert not CaptureJob.objects.exists()


def test_a_capture_job_of_another_company_answers_404(plant, line_client, post, make_api_client):
    job = job_of(post(line_client, document(plant.commissioning(units=[0]))))
    other = Plant()
    url = reverse("api-v1:epcis-capture-job", kwargs={"pk": job.pk})

    seen = make_api_client(other.user).get(url)
    missing = make_api_client(other.user).get(reverse("api-v1:epcis-capture-job", kwargs={"pk": job.pk + 1000}))

    assert (seen.status_code, missing.status_code) == (404, 404)
    assert seen.json() == {
        "error": {"code": "not_found", "message": f"No capture job with id {job.pk} is visible to you."}
    }


def test_reading_a_capture_job_needs_the_view_permission(plant, line_client, post, make_api_client):
    job = job_of(post(line_client, document(plant.commissioning(units=[0]))))
    nobody = make_user()
    make_membership(user=nobody, company=plant.company)

    response = make_api_client(nobody).get(reverse("api-v1:epcis-capture-job", kwargs={"pk": job.pk}))

    assert response.status_code == 403


def test_an_aggregation_whose_parent_is_no_sscc_is_refused(plant, line_client, post):
    body = document(
        plant.packing(plant.unit(0), [plant.unit(1)], eventID="urn:uuid:13131313-0000-4000-8000-000000000001")
    )

    job = job_of(post(line_client, body))

    assert problems(job) == [
        (
            1,
            400,
            f"event 1 (urn:uuid:13131313-0000-4000-8000-000000000001): its parentID {plant.unit(0)} is no SSCC; cases "
            "and pallets are identified by SSCC here.",
        )
    ]


def test_capture_takes_an_epcis_query_document(plant, line_client, post):
    body = {
        "@context": [CONTEXT],
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": T0,
        "epcisBody": {
            "queryResults": {
                "queryName": "SimpleEventQuery",
                "resultsBody": {"eventList": [plant.commissioning(units=[0])]},
            }
        },
    }

    job = job_of(post(line_client, body))

    assert outcomes(job) == [(1, "applied")]
    assert plant.pack(0).status == "commissioned"


def test_options_on_capture_tells_the_limits(plant, line_client):
    response = line_client.options(CAPTURE)

    assert response.status_code == 200
    assert (response["GS1-EPCIS-Capture-Limit"], response["GS1-EPCIS-Capture-File-Size-Limit"]) == (
        "10000",
        str(64 * 1024 * 1024),
    )
    assert response["GS1-Capture-Error-Behaviour"] == "rollback, proceed"


def test_a_repeat_that_slips_past_the_checks_is_stopped_by_the_unique_constraint(plant, line_client, post, monkeypatch):
    # Two captures of one event at the same moment both pass the checks before either is applied: the partial
    # unique index on applied reports' event ids refuses the second, which then reports the event as a repeat.
    from serialization.services import epcis_capture

    first = plant.commissioning(units=[0], eventID="urn:uuid:14141414-0000-4000-8000-000000000001")
    job_of(post(line_client, document(first)))
    monkeypatch.setattr(epcis_capture, "_refuse_repeats", lambda parsed, behaviour: None)
    monkeypatch.setattr(epcis_capture, "_refuse_repeat", lambda capture, event, event_id: None)
    same_id_other_content = plant.commissioning(units=[1], eventID=first["eventID"])

    job = job_of(post(line_client, document(same_id_other_content)))

    assert outcomes(job) == [(1, "duplicate")]
    assert problems(job) == [
        (
            1,
            409,
            "event 1 (urn:uuid:14141414-0000-4000-8000-000000000001): the same event was captured by another request "
            "at the same moment.",
        )
    ]
    assert not Pack.objects.filter(serial=plant.units[1]).exists()
    assert LineReport.objects.count() == 1


def _failing_second_report(monkeypatch):
    """apply_line_report as the capture service calls it, failing with a database error on the second event."""
    from django.db import IntegrityError

    from serialization.services import epcis_capture

    real = epcis_capture.apply_line_report

    def apply(**kwargs):
        if kwargs["report_id"].endswith("-2"):
            raise IntegrityError("pack_parent: Key (parent_id)=(0) is not present")
        return real(**kwargs)

    monkeypatch.setattr(epcis_capture, "apply_line_report", apply)


def test_an_internal_error_fails_only_its_event_with_proceed(plant, line_client, post, monkeypatch):
    _failing_second_report(monkeypatch)
    body = document(
        plant.commissioning(units=[0], eventID="urn:uuid:15151515-0000-4000-8000-000000000001"),
        plant.commissioning(units=[1], eventID="urn:uuid:15151515-0000-4000-8000-000000000002"),
    )

    job = job_of(post(line_client, body, behaviour="proceed"))

    assert outcomes(job) == [(1, "applied"), (2, "refused")]
    assert [(e["status"], e["type"], e["detail"]) for e in job.errors] == [
        (
            500,
            "epcisException:ImplementationException",
            "event 2 (urn:uuid:15151515-0000-4000-8000-000000000002): an internal error stopped it; it was not "
            "applied (the worker log has the details). Send it again.",
        )
    ]
    assert plant.pack(0).status == "commissioned"
    assert not Pack.objects.filter(serial=plant.units[1]).exists()


def test_an_internal_error_rolls_the_whole_document_back_with_rollback(plant, line_client, post, monkeypatch):
    _failing_second_report(monkeypatch)
    body = document(plant.commissioning(units=[0]), plant.commissioning(units=[1]))

    job = job_of(post(line_client, body))

    assert (job.status, job.applied_count, job.events) == ("failed", 0, [])
    assert [(e["status"], e["detail"]) for e in job.errors] == [
        (500, "The capture stopped on an internal error; nothing was captured. Send the document again.")
    ]
    assert not Pack.objects.exists()
