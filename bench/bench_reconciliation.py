"""Reconciling a 1,000,000-unit batch: assigned = commissioned + decommissioned (by reason) + returned, per order and
pool, and aggregation completeness (the batch is sold in SA, which requires aggregation).

Target (issue 4, PostgreSQL on this machine): ``reconcile_batch`` of a 1,000,000-unit batch < 2 s.

What runs, per backend (a scratch database created and dropped by the bench):
  1. one product (markets EU and SA) with its generated unit pool and its owner's SSCC pool; a batch with one
     packaging order given 1,010,000 unit serials (two requests) and 10,050 case + 202 pallet SSCCs through
     ``request_order_serials``;
  2. the packs a line would have reported, written set-based (``COPY`` on PostgreSQL, ``executemany`` on SQLite):
     200 pallets, 10,000 cases (50 per pallet), 1,000,000 units packed 100 per case, and 5,000 decommissioned units
     (line rejects and samples); the order is closed (``close_packaging_order`` returns the 5,000 unused serials and
     the unused SSCCs) and the batch completed; then ``VACUUM ANALYZE`` / ``ANALYZE``, as autovacuum would;
  3. ``reconcile_batch`` timed --repeat times (best and median; the batch is put back to completed between runs),
     its counts checked exactly;
  4. the naive baseline in the same database: iterate the batch's packs as ORM instances and count them in Python,
     measured on --naive-rows packs and extrapolated to the batch's 1,015,200 packs.

Run:  .venv/bin/python bench/bench_reconciliation.py [--units 1000000] [--repeat 5] [--naive-rows 50000]
                                                     [--backend all|postgres|sqlite]
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    add_backend_argument,
    line,
    machine,
    make_bench_pool,
    run_backends,
    scratch_database,
    secs,
    timed,
    verdict,
)

UNITS_PER_CASE = 100
CASES_PER_PALLET = 50
REJECTS = {"line_reject": 4_000, "sample": 1_000}
UNUSED = 5_000
TARGET_SECONDS = 2.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=1_000_000, help="commissioned units (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed reconciliations (default 5)")
    parser.add_argument("--naive-rows", type=int, default=50_000, help="packs for the naive baseline (default 50,000)")
    add_backend_argument(parser)
    return parser.parse_args(argv)


# --- fixtures ----------------------------------------------------------------------------------------------------------


def make_plant(units: int):
    """The product, its pools, a site and a line, a batch and an order with its serials."""
    from django.contrib.auth import get_user_model

    from masterdata import gs1
    from masterdata.models import CompanyPrefix, Location, Market, PackagingLevel
    from serialization.services import create_generated_pool
    from serialization.services.batches import create_batch, create_packaging_order, request_order_serials

    rejected = sum(REJECTS.values())
    unit_pool = make_bench_pool(fill=units + rejected + UNUSED, max_per_request=1_000_000)
    product, owner = unit_pool.product, unit_pool.owner
    product.markets.add(Market.objects.get(code="SA"))
    PackagingLevel.objects.bulk_create(
        [
            PackagingLevel(product=product, level=0, quantity=1),
            PackagingLevel(product=product, level=2, quantity=UNITS_PER_CASE, uses_sscc=True),
            PackagingLevel(product=product, level=3, quantity=CASES_PER_PALLET, uses_sscc=True),
        ]
    )
    actor = get_user_model().objects.get(username="bench-steward")
    prefix = CompanyPrefix.objects.filter(company=owner).first()
    cases, pallets = units // UNITS_PER_CASE, units // UNITS_PER_CASE // CASES_PER_PALLET
    sscc_pool = create_generated_pool(
        owner=owner, actor=actor, sscc_prefix=prefix, extension_digit="0", initial_fill=cases + pallets + 100
    )

    def gln(reference: int) -> str:
        body = prefix.prefix + str(reference).zfill(12 - len(prefix.prefix))
        return body + gs1.check_digit(body)

    site = Location.objects.create(company=owner, kind="site", name="Bench site", gln=gln(1))
    packaging_line = Location.objects.create(company=owner, kind="line", name="Bench line", gln=gln(2), parent=site)
    batch = create_batch(
        product=product, lot="BENCH-1", expiry="281200", site=site, lines=[packaging_line], actor=actor
    )
    order = create_packaging_order(
        batch=batch, line=packaging_line, number="PO-BENCH-1", planned_quantity=units, actor=actor
    )
    wanted, requests = units + rejected + UNUSED, []
    for n in range(-(-wanted // 1_000_000)):
        quantity = min(1_000_000, wanted - n * 1_000_000)
        ssccs = {2: cases + 50, 3: pallets + 2} if n == 0 else None
        requests.append(
            request_order_serials(
                order=order, quantity=quantity, actor=actor, request_id=f"bench-{n}", sscc_quantities=ssccs
            )
        )
    units_allocations = [r.units for r in requests]
    return actor, batch, order, unit_pool, sscc_pool, units_allocations, requests[0].ssccs


def _indices(allocation) -> list[int]:
    return [
        i
        for first, count in allocation.ranges.order_by("first_index").values_list("first_index", "count")
        for i in range(first, first + count)
    ]


def write_packs(*, batch, order, unit_pool, sscc_pool, unit_allocations, sscc_allocations, units: int) -> int:
    """Pallets, then cases (each in a pallet), then units (each in a case) and the rejects: set-based, parents first
    so each level can point at the ids of the one above."""
    from django.db import connection, transaction
    from django.utils import timezone

    from masterdata import gs1
    from serialization.models import Pack

    now = timezone.now().isoformat()
    cases, pallets = units // UNITS_PER_CASE, units // UNITS_PER_CASE // CASES_PER_PALLET
    unit_indices = [i for allocation in unit_allocations for i in _indices(allocation)]
    rejected = sum(REJECTS.values())

    def sscc(index: int) -> str:
        return gs1.sscc_from_parts(sscc_pool.sscc_extension_digit, sscc_pool.sscc_prefix, index)

    def insert(rows: list[tuple]) -> None:
        # (pool, index, product_code, serial, level, parent, status, reason)
        if connection.vendor == "postgresql":
            buffer = io.StringIO()
            for pool, index, code, serial, level, parent, status, reason in rows:
                parent_text = "\\N" if parent is None else parent
                buffer.write(
                    f"{pool}\t{index}\t{code}\t{serial}\t{level}\t{batch.pk}\t{order.pk}\t{parent_text}\t{status}\t"
                    f"{reason}\t\t{now}\t{now}\n"
                )
            columns = (
                'pool_id, "index", product_code, serial, level, batch_id, order_id, parent_id, status, reason, eu_state, '
                "commissioned_at, updated_at"
            )
            with (
                connection.cursor() as cursor,
                cursor.cursor.copy(f"COPY serialization_pack ({columns}) FROM STDIN") as copy,
            ):
                copy.write(buffer.getvalue())
        else:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(
                    'INSERT INTO serialization_pack (pool_id, "index", product_code, serial, level, batch_id, order_id, '
                    "parent_id, status, reason, eu_state, commissioned_at, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '', %s, %s)",
                    [(*row[:5], batch.pk, order.pk, *row[5:], now, now) for row in rows],
                )

    def ids_of(level: int) -> list[int]:
        return list(Pack.objects.filter(order=order, level=level).order_by("index").values_list("pk", flat=True))

    pallet_indices = _indices(sscc_allocations[3])[:pallets]
    insert([(sscc_pool.pk, i, "", sscc(i), 3, None, "commissioned", "") for i in pallet_indices])
    pallet_ids = ids_of(3)
    case_indices = _indices(sscc_allocations[2])[:cases]
    insert(
        [
            (sscc_pool.pk, i, "", sscc(i), 2, pallet_ids[n // CASES_PER_PALLET], "packed", "")
            for n, i in enumerate(case_indices)
        ]
    )
    case_ids = ids_of(2)
    code = unit_pool.product_code
    chunk = 200_000
    for start in range(0, units, chunk):
        insert(
            [
                (
                    unit_pool.pk,
                    unit_indices[n],
                    code,
                    f"U{unit_indices[n]:012d}",
                    0,
                    case_ids[n // UNITS_PER_CASE],
                    "packed",
                    "",
                )
                for n in range(start, min(start + chunk, units))
            ]
        )
    reasons = [reason for reason, count in REJECTS.items() for _ in range(count)]
    insert(
        [
            (unit_pool.pk, i, code, f"U{i:012d}", 0, None, "decommissioned", reason)
            for i, reason in zip(unit_indices[units : units + rejected], reasons, strict=True)
        ]
    )
    return pallets + cases + units + rejected


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE serialization_pack")
        else:
            cursor.execute("ANALYZE")


# --- the naive baseline -------------------------------------------------------------------------------------------------


def naive_reconcile(batch, limit: int) -> Counter:
    """What a per-row implementation does: every pack as a model instance, counted in Python."""
    from serialization.models import Pack

    counts: Counter = Counter()
    for pack in Pack.objects.filter(order__batch=batch).order_by("pk")[:limit].iterator(chunk_size=2_000):
        if pack.status == Pack.Status.DECOMMISSIONED:
            counts[f"decommissioned:{pack.reason}"] += 1
        else:
            counts[f"commissioned:{pack.pool_id}"] += 1
            if pack.level == 0 and pack.parent_id is None:
                counts["unaggregated"] += 1
    return counts


# --- run ------------------------------------------------------------------------------------------------------------------


def run(args) -> int:
    from django.db import connection

    from serialization.models import Batch
    from serialization.services.batches import close_packaging_order, transition_batch
    from serialization.services.reconciliation import reconcile_batch

    units = args.units
    setup_seconds, plant = timed(lambda: make_plant(units))
    actor, batch, order, unit_pool, sscc_pool, unit_allocations, sscc_allocations = plant
    write_seconds, packs = timed(
        lambda: write_packs(
            batch=batch,
            order=order,
            unit_pool=unit_pool,
            sscc_pool=sscc_pool,
            unit_allocations=unit_allocations,
            sscc_allocations=sscc_allocations,
            units=units,
        )
    )
    close_seconds, closed = timed(lambda: close_packaging_order(order=order, actor=actor, reason="bench run finished"))
    transition_batch(batch=batch, status=Batch.Status.COMPLETED, actor=actor)
    analyze()
    print(
        f"  setup: pools, batch, order and serials {secs(setup_seconds)}; {packs:,} packs written in "
        f"{secs(write_seconds)} ({'COPY' if connection.vendor == 'postgresql' else 'executemany'}); order closed in "
        f"{secs(close_seconds)} ({closed.released:,} unused serials returned)",
        flush=True,
    )

    def reconcile():
        Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.COMPLETED)
        return reconcile_batch(batch=batch, actor=actor)

    cold, _ = timed(reconcile)  # the first run after loading: plans and caches are cold
    results = [timed(reconcile) for _ in range(args.repeat)]
    times = sorted(seconds for seconds, _ in results)
    best, median = times[0], times[len(times) // 2]
    reconciliation = results[-1][1]
    counts = reconciliation.counts["batch"]
    rejected = sum(REJECTS.values())
    cases, pallets = units // UNITS_PER_CASE, units // UNITS_PER_CASE // CASES_PER_PALLET
    expected = {
        "assigned": units + rejected + UNUSED + cases + 50 + pallets + 2,
        "commissioned": units + cases + pallets,
        "decommissioned": dict(sorted(REJECTS.items())),
        "returned": UNUSED + 52,
        "unaggregated_units": 0,
    }
    found = {key: counts[key] for key in expected}
    counts_ok = reconciliation.passed and found == expected
    print(f"  reconciliation {reconciliation.pk}: passed={reconciliation.passed}; counts {found}")

    naive_rows = min(args.naive_rows, packs)
    naive_seconds, naive_counts = timed(lambda: naive_reconcile(batch, naive_rows))
    naive_full = naive_seconds * packs / naive_rows
    assert sum(naive_counts.values()) - naive_counts["unaggregated"] == naive_rows
    print(
        f"  naive baseline: {naive_rows:,} packs iterated as ORM instances in {secs(naive_seconds)} "
        f"(→ {secs(naive_full)} for {packs:,})"
    )

    on_postgres = connection.vendor == "postgresql"
    target = f"< {TARGET_SECONDS:g} s" if on_postgres else ""
    line(
        f"reconcile a {units:,}-unit batch (best)",
        secs(best),
        secs(naive_full),
        naive_full / best,
        target,
        best < TARGET_SECONDS,
    )
    line(
        "                              (median)",
        secs(median),
        secs(naive_full),
        naive_full / median,
        target,
        median < TARGET_SECONDS,
    )
    print(f"  first (cold) run {secs(cold)}; counts exact and reconciliation passed: {verdict(counts_ok)}")
    ok = counts_ok and (not on_postgres or median < TARGET_SECONDS)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.backend == "all":
        return run_backends(Path(__file__), sys.argv[1:] if argv is None else argv)
    with scratch_database(args.backend, env={"SERIAL_MAX_PER_REQUEST": "1000000"}) as database:
        print(f"  {database}\n  {machine()}", flush=True)
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
