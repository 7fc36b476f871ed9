"""Throughput of serial generation: vectorised FF1 path vs the scalar (one serial at a time) baseline.

Run:  .venv/bin/python bench/bench_ff1.py [--rows 1000000] [--scalar-rows 20000] [--repeat 3]

For each format it prints serials/s for
  * scalar      [serial_at(i) for i in range(...)]            (the naive baseline, measured in the same run)
  * vector/str  serials(start, count) -> list[str]
  * vector/S    serials_array(start, count) -> 'S<length>' bytes array (what a streaming writer uses)
and the ratio of each vectorised figure to the scalar one. It also checks that both paths agree on the
scalar sample, so a fast wrong answer cannot pass unnoticed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serialization.ff1 import NUMERIC, UPPER_ALPHANUMERIC, SerialFormat, SerialPermutation

FORMATS = [
    ("numeric x12", SerialFormat(NUMERIC, 12)),
    ("upper-alnum x12", SerialFormat(UPPER_ALPHANUMERIC, 12)),
    ("numeric x20 no-leading-zero", SerialFormat(NUMERIC, 20, no_leading_zero=True)),
]


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="serials per vectorised call")
    parser.add_argument("--scalar-rows", type=int, default=20_000, help="serials for the scalar baseline")
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings")
    args = parser.parse_args()

    key = bytes(range(32))
    print(f"cpus={os.cpu_count()}  rows={args.rows:,}  scalar_rows={args.scalar_rows:,}  best of {args.repeat}")
    header = f"{'format':<30}{'scalar/s':>12}{'vector str/s':>15}{'ratio':>8}{'vector S/s':>15}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for name, fmt in FORMATS:
        perm = SerialPermutation(fmt, key, tweak=b"bench")
        start = 123_456_789  # away from 0, as a pool part-way through its life

        scalar_sample: list[str] = []

        def run_scalar(perm=perm, start=start, out=scalar_sample) -> None:
            out[:] = [perm.serial_at(i) for i in range(start, start + args.scalar_rows)]

        t_scalar = best_of(1, run_scalar)
        if perm.serials(start, args.scalar_rows) != scalar_sample:
            raise SystemExit(f"{name}: vectorised and scalar paths disagree")

        t_str = best_of(args.repeat, lambda perm=perm, start=start: perm.serials(start, args.rows))
        t_arr = best_of(args.repeat, lambda perm=perm, start=start: perm.serials_array(start, args.rows))

        scalar_rate = args.scalar_rows / t_scalar
        str_rate = args.rows / t_str
        arr_rate = args.rows / t_arr
        print(
            f"{name:<30}{scalar_rate:>12,.0f}{str_rate:>15,.0f}{str_rate / scalar_rate:>7.0f}x"
            f"{arr_rate:>15,.0f}{arr_rate / scalar_rate:>7.0f}x"
        )


if __name__ == "__main__":
    main()
