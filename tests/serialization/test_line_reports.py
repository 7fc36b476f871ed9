"""Line reports: commissioning, decommissioning, aggregation, unpacking, shipping — each applied all-or-nothing,
each rule refused with its exact problem and line, idempotent replays, the vectorised serial → index inverse, the
CBV mapping and the API."""

import datetime as dt
import itertools
import json

import numpy as np
import pytest
from django.urls import reverse

from masterdata.models import NUMERIC, UPPER_ALNUM, Market, PackagingLevel
from serialization import cbv
from serialization.exceptions import IdempotencyConflict
from serialization.models import Allocation, Batch, LineReport, Pack, PackagingOrder, PackEvent
from serialization.services import allocate_serials, create_generated_pool, create_list_pool, pool_permutation
from serialization.services.line_reports import (
    InvalidReport,
    OrderClosed,
    apply_line_report,
    pool_indices,
)
from serialization.services.materialise import iter_serial_chunks
from tests.factories import make_company, make_location, make_membership, make_product, make_user

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 3, 3, 8, 0, tzinfo=dt.UTC)
_numbers = itertools.count(1)


class Line:
    """An MAH with a randomised EU unit pool, an SSCC pool, a batch and an open packaging order holding
    ``units`` unit serials and ``ssccs`` SSCCs."""

    def __init__(self, *, units: int = 40, ssccs: int = 12, levels: dict[int, int] | None = None) -> None:
        self.company = make_company()
        self.user = make_user(roles=["Line system"])
        self.product = make_product(owner=self.company, markets=("EU",))
        for level, quantity in (levels or {}).items():
            PackagingLevel.objects.create(product=self.product, level=level, quantity=quantity, uses_sscc=level > 0)
        self.code = self.product.product_code
        self.unit_pool = create_generated_pool(
            owner=self.company, actor=self.user, product=self.product, initial_fill=units * 3
        )
        assert self.unit_pool.randomised
        self.sscc_pool = create_generated_pool(
            owner=self.company,
            actor=self.user,
            sscc_prefix=self.company.prefixes.get(),
            extension_digit="3",
            initial_fill=ssccs * 3,
        )
        self.batch = Batch.objects.create(product=self.product, lot=f"LOT{next(_numbers)}", expiry="270600")
        self.order = self.new_order()
        self.units = self.allocate(self.unit_pool, units, self.order)
        self.ssccs = self.allocate(self.sscc_pool, ssccs, self.order)

    def new_order(self) -> PackagingOrder:
        return PackagingOrder.objects.create(
            number=f"PO-{next(_numbers):04d}",
            batch=self.batch,
            line=make_location(company=self.company, kind="line"),
            planned_quantity=1000,
        )

    def allocate(self, pool, quantity: int, order: PackagingOrder) -> list[str]:
        allocation = allocate_serials(
            pool=pool,
            quantity=quantity,
            actor=self.user,
            request_id=f"req-{next(_numbers)}",
            purpose=Allocation.Purpose.PACKAGING_ORDER,
            reference=order.number,
        )
        Allocation.objects.filter(pk=allocation.pk).update(packaging_order=order)
        return [s.decode() for chunk in iter_serial_chunks(allocation) for s in chunk.tolist()]

    def report(self, kind: str, lines: list, *, report_id: str | None = None, order=None, **kwargs) -> LineReport:
        return apply_line_report(
            report_id=report_id or f"R-{next(_numbers)}",
            kind=kind,
            order=order or self.order,
            lines=lines,
            actor=self.user,
            **kwargs,
        )

    def unit(self, i: int) -> dict:
        return {"product_code": self.code, "serial": self.units[i]}

    def sscc(self, i: int) -> dict:
        return {"sscc": self.ssccs[i]}

    def commission(self, units=range(0), containers: dict[int, int] | None = None) -> LineReport:
        lines = [self.unit(i) for i in units]
        lines += [{"sscc": self.ssccs[i], "level": level} for i, level in (containers or {}).items()]
        report = self.report(LineReport.Kind.COMMISSIONING, lines)
        assert report.status == LineReport.Status.APPLIED, report.result
        return report

    def aggregate(self, parent: int, units=(), cases=()) -> LineReport:
        children = [self.unit(i) for i in units] + [self.sscc(i) for i in cases]
        report = self.report(LineReport.Kind.AGGREGATION, [{"parent_sscc": self.ssccs[parent], "children": children}])
        assert report.status == LineReport.Status.APPLIED, report.result
        return report

    def pack(self, i: int) -> Pack:
        return Pack.objects.get(product_code=self.code, serial=self.units[i])

    def container(self, i: int) -> Pack:
        return Pack.objects.get(product_code="", serial=self.ssccs[i])


@pytest.fixture
def line():
    return Line()


def counts() -> tuple[int, int]:
    return Pack.objects.count(), PackEvent.objects.count()


def errors(report: LineReport) -> list[tuple[int, str, str]]:
    assert report.status == LineReport.Status.REJECTED
    return [(e["line"], e["code"], e["serial"]) for e in report.result["errors"]]


def events(pack: Pack) -> list[tuple[str, str | None, str]]:
    rows = PackEvent.objects.filter(pack=pack).order_by("pk").select_related("parent")
    return [(e.action, e.parent.serial if e.parent else None, e.reason) for e in rows]


# --- commissioning ------------------------------------------------------------------------------------------------


def test_commissioning_creates_units_and_containers_with_events(line):
    report = line.report(
        "commissioning",
        [line.unit(0), line.unit(1), {"sscc": line.ssccs[0], "level": 2}],
        occurred_at=T0,
    )

    assert report.status == LineReport.Status.APPLIED
    assert report.lines == 3
    assert report.result == {"counts": {"units": 2, "containers": 1}}
    assert report.replayed is False
    unit = line.pack(0)
    assert (unit.level, unit.status, unit.eu_state, unit.parent_id) == (0, "commissioned", "Active", None)
    assert (unit.order_id, unit.batch_id, unit.pool_id, unit.commissioned_at) == (
        line.order.pk,
        line.batch.pk,
        line.unit_pool.pk,
        T0,
    )
    assert unit.index == pool_permutation(line.unit_pool).index_of(line.units[0])
    case = line.container(0)
    assert (case.level, case.product_code, case.pool_id) == (2, "", line.sscc_pool.pk)
    assert case.index == pool_permutation(line.sscc_pool).index_of(line.ssccs[0][8:17])
    assert events(unit) == [("commissioned", None, "")]
    assert PackEvent.objects.get(pack=case).report_id == report.pk
    assert counts() == (3, 3)


def snapshot() -> list[tuple]:
    """Everything a report may change: every pack's state and every event."""
    packs = list(Pack.objects.order_by("pk").values_list("pk", "status", "parent_id", "reason", "eu_state", "level"))
    return [*packs, *PackEvent.objects.order_by("pk").values_list("pk", "pack_id", "action")]


def test_commissioning_streams_rows_in_chunks(line, monkeypatch):
    from serialization.services import line_reports

    monkeypatch.setattr(line_reports, "_COPY_CHUNK_BYTES", 100)  # a COPY block split mid-row, many times
    line.commission(units=range(40), containers={0: 2, 1: 3})
    assert sorted(Pack.objects.values_list("serial", flat=True)) == sorted(line.units[:40] + line.ssccs[:2])
    assert PackEvent.objects.count() == 42


def test_commissioning_lists_every_problem_with_its_line_and_changes_nothing(line):
    line.commission(units=[0])
    other = line.new_order()
    elsewhere = line.allocate(line.unit_pool, 2, other)
    bad_check_digit = line.ssccs[3][:17] + str((int(line.ssccs[3][17]) + 1) % 10)
    never_generated = "Z" * 12 if line.units[0] != "Z" * 12 else "Y" * 12
    before = snapshot()

    report = line.report(
        "commissioning",
        [
            line.unit(1),  # fine
            line.unit(0),  # 2: commissioned by the first report
            {"product_code": line.code, "serial": never_generated},  # 3
            {"product_code": line.code, "serial": elsewhere[0]},  # 4: another order's serial
            {"product_code": "09521234543213", "serial": line.units[2]},  # 5: not the order's product
            line.unit(1),  # 6: twice in this report
            {"sscc": bad_check_digit, "level": 2},  # 7
            {"sscc": line.ssccs[4], "level": 4},  # 8
            {"product_code": line.code},  # 9
            {"product_code": line.code, "serial": "bad serial!"},  # 10: space is not in set 82
        ],
    )

    assert errors(report) == [
        (2, "already_commissioned", line.units[0]),
        (3, "unknown_serial", never_generated),
        (4, "not_assigned", elsewhere[0]),
        (5, "wrong_product", line.units[2]),
        (6, "duplicate_in_report", line.units[1]),
        (7, "invalid_sscc", bad_check_digit),
        (8, "invalid_level", line.ssccs[4]),
        (9, "invalid_line", json.dumps({"product_code": line.code})),
        (10, "invalid_serial", "bad serial!"),
    ]
    assert report.result["error_count"] == 9
    problems = {e["line"]: e["problem"] for e in report.result["errors"]}
    assert problems[2] == (
        f"Serial {line.units[0]} of {line.code} was commissioned already on order {line.order.number} (now "
        "commissioned); a serial is commissioned once."
    )
    assert problems[3] == (
        f"Serial {never_generated} of {line.code} is in no serial pool of {line.code}: it was never generated or "
        "imported. Check the number as scanned."
    )
    assert problems[4] == (
        f"Serial {elsewhere[0]} of {line.code} is not assigned to order {line.order.number}: commission only serials "
        "allocated to this order."
    )
    assert problems[6] == (
        f"Serial {line.units[1]} of {line.code} is commissioned on line 1 of this report already; a serial is "
        "commissioned once."
    )
    assert problems[8] == (
        f"SSCC {line.ssccs[4]}: level 4 is not a container level; use 1 (bundle), 2 (case) or 3 (pallet)."
    )
    assert snapshot() == before
    assert report.lines == 10


def test_a_report_with_three_bad_lines_lists_all_three(line):
    line.commission(units=[0])
    before = snapshot()

    report = line.report(
        "commissioning",
        [line.unit(1), line.unit(0), line.unit(2), {"product_code": line.code, "serial": "NOPE"}, line.unit(0)],
    )

    assert errors(report) == [
        (2, "already_commissioned", line.units[0]),
        (4, "unknown_serial", "NOPE"),
        (5, "duplicate_in_report", line.units[0]),
    ]
    assert report.result["error_count"] == 3
    assert snapshot() == before
    assert not Pack.objects.filter(serial__in=[line.units[1], line.units[2]]).exists()


def test_error_list_is_capped_but_counted(line, monkeypatch):
    from serialization.services import line_reports

    monkeypatch.setattr(line_reports, "MAX_REPORTED_ERRORS", 2)
    report = line.report("commissioning", [{"product_code": line.code, "serial": f"NOPE{i}"} for i in range(5)])
    assert [e["line"] for e in report.result["errors"]] == [1, 2]
    assert report.result["error_count"] == 5


def test_commissioning_accepts_an_allocation_referencing_the_order_number(line):
    allocation = allocate_serials(
        pool=line.unit_pool,
        quantity=1,
        actor=line.user,
        request_id="by-reference",
        purpose=Allocation.Purpose.PACKAGING_ORDER,
        reference=line.order.number,
    )
    serial = pool_permutation(line.unit_pool).serial_at(allocation.ranges.get().first_index)
    assert allocation.packaging_order_id is None

    report = line.report("commissioning", [{"product_code": line.code, "serial": serial}])

    assert report.status == LineReport.Status.APPLIED
    assert Pack.objects.get(serial=serial).order_id == line.order.pk


def test_commissioning_resolves_serials_of_list_pools(line):
    from io import BytesIO

    from serialization.services import import_serials

    pool = create_list_pool(owner=line.company, actor=line.user, product=line.product, source="file")
    result = import_serials(pool=pool, layout="csv", stream=BytesIO(b"serial\nLISTED-A\nLISTED-B\n"), actor=line.user)
    assert result.status == "done"
    pool.refresh_from_db()
    listed = line.allocate(pool, 2, line.order)
    assert listed == ["LISTED-A", "LISTED-B"]

    report = line.report("commissioning", [{"product_code": line.code, "serial": s} for s in listed])

    assert report.status == LineReport.Status.APPLIED, report.result
    assert sorted(Pack.objects.filter(pool=pool).values_list("serial", "index")) == [("LISTED-A", 0), ("LISTED-B", 1)]


def test_a_cmo_commissions_serials_of_its_partner_pool_at_the_mah_pool(line):
    from serialization.models import PartnerSegment, SerialPool

    cmo = make_company(is_mah=False, is_cmo=True)
    shared = allocate_serials(
        pool=line.unit_pool, quantity=10, actor=line.user, request_id="for-cmo", purpose="cmo", reference=cmo.name
    )
    parent_first = shared.ranges.get().first_index
    partner = SerialPool.objects.create(
        owner=cmo,
        kind=SerialPool.Kind.SGTIN,
        product=line.product,
        product_code=line.code,
        name="CMO share",
        source=SerialPool.Source.PARTNER,
        parent_pool=line.unit_pool,
        alphabet=line.unit_pool.alphabet,
        length=line.unit_pool.length,
        filled=10,
    )
    PartnerSegment.objects.create(
        pool=partner, first_index=0, count=10, parent_first_index=parent_first, allocation=shared
    )
    cmo_order = line.new_order()
    held = line.allocate(partner, 4, cmo_order)  # partner indices 0-3
    permutation = pool_permutation(line.unit_pool)
    serials = [permutation.serial_at(parent_first + i) for i in range(6)]

    report = line.report("commissioning", [{"product_code": line.code, "serial": s} for s in serials], order=cmo_order)

    assert held == serials[:4]  # the partner pool's own materialisation agrees
    assert errors(report) == [(5, "not_assigned", serials[4]), (6, "not_assigned", serials[5])]
    applied = line.report(
        "commissioning", [{"product_code": line.code, "serial": s} for s in serials[:4]], order=cmo_order
    )
    assert applied.status == LineReport.Status.APPLIED
    assert sorted(Pack.objects.values_list("pool_id", "index")) == [
        (line.unit_pool.pk, parent_first + i) for i in range(4)
    ]


def test_commissioning_is_refused_on_a_closed_order(line):
    PackagingOrder.objects.filter(pk=line.order.pk).update(status=PackagingOrder.Status.CLOSED)
    with pytest.raises(OrderClosed, match=f"Order {line.order.number} is closed"):
        line.report("commissioning", [line.unit(0)])
    assert not LineReport.objects.exists()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "painting"}, "kind"),
        ({"lines": []}, "lines"),
        ({"lines": {"product_code": "x"}}, "lines"),
        ({"report_id": ""}, "report_id"),
        ({"report_id": "x" * 101}, "report_id"),
    ],
)
def test_malformed_envelopes_are_refused_and_not_stored(line, kwargs, field):
    arguments = {"report_id": "R-1", "kind": "commissioning", "order": line.order, "lines": [line.unit(0)]}
    with pytest.raises(InvalidReport) as raised:
        apply_line_report(**{**arguments, **kwargs}, actor=line.user)
    assert raised.value.field == field
    assert not LineReport.objects.exists()


def test_a_report_that_keeps_losing_races_is_not_stored(line, monkeypatch):
    from serialization.services import line_reports

    def always_clash(ctx, cursor, report):
        raise line_reports._Clash

    handler = line_reports._HANDLERS["commissioning"]
    monkeypatch.setitem(line_reports._HANDLERS, "commissioning", line_reports._Handler(handler.validate, always_clash))

    with pytest.raises(line_reports.ReportConflict, match="kept clashing with other reports"):
        line.report("commissioning", [line.unit(0)])
    assert (LineReport.objects.count(), Pack.objects.count()) == (0, 0)


def test_a_naive_occurred_at_is_refused(line):
    with pytest.raises(InvalidReport) as raised:
        line.report("commissioning", [line.unit(0)], occurred_at=dt.datetime(2025, 3, 3, 8, 0))
    assert raised.value.field == "occurred_at"


# --- idempotency --------------------------------------------------------------------------------------------------


def test_the_fingerprint_tells_apart_columns_that_concatenate_alike():
    from serialization.services.line_reports import _fingerprint, _parse

    order = PackagingOrder(pk=1)

    def fingerprint(*serials: str) -> str:
        return _fingerprint(
            "commissioning", order, None, _parse("commissioning", [{"product_code": "1", "serial": s} for s in serials])
        )

    assert fingerprint("AB", "C") != fingerprint("A", "BC")
    assert fingerprint("AB", "C") == fingerprint("AB", "C")


def test_a_replay_returns_the_first_result_unchanged(line):
    first = line.report("commissioning", [line.unit(0), line.unit(1)], report_id="LINE-7-0001", occurred_at=T0)
    before = snapshot()

    again = line.report("commissioning", [line.unit(0), line.unit(1)], report_id="LINE-7-0001", occurred_at=T0)

    assert again.pk == first.pk
    assert again.replayed is True
    assert (again.status, again.result) == (LineReport.Status.APPLIED, {"counts": {"units": 2, "containers": 0}})
    assert snapshot() == before
    assert LineReport.objects.count() == 1


def test_a_replay_of_a_rejected_report_returns_the_rejection(line):
    first = line.report("commissioning", [{"product_code": line.code, "serial": "NOPE"}], report_id="R-bad")
    again = line.report("commissioning", [{"product_code": line.code, "serial": "NOPE"}], report_id="R-bad")
    assert (again.pk, again.status, again.result) == (first.pk, LineReport.Status.REJECTED, first.result)


@pytest.mark.parametrize(
    "change",
    [
        {"lines": "other"},
        {"kind": "shipping"},
        {"occurred_at": T0 + dt.timedelta(seconds=1)},
    ],
)
def test_a_report_id_reused_with_other_content_is_a_conflict(line, change):
    line.report("commissioning", [line.unit(0)], report_id="R-42", occurred_at=T0)
    before = snapshot()
    arguments = {"kind": "commissioning", "lines": [line.unit(0)], "occurred_at": T0}
    if change.get("lines") == "other":
        change = {"lines": [line.unit(1)]}
    with pytest.raises(IdempotencyConflict, match="Report id R-42 was used already for a different commissioning"):
        line.report(report_id="R-42", **{**arguments, **change})
    assert snapshot() == before


def test_a_report_id_reused_on_another_order_is_a_conflict(line):
    line.report("commissioning", [line.unit(0)], report_id="R-43")
    with pytest.raises(IdempotencyConflict):
        line.report("commissioning", [line.unit(0)], report_id="R-43", order=line.new_order())


# --- aggregation --------------------------------------------------------------------------------------------------


def test_aggregation_packs_units_into_cases_and_cases_onto_a_pallet(line):
    line.commission(units=range(4), containers={0: 2, 1: 2, 2: 3})

    report = line.report(
        "aggregation",
        [
            {"parent_sscc": line.ssccs[0], "children": [line.unit(0), line.unit(1)]},
            {"parent_sscc": line.ssccs[1], "children": [line.unit(2), line.unit(3)]},
            {"parent_sscc": line.ssccs[2], "children": [line.sscc(0), line.sscc(1)]},
        ],
        occurred_at=T0,
    )

    assert report.status == LineReport.Status.APPLIED, report.result
    assert report.result == {"counts": {"packed": 6, "parents": 3}}
    case_a, case_b, pallet = line.container(0), line.container(1), line.container(2)
    assert [line.pack(i).parent_id for i in range(4)] == [case_a.pk, case_a.pk, case_b.pk, case_b.pk]
    assert {line.pack(i).status for i in range(4)} == {"packed"}
    assert (case_a.parent_id, case_a.status, case_b.parent_id) == (pallet.pk, "packed", pallet.pk)
    assert (pallet.parent_id, pallet.status) == (None, "commissioned")
    assert events(line.pack(0)) == [("commissioned", None, ""), ("packed", line.ssccs[0], "")]
    assert events(case_a) == [("commissioned", None, ""), ("packed", line.ssccs[2], "")]
    assert PackEvent.objects.filter(report=report).count() == 6


def test_aggregation_refuses_a_child_that_already_has_a_parent_or_appears_twice(line):
    line.commission(units=range(3), containers={0: 2, 1: 2})
    line.aggregate(0, units=[0])
    before = snapshot()

    report = line.report(
        "aggregation",
        [
            {"parent_sscc": line.ssccs[1], "children": [line.unit(1), line.unit(0)]},
            {"parent_sscc": line.ssccs[0], "children": [line.unit(2), line.unit(1)]},
        ],
    )

    assert errors(report) == [(1, "already_packed", line.units[0]), (2, "packed_twice", line.units[1])]
    problems = [e["problem"] for e in report.result["errors"]]
    assert problems == [
        f"Serial {line.units[0]} of {line.code} is packed in SSCC {line.ssccs[0]} already; unpack it first (a pack "
        "has one parent at a time).",
        f"Serial {line.units[1]} of {line.code} is packed on line 1 of this report too; a pack has one parent at a "
        "time.",
    ]
    assert snapshot() == before


def test_aggregation_refuses_children_that_are_not_commissioned_or_decommissioned(line):
    line.commission(units=range(2), containers={0: 2})
    line.report("decommissioning", [{**line.unit(1), "reason": "destroyed"}])
    before = snapshot()

    report = line.report(
        "aggregation",
        [
            {"parent_sscc": line.ssccs[0], "children": [line.unit(0), line.unit(2), line.unit(1)]},
            {"parent_sscc": line.ssccs[5], "children": [line.unit(0)]},
        ],
    )

    assert errors(report) == [
        (1, "not_commissioned", line.units[2]),
        (1, "decommissioned", line.units[1]),
        (2, "not_commissioned", line.ssccs[5]),
        (2, "packed_twice", line.units[0]),
    ]
    assert report.result["errors"][1]["problem"] == (
        f"Serial {line.units[1]} of {line.code} is decommissioned (destroyed) and cannot be packed."
    )
    assert report.result["errors"][2]["problem"] == f"SSCC {line.ssccs[5]} is not commissioned; commission it first."
    assert snapshot() == before


def test_aggregation_levels_go_upward_only(line):
    line.commission(units=[0], containers={0: 2, 1: 2, 2: 3})
    before = snapshot()

    report = line.report(
        "aggregation",
        [
            {"parent_sscc": line.ssccs[0], "children": [line.sscc(1)]},  # a case into a case
            {"parent_sscc": line.ssccs[1], "children": [line.sscc(2)]},  # a pallet into a case
        ],
    )

    assert errors(report) == [(1, "level_order", line.ssccs[1]), (2, "level_order", line.ssccs[2])]
    assert report.result["errors"][1]["problem"] == (
        f"SSCC {line.ssccs[2]} is a pallet and cannot go into SSCC {line.ssccs[1]}, a case: levels go upward "
        "(unit → bundle/case → pallet)."
    )
    assert snapshot() == before


def test_aggregation_refuses_cycles(line):
    line.commission(containers={0: 2, 1: 3})
    line.aggregate(1, cases=[0])  # the pallet holds the case
    before = snapshot()

    report = line.report(
        "aggregation",
        [
            {"parent_sscc": line.ssccs[0], "children": [line.sscc(1)]},  # the pallet into the case it holds
            {"parent_sscc": line.ssccs[1], "children": [line.sscc(1)]},  # the pallet into itself
        ],
    )

    assert errors(report) == [
        (1, "level_order", line.ssccs[1]),
        (1, "cycle", line.ssccs[1]),
        (2, "cycle", line.ssccs[1]),
    ]
    problems = [e["problem"] for e in report.result["errors"]]
    assert problems[1] == (
        f"SSCC {line.ssccs[1]} holds SSCC {line.ssccs[0]} (directly or further down), so it cannot go into it: "
        "aggregation has no cycles."
    )
    assert problems[2] == f"SSCC {line.ssccs[1]} cannot contain itself."
    assert snapshot() == before


def test_aggregation_respects_the_packaging_level_quantity():
    line = Line(levels={0: 1, 2: 3, 3: 2})
    line.commission(units=range(6), containers={0: 2, 1: 2, 2: 2, 3: 3})
    line.aggregate(0, units=[0, 1])
    before = snapshot()

    report = line.report(
        "aggregation",
        [
            {"parent_sscc": line.ssccs[0], "children": [line.unit(2)]},  # 3 of 3: fine
            {"parent_sscc": line.ssccs[1], "children": [line.unit(3), line.unit(4)]},
            {"parent_sscc": line.ssccs[0], "children": [line.unit(5)]},  # a 4th unit in a case of 3
            {"parent_sscc": line.ssccs[3], "children": [line.sscc(0), line.sscc(1), line.sscc(2)]},  # 3 cases, max 2
        ],
    )

    assert errors(report) == [(3, "too_many_children", line.ssccs[0]), (4, "too_many_children", line.ssccs[3])]
    assert report.result["errors"][0]["problem"] == (
        f"SSCC {line.ssccs[0]} (case) would hold 4 packs; {line.code} packs at most 3 per case."
    )
    assert snapshot() == before


def test_aggregation_shape_problems_name_the_child(line):
    line.commission(units=[0], containers={0: 2})
    report = line.report(
        "aggregation",
        [
            {"parent_sscc": line.ssccs[0], "children": [line.unit(0), {"serial": "X"}]},
            {"parent_sscc": line.ssccs[0]},
            {"parent_sscc": line.ssccs[0], "children": [{"sscc": "123"}]},
        ],
    )
    assert [(e["line"], e["code"], e["problem"]) for e in report.result["errors"]] == [
        (
            1,
            "invalid_line",
            'Child 2: Expected {"product_code", "serial"} for a unit or {"sscc"} for a container; got [\'serial\'].',
        ),
        (
            2,
            "invalid_line",
            'Expected {"parent_sscc", "children": [...]} with each child {"product_code", "serial"} for a unit or '
            "{\"sscc\"} for a container; got ['parent_sscc'].",
        ),
        (3, "invalid_sscc", "'123' is not an SSCC: an SSCC has exactly 18 digits."),
    ]


# --- unpacking and re-aggregation ---------------------------------------------------------------------------------


def test_unpacking_without_children_empties_the_container(line):
    line.commission(units=range(3), containers={0: 2})
    line.aggregate(0, units=[0, 1, 2])

    report = line.report("unpacking", [{"parent_sscc": line.ssccs[0]}])

    assert report.status == LineReport.Status.APPLIED, report.result
    assert report.result == {"counts": {"unpacked": 3, "parents": 1}}
    assert [(line.pack(i).parent_id, line.pack(i).status) for i in range(3)] == [(None, "commissioned")] * 3
    assert events(line.pack(2)) == [
        ("commissioned", None, ""),
        ("packed", line.ssccs[0], ""),
        ("unpacked", line.ssccs[0], ""),
    ]


def test_unpacking_named_children_leaves_the_others(line):
    line.commission(units=range(3), containers={0: 2})
    line.aggregate(0, units=[0, 1, 2])

    report = line.report("unpacking", [{"parent_sscc": line.ssccs[0], "children": [line.unit(1)]}])

    assert report.status == LineReport.Status.APPLIED
    assert [line.pack(i).parent_id for i in range(3)] == [line.container(0).pk, None, line.container(0).pk]


def test_unpacking_refuses_children_not_in_that_parent_and_empty_parents(line):
    line.commission(units=range(3), containers={0: 2, 1: 2, 2: 2})
    line.aggregate(0, units=[0])
    line.aggregate(1, units=[1])
    before = snapshot()

    report = line.report(
        "unpacking",
        [
            {"parent_sscc": line.ssccs[0], "children": [line.unit(1), line.unit(2), line.unit(0)]},
            {"parent_sscc": line.ssccs[2]},
            {"parent_sscc": line.ssccs[0]},
        ],
    )

    assert errors(report) == [
        (1, "not_in_parent", line.units[1]),
        (1, "not_in_parent", line.units[2]),
        (2, "nothing_to_unpack", line.ssccs[2]),
        (3, "duplicate_in_report", line.units[0]),
    ]
    assert [e["problem"] for e in report.result["errors"]][:3] == [
        f"Serial {line.units[1]} of {line.code} is not in SSCC {line.ssccs[0]}: it is in SSCC {line.ssccs[1]}; "
        "unpack it from there.",
        f"Serial {line.units[2]} of {line.code} is not in SSCC {line.ssccs[0]}: it is in no container.",
        f"SSCC {line.ssccs[2]} holds nothing to unpack.",
    ]
    assert snapshot() == before


def test_re_aggregation_after_unpacking_is_a_new_event(line):
    line.commission(units=[0], containers={0: 2, 1: 2})
    line.aggregate(0, units=[0])
    refused = line.report("aggregation", [{"parent_sscc": line.ssccs[1], "children": [line.unit(0)]}])
    assert errors(refused) == [(1, "already_packed", line.units[0])]

    line.report("unpacking", [{"parent_sscc": line.ssccs[0], "children": [line.unit(0)]}])
    line.aggregate(1, units=[0])

    assert line.pack(0).parent_id == line.container(1).pk
    assert events(line.pack(0)) == [
        ("commissioned", None, ""),
        ("packed", line.ssccs[0], ""),
        ("unpacked", line.ssccs[0], ""),
        ("packed", line.ssccs[1], ""),
    ]


# --- decommissioning ----------------------------------------------------------------------------------------------


def test_a_decommissioned_unit_leaves_its_case(line):
    line.commission(units=range(2), containers={0: 2})
    line.aggregate(0, units=[0, 1])

    report = line.report("decommissioning", [{**line.unit(0), "reason": "damaged"}], occurred_at=T0)

    assert report.status == LineReport.Status.APPLIED, report.result
    assert report.result == {"counts": {"decommissioned": 1, "left_container": 1, "by_reason": {"damaged": 1}}}
    unit = line.pack(0)
    assert (unit.status, unit.reason, unit.eu_state, unit.parent_id) == ("decommissioned", "damaged", "Destroyed", None)
    assert list(line.container(0).children.values_list("serial", flat=True)) == [line.units[1]]
    assert events(unit) == [
        ("commissioned", None, ""),
        ("packed", line.ssccs[0], ""),
        ("unpacked", line.ssccs[0], ""),
        ("decommissioned", None, "damaged"),
    ]


@pytest.mark.parametrize("reason", cbv.DECOMMISSION_REASONS)
def test_each_decommissioning_reason_sets_its_eu_state(line, reason):
    line.commission(units=[0])
    line.report("decommissioning", [{**line.unit(0), "reason": reason}])
    assert (line.pack(0).reason, line.pack(0).eu_state) == (reason, cbv.DECOMMISSION[reason].eu_state)


def test_decommissioning_problems(line):
    line.commission(units=range(3), containers={0: 2, 1: 2})
    line.aggregate(0, units=[1])
    line.report("decommissioning", [{**line.unit(0), "reason": "sample"}])
    before = snapshot()

    report = line.report(
        "decommissioning",
        [
            {**line.unit(0), "reason": "sample"},
            {**line.unit(2), "reason": "lost"},
            {**line.unit(5), "reason": "stolen"},
            {"sscc": line.ssccs[0], "reason": "destroyed"},
            {"sscc": line.ssccs[1], "reason": "destroyed"},
        ],
    )

    assert errors(report) == [
        (1, "already_decommissioned", line.units[0]),
        (2, "invalid_reason", line.units[2]),
        (3, "not_commissioned", line.units[5]),
        (4, "has_children", line.ssccs[0]),
    ]
    assert report.result["errors"][3]["problem"] == (
        f"SSCC {line.ssccs[0]} still holds 1 pack; unpack them, or decommission them in the same report."
    )
    assert snapshot() == before


def test_a_container_may_be_decommissioned_with_everything_in_it(line):
    line.commission(units=range(2), containers={0: 2})
    line.aggregate(0, units=[0, 1])

    report = line.report(
        "decommissioning",
        [
            {**line.unit(0), "reason": "destroyed"},
            {"sscc": line.ssccs[0], "reason": "destroyed"},
            {**line.unit(1), "reason": "destroyed"},
        ],
    )

    assert report.status == LineReport.Status.APPLIED, report.result
    assert {p.status for p in Pack.objects.all()} == {"decommissioned"}
    assert not Pack.objects.filter(parent__isnull=False).exists()


def test_shipped_packs_may_be_decommissioned(line):
    line.commission(units=[0])
    line.report("shipping", [line.unit(0)])
    report = line.report("decommissioning", [{**line.unit(0), "reason": "stolen"}])
    assert report.status == LineReport.Status.APPLIED
    assert (line.pack(0).status, line.pack(0).eu_state) == ("decommissioned", "Stolen")


# --- shipping -----------------------------------------------------------------------------------------------------


def test_shipping_a_pallet_ships_everything_on_it(line):
    line.commission(units=range(4), containers={0: 2, 1: 2, 2: 3})
    line.aggregate(0, units=[0, 1])
    line.aggregate(1, units=[2])
    line.aggregate(2, cases=[0, 1])

    report = line.report("shipping", [line.sscc(2), line.unit(3)])

    assert report.status == LineReport.Status.APPLIED, report.result
    assert report.result == {"counts": {"shipped": 7, "lines": 2}}
    assert set(Pack.objects.values_list("status", flat=True)) == {"shipped"}
    assert line.container(2).status == "shipped"
    assert line.pack(0).parent_id == line.container(0).pk  # shipping keeps the hierarchy
    assert events(line.pack(0))[-1] == ("shipped", line.ssccs[0], "")
    assert events(line.container(2))[-1] == ("shipped", None, "")
    assert PackEvent.objects.filter(report=report).count() == 7


def test_shipping_problems(line):
    line.commission(units=range(3), containers={0: 2})
    line.aggregate(0, units=[0])
    line.report("shipping", [line.unit(1)])
    line.report("decommissioning", [{**line.unit(2), "reason": "sample"}])
    before = snapshot()

    report = line.report("shipping", [line.unit(0), line.unit(1), line.unit(2), line.unit(3), line.unit(1)])

    assert errors(report) == [
        (1, "packed_in_container", line.units[0]),
        (2, "already_shipped", line.units[1]),
        (3, "decommissioned", line.units[2]),
        (4, "not_commissioned", line.units[3]),
        (5, "duplicate_in_report", line.units[1]),
    ]
    assert report.result["errors"][0]["problem"] == (
        f"Serial {line.units[0]} of {line.code} is packed in SSCC {line.ssccs[0]}; ship SSCC {line.ssccs[0]}, or "
        "unpack it first."
    )
    assert snapshot() == before


def test_shipped_packs_cannot_be_packed_or_unpacked(line):
    line.commission(units=range(2), containers={0: 2, 1: 2})
    line.aggregate(0, units=[0])
    line.report("shipping", [line.sscc(0), line.unit(1)])

    packing = line.report("aggregation", [{"parent_sscc": line.ssccs[1], "children": [line.unit(1)]}])
    unpacking = line.report("unpacking", [{"parent_sscc": line.ssccs[0]}])

    assert errors(packing) == [(1, "shipped", line.units[1])]
    assert errors(unpacking) == [(1, "shipped", line.ssccs[0])]


def test_shipping_and_decommissioning_are_taken_on_a_closed_order(line):
    line.commission(units=range(2))
    PackagingOrder.objects.filter(pk=line.order.pk).update(status=PackagingOrder.Status.CLOSED)
    assert line.report("shipping", [line.unit(0)]).status == LineReport.Status.APPLIED
    assert line.report("decommissioning", [{**line.unit(1), "reason": "sample"}]).status == "applied"


# --- serial → index ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alphabet", "length", "randomised", "no_leading_zero"),
    [
        (UPPER_ALNUM, 12, True, False),
        (NUMERIC, 10, False, False),
        (NUMERIC, 8, True, True),
        (NUMERIC, 20, True, False),
        (NUMERIC, 20, False, True),
    ],
)
def test_pool_indices_inverts_the_pool_permutation(alphabet, length, randomised, no_leading_zero):
    user = make_user()
    Market.objects.filter(code="US").update(randomisation_required=False)
    product = make_product(markets=("US",))
    pool = create_generated_pool(
        owner=product.owner,
        actor=user,
        product=product,
        alphabet=alphabet,
        length=length,
        randomised=randomised,
        no_leading_zero=no_leading_zero,
        initial_fill=500,
    )
    permutation = pool_permutation(pool)
    serials = permutation.serials(0, 500)
    beyond = permutation.serial_at(500)  # a valid serial of the format, past what the pool was filled with
    wrong_char = "!" + serials[0][1:]
    values = [*serials[::-1], beyond, serials[0][:-1], wrong_char, "é" * length]

    found = pool_indices(pool, values)

    assert found.tolist() == [*range(499, -1, -1), -1, -1, -1, -1]
    assert [permutation.index_of(s) for s in serials[:5]] == [0, 1, 2, 3, 4]


def test_pool_indices_of_sscc_references(line):
    head = len(line.sscc_pool.sscc_extension_digit + line.sscc_pool.sscc_prefix)
    references = [sscc[head:17] for sscc in line.ssccs]
    expected = [pool_permutation(line.sscc_pool).index_of(r) for r in references]
    assert pool_indices(line.sscc_pool, references).tolist() == expected
    assert np.all(np.array(expected) >= 0)


# --- CBV ------------------------------------------------------------------------------------------------------------


def test_cbv_mapping_uses_standard_terms_only():
    def terms(reason: str) -> tuple[str, str | None]:
        return cbv.DECOMMISSION[reason].biz_step, cbv.DECOMMISSION[reason].disposition

    assert terms("destroyed") == ("destroying", "destroyed")
    assert terms("sample") == ("sampling", "non_sellable_other")
    assert terms("dispensed") == ("dispensing", "dispensed")
    assert terms("line_reject") == ("decommissioning", "inactive")
    for step in cbv.DECOMMISSION.values():
        assert cbv.is_biz_step(step.biz_step)
        assert cbv.is_disposition(step.disposition)
        assert step.eu_state in cbv.EU_STATES
    assert (cbv.COMMISSIONED.biz_step, cbv.COMMISSIONED.disposition) == ("commissioning", "active")
    assert (cbv.PACKED.biz_step, cbv.PACKED.disposition) == ("packing", "in_progress")
    assert (cbv.SHIPPED.biz_step, cbv.SHIPPED.disposition) == ("shipping", "in_transit")
    assert cbv.COMMISSIONED.biz_step_urn == "urn:epcglobal:cbv:bizstep:commissioning"
    assert cbv.DECOMMISSION["stolen"].disposition_urn == "urn:epcglobal:cbv:disp:stolen"
    assert set(cbv.DECOMMISSION_REASONS) == {
        "line_reject",
        "destroyed",
        "sample",
        "free_sample",
        "damaged",
        "stolen",
        "exported",
        "locked",
        "dispensed",
    }
    with pytest.raises(KeyError, match="unknown decommissioning reason 'lost'"):
        cbv.decommission_step("lost")
    with pytest.raises(ValueError, match="not a CBV business step"):
        cbv.biz_step_urn("painting")


# --- API ------------------------------------------------------------------------------------------------------------

URL = "/api/v1/line-reports/"


@pytest.fixture
def api(line, make_api_client):
    make_membership(user=line.user, company=line.company)
    return make_api_client(line.user)


def test_api_applies_a_report_and_answers_201(line, api):
    body = {"report_id": "API-1", "kind": "commissioning", "order": line.order.number, "lines": [line.unit(0)]}

    response = api.post(URL, body, format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert {k: data[k] for k in ("report_id", "kind", "order", "status", "lines", "result")} == {
        "report_id": "API-1",
        "kind": "commissioning",
        "order": line.order.number,
        "status": "applied",
        "lines": 1,
        "result": {"counts": {"units": 1, "containers": 0}},
    }
    assert data["submitted_by"] == line.user.username
    assert reverse("api-v1:line-report-detail", kwargs={"report_id": "API-1"}) == f"{URL}API-1/"


def test_api_rejects_with_422_and_every_problem(line, api):
    body = {
        "report_id": "API-2",
        "kind": "commissioning",
        "order": str(line.order.pk),
        "lines": [line.unit(0), {"product_code": line.code, "serial": "NOPE"}, line.unit(0)],
    }

    response = api.post(URL, body, format="json")

    assert response.status_code == 422
    assert response.json()["status"] == "rejected"
    assert response.json()["result"]["errors"] == [
        {
            "line": 2,
            "code": "unknown_serial",
            "serial": "NOPE",
            "problem": f"Serial NOPE of {line.code} is in no serial pool of {line.code}: it was never generated or "
            "imported. Check the number as scanned.",
        },
        {
            "line": 3,
            "code": "duplicate_in_report",
            "serial": line.units[0],
            "problem": f"Serial {line.units[0]} of {line.code} is commissioned on line 1 of this report already; a "
            "serial is commissioned once.",
        },
    ]
    assert not Pack.objects.exists()


def test_api_replay_answers_200_with_the_first_result_and_reuse_409(line, api):
    body = {"report_id": "API-3", "kind": "commissioning", "order": line.order.number, "lines": [line.unit(0)]}
    first = api.post(URL, body, format="json")

    replay = api.post(URL, body, format="json")
    reuse = api.post(URL, {**body, "lines": [line.unit(1)]}, format="json")

    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json() == first.json()
    assert reuse.status_code == 409
    assert reuse.json()["error"]["code"] == "idempotency_conflict"
    assert reuse.json()["error"]["fields"] == {"report_id": [reuse.json()["error"]["message"]]}


def test_api_refuses_malformed_envelopes_with_400(line, api):
    good = {"report_id": "API-4", "kind": "commissioning", "order": line.order.number, "lines": [line.unit(0)]}
    cases = [
        ({**good, "kind": "painting"}, "kind"),
        ({**good, "lines": []}, "lines"),
        ({**good, "lines": "x"}, "lines"),
        ({**good, "order": "PO-NOPE"}, "order"),
        ({k: v for k, v in good.items() if k != "report_id"}, "report_id"),
    ]
    for body, field in cases:
        response = api.post(URL, body, format="json")
        assert response.status_code == 400, (body, response.json())
        assert field in response.json()["error"]["fields"], response.json()
    assert not LineReport.objects.exists()


def test_api_hides_other_companies_orders_and_reports(line, api, make_api_client):
    api.post(URL, {"report_id": "API-5", "kind": "commissioning", "order": line.order.number, "lines": [line.unit(0)]})
    stranger = make_user(roles=["Line system"])
    make_membership(user=stranger, company=make_company())
    client = make_api_client(stranger)

    post = client.post(
        URL, {"report_id": "API-6", "kind": "commissioning", "order": line.order.number, "lines": [line.unit(1)]}
    )
    get = client.get(f"{URL}API-5/")

    assert post.status_code == 400
    assert post.json()["error"]["fields"] == {
        "order": [f"No packaging order '{line.order.number}' (number or id) is visible to you."]
    }
    assert get.status_code == 404


def test_api_takes_bodies_beyond_the_form_upload_limit(line, api):
    lines = [{"product_code": line.code, "serial": f"NOT-ISSUED-{i:08d}"} for i in range(60_000)]
    body = json.dumps({"report_id": "API-BIG", "kind": "commissioning", "order": line.order.number, "lines": lines})
    assert len(body) > 2_621_440  # Django's DATA_UPLOAD_MAX_MEMORY_SIZE

    response = api.post(URL, body, content_type="application/json")

    assert response.status_code == 422
    assert response.json()["result"]["error_count"] == 60_000
    assert len(response.json()["result"]["errors"]) == 1_000
    assert response.json()["result"]["errors"][-1]["line"] == 1_000


def test_api_answers_413_past_its_own_bound_and_400_for_broken_json(line, api, monkeypatch):
    from serialization.api import line_reports as api_module

    monkeypatch.setattr(api_module, "MAX_REPORT_BYTES", 100)
    body = {"report_id": "API-9", "kind": "commissioning", "order": line.order.number, "lines": [line.unit(0)] * 5}
    too_large = api.post(URL, body, format="json")
    broken = api.post(URL, '{"report_id": ', content_type="application/json")

    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "report_too_large"
    assert broken.status_code == 400
    assert broken.json()["error"]["message"].startswith("The body is not valid JSON")
    assert not LineReport.objects.exists()


def test_api_get_returns_the_stored_report(line, api):
    api.post(URL, {"report_id": "API-7", "kind": "commissioning", "order": line.order.number, "lines": [line.unit(0)]})
    response = api.get(f"{URL}API-7/")
    assert response.status_code == 200
    assert (response.json()["report_id"], response.json()["status"]) == ("API-7", "applied")


def test_api_needs_the_add_permission(line, make_api_client):
    auditor = make_user(roles=["Auditor"])
    response = make_api_client(auditor).post(
        URL, {"report_id": "API-8", "kind": "commissioning", "order": line.order.number, "lines": [line.unit(0)]}
    )
    assert response.status_code == 403
    assert not LineReport.objects.exists()
