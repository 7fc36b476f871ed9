"""Shared helpers for the benchmarks: a scratch database per backend, fixtures, timing, and the baseline lines.

Every database benchmark runs once per backend in a child process of its own (Django is set up once per process,
against one database): ``run_backends`` starts ``<script> --backend postgres`` and ``--backend sqlite``; the child
calls ``scratch_database(backend)``, which creates a throw-away database (PostgreSQL: ``bench_<pid>_<hex>`` next to
the server's ``postgres`` database; SQLite: a file in a temporary directory), points ``DATABASE_URL`` at it, runs
the migrations, and drops it on the way out — whatever happens in between.

Environment: ``BENCH_POSTGRES_URL`` (default ``postgres://postgres@127.0.0.1:5432/postgres``) is the maintenance
connection used to create and drop the scratch database. Settings and keys come from ``var/local.env`` as for
the application (``make env``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BACKENDS = ("postgres", "sqlite")
POSTGRES_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


# --- command line and child processes -----------------------------------------------------------------------------


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=[*BACKENDS, "all"],
        default="all",
        help="database to run on; 'all' runs each in its own child process (default)",
    )


def without_backend(argv: Sequence[str]) -> list[str]:
    """``argv`` minus any ``--backend X`` / ``--backend=X``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--backend":
            skip = True
        elif not arg.startswith("--backend="):
            out.append(arg)
    return out


def run_backends(script: str | Path, argv: Sequence[str], backends: Sequence[str] = BACKENDS) -> int:
    """Run ``script argv --backend B`` for each backend in a fresh interpreter; return the worst exit status."""
    worst = 0
    for backend in backends:
        if backend == "postgres" and not postgres_reachable():
            print(f"\n[{Path(script).stem}] PostgreSQL at {_redact(POSTGRES_ADMIN_URL)} is not reachable: skipped.")
            continue
        print(f"\n[{Path(script).stem} on {backend}]", flush=True)
        status = subprocess.call([sys.executable, str(script), *without_backend(argv), "--backend", backend], cwd=ROOT)
        worst = max(worst, status)
    return worst


def postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(_conninfo(POSTGRES_ADMIN_URL), connect_timeout=3):
            return True
    except Exception:
        return False


# --- scratch databases ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(backend: str, *, env: dict[str, str] | None = None) -> Iterator[str]:
    """Create a throw-away database, set Django up against it (migrated), yield a description; drop it after.

    ``env`` adds environment variables for the settings module (read once, at ``django.setup()``).
    """
    name = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
    tmpdir = None
    if backend == "postgres":
        import psycopg

        with psycopg.connect(_conninfo(POSTGRES_ADMIN_URL), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(POSTGRES_ADMIN_URL)
        url = urlunsplit(parts._replace(path=f"/{name}"))
    elif backend == "sqlite":
        tmpdir = tempfile.mkdtemp(prefix="bench-sqlite-")
        url = f"sqlite:///{tmpdir}/{name}.sqlite3"
    else:
        raise ValueError(f"unknown backend {backend!r}")
    os.environ.update(env or {})
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", run_syncdb=True, verbosity=0)
        yield describe_database()
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if backend == "postgres":
            import psycopg

            with psycopg.connect(_conninfo(POSTGRES_ADMIN_URL), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)


def describe_database() -> str:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
            cursor.execute("SHOW synchronous_commit")
            sync = cursor.fetchone()[0]
        return f"PostgreSQL {version} (synchronous_commit={sync}, psycopg {_psycopg_version()})"
    import sqlite3

    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(cursor.fetchone()[0], "?")
    return f"SQLite {sqlite3.sqlite_version} (journal_mode={journal}, synchronous={sync})"


def _psycopg_version() -> str:
    import psycopg

    return psycopg.__version__


def _conninfo(url: str) -> str:
    parts = urlsplit(url)
    fields = {
        "host": parts.hostname or "",
        "port": str(parts.port or ""),
        "user": parts.username or "",
        "password": parts.password or "",
        "dbname": parts.path.lstrip("/") or "postgres",
    }
    return " ".join(f"{key}={value}" for key, value in fields.items() if value)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts)


# --- fixtures -------------------------------------------------------------------------------------------------------


def make_bench_pool(*, fill: int, max_per_request: int = 1_000_000, prefix: str = "9529999", item: int = 1):
    """An MAH with an EU product and its randomised generated pool (UPPER_ALNUM × 12, EU guess bound)."""
    from django.contrib.auth import get_user_model

    from masterdata import gs1
    from masterdata.models import Company, CompanyPrefix, Market, Product
    from serialization.services import create_generated_pool

    steward, _ = get_user_model().objects.get_or_create(username="bench-steward")
    company, _ = Company.objects.get_or_create(name="Bench MAH", defaults={"is_mah": True, "country": "IE"})
    CompanyPrefix.objects.get_or_create(company=company, prefix=prefix, defaults={"length": len(prefix)})
    body = "0" + prefix + str(item).zfill(12 - len(prefix))
    product = Product.objects.create(
        owner=company, product_code=body + gs1.check_digit(body), company_prefix_length=len(prefix), name="Bench"
    )
    product.markets.add(Market.objects.get(code="EU"))
    return create_generated_pool(
        owner=company, actor=steward, product=product, initial_fill=fill, max_per_request=max_per_request
    )


def naive_serial_model():
    """A bench-only table shaped like a pre-generated serial list with a status column, as naive systems keep it:
    one row per serial, allocation = flip each row's status through the ORM. Created in the scratch database."""
    from django.db import connection, models

    class NaiveSerial(models.Model):
        serial = models.CharField(max_length=20, unique=True)
        status = models.CharField(max_length=16, default="available", db_index=True)
        request_id = models.CharField(max_length=100, blank=True)

        class Meta:
            app_label = "bench"
            db_table = "bench_naive_serial"

        def __str__(self) -> str:
            return self.serial

    with connection.schema_editor() as editor:
        editor.create_model(NaiveSerial)
    return NaiveSerial


def fill_naive_serials(model, serials: Sequence[str]) -> None:
    model.objects.bulk_create((model(serial=s) for s in serials), batch_size=5_000)


def naive_allocate(model, quantity: int, request_id: str) -> list[str]:
    """The baseline: lock the first ``quantity`` available rows and update them one by one through the ORM."""
    from django.db import transaction

    granted = []
    with transaction.atomic():
        rows = model.objects.select_for_update().filter(status="available").order_by("id")[:quantity]
        for row in rows:
            row.status = "assigned"
            row.request_id = request_id
            row.save(update_fields=["status", "request_id"])
            granted.append(row.serial)
    return granted


# --- timing and memory -------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def best_and_median(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = sorted(timed(fn)[0] for _ in range(repeat))
    return times[0], times[len(times) // 2]


def percentile(values: Sequence[float], p: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), p))


def busy_cpus(seconds: float = 1.0) -> float:
    """How many CPUs' worth of work the machine does right now (all processes, from /proc/stat over ``seconds``):
    other people's jobs on a shared machine show up here and explain slow figures."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    elapsed = total1 - total0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / elapsed) if elapsed else 0.0


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class MemoryUse:
    rss_growth: int  # peak resident set size during the call minus before it (sampled every 2 ms)
    traced_peak: int  # tracemalloc peak during the call (Python and numpy allocations)


def measure_memory(fn: Callable[[], object]) -> tuple[float, object, MemoryUse]:
    """Run ``fn`` once; return (seconds, result, memory growth). tracemalloc slows allocation-heavy code a little,
    so time-critical figures should come from a separate, untraced run."""
    before = rss_bytes()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            stop.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    try:
        seconds, result = timed(fn)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        stop.set()
        sampler.join()
    peak[0] = max(peak[0], rss_bytes())
    return seconds, result, MemoryUse(rss_growth=peak[0] - before, traced_peak=traced_peak)


# --- reporting -------------------------------------------------------------------------------------------------------


def machine() -> str:
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return (
        f"{platform.node()} · {os.cpu_count()} CPUs · {mem_kb / 1024 / 1024:.1f} GiB RAM · "
        f"Python {platform.python_version()} · {time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def line(label: str, figure: str, baseline: str, ratio: float, target: str = "", ok: bool | None = None) -> None:
    """One result: the figure, the naive baseline measured in the same run, the ratio, and the target."""
    tail = f"  target {target}: {verdict(ok)}" if target and ok is not None else ""
    print(f"  {label:<44} {figure:>18}   baseline {baseline:>18}   {ratio:>9,.0f}x{tail}", flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:,.3f} s"


def per_second(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"
