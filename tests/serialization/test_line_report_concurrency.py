"""Line reports racing each other on real parallel connections (PostgreSQL only).

Threads, each with its own database connection, are released together by a barrier. Where a test needs the race at
its worst — both reports validated against the same state before either writes — a barrier is also put between
validation and the write, so the loser must be caught by the database (the unique constraint, or the preconditions
of its UPDATE) and not by validation. Whatever the timing: one report wins, the other is stored REJECTED naming the
clashing serials, nothing is applied twice, and nobody gets an exception.

SQLite ignores ``SELECT … FOR UPDATE`` and serialises whole transactions, so these tests prove nothing there and are
skipped with the reason.
"""

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import connection, connections

from masterdata.models import UPPER_ALNUM, Market
from serialization.models import Allocation, AllocationRange, LineReport, Pack, PackEvent
from serialization.services import line_reports
from tests.serialization.test_line_reports import Line

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _needs_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip(
            "Concurrency tests need PostgreSQL: SQLite ignores row locks and serialises writers. "
            "Run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/backoffice_lr"
        )


@pytest.fixture
def line():
    # A transactional test before this one may have flushed the seeded markets.
    Market.objects.get_or_create(
        code="EU",
        defaults={
            "name": "European Union (FMD)",
            "serial_alphabet": UPPER_ALNUM,
            "serial_length": 12,
            "randomisation_required": True,
            "max_guess_probability": Decimal("0.0001"),
            "retention_years_after_release": 5,
            "retention_years_after_expiry": 1,
            "reporting_format": Market.ReportingFormat.EU_HUB,
        },
    )
    return Line(units=300, ssccs=6)


def run_concurrently(work: list[Callable[[], object]]) -> list[object]:
    """Run each callable in its own thread, all started together; exceptions come back as results."""
    barrier = threading.Barrier(len(work))
    results: list[object] = [None] * len(work)

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work[i]()
        except Exception as exc:  # returned, so the test can assert there were none
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a report hung (deadlock?)"
    return results


@pytest.fixture
def write_together(monkeypatch):
    """Hold every report's first write until all ``n`` reports have validated (later attempts pass freely)."""

    def install(kind: str, n: int) -> None:
        barrier = threading.Barrier(n)
        seen = threading.local()
        handler = line_reports._HANDLERS[kind]

        def write(ctx, cursor, report):
            if not getattr(seen, "waited", False):
                seen.waited = True
                barrier.wait(timeout=30)
            return handler.write(ctx, cursor, report)

        monkeypatch.setitem(line_reports._HANDLERS, kind, line_reports._Handler(handler.validate, write))

    return install


def outcome(results: list[object]) -> list[str]:
    assert all(isinstance(r, LineReport) for r in results), results
    return sorted(r.status for r in results)


def test_same_order_same_serials_one_report_wins(line):
    lines = [line.unit(i) for i in range(200)]

    results = run_concurrently(
        [
            lambda: line.report("commissioning", lines, report_id="A"),
            lambda: line.report("commissioning", lines, report_id="B"),
        ]
    )

    assert outcome(results) == ["applied", "rejected"]
    loser = next(r for r in results if r.status == "rejected")
    assert loser.result["error_count"] == 200
    assert {e["code"] for e in loser.result["errors"]} == {"already_commissioned"}
    assert (Pack.objects.count(), PackEvent.objects.count()) == (200, 200)


def test_commissioning_race_across_orders_is_caught_by_the_unique_constraint(line, write_together):
    # A serial that two orders both hold (an allocation range written past the services, say): the order locks do
    # not meet, so only the unique (product code, serial) constraint can stop the second commissioning.
    other = line.new_order()
    first = line.order.allocations.get(pool=line.unit_pool)
    start = first.ranges.get().first_index
    shared = Allocation.objects.create(
        pool=line.unit_pool,
        request_id="shared",
        purpose=Allocation.Purpose.PACKAGING_ORDER,
        reference=other.number,
        packaging_order=other,
        requested_quantity=10,
        quantity=10,
        fingerprint="x",
    )
    AllocationRange.objects.create(allocation=shared, pool=line.unit_pool, first_index=start + 5, count=10)
    write_together("commissioning", 2)

    results = run_concurrently(
        [
            lambda: line.report("commissioning", [line.unit(i) for i in range(20)], report_id="A"),
            lambda: line.report("commissioning", [line.unit(i) for i in range(5, 15)], report_id="B", order=other),
        ]
    )

    assert outcome(results) == ["applied", "rejected"]
    loser = next(r for r in results if r.status == "rejected")
    if loser.report_id == "A":
        assert [(e["line"], e["code"]) for e in loser.result["errors"]] == [
            (i, "already_commissioned") for i in range(6, 16)
        ]
        assert Pack.objects.count() == 10
    else:
        assert [(e["line"], e["code"]) for e in loser.result["errors"]] == [
            (i, "already_commissioned") for i in range(1, 11)
        ]
        assert Pack.objects.count() == 20
    assert PackEvent.objects.filter(report=loser).count() == 0


def test_two_parents_racing_for_one_child_one_wins(line, write_together):
    other = line.new_order()
    spare = line.allocate(line.sscc_pool, 1, other)[0]
    line.commission(units=range(3), containers={0: 2})
    line.report("commissioning", [{"sscc": spare, "level": 2}], order=other)
    write_together("aggregation", 2)

    results = run_concurrently(
        [
            lambda: line.report(
                "aggregation", [{"parent_sscc": line.ssccs[0], "children": [line.unit(0), line.unit(1)]}], report_id="A"
            ),
            lambda: line.report(
                "aggregation",
                [{"parent_sscc": spare, "children": [line.unit(2), line.unit(1)]}],
                report_id="B",
                order=other,
            ),
        ]
    )

    assert outcome(results) == ["applied", "rejected"]
    loser = next(r for r in results if r.status == "rejected")
    assert [(e["line"], e["code"], e["serial"]) for e in loser.result["errors"]] == [
        (1, "already_packed", line.units[1])
    ]
    winner_parent = line.container(0) if loser.report_id == "B" else Pack.objects.get(serial=spare)
    assert line.pack(1).parent_id == winner_parent.pk
    assert PackEvent.objects.filter(report=loser).count() == 0
    assert Pack.objects.filter(status="packed").count() == 2


def test_one_report_sent_many_times_at_once_is_applied_once(line):
    lines = [line.unit(i) for i in range(50)]

    results = run_concurrently([lambda: line.report("commissioning", lines, report_id="SAME") for _ in range(4)])

    assert outcome(results) == ["applied"] * 4
    assert len({r.pk for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False, True, True, True]
    assert (LineReport.objects.count(), Pack.objects.count(), PackEvent.objects.count()) == (1, 50, 50)


def test_shipping_a_pallet_while_its_case_is_filled_never_leaves_a_unit_behind(line):
    line.commission(units=range(4), containers={0: 2, 1: 3})
    line.aggregate(0, units=[0])
    line.aggregate(1, cases=[0])

    results = run_concurrently(
        [
            lambda: line.report("shipping", [line.sscc(1)], report_id="SHIP"),
            lambda: line.report(
                "aggregation",
                [{"parent_sscc": line.ssccs[0], "children": [line.unit(1), line.unit(2)]}],
                report_id="PACK",
            ),
        ]
    )

    statuses = {r.report_id: r.status for r in results}
    assert statuses["SHIP"] == "applied"
    in_case = Pack.objects.filter(parent=line.container(0))
    if statuses["PACK"] == "applied":  # packed first: the units shipped with the pallet
        assert set(in_case.values_list("status", flat=True)) == {"shipped"}
        assert in_case.count() == 3
    else:  # shipped first: the case could not take more
        assert [e["code"] for e in next(r for r in results if r.report_id == "PACK").result["errors"]] == ["shipped"]
        assert list(in_case.values_list("status", flat=True)) == ["shipped"]
    assert not Pack.objects.filter(parent__status="shipped").exclude(status="shipped").exists()
