"""Commissioning straight into containers: a ``commissioning`` line may carry ``"parent_sscc"`` and the pack is
commissioned and packed into that container at once — the parent commissioned on another line of the same report
(before or after the child) or by an earlier report. Applied results and events, every refusal with its line and
code, replays, and what the pack history, EPCIS out and the EPCIS query make of it."""

import datetime as dt
import itertools
import json

import pytest
from django.db import connection

from masterdata import gs1
from serialization import selectors
from serialization.epcis.events import EpcisScope
from serialization.epcis.validation import validate_epcis_document
from serialization.models import LineReport, Pack, PackEvent
from serialization.services.line_reports import apply_line_report
from tests.factories import make_user
from tests.serialization.test_epcis_capture import Plant
from tests.serialization.test_epcis_out import document
from tests.serialization.test_line_reports import Line

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 3, 3, 8, 0, tzinfo=dt.UTC)
_numbers = itertools.count(1)

CASE, PALLET = 2, 3


@pytest.fixture
def line():
    """Cases of at most 5 packs, pallets of at most 2 cases."""
    return Line(units=40, ssccs=12, levels={CASE: 5, PALLET: 2})


# --- helpers ------------------------------------------------------------------------------------------------------


def unit_in(line: Line, i: int, parent: int) -> dict:
    return {**line.unit(i), "parent_sscc": line.ssccs[parent]}


def container(line: Line, i: int, level: int, parent: int | None = None) -> dict:
    row = {"sscc": line.ssccs[i], "level": level}
    if parent is not None:
        row["parent_sscc"] = line.ssccs[parent]
    return row


def commissioning(line: Line, lines: list, **kwargs) -> LineReport:
    return line.report("commissioning", lines, **kwargs)


def applied(report: LineReport) -> LineReport:
    assert report.status == LineReport.Status.APPLIED, report.result
    return report


def counts_of(report: LineReport) -> dict:
    counts = report.result["counts"]
    return {key: counts[key] for key in ("units", "containers", "packed")}


def snapshot() -> list[tuple]:
    """Everything a report may change: every pack's state and every event."""
    packs = list(Pack.objects.order_by("pk").values_list("pk", "status", "parent_id", "reason", "eu_state", "level"))
    return [*packs, *PackEvent.objects.order_by("pk").values_list("pk", "pack_id", "action", "parent_id")]


def rejected(report: LineReport) -> list[tuple[int, str]]:
    """(line, code) of each problem, in line order (the order of codes on one line left open)."""
    assert report.status == LineReport.Status.REJECTED, report.result
    assert report.result["error_count"] == len(report.result["errors"])
    return sorted((e["line"], e["code"]) for e in report.result["errors"])


def error_on(report: LineReport, line_no: int, code: str) -> dict:
    (error,) = [e for e in report.result["errors"] if (e["line"], e["code"]) == (line_no, code)]
    assert set(error) >= {"line", "code", "serial", "problem"}
    return error


def events(pack: Pack) -> list[tuple]:
    rows = PackEvent.objects.filter(pack=pack).order_by("pk").select_related("parent")
    return [(e.action, e.parent.serial if e.parent else None, e.report_id, e.occurred_at) for e in rows]


# --- applied: packs, statuses, events, counts ---------------------------------------------------------------------


def test_units_are_commissioned_into_a_case_named_on_a_later_line(line):
    report = applied(
        commissioning(line, [unit_in(line, 0, 0), unit_in(line, 1, 0), container(line, 0, CASE)], occurred_at=T0)
    )

    case = line.container(0)
    assert (case.level, case.status, case.parent_id) == (CASE, "commissioned", None)
    for i in (0, 1):
        unit = line.pack(i)
        assert (unit.level, unit.status, unit.parent_id, unit.order_id) == (0, "packed", case.pk, line.order.pk)
    assert counts_of(report) == {"units": 2, "containers": 1, "packed": 2}
    assert report.lines == 3
    assert Pack.objects.count() == 3


def test_units_are_commissioned_into_a_case_named_on_an_earlier_line(line):
    report = applied(commissioning(line, [container(line, 0, CASE), unit_in(line, 0, 0), line.unit(1)]))

    assert (line.pack(0).status, line.pack(0).parent_id) == ("packed", line.container(0).pk)
    assert (line.pack(1).status, line.pack(1).parent_id) == ("commissioned", None)
    assert line.container(0).status == "commissioned"
    assert counts_of(report) == {"units": 2, "containers": 1, "packed": 1}


def test_units_go_into_a_case_commissioned_by_an_earlier_report(line):
    line.commission(containers={0: CASE})
    case_id = line.container(0).pk

    report = applied(commissioning(line, [unit_in(line, 0, 0), unit_in(line, 1, 0)]))

    assert [(line.pack(i).status, line.pack(i).parent_id) for i in (0, 1)] == [("packed", case_id)] * 2
    assert counts_of(report) == {"units": 2, "containers": 0, "packed": 2}
    assert Pack.objects.count() == 3


def test_units_into_cases_onto_a_pallet_in_one_report(line):
    report = applied(
        commissioning(
            line,
            [
                unit_in(line, 0, 0),
                unit_in(line, 1, 0),
                unit_in(line, 2, 1),
                container(line, 0, CASE, parent=2),
                container(line, 1, CASE, parent=2),
                container(line, 2, PALLET),
                line.unit(3),
            ],
        )
    )

    case_a, case_b, pallet = line.container(0), line.container(1), line.container(2)
    assert [line.pack(i).parent_id for i in range(4)] == [case_a.pk, case_a.pk, case_b.pk, None]
    assert [line.pack(i).status for i in range(4)] == ["packed", "packed", "packed", "commissioned"]
    assert (case_a.parent_id, case_a.status, case_b.parent_id, case_b.status) == (
        pallet.pk,
        "packed",
        pallet.pk,
        "packed",
    )
    assert (pallet.parent_id, pallet.status) == (None, "commissioned")
    assert counts_of(report) == {"units": 4, "containers": 3, "packed": 5}


def test_each_pack_gets_commissioned_and_packed_events_of_the_same_report_and_time(line):
    report = applied(
        commissioning(
            line,
            [unit_in(line, 0, 0), container(line, 0, CASE, parent=1), container(line, 1, PALLET), line.unit(1)],
            occurred_at=T0,
        )
    )

    assert events(line.pack(0)) == [("commissioned", None, report.pk, T0), ("packed", line.ssccs[0], report.pk, T0)]
    assert events(line.container(0)) == [
        ("commissioned", None, report.pk, T0),
        ("packed", line.ssccs[1], report.pk, T0),
    ]
    assert events(line.container(1)) == [("commissioned", None, report.pk, T0)]
    assert events(line.pack(1)) == [("commissioned", None, report.pk, T0)]
    assert PackEvent.objects.filter(report=report, action="commissioned").count() == 4
    assert PackEvent.objects.filter(report=report, action="packed").count() == 2
    assert PackEvent.objects.count() == 6


def test_a_case_filled_up_to_its_quantity_is_fine(line):
    line.commission(units=range(3), containers={0: CASE})
    line.aggregate(0, units=range(3))

    report = applied(commissioning(line, [unit_in(line, 3, 0), unit_in(line, 4, 0)]))  # 5 of 5

    assert Pack.objects.filter(parent=line.container(0)).count() == 5
    assert counts_of(report)["packed"] == 2


# --- refusals: report stored REJECTED, nothing else changes -------------------------------------------------------


def test_a_malformed_parent_sscc_is_invalid_sscc_on_its_line(line):
    line.commission(containers={0: CASE})
    good = line.ssccs[0]
    bad_check_digit = good[:17] + str((int(good[17]) + 1) % 10)
    before = snapshot()

    report = commissioning(
        line,
        [
            {**line.unit(0), "parent_sscc": good},
            {**line.unit(1), "parent_sscc": bad_check_digit},
            {**line.unit(2), "parent_sscc": "12345"},
            {**container(line, 1, CASE), "parent_sscc": good[:17] + "X"},
        ],
    )

    assert rejected(report) == [(2, "invalid_sscc"), (3, "invalid_sscc"), (4, "invalid_sscc")]
    assert error_on(report, 2, "invalid_sscc")["serial"] == bad_check_digit  # the parent named
    assert error_on(report, 3, "invalid_sscc")["serial"] == "12345"
    assert snapshot() == before
    assert Pack.objects.count() == 1 and PackEvent.objects.count() == 1


def test_a_parent_nowhere_commissioned_is_not_commissioned_naming_the_parent(line):
    line.commission(containers={0: CASE})
    before = snapshot()

    report = commissioning(line, [unit_in(line, 0, 0), unit_in(line, 1, 5), container(line, 1, CASE, parent=6)])

    assert rejected(report) == [(2, "not_commissioned"), (3, "not_commissioned")]
    assert line.ssccs[5] in error_on(report, 2, "not_commissioned")["problem"]
    assert line.ssccs[6] in error_on(report, 3, "not_commissioned")["problem"]
    assert error_on(report, 2, "not_commissioned")["serial"] == line.ssccs[5]
    assert snapshot() == before


def test_a_decommissioned_parent_is_refused(line):
    line.commission(containers={0: CASE, 1: CASE})
    applied(line.report("decommissioning", [{**line.sscc(0), "reason": "destroyed"}]))
    before = snapshot()

    report = commissioning(line, [unit_in(line, 0, 1), unit_in(line, 1, 0)])

    assert rejected(report) == [(2, "decommissioned")]
    assert error_on(report, 2, "decommissioned")["serial"] == line.ssccs[0]
    assert snapshot() == before


def test_a_shipped_parent_is_refused(line):
    line.commission(containers={0: CASE, 1: CASE})
    applied(line.report("shipping", [line.sscc(0)]))
    before = snapshot()

    report = commissioning(line, [unit_in(line, 0, 0), unit_in(line, 1, 1)])

    assert rejected(report) == [(1, "shipped")]
    assert error_on(report, 1, "shipped")["serial"] == line.ssccs[0]
    assert snapshot() == before


def test_levels_go_upward_within_one_report(line):
    before = snapshot()

    report = commissioning(
        line,
        [
            container(line, 0, CASE),
            container(line, 1, CASE, parent=0),  # a case into a case
            container(line, 2, PALLET, parent=0),  # a pallet into a case
            container(line, 3, PALLET),
            container(line, 4, PALLET, parent=3),  # a pallet onto a pallet
            unit_in(line, 0, 0),  # fine
        ],
    )

    assert rejected(report) == [(2, "level_order"), (3, "level_order"), (5, "level_order")]
    assert error_on(report, 3, "level_order")["serial"] == line.ssccs[2]  # the pack that cannot go in
    assert snapshot() == before == []


def test_levels_go_upward_with_a_parent_of_an_earlier_report(line):
    line.commission(containers={0: CASE})
    before = snapshot()

    report = commissioning(line, [container(line, 1, PALLET, parent=0), container(line, 2, CASE, parent=0)])

    assert rejected(report) == [(1, "level_order"), (2, "level_order")]
    assert snapshot() == before


def test_a_container_naming_itself_as_parent_is_refused(line):
    report = commissioning(line, [line.unit(0), container(line, 0, CASE, parent=0)])

    assert report.status == LineReport.Status.REJECTED, report.result
    codes = {(e["line"], e["code"]) for e in report.result["errors"]}
    assert codes == {(2, "cycle")}
    assert Pack.objects.count() == PackEvent.objects.count() == 0


def test_a_case_over_its_quantity_within_the_report_is_refused_on_the_line_that_goes_over(line):
    before = snapshot()

    report = commissioning(
        line,
        [container(line, 0, CASE)] + [unit_in(line, i, 0) for i in range(6)],  # a 6th unit in a case of 5
    )

    assert rejected(report) == [(7, "too_many_children")]
    assert error_on(report, 7, "too_many_children")["serial"] == line.ssccs[0]  # the full case
    assert snapshot() == before


def test_a_case_named_after_its_children_is_refused_on_the_child_that_goes_over(line):
    report = commissioning(line, [unit_in(line, i, 0) for i in range(6)] + [container(line, 0, CASE)])

    assert rejected(report) == [(6, "too_many_children")]
    assert Pack.objects.count() == PackEvent.objects.count() == 0


def test_a_case_counts_the_children_it_holds_already(line):
    line.commission(units=range(3), containers={0: CASE})
    line.aggregate(0, units=range(3))
    before = snapshot()

    report = commissioning(line, [unit_in(line, 3, 0), unit_in(line, 4, 0), unit_in(line, 5, 0)])  # 6 of 5

    assert rejected(report) == [(3, "too_many_children")]
    assert snapshot() == before


def test_a_pallet_over_its_quantity_is_refused(line):
    report = commissioning(
        line,
        [
            container(line, 0, PALLET),
            container(line, 1, CASE, parent=0),
            container(line, 2, CASE, parent=0),
            container(line, 3, CASE, parent=0),  # a 3rd case on a pallet of 2
        ],
    )

    assert rejected(report) == [(4, "too_many_children")]
    assert Pack.objects.count() == 0


@pytest.mark.parametrize("parent", [123456789012345678, None, ["000000000000000000"], {"sscc": "1"}])
def test_a_parent_sscc_that_is_not_a_string_is_invalid_line(line, parent):
    line.commission(containers={0: CASE})
    before = snapshot()

    report = commissioning(line, [unit_in(line, 0, 0), {**line.unit(1), "parent_sscc": parent}])

    assert rejected(report) == [(2, "invalid_line")]
    assert snapshot() == before


def test_extra_keys_are_invalid_line(line):
    line.commission(containers={0: CASE})
    before = snapshot()

    report = commissioning(
        line,
        [
            {**unit_in(line, 0, 0), "note": "x"},
            {**container(line, 1, CASE), "parent_sscc": line.ssccs[0], "children": []},
            {**line.unit(2), "parent": line.ssccs[0]},
            unit_in(line, 3, 0),  # fine
        ],
    )

    assert rejected(report) == [(1, "invalid_line"), (2, "invalid_line"), (3, "invalid_line")]
    assert snapshot() == before


def test_a_parent_whose_own_line_is_refused_rejects_the_report(line):
    other = line.new_order()
    (foreign,) = line.allocate(line.sscc_pool, 1, other)
    before = snapshot()

    report = commissioning(
        line,
        [
            {**line.unit(0), "parent_sscc": foreign},
            {"sscc": foreign, "level": CASE},  # not assigned to this order
            {**line.unit(1), "parent_sscc": foreign},
        ],
    )

    assert report.status == LineReport.Status.REJECTED
    assert (2, "not_assigned") in rejected(report)
    assert error_on(report, 2, "not_assigned")["serial"] == foreign
    assert {e["line"] for e in report.result["errors"]} <= {1, 2, 3}
    assert snapshot() == before == []


def test_every_problem_is_listed_at_once_and_nothing_changes(line):
    line.commission(containers={0: CASE, 1: CASE})
    applied(line.report("shipping", [line.sscc(1)]))
    before = snapshot()

    report = commissioning(
        line,
        [
            unit_in(line, 0, 0),  # 1: fine
            unit_in(line, 1, 7),  # 2: parent never commissioned
            unit_in(line, 2, 1),  # 3: parent shipped
            {**line.unit(3), "parent_sscc": "1"},  # 4: malformed
            container(line, 2, PALLET, parent=0),  # 5: a pallet into a case
            {**line.unit(4), "parent_sscc": 7},  # 6: not a string
            line.unit(0),  # 7: twice in this report
        ],
    )

    assert rejected(report) == [
        (2, "not_commissioned"),
        (3, "shipped"),
        (4, "invalid_sscc"),
        (5, "level_order"),
        (6, "invalid_line"),
        (7, "duplicate_in_report"),
    ]
    assert report.lines == 7
    assert snapshot() == before


# --- idempotency --------------------------------------------------------------------------------------------------


def test_a_replay_returns_the_stored_report(line):
    lines = [container(line, 0, CASE), unit_in(line, 0, 0), unit_in(line, 1, 0)]
    first = applied(commissioning(line, lines, report_id="CIC-1", occurred_at=T0))
    before = snapshot()

    again = commissioning(line, json.loads(json.dumps(lines)), report_id="CIC-1", occurred_at=T0)

    assert (again.pk, again.status, again.result) == (first.pk, LineReport.Status.APPLIED, first.result)
    assert again.replayed is True and first.replayed is False
    assert counts_of(again) == {"units": 2, "containers": 1, "packed": 2}
    assert snapshot() == before
    assert LineReport.objects.filter(report_id="CIC-1").count() == 1


def test_a_replay_of_a_rejected_report_returns_the_rejection(line):
    lines = [unit_in(line, 0, 3)]
    first = commissioning(line, lines, report_id="CIC-2")
    again = commissioning(line, lines, report_id="CIC-2")

    assert rejected(first) == [(1, "not_commissioned")]
    assert (again.pk, again.status, again.result, again.replayed) == (
        first.pk,
        LineReport.Status.REJECTED,
        first.result,
        True,
    )


# --- downstream: pack history, EPCIS out, EPCIS query -------------------------------------------------------------


def test_pack_history_shows_the_commissioning_and_the_packing(line):
    report = applied(
        commissioning(
            line,
            [unit_in(line, 0, 0), container(line, 0, CASE, parent=1), container(line, 1, PALLET)],
            occurred_at=T0,
        )
    )
    superuser = make_user(is_superuser=True)

    history = selectors.get_pack_history(user=superuser, product_code=line.code, serial=line.units[0])

    assert [(e.action, e.parent_serial, e.report_id, e.report_kind, e.occurred_at) for e in history.events] == [
        ("commissioned", "", report.report_id, "commissioning", T0),
        ("packed", line.ssccs[0], report.report_id, "commissioning", T0),
    ]
    assert history.pack.status == "packed"
    assert [(ref.serial, ref.level_name, ref.depth) for ref in history.above] == [
        (line.ssccs[0], "case", 1),
        (line.ssccs[1], "pallet", 2),
    ]
    pallet = selectors.get_pack_history(user=superuser, sscc=line.ssccs[1])
    assert pallet.below.counts == {"cases": 1, "units": 1}


def test_epcis_export_has_the_commissioning_and_an_aggregation_add(line):
    applied(commissioning(line, [container(line, 0, CASE), unit_in(line, 0, 0), unit_in(line, 1, 0)], occurred_at=T0))
    unit_epcs = [gs1.sgtin_urn(line.code, line.units[i], line.product.company_prefix_length) for i in (0, 1)]
    case_epc = gs1.sscc_urn(line.ssccs[0], len(line.sscc_pool.sscc_prefix))

    content = document(EpcisScope(batch_id=line.batch.pk))

    assert validate_epcis_document(content, version="2.0", syntax="json") == []
    event_list = json.loads(content)["epcisBody"]["eventList"]
    commissioned = [
        e for e in event_list if (e["type"], e["action"], e["bizStep"]) == ("ObjectEvent", "ADD", "commissioning")
    ]
    assert set(unit_epcs) <= {epc for e in commissioned for epc in e["epcList"]}
    assert case_epc in {epc for e in commissioned for epc in e["epcList"]}
    (packing,) = [e for e in event_list if e["type"] == "AggregationEvent"]
    assert (packing["action"], packing["bizStep"], packing["parentID"]) == ("ADD", "packing", case_epc)
    assert sorted(packing["childEPCs"]) == sorted(unit_epcs)
    assert packing["eventTime"] == "2025-03-03T08:00:00.000Z"
    # The commissioning comes before the packing of what it commissioned.
    assert max(event_list.index(e) for e in commissioned) < event_list.index(packing)


def test_epcis_query_returns_the_aggregation_by_biz_step(make_api_client):
    plant = Plant()
    report = apply_line_report(
        report_id=f"cic-query-{next(_numbers)}",
        kind="commissioning",
        order=plant.order,
        lines=[
            {"sscc": plant.cases[0], "level": CASE},
            *({"product_code": plant.gtin, "serial": plant.units[i], "parent_sscc": plant.cases[0]} for i in (0, 1)),
            {"product_code": plant.gtin, "serial": plant.units[2]},
        ],
        actor=plant.user,
        occurred_at=T0,
    )
    assert report.status == LineReport.Status.APPLIED, report.result
    client = make_api_client(plant.user)

    response = client.get("/api/v1/epcis/events/", {"EQ_bizStep": "packing"})

    assert response.status_code == 200, response.content
    (packing,) = response.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert (packing["type"], packing["action"], packing["bizStep"], packing["parentID"]) == (
        "AggregationEvent",
        "ADD",
        "packing",
        plant.case(0),
    )
    assert sorted(packing["childEPCs"]) == sorted([plant.unit(0), plant.unit(1)])
    commissioned = client.get("/api/v1/epcis/events/", {"EQ_bizStep": "commissioning"}).json()
    epcs = {epc for e in commissioned["epcisBody"]["queryResults"]["resultsBody"]["eventList"] for epc in e["epcList"]}
    assert epcs == {plant.unit(0), plant.unit(1), plant.unit(2), plant.case(0)}


@pytest.mark.parametrize(
    "params",
    [{}, {"eventType": "AggregationEvent"}, {"EQ_action": "ADD"}, {"EQ_disposition": "in_progress"}, "MATCH_parentID"],
    ids=["unfiltered", "eventType", "action", "disposition", "parentID"],
)
def test_epcis_query_filters_find_the_aggregation_of_a_commissioning_report(make_api_client, params):
    plant = Plant()
    report = apply_line_report(
        report_id=f"cic-query-{next(_numbers)}",
        kind="commissioning",
        order=plant.order,
        lines=[
            {"sscc": plant.cases[0], "level": CASE},
            {"product_code": plant.gtin, "serial": plant.units[0], "parent_sscc": plant.cases[0]},
        ],
        actor=plant.user,
        occurred_at=T0,
    )
    assert report.status == LineReport.Status.APPLIED, report.result
    if params == "MATCH_parentID":
        params = {"MATCH_parentID": plant.case(0)}

    response = make_api_client(plant.user).get("/api/v1/epcis/events/", params)

    assert response.status_code == 200, response.content
    found = response.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    aggregations = [(e["action"], e["parentID"], e["childEPCs"]) for e in found if e["type"] == "AggregationEvent"]
    assert aggregations == [("ADD", plant.case(0), [plant.unit(0)])]


# --- scale (PostgreSQL) -------------------------------------------------------------------------------------------


def test_a_thousand_units_into_ten_cases_onto_a_pallet_in_one_report():
    if connection.vendor != "postgresql":
        pytest.skip("the bulk path is exercised on PostgreSQL")
    line = Line(units=1000, ssccs=11, levels={CASE: 100, PALLET: 10})
    pallet_index = 10
    lines = [unit_in(line, i, i // 100) for i in range(1000)]
    lines += [container(line, c, CASE, parent=pallet_index) for c in range(10)]
    lines.append(container(line, pallet_index, PALLET))

    report = applied(commissioning(line, lines, occurred_at=T0))

    assert counts_of(report) == {"units": 1000, "containers": 11, "packed": 1010}
    assert report.lines == 1011
    cases = {p.serial: p for p in Pack.objects.filter(level=CASE)}
    pallet = line.container(pallet_index)
    assert (pallet.status, pallet.parent_id) == ("commissioned", None)
    assert {(p.parent_id, p.status) for p in cases.values()} == {(pallet.pk, "packed")}
    assert len(cases) == 10
    units = dict(Pack.objects.filter(level=0).values_list("serial", "parent_id"))
    assert units == {line.units[i]: cases[line.ssccs[i // 100]].pk for i in range(1000)}
    assert set(Pack.objects.filter(level=0).values_list("status", flat=True)) == {"packed"}
    assert PackEvent.objects.filter(report=report, action="commissioned").count() == 1011
    packed = PackEvent.objects.filter(report=report, action="packed")
    assert packed.count() == 1010
    assert set(packed.values_list("occurred_at", flat=True)) == {T0}
    assert dict(packed.filter(pack__level=0).values_list("pack__serial", "parent__serial")) == {
        line.units[i]: line.ssccs[i // 100] for i in range(1000)
    }

    history = selectors.get_pack_history(user=make_user(is_superuser=True), sscc=line.ssccs[pallet_index])
    assert history.below.counts == {"cases": 10, "units": 1000}
    assert history.below.total == 1010
