"""Allocating 1,000,000 randomised serials at a time — one Allocation record each — with concurrent clients.

Targets (issue 3, on a 2-core machine with PostgreSQL): with 8 concurrent clients on ONE pool, p50 < 5 ms and
p95 < 20 ms per allocation of 1,000,000 serials, and 0 duplicates.

What runs, per backend (a scratch database created and dropped by the bench):
  1. one EU product with a randomised FF1 pool (upper-case alphanumeric x 12), filled for every request;
  2. one client alone: latency of ``allocate_serials`` (the one-statement path: nothing released);
  3. N client processes (default 8), each with its own connection, released together by a barrier, each
     allocating ``--rounds`` times from the same pool: p50/p95/p99/max latency and throughput;
  4. the same with the general locked path forced (``SELECT ... FOR UPDATE`` of the pool first, as when released
     serials wait to be reused) — what every allocation cost before the fast path;
  5. checks: every allocation recorded, the conservation law, no two index ranges overlapping (so, FF1 being a
     bijection, no serial twice) and a materialised sample of one allocation per client with no duplicate;
  6. the naive baseline in the same database: 20,000 pre-generated rows of a ``serial, status`` table updated one
     by one through the ORM under ``select_for_update``, extrapolated to the requested quantity.

Clients are processes, not threads, so they run in parallel like API workers (no shared GIL).

Run:  .venv/bin/python bench/bench_allocation.py [--clients 8] [--rounds 60] [--trials 3] [--quantity 1000000]
                                               [--backend all|postgres|sqlite]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    add_backend_argument,
    busy_cpus,
    fill_naive_serials,
    line,
    machine,
    make_bench_pool,
    ms,
    naive_allocate,
    naive_serial_model,
    percentile,
    run_backends,
    scratch_database,
    secs,
    timed,
    verdict,
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client processes (default 8)")
    parser.add_argument("--rounds", type=int, default=60, help="allocations per client (default 60)")
    parser.add_argument("--quantity", type=int, default=1_000_000, help="serials per allocation (default 1,000,000)")
    parser.add_argument("--single", type=int, default=100, help="allocations by one client alone (default 100)")
    parser.add_argument("--naive-rows", type=int, default=20_000, help="rows for the naive baseline (default 20,000)")
    parser.add_argument("--sample", type=int, default=8, help="allocations materialised for the duplicate check")
    parser.add_argument("--trials", type=int, default=3, help="times the concurrent phase is run (default 3)")
    add_backend_argument(parser)
    return parser.parse_args(argv)


def _client(i: int, pool_pk: int, args, barrier, results, force_general: bool, tag: str) -> None:
    """One client process: its own connection, ``args.rounds`` allocations, latencies back through ``results``."""
    from django.db import connections

    from serialization.exceptions import PoolExhausted
    from serialization.models import SerialPool
    from serialization.services import allocate_serials

    latencies, errors, exhausted = [], [], 0
    try:
        pool = SerialPool.objects.get(pk=pool_pk)
        if force_general:
            pool.free = 1  # a copy claiming released serials wait: allocate_serials takes the locked path
        barrier.wait(timeout=120)
        for r in range(args.rounds):
            start = time.perf_counter()
            try:
                allocate_serials(
                    pool=pool, quantity=args.quantity, actor=None, request_id=f"{tag}-c{i}-r{r}", purpose="system"
                )
            except PoolExhausted:
                exhausted += 1
            latencies.append(time.perf_counter() - start)
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connections.close_all()
    results.put((i, latencies, exhausted, errors))


def run_clients(pool, args, *, force_general: bool, tag: str) -> tuple[list[float], float, int, list[str]]:
    from django.db import connections

    connections.close_all()  # children must open their own connections, never share the parent's socket
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(args.clients + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(i, pool.pk, args, barrier, results, force_general, tag))
        for i in range(args.clients)
    ]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=120)
    start = time.perf_counter()
    collected = [results.get(timeout=1800) for _ in procs]
    wall = time.perf_counter() - start
    for proc in procs:
        proc.join()
    latencies = [t for _, lat, _, _ in collected for t in lat]
    exhausted = sum(e for _, _, e, _ in collected)
    errors = [err for _, _, _, errs in collected for err in errs]
    return latencies, wall, exhausted, errors


def verify(pool, args, expected_allocations: int) -> tuple[bool, str]:
    """Conservation, disjoint ranges, and a materialised duplicate check; returns (ok, summary)."""
    import numpy as np

    from serialization.models import Allocation, AllocationRange
    from serialization.services import pool_permutation

    pool.refresh_from_db()
    allocations = Allocation.objects.filter(pool=pool)
    count = allocations.count()
    granted = sum(allocations.values_list("quantity", flat=True))
    ranges = np.array(
        list(AllocationRange.objects.filter(pool=pool).order_by("first_index").values_list("first_index", "count")),
        dtype=np.int64,
    ).reshape(-1, 2)
    disjoint = bool(np.all(ranges[:-1, 0] + ranges[:-1, 1] <= ranges[1:, 0])) if len(ranges) > 1 else True
    conserved = (
        pool.available + pool.assigned == pool.filled
        and pool.assigned == int(ranges[:, 1].sum())
        and pool.assigned == granted
        and pool.free == 0
    )
    # Materialise one allocation per client (the last ones, spread over the pool) and look for duplicates.
    permutation = pool_permutation(pool)
    picked = ranges[np.linspace(0, len(ranges) - 1, min(args.sample, len(ranges))).astype(int)]
    sample = np.concatenate([permutation.serials_array(int(first), int(n)) for first, n in picked])
    duplicates = int(sample.size - np.unique(sample).size)
    ok = count == expected_allocations and disjoint and conserved and duplicates == 0
    summary = (
        f"{count:,} allocations ({granted:,} serials), ranges disjoint: {disjoint}, "
        f"available + assigned = filled and assigned = sum(ranges): {conserved}, "
        f"duplicates in a materialised sample of {sample.size:,}: {duplicates}"
    )
    return ok, summary


def run(args) -> int:
    from serialization.services import allocate_serials, pool_permutation

    concurrent_total = (args.trials + 1) * args.clients * args.rounds  # trials of the fast path, one general
    fill = args.quantity * (concurrent_total + args.single + 10)
    pool = make_bench_pool(fill=fill, max_per_request=args.quantity)
    print(f"  pool: {pool.alphabet[:10]}…×{pool.length} randomised, issue limit {pool.issue_limit:,}, filled {fill:,}")

    def allocate(tag: str) -> None:
        allocate_serials(pool=pool, quantity=args.quantity, actor=None, request_id=tag, purpose="system")

    for k in range(10):
        allocate(f"warm-{k}")
    single = [timed(lambda k=k: allocate(f"single-{k}"))[0] for k in range(args.single)]

    trials = []
    for trial in range(args.trials):
        background = busy_cpus(1.0)
        trials.append(run_clients(pool, args, force_general=False, tag=f"fast{trial}"))
        print(
            f"  trial {trial + 1}: p50 {ms(percentile(trials[-1][0], 50))}, p95 {ms(percentile(trials[-1][0], 95))}, "
            f"{len(trials[-1][0]) / trials[-1][1]:,.0f} allocations/s "
            f"(other processes kept {background:.1f} of {os.cpu_count()} CPUs busy just before)",
            flush=True,
        )
    fast = [t for latencies, _, _, _ in trials for t in latencies]
    fast_wall = sum(wall for _, wall, _, _ in trials)
    fast_exhausted = sum(exhausted for _, _, exhausted, _ in trials)
    fast_errors = [err for _, _, _, errors in trials for err in errors]
    general, general_wall, _, general_errors = run_clients(pool, args, force_general=True, tag="general")
    ok, summary = verify(pool, args, expected_allocations=10 + args.single + concurrent_total)

    # The naive baseline, in the same database: per-row ORM updates of pre-generated rows.
    model = naive_serial_model()
    rows = args.naive_rows
    fill_naive_serials(model, pool_permutation(pool).serials(fill - rows, rows))
    naive_seconds, granted = timed(lambda: naive_allocate(model, rows, "naive-1"))
    assert len(granted) == rows
    naive_full = naive_seconds * args.quantity / rows

    q = f"{args.quantity:,}"
    print(
        f"  allocation of {q} serials per request; naive baseline: {rows:,} rows in {secs(naive_seconds)}, "
        f"extrapolated to {q} = {secs(naive_full)}"
    )
    p50_1, p95_1 = percentile(single, 50), percentile(single, 95)
    line("1 client: p50", ms(p50_1), secs(naive_full), naive_full / p50_1)
    line("1 client: p95", ms(p95_1), secs(naive_full), naive_full / p95_1)
    p50, p95, p99 = percentile(fast, 50), percentile(fast, 95), percentile(fast, 99)
    n = args.clients
    print(f"  {n} clients, one pool, {args.trials} trials of {n} x {args.rounds} allocations pooled:")
    line(f"{n} clients, one pool: p50", ms(p50), secs(naive_full), naive_full / p50, "< 5 ms", p50 < 0.005)
    line(f"{n} clients, one pool: p95", ms(p95), secs(naive_full), naive_full / p95, "< 20 ms", p95 < 0.020)
    print(
        f"  {n} clients: p99 {ms(p99)}, max {ms(max(fast))}, {len(fast):,} allocations in {secs(fast_wall)} = "
        f"{len(fast) / fast_wall:,.0f} allocations/s = {len(fast) * args.quantity / fast_wall:,.0f} serials/s; "
        f"exhausted {fast_exhausted}, errors {len(fast_errors)}"
    )
    g50, g95 = percentile(general, 50), percentile(general, 95)
    print(
        f"  {n} clients, general locked path (SELECT … FOR UPDATE first): p50 {ms(g50)}, p95 {ms(g95)}, "
        f"{len(general) / general_wall:,.0f} allocations/s, errors {len(general_errors)}"
    )
    print(f"  check: {summary}: {verdict(ok)}")
    for err in (fast_errors + general_errors)[:5]:
        print(f"  client error: {err}")
    return 0 if ok and not fast_errors and not general_errors else 1


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.backend == "all":
        return run_backends(Path(__file__), sys.argv[1:] if argv is None else argv)
    with scratch_database(args.backend, env={"SERIAL_MAX_PER_REQUEST": str(args.quantity)}) as database:
        print(f"  {database}\n  {machine()}", flush=True)
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
