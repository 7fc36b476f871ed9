"""Every official GS1 example in ``standards/epcis/examples`` posted to the capture interface: the events in this
system's scope (shipping of SGTINs, once the master data, pools, order and commissioning they need exist) are
applied; every other event is refused with its reason; no document gives a 500 or an exception.

The examples are about company prefix 0614141: units ``urn:epc:id:sgtin:0614141.107346.2017/2018`` (GTIN
10614141073464) and, in the Digital Link example, GTIN 70614141123451 with the same serials. Each document is posted
with ``proceed``, so each event's own outcome shows."""

import io
import json
from pathlib import Path

import pytest
from django.conf import settings

from masterdata.models import Product
from serialization.models import Allocation, Batch, CaptureJob, LineReport, Pack, PackagingOrder
from serialization.services import allocate_serials, create_list_pool, import_serials
from serialization.services.line_reports import apply_line_report
from tests.factories import make_company, make_location, make_membership, make_product, make_user
from tests.serialization.test_epcis_capture import (
    CAPTURE,
    _media_in_tmp,  # noqa: F401 - autouse
)

pytestmark = pytest.mark.django_db

EXAMPLES = Path(settings.STANDARDS_DIR) / "epcis" / "examples"
GTINS = ("10614141073464", "70614141123451")
SERIALS = ("2017", "2018")
NOT_CAPTURED = "not applied here; this system applies ObjectEvent ADD commissioning"
NOT_FOUND = "no event captured here and visible to you has it"

# file → (HTTP status, [(event, outcome, words of the reason)]) — 400 documents have no job.
EXPECTED = {
    "Example_9.6.1-ObjectEvent-2020_06_18a.xml": (
        202,
        [(1, "applied", ""), (2, "refused", f"ObjectEvent OBSERVE with bizStep receiving is {NOT_CAPTURED}")],
    ),
    "Example_9.6.1-ObjectEvent.jsonld": (
        202,
        [(1, "applied", ""), (2, "refused", f"ObjectEvent OBSERVE with bizStep receiving is {NOT_CAPTURED}")],
    ),
    "Example_9.6.1-ObjectEventWithDigitalLink.jsonld": (
        202,
        [(1, "applied", ""), (2, "refused", f"ObjectEvent OBSERVE with bizStep receiving is {NOT_CAPTURED}")],
    ),
    "Example_9.6.3-AggregationEvent.jsonld": (
        202,
        [(1, "refused", f"AggregationEvent OBSERVE with bizStep receiving is {NOT_CAPTURED}")],
    ),
    "aggregation_event_all_possible_fields.jsonld": (202, [(1, "refused", NOT_FOUND)]),
    "aggregation_event_all_possible_fields.xml": (
        202,
        [(1, "refused", f"AggregationEvent OBSERVE with bizStep receiving is {NOT_CAPTURED}")],
    ),
    "masterdata_all_possible_fields.xml": (400, "The document holds no events (an empty eventList)."),
    "object_event_all_possible_fields.jsonld": (202, [(1, "refused", NOT_FOUND)]),
    "object_event_all_possible_fields.xml": (
        202,
        [(1, "refused", f"ObjectEvent OBSERVE with bizStep receiving is {NOT_CAPTURED}")],
    ),
}


def test_every_example_file_has_an_expected_outcome():
    assert sorted(p.name for p in EXAMPLES.iterdir()) == sorted(EXPECTED)


@pytest.fixture
def gs1_example_world():
    """The GS1 examples' company (prefix 0614141), its two products, list pools holding serials 2017 and 2018, a
    batch and an open order holding them, the units commissioned by a line report — and its line system's user."""
    company = make_company(name="GS1 example company", prefixes=["0614141"])
    user = make_user(username="example_line", roles=["Line system"])
    make_membership(user=user, company=company)
    line = make_location(company=company, kind="line")
    for n, gtin in enumerate(GTINS):
        product = make_product(owner=company, product_code=gtin, company_prefix_length=7)
        pool = create_list_pool(owner=company, actor=user, product=product, source="file")
        result = import_serials(pool=pool, layout="csv", stream=io.BytesIO("\n".join(SERIALS).encode()), actor=user)
        assert result.imported == 2, result
        batch = Batch.objects.create(product=product, lot=f"EXAMPLE{n}", expiry="301231")
        order = PackagingOrder.objects.create(number=f"PO-EX-{n}", batch=batch, line=line, planned_quantity=2)
        allocation = allocate_serials(
            pool=pool,
            quantity=2,
            actor=user,
            request_id=f"example-{n}",
            purpose="packaging_order",
            reference=order.number,
        )
        Allocation.objects.filter(pk=allocation.pk).update(packaging_order=order)
        report = apply_line_report(
            report_id=f"example-commissioning-{n}",
            kind="commissioning",
            order=order,
            lines=[{"product_code": gtin, "serial": serial} for serial in SERIALS],
            actor=user,
        )
        assert report.status == "applied", report.result
    return user


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_official_example_is_applied_or_refused_with_a_reason(
    name, gs1_example_world, make_api_client, django_capture_on_commit_callbacks
):
    path = EXAMPLES / name
    content_type = "application/xml" if path.suffix == ".xml" else "application/ld+json"
    client = make_api_client(gs1_example_world)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            CAPTURE, data=path.read_bytes(), content_type=content_type, HTTP_GS1_CAPTURE_ERROR_BEHAVIOUR="proceed"
        )

    status, expected = EXPECTED[name]
    assert response.status_code == status, response.content
    if status != 202:
        assert response.json()["error"]["message"].startswith(expected)
        assert not CaptureJob.objects.exists()
        return
    job = CaptureJob.objects.get(pk=int(response.json()["captureID"]))
    errors = {entry["event"]: entry["detail"] for entry in job.errors}
    assert [(entry["event"], entry["status"]) for entry in job.events] == [(n, outcome) for n, outcome, _ in expected]
    for n, outcome, reason in expected:
        if outcome == "refused":
            assert reason in errors[n], errors[n]
        else:
            assert n not in errors
    applied = [n for n, outcome, _ in expected if outcome == "applied"]
    shipped = Pack.objects.filter(status="shipped").values_list("product_code", "serial")
    if applied:
        gtin = "70614141123451" if "DigitalLink" in name else "10614141073464"
        assert sorted(shipped) == [(gtin, "2017"), (gtin, "2018")]
        report = LineReport.objects.get(capture_job=job)
        document = json.loads(path.read_bytes()) if path.suffix == ".jsonld" else None
        if document is not None:
            assert report.event_id == document["epcisBody"]["eventList"][0]["eventID"]
        assert report.event["readPoint"] == {"id": "urn:epc:id:sgln:0614141.07346.1234"}
    else:
        assert not shipped.exists()
    assert Product.objects.count() == 2
