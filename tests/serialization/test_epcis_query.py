"""The EPCIS events query (GET /api/v1/epcis/events/): events of line reports and of captured EPCIS alike, the
binding's filters, pagination with nextPageToken, scope (an MAH its orders, a CMO the orders on its lines), the
permission, the access log and the query count."""

import io
import json
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from jsonschema import Draft7Validator

from audit.models import AccessEvent
from masterdata import gs1
from masterdata.permissions import grant_company_object_permissions
from serialization.epcis.events import EpcisScope
from serialization.epcis.validation import JSON_SCHEMA_FILE, standards_dir
from serialization.epcis.writer import write_epcis_document
from serialization.models import Allocation, PackagingOrder
from serialization.services import allocate_serials
from serialization.services.line_reports import apply_line_report
from tests.factories import make_company, make_location, make_membership, make_user
from tests.serialization.test_epcis_capture import (
    T2,
    Plant,
    _media_in_tmp,  # noqa: F401 - autouse
    document,
    job_of,
    serials_of,
)

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/epcis/events/"
SHIPMENT_ID = "urn:uuid:5e5e5e5e-0000-4000-8000-000000000001"
T_LINE = "2025-03-03T07:00:00+00:00"


def units(plant: Plant, indices) -> list[dict]:
    return [{"product_code": plant.gtin, "serial": plant.units[i]} for i in indices]


@pytest.fixture
def world(make_api_client, django_capture_on_commit_callbacks):
    """Plant A: units 0-3 and case 0 commissioned and units 0-1 packed into case 0 by line reports (07:00, 07:30);
    units 4-5 commissioned (08:00) and case 0 shipped (10:00) by captured EPCIS. Plant B: its own commissioning."""
    a, b = Plant(), Plant()
    apply_line_report(
        report_id="line-commissioning",
        kind="commissioning",
        order=a.order,
        lines=[*units(a, range(4)), {"sscc": a.cases[0], "level": 2}],
        actor=a.user,
        occurred_at=_time(T_LINE),
    )
    apply_line_report(
        report_id="line-packing",
        kind="aggregation",
        order=a.order,
        lines=[{"parent_sscc": a.cases[0], "children": units(a, [0, 1])}],
        actor=a.user,
        occurred_at=_time("2025-03-03T07:30:00+00:00"),
    )
    shipment = a.shipping(
        [a.case(0)],
        eventID=SHIPMENT_ID,
        eventTime=T2,
        bizTransactionList=[{"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:5412345000013:PO-778"}],
    )
    client = make_api_client(a.user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/v1/epcis/capture/",
            data=json.dumps(
                document(
                    a.commissioning(units=[4, 5], eventID="urn:uuid:4c4c4c4c-0000-4000-8000-000000000001"), shipment
                )
            ),
            content_type="application/ld+json",
        )
    assert job_of(response).status == "succeeded"
    apply_line_report(
        report_id="b-commissioning", kind="commissioning", order=b.order, lines=units(b, [0]), actor=b.user
    )
    return a, b, client


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def get_events(client, **params):
    response = client.get(EVENTS, params)
    assert response.status_code == 200, response.content
    return response


def summary(response) -> list[tuple]:
    """(type, action, bizStep, EPCs, parentID) of each event."""
    events = response.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    return [
        (e["type"], e["action"], e["bizStep"], e.get("epcList", e.get("childEPCs")), e.get("parentID")) for e in events
    ]


def event_list(response) -> list[dict]:
    return response.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]


def everything(a: Plant) -> list[tuple]:
    return [
        ("ObjectEvent", "ADD", "commissioning", [a.unit(i) for i in range(4)], None),
        ("ObjectEvent", "ADD", "commissioning", [a.case(0)], None),
        ("AggregationEvent", "ADD", "packing", [a.unit(0), a.unit(1)], a.case(0)),
        ("ObjectEvent", "ADD", "commissioning", [a.unit(4), a.unit(5)], None),
        ("ObjectEvent", "OBSERVE", "shipping", [a.case(0)], None),
    ]


def sorted_epcs(rows: list[tuple]) -> list[tuple]:
    return [(t, action, step, sorted(epcs), parent) for t, action, step, epcs, parent in rows]


def test_events_of_line_reports_and_of_capture_come_in_the_order_applied(world):
    a, _, client = world

    response = get_events(client)

    assert response["Content-Type"] == "application/ld+json"
    assert "Link" not in response
    body = response.json()
    assert (body["type"], body["schemaVersion"]) == ("EPCISQueryDocument", "2.0")
    assert sorted_epcs(summary(response)) == sorted_epcs(everything(a))


def test_the_query_document_follows_the_official_json_schema(world):
    _, _, client = world
    schema = json.loads((standards_dir() / JSON_SCHEMA_FILE).read_text())

    body = get_events(client).json()

    assert [error.message for error in Draft7Validator(schema).iter_errors(body)] == []


def test_line_report_events_carry_the_event_ids_epcis_out_writes(world):
    a, _, client = world
    out = io.BytesIO()
    write_epcis_document(out, scope=EpcisScope(order_id=a.order.pk), version="2.0", syntax="json")
    exported = {e["eventID"] for e in json.loads(out.getvalue())["epcisBody"]["eventList"]}

    queried = [e["eventID"] for e in event_list(get_events(client))]

    # The line reports' events have EPCIS out's ids; captured events keep the ids they were sent with.
    assert set(queried[:3]) <= exported
    assert queried[3:] == ["urn:uuid:4c4c4c4c-0000-4000-8000-000000000001", SHIPMENT_ID]


def test_a_captured_event_comes_back_as_it_was_sent(world):
    a, _, client = world

    (shipping,) = event_list(get_events(client, EQ_bizStep="shipping"))

    assert shipping == {
        "type": "ObjectEvent",
        "eventTime": "2025-03-03T10:00:00.000Z",
        "eventTimeZoneOffset": "+01:00",
        "recordTime": shipping["recordTime"],
        "eventID": SHIPMENT_ID,
        "epcList": [a.case(0)],
        "action": "OBSERVE",
        "bizStep": "shipping",
        "disposition": "in_transit",
        **({"readPoint": shipping["readPoint"]} if "readPoint" in shipping else {}),
        "bizTransactionList": [{"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:5412345000013:PO-778"}],
    }


def test_commissioning_events_carry_lot_and_expiry(world):
    a, _, client = world

    first = event_list(get_events(client, EQ_bizStep="commissioning"))[0]

    assert first["ilmd"] == {"cbvmda:lotNumber": a.batch.lot, "cbvmda:itemExpirationDate": "2027-06-30"}


# --- filters --------------------------------------------------------------------------------------------------------


def test_filter_by_event_type_and_biz_step(world):
    a, _, client = world
    rows = everything(a)

    assert summary(get_events(client, eventType="AggregationEvent")) == [rows[2]]
    assert sorted_epcs(summary(get_events(client, EQ_bizStep="shipping|packing"))) == sorted_epcs([rows[2], rows[4]])
    assert summary(get_events(client, EQ_action="OBSERVE")) == [rows[4]]
    assert summary(get_events(client, EQ_bizStep="urn:epcglobal:cbv:bizstep:shipping")) == [rows[4]]
    assert summary(get_events(client, EQ_bizStep="receiving")) == []


def test_filter_by_event_time(world):
    a, _, client = world
    rows = everything(a)

    window = get_events(client, GE_eventTime="2025-03-03T07:30:00Z", LT_eventTime=T2)

    assert sorted_epcs(summary(window)) == sorted_epcs([rows[2], rows[3]])
    assert summary(get_events(client, GE_eventTime="2025-03-03T11:00:00+01:00")) == [rows[4]]


def test_match_epc_finds_a_unit_in_epc_lists_and_child_epcs_in_every_notation(world):
    a, _, client = world
    rows = everything(a)

    by_urn = summary(get_events(client, MATCH_epc=a.unit(1)))
    by_link = summary(get_events(client, MATCH_epc=a.unit_link(1)))

    assert sorted_epcs(by_urn) == sorted_epcs([rows[0], rows[2]])
    assert by_link == by_urn


def test_match_epc_takes_patterns(world):
    a, _, client = world
    rows = everything(a)
    prefix, item = a.unit(0).split(":")[-1].split(".")[:2]

    by_gtin = summary(get_events(client, MATCH_epc=f"urn:epc:idpat:sgtin:{prefix}.{item}.*"))
    by_sscc_prefix = summary(get_events(client, MATCH_epc=f"urn:epc:idpat:sscc:{prefix}.*"))

    assert sorted_epcs(by_gtin) == sorted_epcs([rows[0], rows[2], rows[3]])
    assert sorted_epcs(by_sscc_prefix) == sorted_epcs([rows[1], rows[4]])


def test_match_parent_and_match_any_epc(world):
    a, _, client = world
    rows = everything(a)

    assert summary(get_events(client, MATCH_parentID=a.case(0))) == [rows[2]]
    assert sorted_epcs(summary(get_events(client, MATCH_anyEPC=a.case(0)))) == sorted_epcs([rows[1], rows[2], rows[4]])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"EQ_readPoint": "urn:epc:id:sgln:0614141.07346.1234"},
            "Query parameter EQ_readPoint is not supported here; the events query takes eventType, EQ_action, "
            "EQ_bizStep, EQ_disposition, MATCH_epc, MATCH_parentID, MATCH_anyEPC, GE_eventTime, LT_eventTime, "
            "perPage, nextPageToken.",
        ),
        (
            {"GE_eventTime": "2025-03-03T08:00:00"},
            "GE_eventTime '2025-03-03T08:00:00' is no time with a zone; write it like 2025-03-03T08:00:00Z or "
            "2025-03-03T09:00:00%2B01:00.",
        ),
        ({"perPage": "0"}, "perPage '0' is no positive whole number."),
        ({"EQ_action": "MOVE"}, "EQ_action 'MOVE' is no EPCIS action; use ADD, OBSERVE or DELETE."),
        (
            {"MATCH_epc": "urn:epc:id:giai:0614141.1"},
            "MATCH_epc value 'urn:epc:id:giai:0614141.1' is no EPC this system tracks ('urn:epc:id:giai:0614141.1' "
            "is neither a serialised unit (SGTIN) nor an SSCC; this system tracks only those); give an SGTIN or SSCC "
            "as URN or Digital Link, or a pattern such as urn:epc:idpat:sgtin:0614141.107346.*.",
        ),
        (
            {"nextPageToken": "made-up"},
            "nextPageToken is not one this server gave out; follow the Link header of the previous page.",
        ),
    ],
)
def test_malformed_parameters_are_refused_naming_the_parameter(world, params, message):
    _, _, client = world

    response = client.get(EVENTS, params)

    assert response.status_code == 400
    assert response.json()["error"]["message"] == message


# --- pagination -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reports_per_read", [200, 1])
def test_pages_follow_the_link_header_to_the_end(world, monkeypatch, reports_per_read):
    # With one report per read, a page is assembled over several reads of reports.
    monkeypatch.setattr("serialization.epcis.query.REPORTS_PER_READ", reports_per_read)
    _, _, client = world
    pages = []
    response = get_events(client, perPage="2")
    while True:
        pages.append(summary(response))
        link = response.get("Link")
        if link is None:
            break
        url = link.split(";")[0].strip("<>")
        assert link.endswith('; rel="next"')
        query = parse_qs(urlsplit(url).query)
        assert query["perPage"] == ["2"]
        response = get_events(client, **{k: v[0] for k, v in query.items()})

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [row for page in pages for row in page] == summary(get_events(client))


def test_a_page_token_is_tied_to_its_filters(world):
    _, _, client = world
    link = get_events(client, perPage="1", EQ_bizStep="commissioning")["Link"]
    token = parse_qs(urlsplit(link.split(";")[0].strip("<>")).query)["nextPageToken"][0]

    same = client.get(EVENTS, {"perPage": "1", "EQ_bizStep": "commissioning", "nextPageToken": token})
    other = client.get(EVENTS, {"perPage": "1", "EQ_bizStep": "shipping", "nextPageToken": token})

    assert same.status_code == 200
    assert other.status_code == 400
    assert other.json()["error"]["message"] == (
        "nextPageToken belongs to a query with other filters; repeat the query's filters with it."
    )


# --- scope, permission, access log, queries -------------------------------------------------------------------------


def test_another_mah_sees_none_of_these_events(world, make_api_client):
    a, b, _ = world

    response = get_events(make_api_client(b.user))

    assert summary(response) == [("ObjectEvent", "ADD", "commissioning", [b.unit(0)], None)]
    assert a.gtin not in response.content.decode()


def test_a_cmo_sees_only_the_events_of_orders_on_its_lines(world, make_api_client):
    a, _, mah_client = world
    cmo = make_company(name="Contract packer", is_mah=False, is_cmo=True)
    cmo_user = make_user(roles=["CMO user"])
    make_membership(user=cmo_user, company=cmo)
    order = PackagingOrder.objects.create(
        number="PO-CMO-1", batch=a.batch, line=make_location(company=cmo, kind="line"), planned_quantity=5
    )
    grant_company_object_permissions(company=cmo, obj=order)  # the MAH shares the order run on the CMO's line
    allocation = allocate_serials(
        pool=a.order.allocations.get(pool__kind="sgtin").pool,
        quantity=2,
        actor=a.user,
        request_id="cmo-order",
        purpose="packaging_order",
        reference=order.number,
    )
    Allocation.objects.filter(pk=allocation.pk).update(packaging_order=order)
    serials = serials_of(allocation)
    report = apply_line_report(
        report_id="cmo-commissioning",
        kind="commissioning",
        order=order,
        lines=[{"product_code": a.gtin, "serial": s} for s in serials],
        actor=a.user,
    )
    assert report.status == "applied", report.result
    cmo_epcs = [gs1.sgtin_urn(a.gtin, s, a.prefix.length) for s in serials]

    cmo_view = summary(get_events(make_api_client(cmo_user)))
    mah_view = summary(get_events(mah_client))

    assert sorted_epcs(cmo_view) == [("ObjectEvent", "ADD", "commissioning", sorted(cmo_epcs), None)]
    assert len(mah_view) == 6


def test_reading_events_needs_the_view_permission(world, make_api_client):
    a, _, _ = world
    nobody = make_user()
    make_membership(user=nobody, company=a.company)

    assert make_api_client(nobody).get(EVENTS).status_code == 403


def test_a_page_of_events_is_logged_as_a_download_of_its_epcs(world):
    a, _, client = world
    before = AccessEvent.objects.filter(kind="download").count()

    get_events(client, EQ_bizStep="commissioning")

    logged = AccessEvent.objects.filter(kind="download").order_by("-pk").first()
    assert AccessEvent.objects.filter(kind="download").count() == before + 1
    assert (logged.user, logged.target, logged.quantity, logged.counted_serials) == (
        a.user,
        "EPCIS events query",
        7,
        7,
    )
    assert logged.details["events"] == 3
    assert logged.details["filters"] == {"EQ_bizStep": ["commissioning"]}


def test_the_query_count_does_not_grow_with_the_events(world):
    a, _, client = world
    get_events(client, perPage="1")  # warms the caches every request shares (content types)
    with CaptureQueriesContext(connection) as few:
        assert "Link" in get_events(client, perPage="2")
    for n in range(6, 12):
        apply_line_report(report_id=f"more-{n}", kind="commissioning", order=a.order, lines=units(a, [n]), actor=a.user)

    with CaptureQueriesContext(connection) as many:
        response = get_events(client, perPage="12")

    assert len(event_list(response)) == 11
    assert len(many.captured_queries) == len(few.captured_queries)


def test_an_error_declaration_shows_on_the_event_it_corrects(world, django_capture_on_commit_callbacks):
    a, _, client = world
    original = a.commissioning(units=[4, 5], eventID="urn:uuid:4c4c4c4c-0000-4000-8000-000000000001")
    declaration = {
        **original,
        "errorDeclaration": {"declarationTime": "2025-03-04T08:00:00.000Z", "reason": "incorrect_data"},
    }
    with django_capture_on_commit_callbacks(execute=True):
        job_of(
            client.post(
                "/api/v1/epcis/capture/", data=json.dumps(document(declaration)), content_type="application/ld+json"
            )
        )

    events = event_list(get_events(client, MATCH_epc=a.unit(4)))

    assert [(e["eventID"], e["bizStep"], e.get("errorDeclaration")) for e in events] == [
        (
            "urn:uuid:4c4c4c4c-0000-4000-8000-000000000001",
            "commissioning",
            {"declarationTime": "2025-03-04T08:00:00+00:00", "reason": "incorrect_data"},
        ),
        (events[1]["eventID"], "decommissioning", None),
    ]
    assert events[1]["action"] == "DELETE" and events[1]["disposition"] == "inactive"
