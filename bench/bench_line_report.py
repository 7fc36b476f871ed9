"""Line reports at production scale: commissioning 1,000,000 units, then aggregating them into 10,000 cases and 200
pallets — every report validated and stored through ``apply_line_report`` — beside a naive per-row ORM baseline.

Target (issue 4, PostgreSQL, this machine): a report commissioning the units and aggregating them into cases and
pallets, validated and stored, at >= 150,000 units/s (1,000,000 units in <= 6.7 s).

What runs, per backend (a scratch database created and dropped by the bench):
  1. one EU product (randomised FF1 pool, upper-case alphanumeric x 12) with packaging levels case = 100 units and
     pallet = 50 cases, an SSCC pool, a batch and a packaging order holding ``--units`` unit serials and
     ``--cases`` + ``--pallets`` SSCCs (allocated in requests of 500,000; materialised outside the timing);
  2. timed: one commissioning report naming every unit with its case (``parent_sscc``), every case with its pallet,
     and the pallets — or, with ``--separate-reports``, one report each: commissioning the units; commissioning the
     cases and pallets; aggregation of the units into the cases (``--cases`` lines of 100 children); aggregation of
     the cases onto the pallets;
  3. checks: every pack stored once with its pool index, every unit in a case, every case on a pallet, one event
     per pack and step, and a replay of the big report answered from the stored row; then, on PostgreSQL, the
     database floor: the same pack and event rows copied server-side (``INSERT … SELECT``) into empty tables with
     only the keys the issue requires — what the database alone needs, printed beside the service's figure;
  4. with ``--what-if-no-fk-checks`` (an experiment, PostgreSQL superuser only) step 2 runs with the per-row
     foreign-key checks switched off, to show their share of the time; no target verdict is given then;
  5. the naive baseline in the same database, on ``--baseline-units`` further units (and their cases and pallet):
     per unit the usual ORM round trips — already commissioned? (``exists()``), which index (scalar FF1), held by
     the order's allocation? (a range query), ``Pack.objects.create``, ``PackEvent.objects.create`` — and per child
     of an aggregation ``get``, checks, ``save``, ``PackEvent.objects.create``; extrapolated to ``--units``.

On SQLite (the demo database) the default is 100,000 units, 1,000 cases and 20 pallets.

Run:  .venv/bin/python bench/bench_line_report.py [--units 1000000] [--cases 10000] [--pallets 200]
                                                [--baseline-units 10000] [--backend all|postgres|sqlite]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    add_backend_argument,
    line,
    machine,
    make_bench_pool,
    per_second,
    run_backends,
    scratch_database,
    secs,
    timed,
)

TARGET_UNITS_PER_SECOND = 150_000
REQUEST = 500_000


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--units", type=int, help="units commissioned (default 1,000,000 on PostgreSQL, 100,000 on SQLite)"
    )
    parser.add_argument("--cases", type=int, help="cases the units go into (default: units / 100)")
    parser.add_argument("--pallets", type=int, help="pallets the cases go onto (default: cases / 50)")
    parser.add_argument(
        "--baseline-units", type=int, default=10_000, help="units for the naive baseline (default 10,000)"
    )
    parser.add_argument(
        "--separate-reports",
        action="store_true",
        help="four reports instead of one: commission the units, commission the containers, aggregate the units "
        "into the cases, aggregate the cases onto the pallets",
    )
    parser.add_argument(
        "--what-if-no-fk-checks",
        action="store_true",
        help="PostgreSQL experiment, not a mode of the service: run with session_replication_role = replica, which "
        "skips the per-row foreign-key checks (superuser only), to show what they cost",
    )
    add_backend_argument(parser)
    return parser.parse_args(argv)


class Plant:
    """The product, pools, order and the serials it holds."""

    def __init__(self, args: argparse.Namespace) -> None:
        from django.contrib.auth import get_user_model

        from masterdata.models import CompanyPrefix, PackagingLevel
        from serialization.models import Batch, PackagingOrder
        from serialization.services import create_generated_pool

        self.args = args
        self.user, _ = get_user_model().objects.get_or_create(username="bench-line")
        extra = args.baseline_units
        self.cases_per_pallet = -(-args.cases // args.pallets)
        self.units_per_case = -(-args.units // args.cases)
        baseline_cases = -(-extra // self.units_per_case)
        self.unit_pool = make_bench_pool(fill=args.units + extra)
        self.product = self.unit_pool.product
        PackagingLevel.objects.create(product=self.product, level=2, quantity=self.units_per_case, uses_sscc=True)
        PackagingLevel.objects.create(product=self.product, level=3, quantity=self.cases_per_pallet, uses_sscc=True)
        prefix = CompanyPrefix.objects.get(company=self.product.owner)
        self.sscc_pool = create_generated_pool(
            owner=self.product.owner,
            actor=self.user,
            sscc_prefix=prefix,
            extension_digit="3",
            initial_fill=args.cases + args.pallets + baseline_cases + 1,
        )
        batch = Batch.objects.create(product=self.product, lot="BENCH1", expiry="281200")
        from masterdata.models import Location

        site = Location.objects.create(
            company=self.product.owner, kind="line", name="Bench line", gln=_gln(prefix.prefix), country="IE"
        )
        self.order = PackagingOrder.objects.create(
            number="PO-BENCH", batch=batch, line=site, planned_quantity=args.units + extra
        )
        self.units = self.allocate(self.unit_pool, args.units + extra)
        self.ssccs = self.allocate(self.sscc_pool, args.cases + args.pallets + baseline_cases + 1)

    def allocate(self, pool, quantity: int) -> list[str]:
        from serialization.models import Allocation
        from serialization.services import allocate_serials
        from serialization.services.materialise import iter_serial_chunks

        serials: list[str] = []
        for start in range(0, quantity, REQUEST):
            allocation = allocate_serials(
                pool=pool,
                quantity=min(REQUEST, quantity - start),
                actor=self.user,
                request_id=f"bench-{pool.pk}-{start}",
                purpose=Allocation.Purpose.PACKAGING_ORDER,
                reference=self.order.number,
            )
            Allocation.objects.filter(pk=allocation.pk).update(packaging_order=self.order)
            for chunk in iter_serial_chunks(allocation):
                serials.extend(chunk.astype("U").tolist())
        return serials


def _gln(prefix: str) -> str:
    from masterdata import gs1

    body = (prefix + "1").ljust(12, "0")
    return body + gs1.check_digit(body)


def report(plant: Plant, kind: str, report_id: str, lines: list):
    from serialization.services.line_reports import apply_line_report

    result = apply_line_report(report_id=report_id, kind=kind, order=plant.order, lines=lines, actor=plant.user)
    if result.status != "applied":
        raise SystemExit(f"report {report_id} was rejected: {result.result['errors'][:5]}")
    return result


def run_service(plant: Plant) -> dict[str, float]:
    args = plant.args
    code = plant.product.product_code
    units = plant.units[: args.units]
    cases = plant.ssccs[: args.cases]
    pallets = plant.ssccs[args.cases : args.cases + args.pallets]
    per_case, per_pallet = plant.units_per_case, plant.cases_per_pallet
    if not args.separate_reports:
        # One report, as a line sends it at the end of the order: every unit into its case, every case onto its
        # pallet, the pallets.
        lines = [
            {"product_code": code, "serial": serial, "parent_sscc": cases[i // per_case]}
            for i, serial in enumerate(units)
        ]
        lines += [{"sscc": s, "level": 2, "parent_sscc": pallets[i // per_pallet]} for i, s in enumerate(cases)]
        lines += [{"sscc": s, "level": 3} for s in pallets]
        phases = {}
        phases["commission units into cases onto pallets"], _ = timed(
            lambda: report(plant, "commissioning", "BENCH-ALL", lines)
        )
        replay_seconds, replay = timed(lambda: report(plant, "commissioning", "BENCH-ALL", lines))
        if not replay.replayed:
            raise SystemExit("the replay of the report was applied again")
        phases["(replay of the report)"] = replay_seconds
        return phases
    unit_lines = [{"product_code": code, "serial": serial} for serial in units]
    container_lines = [{"sscc": s, "level": 2} for s in cases] + [{"sscc": s, "level": 3} for s in pallets]
    case_lines = [
        {
            "parent_sscc": case,
            "children": [{"product_code": code, "serial": s} for s in units[i * per_case : (i + 1) * per_case]],
        }
        for i, case in enumerate(cases)
    ]
    pallet_lines = [
        {"parent_sscc": pallet, "children": [{"sscc": s} for s in cases[i * per_pallet : (i + 1) * per_pallet]]}
        for i, pallet in enumerate(pallets)
    ]
    phases = {}
    phases["commission units"], _ = timed(lambda: report(plant, "commissioning", "BENCH-UNITS", unit_lines))
    phases["commission containers"], _ = timed(lambda: report(plant, "commissioning", "BENCH-SSCC", container_lines))
    phases["aggregate into cases"], _ = timed(lambda: report(plant, "aggregation", "BENCH-CASES", case_lines))
    phases["aggregate onto pallets"], _ = timed(lambda: report(plant, "aggregation", "BENCH-PALLETS", pallet_lines))
    replay_seconds, replay = timed(lambda: report(plant, "commissioning", "BENCH-UNITS", unit_lines))
    if not replay.replayed:
        raise SystemExit("the replay of the unit report was applied again")
    phases["(replay of the unit report)"] = replay_seconds
    return phases


def check(plant: Plant) -> None:
    from django.db.models import Count

    from serialization.models import Pack, PackEvent

    args = plant.args
    packs = Pack.objects.filter(order=plant.order)
    expected = args.units + args.cases + args.pallets
    by_level = dict(packs.values_list("level").annotate(n=Count("pk")))
    problems = []
    if by_level != {0: args.units, 2: args.cases, 3: args.pallets}:
        problems.append(f"packs by level {by_level}")
    if packs.filter(level=0, parent__isnull=True).exists() or packs.filter(level=2, parent__isnull=True).exists():
        problems.append("a unit or case without a parent")
    if packs.exclude(level=3).exclude(status="packed").exists():
        problems.append("a unit or case not packed")
    events = PackEvent.objects.filter(pack__order=plant.order).count()
    if events != expected + args.units + args.cases:
        problems.append(f"{events} events, expected {expected + args.units + args.cases}")
    sample = packs.filter(level=0).order_by("pk")[:1000].values_list("serial", "index")
    from serialization.services import pool_permutation

    permutation = pool_permutation(plant.unit_pool)
    if any(permutation.serial_at(index) != serial for serial, index in sample):
        problems.append("a unit stored with the wrong pool index")
    if problems:
        raise SystemExit("checks failed: " + "; ".join(problems))
    print(f"  checks: {expected:,} packs, {events:,} events, hierarchy complete, indices verified", flush=True)


def database_floor(plant: Plant) -> tuple[float, float]:
    """What PostgreSQL alone needs to store this run's rows, without the service: the packs (with the keys the
    issue asks for — primary key, unique (product code, serial), parent index) and their events (primary key,
    (pack, time) index) copied by one server-side ``INSERT … SELECT`` each, in id order, into empty tables; no
    parsing, no checks, no client. The service cannot be faster than this on the same machine."""
    from django.db import connection, transaction

    from serialization.models import LineReport, Pack, PackEvent

    pack, event, report = Pack._meta.db_table, PackEvent._meta.db_table, LineReport._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE bench_floor_pack (LIKE {pack} INCLUDING DEFAULTS)")
        cursor.execute("ALTER TABLE bench_floor_pack ADD PRIMARY KEY (id)")
        cursor.execute("CREATE UNIQUE INDEX ON bench_floor_pack (product_code, serial)")
        cursor.execute("CREATE INDEX ON bench_floor_pack (parent_id)")
        cursor.execute(f"CREATE TABLE bench_floor_event (LIKE {event} INCLUDING DEFAULTS)")
        cursor.execute("ALTER TABLE bench_floor_event ADD PRIMARY KEY (id)")
        cursor.execute("CREATE INDEX ON bench_floor_event (pack_id, occurred_at)")
        cursor.execute("CHECKPOINT")

        def copy_packs():
            with transaction.atomic():
                cursor.execute(
                    f"INSERT INTO bench_floor_pack SELECT * FROM {pack} WHERE order_id = %s ORDER BY id",
                    [plant.order.pk],
                )

        def copy_events():
            with transaction.atomic():
                cursor.execute(
                    f"INSERT INTO bench_floor_event SELECT * FROM {event} WHERE report_id IN "
                    f"(SELECT id FROM {report} WHERE order_id = %s) ORDER BY id",
                    [plant.order.pk],
                )

        try:
            pack_seconds, _ = timed(copy_packs)
            event_seconds, _ = timed(copy_events)
        finally:
            cursor.execute("DROP TABLE bench_floor_pack, bench_floor_event")
    return pack_seconds, event_seconds


def run_baseline(plant: Plant) -> tuple[float, int]:
    """The naive line-report handler, per row through the ORM, on units the service run did not touch."""
    from django.db import transaction
    from django.utils import timezone

    from serialization.models import AllocationRange, LineReport, Pack, PackEvent
    from serialization.services import pool_permutation

    args = plant.args
    code = plant.product.product_code
    units = plant.units[args.units :]
    n = len(units)
    ssccs = plant.ssccs[args.cases + args.pallets :]
    per_case = plant.units_per_case
    n_cases = -(-n // per_case)
    cases, pallet = ssccs[:n_cases], ssccs[n_cases]
    permutation = pool_permutation(plant.unit_pool)
    sscc_permutation = pool_permutation(plant.sscc_pool)
    head = len(plant.sscc_pool.sscc_extension_digit + plant.sscc_pool.sscc_prefix)
    now = timezone.now()

    def commission(report, pool, serial, product_code, level, index):
        if Pack.objects.filter(product_code=product_code, serial=serial).exists():
            raise SystemExit("baseline: already commissioned")
        held = AllocationRange.objects.filter(
            pool=pool, first_index__lte=index, allocation__packaging_order=plant.order
        ).order_by("-first_index")[:1]
        if not held or index >= held[0].first_index + held[0].count:
            raise SystemExit("baseline: not assigned")
        pack = Pack.objects.create(
            pool=pool,
            index=index,
            product_code=product_code,
            serial=serial,
            level=level,
            batch_id=plant.order.batch_id,
            order=plant.order,
            commissioned_at=now,
            eu_state="Active",
        )
        PackEvent.objects.create(pack=pack, report=report, action="commissioned", occurred_at=now)

    def pack_into(report, parent, product_code, serial):
        child = Pack.objects.get(product_code=product_code, serial=serial)
        if child.parent_id is not None or child.status != "commissioned" or child.level >= parent.level:
            raise SystemExit("baseline: cannot pack")
        child.parent = parent
        child.status = "packed"
        child.save(update_fields=["parent", "status", "updated_at"])
        PackEvent.objects.create(pack=child, report=report, action="packed", parent=parent, occurred_at=now)

    def run():
        with transaction.atomic():
            report = LineReport.objects.create(report_id="NAIVE-1", kind="commissioning", status="applied")
            for serial in units:
                commission(report, plant.unit_pool, serial, code, 0, permutation.index_of(serial))
            for sscc, level in [*((c, 2) for c in cases), (pallet, 3)]:
                index = sscc_permutation.index_of(sscc[head:17])
                commission(report, plant.sscc_pool, sscc, "", level, index)
        with transaction.atomic():
            report = LineReport.objects.create(report_id="NAIVE-2", kind="aggregation", status="applied")
            parents = {s: Pack.objects.get(product_code="", serial=s) for s in [*cases, pallet]}
            for i, case in enumerate(cases):
                for serial in units[i * per_case : (i + 1) * per_case]:
                    pack_into(report, parents[case], code, serial)
            for case in cases:
                pack_into(report, parents[pallet], "", case)

    seconds, _ = timed(run)
    return seconds, n


def run(args: argparse.Namespace) -> int:
    from django.db import connection

    # The target is PostgreSQL's; SQLite (the demo database) gets a tenth of the work by default.
    args.units = args.units or (1_000_000 if connection.vendor == "postgresql" else 100_000)
    args.cases = args.cases or max(1, args.units // 100)
    args.pallets = args.pallets or max(1, args.cases // 50)
    started = time.perf_counter()
    plant = Plant(args)
    print(
        f"  set-up: {args.units + args.baseline_units:,} unit serials and {len(plant.ssccs):,} SSCCs allocated and "
        f"materialised in {secs(time.perf_counter() - started)}",
        flush=True,
    )
    if args.what_if_no_fk_checks and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
        print("  WHAT-IF: foreign-key checks skipped for the service run (session_replication_role = replica)")
    phases = run_service(plant)
    if args.what_if_no_fk_checks and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = origin")
    total = sum(seconds for name, seconds in phases.items() if not name.startswith("("))
    for name, seconds in phases.items():
        print(f"  {name:<44} {secs(seconds):>18}", flush=True)
    check(plant)
    if connection.vendor == "postgresql":
        pack_seconds, event_seconds = database_floor(plant)
        floor = pack_seconds + event_seconds
        print(
            f"  database floor: the same packs inserted server-side into an empty table with only the required keys "
            f"{secs(pack_seconds)} (alone: at most {per_second(args.units, pack_seconds)} units), their events "
            f"{secs(event_seconds)} -> at most {per_second(args.units, floor)} units on this machine",
            flush=True,
        )
    baseline_seconds, baseline_units = run_baseline(plant)
    rate = args.units / total
    baseline_rate = baseline_units / baseline_seconds
    extrapolated = args.units / baseline_rate
    print(
        f"  baseline: {baseline_units:,} units commissioned and packed row by row in {secs(baseline_seconds)} "
        f"-> {per_second(baseline_units, baseline_seconds)}, {secs(extrapolated)} for {args.units:,} (extrapolated)",
        flush=True,
    )
    ok = (
        rate >= TARGET_UNITS_PER_SECOND if connection.vendor == "postgresql" and not args.what_if_no_fk_checks else None
    )
    line(
        f"{args.units:,} units: commission + aggregate",
        f"{per_second(args.units, total)} units",
        f"{per_second(baseline_units, baseline_seconds)} units",
        rate / baseline_rate,
        target=f">= {TARGET_UNITS_PER_SECOND:,}/s" if ok is not None else "",
        ok=ok,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.backend == "all":
        return run_backends(Path(__file__), sys.argv[1:] if argv is None else argv)
    with scratch_database(args.backend, env={"SERIAL_MAX_PER_REQUEST": str(REQUEST)}) as database:
        print(f"  {database}\n  {machine()}", flush=True)
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
