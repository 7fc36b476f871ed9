"""Run every benchmark in bench/ (``make bench``): each ``bench/bench_*.py`` module's ``main(argv)`` in turn.

Each benchmark prints its figures beside a naive baseline measured in the same run, with the ratio; see
bench/README.md for what each one measures and the recorded results. Benchmarks that need a database create a
scratch one and drop it afterwards, on PostgreSQL (``BENCH_POSTGRES_URL``, default the local server) and on SQLite.

How a module is called depends on what its ``main`` understands:
  * ``main()`` without parameters (bench_ff1): called once, with ``sys.argv`` set to its own name;
  * a ``--backend`` option (bench_allocation, bench_materialise, bench_epcis_export): ``main(["--backend", B])`` —
    "all" runs every backend, each in a child process of its own;
  * a ``--database-url`` option (bench_import): ``main(["--database-url", URL])`` once per backend.

Every call runs in a fresh interpreter (``run.py --child MODULE ARGV…``): Django is set up once per process against
one database, so a PostgreSQL run and a SQLite run cannot share a process, and memory figures start clean.

Run:  .venv/bin/python bench/run.py [--only allocation,ff1] [--backend all|postgres|sqlite]
Exit status: 0 when every benchmark ran and its correctness checks passed, 1 otherwise. Targets are reported as
PASS/MISS on each figure's line; a missed target does not fail the run (timings depend on the machine's load).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import subprocess
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from bench.common import BACKENDS, POSTGRES_ADMIN_URL, machine, postgres_reachable  # noqa: E402


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"bench.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def calls_for(module, path: Path, backend: str) -> list[tuple[str, list[str] | None]]:
    """(label, argv) for each call of ``module.main``; argv None means "call main() without arguments"."""
    if not inspect.signature(module.main).parameters:
        return [(path.stem, None)]
    source = path.read_text()
    if "--backend" in source:
        return [(path.stem, ["--backend", backend])]
    if "--database-url" in source:
        backends = BACKENDS if backend == "all" else (backend,)
        urls = {"postgres": POSTGRES_ADMIN_URL, "sqlite": "sqlite:///bench.sqlite3"}
        calls = []
        for name in backends:
            if name == "postgres" and not postgres_reachable():
                print(f"[{path.stem}] PostgreSQL is not reachable: skipped on postgres.")
                continue
            calls.append((f"{path.stem} on {name}", ["--database-url", urls[name]]))
        return calls
    return [(path.stem, [])]


def call_main(module, label: str, argv: list[str] | None) -> bool:
    """In the child: call ``module.main`` and say whether it succeeded."""
    saved_argv = sys.argv
    try:
        if argv is None:
            sys.argv = [label]
            result = module.main()
        else:
            result = module.main(argv)
    except SystemExit as exc:
        result = exc.code
    except Exception:
        traceback.print_exc()
        return False
    finally:
        sys.argv = saved_argv
        sys.stdout.flush()
    # main() returns None, 0 or a dict of figures on success; a non-zero status or a message on failure.
    return result is None or result == 0 or isinstance(result, dict)


def run_child(path: Path, label: str, argv: list[str] | None) -> bool:
    print(f"\n=== {label} ===", flush=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(path), label]
    if argv is not None:
        command += ["--", *argv]
    return subprocess.call(command, cwd=BENCH_DIR.parent) == 0


def child(argv: list[str]) -> int:
    path, label, *rest = argv
    module_argv = rest[1:] if rest[:1] == ["--"] else None
    return 0 if call_main(load(Path(path)), label, module_argv) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated names, e.g. allocation,ff1 (default: all)")
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    args = parser.parse_args(argv)
    wanted = {name.strip().removeprefix("bench_") for name in args.only.split(",") if name.strip()}

    print(f"Benchmarks on {machine()}", flush=True)
    outcomes: list[tuple[str, bool, float]] = []
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        if wanted and path.stem.removeprefix("bench_") not in wanted:
            continue
        module = load(path)
        for label, call_argv in calls_for(module, path, args.backend):
            start = time.perf_counter()
            ok = run_child(path, label, call_argv)
            outcomes.append((label, ok, time.perf_counter() - start))

    print("\n=== summary ===")
    for label, ok, seconds in outcomes:
        print(f"  {label:<36} {'ran, checks passed' if ok else 'FAILED (see above)':<24} {seconds:8.1f} s")
    return 0 if outcomes and all(ok for _, ok, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
