"""Getting serials out: allocate + materialise as JSON, and export to a file with bounded memory.

Targets (issue 3): allocate + materialise 1,000,000 serials as JSON < 0.6 s; export of 1,000,000 serials
>= 1,000,000 rows/s with < 50 MB memory growth. (FF1 materialisation >= 1,000,000 serials/s is bench_ff1.py.)

What runs, per backend (a scratch database created and dropped by the bench):
  1. export: ``serialization.services.materialise.write_serials(allocation, format="csv", notation=…, out=file)``
     of a 1,000,000-serial allocation into a temporary file — rows/s (best of --repeat, untraced), then one more
     run under tracemalloc with the resident set size sampled every 2 ms for the memory growth;
  2. allocate + materialise as JSON: ``allocate_serials`` of 1,000,000 then ``write_serials(format="json")`` into an
     in-memory buffer (an API response body) — seconds, best and median of --repeat, each a new allocation;
     the document is parsed once and checked against the pool's permutation (count, uniqueness, order);
  3. the naive baseline in the same database: 20,000 pre-generated rows of a ``serial, status`` table, allocated by
     updating each row through the ORM, read back through the ORM and ``json.dumps``-ed (resp. written with
     ``csv.writer`` row by row), extrapolated to 1,000,000.

Run:  .venv/bin/python bench/bench_materialise.py [--quantity 1000000] [--repeat 5] [--backend all]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    add_backend_argument,
    best_and_median,
    fill_naive_serials,
    line,
    machine,
    make_bench_pool,
    measure_memory,
    naive_allocate,
    naive_serial_model,
    per_second,
    run_backends,
    scratch_database,
    secs,
    timed,
    verdict,
)

MB = 1024 * 1024


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quantity", type=int, default=1_000_000, help="serials per allocation (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (default 5)")
    parser.add_argument("--naive-rows", type=int, default=20_000, help="rows for the naive baseline (default 20,000)")
    parser.add_argument(
        "--notation",
        default="serial",
        choices=["serial", "element_string", "digital_link"],
        help="notation of the exported rows (default serial)",
    )
    add_backend_argument(parser)
    return parser.parse_args(argv)


def run(args) -> int:
    from serialization.services import allocate_serials, pool_permutation
    from serialization.services.materialise import write_serials

    quantity = args.quantity
    pool = make_bench_pool(fill=quantity * (args.repeat + 4), max_per_request=quantity)
    counter = iter(range(10**9))

    def allocate():
        return allocate_serials(
            pool=pool, quantity=quantity, actor=None, request_id=f"bench-{next(counter)}", purpose="system"
        )

    ok = True
    q = f"{quantity:,}"

    # 1. Export to a file: throughput untraced, then memory growth in a traced run.
    exported = allocate()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        path = Path(tmp) / "export.csv"

        def export():
            with path.open("wb") as out:
                return write_serials(exported, format="csv", notation=args.notation, out=out)

        export()  # warm: key unwrap, FF1 plan, spell tables
        best, median = best_and_median(export, args.repeat)
        rows, _ = export()
        size = path.stat().st_size
        _, _, memory = measure_memory(export)
    assert rows == quantity, rows
    growth = max(memory.rss_growth, memory.traced_peak)

    # 2. Allocate + materialise as JSON (an in-memory response body), each run a new allocation of 1,000,000.
    def allocate_and_materialise():
        allocation = allocate()
        body = io.BytesIO()
        write_serials(allocation, format="json", notation="serial", out=body)
        return allocation, body

    allocate_and_materialise()  # warm
    json_times = sorted(timed(allocate_and_materialise)[0] for _ in range(args.repeat))
    json_best, json_median = json_times[0], json_times[len(json_times) // 2]
    allocation, body = allocate_and_materialise()
    document = json.loads(body.getvalue())
    (first, count), *rest = allocation.ranges.values_list("first_index", "count")
    expected = pool_permutation(pool).serials(first, count)
    json_ok = not rest and document["serials"] == expected and len(set(document["serials"])) == quantity
    ok = ok and json_ok

    # 3. Naive baselines: per-row ORM updates and per-row reads, on 20,000 rows, extrapolated.
    model = naive_serial_model()
    rows_naive = args.naive_rows
    fill_naive_serials(model, pool_permutation(pool).serials(pool.filled - 2 * rows_naive, 2 * rows_naive))

    def naive_json():
        naive_allocate(model, rows_naive, "naive-json")
        return json.dumps({"serials": [row.serial for row in model.objects.filter(request_id="naive-json")]})

    naive_json_seconds, _ = timed(naive_json)
    naive_json_full = naive_json_seconds * quantity / rows_naive
    naive_allocate(model, rows_naive, "naive-export")

    def naive_export():
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["serial"])
        for row in model.objects.filter(request_id="naive-export"):
            writer.writerow([row.serial])
        return out

    naive_export_seconds, _ = timed(naive_export)
    naive_export_rate = rows_naive / naive_export_seconds

    print(
        f"  naive baselines: {rows_naive:,} rows allocated per row + read back + json.dumps in "
        f"{secs(naive_json_seconds)} (→ {secs(naive_json_full)} for {q}); read + csv.writer per row "
        f"{naive_export_rate:,.0f} rows/s"
    )
    line(
        f"allocate + materialise {q} as JSON (best)",
        secs(json_best),
        secs(naive_json_full),
        naive_json_full / json_best,
        "< 0.6 s",
        json_best < 0.6,
    )
    line(
        "                                  (median)",
        secs(json_median),
        secs(naive_json_full),
        naive_json_full / json_median,
        "< 0.6 s",
        json_median < 0.6,
    )
    print(
        f"  JSON document: {len(body.getvalue()) / MB:,.1f} MB, parsed and checked against the permutation: "
        f"{verdict(json_ok)}"
    )
    export_rate = quantity / best
    line(
        f"export {q} ({args.notation}, CSV file, best)",
        per_second(quantity, best),
        f"{naive_export_rate:,.0f}/s",
        export_rate / naive_export_rate,
        ">= 1,000,000 rows/s",
        export_rate >= 1_000_000,
    )
    print(f"  export median {per_second(quantity, median)}; file {size / MB:,.1f} MB")
    memory_ok = growth < 50 * MB
    ok = ok and memory_ok and export_rate >= 1_000_000
    print(
        f"  export memory growth: RSS +{memory.rss_growth / MB:,.1f} MB, tracemalloc peak "
        f"{memory.traced_peak / MB:,.1f} MB; target < 50 MB: {verdict(memory_ok)}"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.backend == "all":
        return run_backends(Path(__file__), sys.argv[1:] if argv is None else argv)
    with scratch_database(args.backend, env={"SERIAL_MAX_PER_REQUEST": str(args.quantity)}) as database:
        print(f"  {database}\n  {machine()}", flush=True)
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
