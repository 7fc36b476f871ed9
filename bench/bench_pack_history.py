"""Pack-history lookup with 10,000,000 packs stored, beside a per-row ORM walk of the same history.

Target (issue 4): ``serialization.selectors.get_pack_history`` p95 < 20 ms with 10,000,000 packs stored (PostgreSQL).

What runs, per backend (a scratch database created and dropped by the bench):
  1. fixtures: an MAH with a randomised EU unit pool and an SSCC pool, one batch, one packaging order per block of
     --pallets-per-order pallets, and per order one allocation of its unit serials and one of its SSCCs (purpose
     packaging_order, the order as reference) — the pool history every lookup reads;
  2. packs: --pallets pallets × --cases cases × --units units, default 40,000 × 10 × 24 = 9,600,000 units +
     400,000 cases + 40,000 pallets = 10,040,000 packs, with explicit ids (pallets, then cases, then units, so each
     parent id is arithmetic) and the serials the pools' permutations give to the allocated indices (FF1 for units,
     SSCCs with their check digit). PostgreSQL: COPY, with foreign-key triggers off for the load
     (``session_replication_role = replica``: every reference is valid by construction), then ANALYZE.
     SQLite: executemany, and a smaller default of 1,000 pallets;
  3. events for the trees of the first --event-pallets pallets (default 4,000, i.e. 10 %): commissioned and packed
     for units and cases, commissioned and shipped for pallets, one line report per pallet and kind;
  4. measured: ``get_pack_history`` for --samples random unit serials and --samples random SSCCs (half pallets,
     half cases; half of each from trees with events), shuffled, as a company member (the scoped path), each call
     with a fresh user cache like a new request — p50 / p95 / max per kind and overall. Every answer is checked
     (the chain above, the counts below);
  5. the naive baseline in the same database, on --naive-samples of the same samples: the same lookup, then the
     pack, its events (report, user and container loaded per event), the containers above one query per step, and
     the tree below by loading each pack's children per row — how an ORM model walk does it.

Run:  .venv/bin/python bench/bench_pack_history.py [--pallets 40000] [--cases 10] [--units 24] [--backend postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    add_backend_argument,
    line,
    machine,
    make_bench_pool,
    ms,
    percentile,
    run_backends,
    scratch_database,
    secs,
    timed,
    verdict,
)

TARGET_P95 = 0.020
COMMISSIONED_AT = dt.datetime(2025, 3, 3, 6, 0, tzinfo=dt.UTC)
SQLITE_DEFAULT_PALLETS = 1_000
NULL = "\\N"  # COPY text format
PACK_COLUMNS = (
    'id, pool_id, "index", product_code, serial, level, batch_id, order_id, parent_id, status, reason, eu_state, '
    "commissioned_at, updated_at"
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pallets", type=int, default=None, help="pallets (default 40,000; 1,000 on SQLite)")
    parser.add_argument("--cases", type=int, default=10, help="cases per pallet (default 10)")
    parser.add_argument("--units", type=int, default=24, help="units per case (default 24)")
    parser.add_argument("--pallets-per-order", type=int, default=2_000, help="pallets per packaging order")
    parser.add_argument("--event-pallets", type=int, default=None, help="pallets whose trees get events (10 %%)")
    parser.add_argument("--samples", type=int, default=1_000, help="unit serials and SSCCs each (default 1,000)")
    parser.add_argument("--naive-samples", type=int, default=100, help="samples for the baseline (default 100)")
    parser.add_argument("--seed", type=int, default=4)
    add_backend_argument(parser)
    parser.set_defaults(backend="postgres")
    return parser.parse_args(argv)


class Layout:
    """Where each pack lives: ids and pool indices are arithmetic, so parents need no lookup while loading."""

    def __init__(self, pallets: int, cases: int, units: int) -> None:
        self.pallets, self.cases, self.units = pallets, cases, units
        self.case_count = pallets * cases
        self.unit_count = self.case_count * units
        self.total = pallets + self.case_count + self.unit_count

    def pallet_id(self, p: int) -> int:
        return p + 1

    def case_id(self, p: int, c: int) -> int:
        return self.pallets + p * self.cases + c + 1

    def unit_id(self, p: int, c: int, u: int) -> int:
        return self.pallets + self.case_count + (p * self.cases + c) * self.units + u + 1


# --- loading ---------------------------------------------------------------------------------------------------------


def create_fixtures(args, layout: Layout):
    from django.contrib.auth import get_user_model

    from masterdata import gs1
    from masterdata.models import CompanyMembership, CompanyPrefix, Location
    from serialization.models import Allocation, Batch, PackagingOrder
    from serialization.services import allocate_serials, create_generated_pool

    units_per_pallet = args.cases * args.units
    orders = -(-layout.pallets // args.pallets_per_order)
    biggest_order = min(layout.pallets, args.pallets_per_order)
    unit_pool = make_bench_pool(fill=layout.unit_count, max_per_request=biggest_order * units_per_pallet)
    company, product = unit_pool.owner, unit_pool.product
    steward = get_user_model().objects.get(username="bench-steward")
    prefix = CompanyPrefix.objects.get(company=company)
    sscc_pool = create_generated_pool(
        owner=company,
        actor=steward,
        sscc_prefix=prefix,
        extension_digit="1",
        initial_fill=layout.pallets + layout.case_count,
        max_per_request=biggest_order * (1 + args.cases),
    )
    body = prefix.prefix + "1".zfill(12 - len(prefix.prefix))
    line = Location.objects.create(company=company, kind="line", name="Line 1", gln=body + gs1.check_digit(body))
    batch = Batch.objects.create(product=product, lot="BENCH-1", expiry="280600")
    order_ids, unit_allocations, sscc_allocations = [], [], []
    for number in range(orders):
        pallets = min(args.pallets_per_order, layout.pallets - number * args.pallets_per_order)
        order = PackagingOrder.objects.create(
            number=f"PO-BENCH-{number + 1:03d}", batch=batch, line=line, planned_quantity=pallets * units_per_pallet
        )
        order_ids.append(order.pk)
        for pool, quantity, into in [
            (unit_pool, pallets * units_per_pallet, unit_allocations),
            (sscc_pool, pallets * (1 + args.cases), sscc_allocations),
        ]:
            allocation = allocate_serials(
                pool=pool,
                quantity=quantity,
                actor=steward,
                request_id=f"{order.number}-{pool.kind}",
                purpose=Allocation.Purpose.PACKAGING_ORDER,
                reference=order.number,
            )
            Allocation.objects.filter(pk=allocation.pk).update(packaging_order=order)
            into.append(allocation)
    member = get_user_model().objects.create_user(username="bench-member")
    CompanyMembership.objects.create(user=member, company=company)
    line_user = get_user_model().objects.create_user(username="bench-line")
    return unit_pool, sscc_pool, batch, order_ids, unit_allocations, sscc_allocations, member, line_user


def _serials(allocation, pool, ranges) -> list[str]:
    """The allocation's serials in index order. Pure computation (the pool and its ranges are passed in): this runs
    while the connection is busy with COPY."""
    from serialization.services.materialise import iter_serial_chunks

    allocation.pool = pool
    out: list[str] = []
    for chunk in iter_serial_chunks(allocation, ranges=ranges):
        out.extend(value.decode() for value in chunk.tolist())
    return out


def pack_rows(args, layout: Layout, unit_pool, sscc_pool, batch, order_ids, unit_allocs, sscc_allocs, ranges):
    """Yield lists of pack tuples (id, pool, index, product_code, serial, level, batch, order, parent, status).

    Never touches the database (the rows feed a running COPY): the allocations' ``ranges`` are read beforehand."""
    per_order = args.pallets_per_order
    # SSCC allocations alternate per order: that order's pallets and cases, in index order.
    for number, (units_alloc, sscc_alloc) in enumerate(zip(unit_allocs, sscc_allocs, strict=True)):
        first_pallet = number * per_order
        pallets = range(first_pallet, min(first_pallet + per_order, layout.pallets))
        ((sscc_first, _),) = ranges[sscc_alloc.pk]
        ((unit_first, _),) = ranges[units_alloc.pk]
        ssccs = _serials(sscc_alloc, sscc_pool, ranges[sscc_alloc.pk])
        order_id = order_ids[number]
        rows = []
        # Within an order's SSCC block: its pallets first, then their cases pallet by pallet.
        for offset, p in enumerate(pallets):
            rows.append(
                (layout.pallet_id(p), sscc_pool.pk, sscc_first + offset, "", ssccs[offset], 3, batch.pk, order_id,
                 None, "commissioned")
            )  # fmt: skip
        base = len(pallets)
        for offset, p in enumerate(pallets):
            for c in range(args.cases):
                k = base + offset * args.cases + c
                rows.append(
                    (layout.case_id(p, c), sscc_pool.pk, sscc_first + k, "", ssccs[k], 2, batch.pk, order_id,
                     layout.pallet_id(p), "packed")
                )  # fmt: skip
        yield rows
        units = _serials(units_alloc, unit_pool, ranges[units_alloc.pk])
        code = unit_pool.product_code
        rows = []
        for offset, p in enumerate(pallets):
            for c in range(args.cases):
                parent = layout.case_id(p, c)
                start = (offset * args.cases + c) * args.units
                rows.extend(
                    (layout.unit_id(p, c, u), unit_pool.pk, unit_first + start + u, code, units[start + u], 0,
                     batch.pk, order_id, parent, "packed")
                    for u in range(args.units)
                )  # fmt: skip
            if len(rows) >= 500_000:
                yield rows
                rows = []
        yield rows


def _copy_text(rows, stamp: str) -> str:
    return "".join(
        f"{i}\t{pool}\t{index}\t{code}\t{serial}\t{level}\t{batch}\t{order}\t{NULL if parent is None else parent}"
        f"\t{status}\t\t\t{stamp}\t{stamp}\n"
        for i, pool, index, code, serial, level, batch, order, parent, status in rows
    )


def load_packs(rows_iter, total: int) -> tuple[float, float]:
    """Store the packs; (seconds loading, seconds rebuilding indexes). On PostgreSQL the unique constraints and
    secondary indexes are dropped for the COPY and built afterwards (a sort per index instead of 10,000,000 random
    B-tree insertions each), in the same transaction: the table never commits without them."""
    from django.db import connection, transaction

    from serialization.models import Pack

    table = connection.ops.quote_name(Pack._meta.db_table)
    stamp = COMMISSIONED_AT.isoformat()
    start = time.perf_counter()
    loaded, index_seconds = 0, 0.0
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute("SET LOCAL synchronous_commit = off")
            cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
            rebuild = _drop_secondary_indexes(cursor, Pack._meta.db_table)
            with cursor.copy(f"COPY {table} ({PACK_COLUMNS}) FROM STDIN") as copy:
                for rows in rows_iter:
                    copy.write(_copy_text(rows, stamp))
                    loaded += len(rows)
                    _progress(loaded, total, start)
            print(file=sys.stderr)
            index_start = time.perf_counter()
            for statement in rebuild:
                cursor.execute(statement)
            index_seconds = time.perf_counter() - index_start
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{Pack._meta.db_table}', 'id'), %s)", [total])
        else:
            sql = f"INSERT INTO {table} ({PACK_COLUMNS}) VALUES ({', '.join(['%s'] * 14)})"
            for rows in rows_iter:
                cursor.executemany(sql, [(*row, "", "", COMMISSIONED_AT, COMMISSIONED_AT) for row in rows])
                loaded += len(rows)
                _progress(loaded, total, start)
            print(file=sys.stderr)
    return time.perf_counter() - start - index_seconds, index_seconds


def _drop_secondary_indexes(cursor, table: str) -> list[str]:
    """Drop every unique constraint and index of ``table`` but the primary key (foreign keys point at it); return
    the statements that re-create them exactly as the migrations made them."""
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'u'",
        [table],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
        "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
        [table, table],
    )
    indexes = cursor.fetchall()
    for name, _ in constraints:
        cursor.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    return [definition for _, definition in indexes] + [
        f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}' for name, definition in constraints
    ]


def _progress(done: int, total: int, start: float) -> None:
    elapsed = time.perf_counter() - start
    print(f"\r  loading packs: {done:,} / {total:,} ({done / max(elapsed, 1e-9):,.0f}/s)", end="", file=sys.stderr)


def load_events(layout: Layout, event_pallets: int, order_ids, line_user) -> tuple[int, float]:
    """Commissioned + packed (units, cases) or commissioned + shipped (pallets) for the first ``event_pallets``
    trees, one line report per pallet and kind."""
    from django.db import connection, transaction

    from serialization.models import LineReport, PackEvent

    start = time.perf_counter()
    kinds = [LineReport.Kind.COMMISSIONING, LineReport.Kind.AGGREGATION, LineReport.Kind.SHIPPING]
    reports = LineReport.objects.bulk_create(
        LineReport(
            report_id=f"L3-{p:06d}-{kind}",
            kind=kind,
            fingerprint="0" * 64,
            status=LineReport.Status.APPLIED,
            submitted_by=line_user,
        )
        for p in range(event_pallets)
        for kind in kinds
    )
    t = [COMMISSIONED_AT + dt.timedelta(minutes=m) for m in (0, 5, 60)]
    stamps = [x.isoformat() for x in t]
    rows = []
    for p in range(event_pallets):
        comm, agg, ship = (report.pk for report in reports[3 * p : 3 * p + 3])
        pallet = layout.pallet_id(p)
        rows.append((pallet, comm, "commissioned", None, 0))
        rows.append((pallet, ship, "shipped", None, 2))
        for c in range(layout.cases):
            case = layout.case_id(p, c)
            rows.append((case, comm, "commissioned", None, 0))
            rows.append((case, agg, "packed", pallet, 1))
            for u in range(layout.units):
                unit = layout.unit_id(p, c, u)
                rows.append((unit, comm, "commissioned", None, 0))
                rows.append((unit, agg, "packed", case, 1))
    table = connection.ops.quote_name(PackEvent._meta.db_table)
    columns = "pack_id, report_id, action, parent_id, reason, occurred_at"
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for i in range(0, len(rows), 200_000):
                    copy.write(
                        "".join(
                            f"{pack}\t{report}\t{action}\t{NULL if parent is None else parent}\t\t{stamps[when]}\n"
                            for pack, report, action, parent, when in rows[i : i + 200_000]
                        )
                    )
        else:
            cursor.executemany(
                f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, '', %s)",
                [(pack, report, action, parent, t[when]) for pack, report, action, parent, when in rows],
            )
    return len(rows), time.perf_counter() - start


# --- measuring ---------------------------------------------------------------------------------------------------


def draw_samples(args, layout: Layout, event_pallets: int) -> list[tuple[str, int, int]]:
    """(kind, pack id, pallet) tuples: units, pallets and cases, half of each from trees with events."""
    rng = random.Random(args.seed)

    def pallet(with_events: bool) -> int:
        if with_events or event_pallets == layout.pallets:
            return rng.randrange(event_pallets)
        return rng.randrange(event_pallets, layout.pallets)

    samples = []
    for i in range(args.samples):
        p = pallet(i % 2 == 0)
        samples.append(("unit", layout.unit_id(p, rng.randrange(layout.cases), rng.randrange(layout.units)), p))
    for i in range(args.samples):
        p = pallet(i % 4 < 2)
        if i % 2 == 0:
            samples.append(("pallet", layout.pallet_id(p), p))
        else:
            samples.append(("case", layout.case_id(p, rng.randrange(layout.cases)), p))
    rng.shuffle(samples)
    return samples


def identities(samples) -> dict[int, tuple[str, str]]:
    from serialization.models import Pack

    ids = [pk for _, pk, _ in samples]
    return {
        pk: (code, serial)
        for pk, code, serial in Pack.objects.filter(pk__in=ids).values_list("id", "product_code", "serial")
    }


def query(code: str, serial: str) -> dict:
    return {"product_code": code, "serial": serial} if code else {"sscc": serial}


def check(kind: str, history, layout: Layout, p: int, event_pallets: int) -> bool:
    below = {
        "pallet": {"cases": layout.cases, "units": layout.cases * layout.units},
        "case": {"units": layout.units},
        "unit": {},
    }[kind]
    above = {"pallet": 0, "case": 1, "unit": 2}[kind]
    events = 2 if p < event_pallets else 0
    return (
        history.below.counts == below
        and len(history.above) == above
        and len(history.events) == events
        and history.pool.allocation is not None
        and history.pack is not None
    )


def naive_history(*, user, code: str, serial: str) -> dict:
    """The baseline: the same lookup, then per-row ORM — events with lazy report/user/container, parents one
    query per step, children loaded per pack."""
    from serialization import selectors
    from serialization.models import Pack
    from serialization.services import lookup_serial, lookup_sscc

    found = lookup_sscc(sscc=serial) if not code else lookup_serial(product_code=code, serial=serial)
    if not selectors.is_pool_visible(user=user, pool=found.pool):
        raise LookupError(serial)
    pack = Pack.objects.get(product_code=code, serial=serial)
    pool = {"pool": pack.pool.name, "allocation": found.allocation and found.allocation.reference}
    events = [
        (e.action, e.parent.serial if e.parent else "", e.report.report_id, e.report.submitted_by.username)
        for e in pack.events.order_by("occurred_at", "pk")
    ]
    batch = (pack.batch.lot, pack.batch.expiry) if pack.batch_id else None
    order = pack.order.number if pack.order_id else None
    above, node = [], pack
    while node.parent_id is not None:
        node = node.parent
        above.append(node.serial)
    counts: dict[int, int] = {}
    listed: list[str] = []

    def walk(node) -> None:
        for child in Pack.objects.filter(parent=node).order_by("pk"):
            counts[child.level] = counts.get(child.level, 0) + 1
            listed.append(child.serial)
            walk(child)

    walk(pack)
    return {"pool": pool, "events": events, "batch": batch, "order": order, "above": above, "below": counts}


def summary(times: list[float]) -> str:
    return (
        f"p50 {ms(percentile(times, 50))}, p95 {ms(percentile(times, 95))}, max {ms(max(times))} "
        f"({len(times):,} lookups)"
    )


def run(args) -> int:
    from django.db import connection

    from serialization import selectors
    from serialization.services.allocation import allocation_ranges

    if args.pallets is None:
        args.pallets = 40_000 if connection.vendor == "postgresql" else SQLITE_DEFAULT_PALLETS
    layout = Layout(args.pallets, args.cases, args.units)
    event_pallets = min(layout.pallets, args.event_pallets or max(1, layout.pallets // 10))
    print(
        f"  {layout.total:,} packs: {layout.pallets:,} pallets × {args.cases} cases × {args.units} units; events for "
        f"the trees of {event_pallets:,} pallets",
        flush=True,
    )

    seconds, fixtures = timed(lambda: create_fixtures(args, layout))
    unit_pool, sscc_pool, batch, order_ids, unit_allocs, sscc_allocs, member, line_user = fixtures
    print(f"  fixtures (pools, {len(order_ids)} orders, {2 * len(order_ids)} allocations): {secs(seconds)}", flush=True)
    ranges = {a.pk: allocation_ranges(a) for a in [*unit_allocs, *sscc_allocs]}
    rows = pack_rows(args, layout, unit_pool, sscc_pool, batch, order_ids, unit_allocs, sscc_allocs, ranges)
    load_seconds, index_seconds = load_packs(rows, layout.total)
    print(
        f"  packs stored: {layout.total:,} in {secs(load_seconds)} ({layout.total / load_seconds:,.0f}/s, serials "
        f"generated on the way){f'; indexes and unique constraints built after: {secs(index_seconds)}' if index_seconds else ''}",
        flush=True,
    )
    event_count, event_seconds = load_events(layout, event_pallets, order_ids, line_user)
    print(f"  pack events stored: {event_count:,} in {secs(event_seconds)}", flush=True)
    analyse_seconds, _ = timed(lambda: connection.cursor().execute("ANALYZE"))
    print(f"  ANALYZE: {secs(analyse_seconds)}", flush=True)

    samples = draw_samples(args, layout, event_pallets)
    names = identities(samples)
    user_model = type(member)

    def history(pk: int):
        fresh = user_model.objects.get(pk=member.pk)  # not timed: what the request's authentication loaded
        code, serial = names[pk]
        start, cpu = time.perf_counter(), time.process_time()
        result = selectors.get_pack_history(user=fresh, **query(code, serial))
        return time.perf_counter() - start, time.process_time() - cpu, result

    for _, pk, _ in samples[:50]:  # warm: connection, plans
        history(pk)
    load_before = os.getloadavg()[0]
    by_kind: dict[str, list[float]] = {"unit": [], "case": [], "pallet": []}
    cpu_times: list[float] = []
    wrong = 0
    for kind, pk, p in samples:
        seconds, cpu, result = history(pk)
        by_kind[kind].append(seconds)
        cpu_times.append(cpu)
        wrong += not check(kind, result, layout, p, event_pallets)
    load_after = os.getloadavg()[0]
    every = [t for times in by_kind.values() for t in times]

    # The baseline, each sample followed by the fast path on the same sample, so both see the same machine load.
    naive: dict[str, list[float]] = {"unit": [], "case": [], "pallet": []}
    fast: dict[str, list[float]] = {"unit": [], "case": [], "pallet": []}
    for kind, pk, _ in samples[: args.naive_samples]:
        code, serial = names[pk]
        fresh = user_model.objects.get(pk=member.pk)
        seconds, _ = timed(
            lambda fresh=fresh, code=code, serial=serial: naive_history(user=fresh, code=code, serial=serial)
        )
        naive[kind].append(seconds)
        fast[kind].append(history(pk)[0])

    print(f"  answers checked (chain above, counts below, events, allocation): {verdict(wrong == 0)} ({wrong} wrong)")
    print(
        f"  load average {load_before:.1f} → {load_after:.1f} on {os.cpu_count()} CPUs while measuring; client CPU per "
        f"lookup p50 {ms(percentile(cpu_times, 50))}, p95 {ms(percentile(cpu_times, 95))}"
    )
    for kind in ("unit", "case", "pallet"):
        print(f"  {kind + 's':<8} history {summary(by_kind[kind])}")
    for kind in ("unit", "case", "pallet"):
        if naive[kind]:
            ratio = percentile(naive[kind], 50) / percentile(fast[kind], 50)
            print(
                f"  {kind + 's':<8} naive   {summary(naive[kind])}; history on the same samples p50 "
                f"{ms(percentile(fast[kind], 50))}: {ratio:,.1f}x"
            )
    p95 = percentile(every, 95)
    naive_all = [t for times in naive.values() for t in times]
    fast_all = [t for times in fast.values() for t in times]
    line(
        f"history p95 ({len(every):,} serials + SSCCs)",
        ms(p95),
        ms(percentile(naive_all, 95)),
        percentile(naive_all, 95) / percentile(fast_all, 95),
        "< 20 ms",
        p95 < TARGET_P95,
    )
    print(
        f"  (baseline and ratio: the {len(naive_all)} baseline samples, naive p95 / history p95 on the same samples; "
        f"history p50 over all {ms(percentile(every, 50))})"
    )
    return 0 if wrong == 0 and p95 < TARGET_P95 else 1


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.backend == "all":
        return run_backends(Path(__file__), sys.argv[1:] if argv is None else argv)
    with scratch_database(args.backend) as database:
        print(f"  {database}\n  {machine()}", flush=True)
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
