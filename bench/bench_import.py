"""Throughput of serial list imports: ``import_serials`` on a CSV of N serials vs a naive per-row ORM import.

Run:  .venv/bin/python bench/bench_import.py [--rows 1000000] [--baseline-rows 20000]
                                             [--database-url postgres://postgres@127.0.0.1:5432/postgres]

The benchmark works in a scratch database it creates and drops itself: on PostgreSQL ``bench_import_<pid>`` on
the server of ``--database-url`` (default: $DATABASE_URL, else the local server); for a ``sqlite:///`` URL a
temporary file. It migrates it, creates a product with a randomised generated pool (so the generator-domain check
runs) and an empty list pool, then times

  * import     ``import_serials(layout="csv")`` of ``--rows`` random 16-character serials, end to end: parsing,
               every check (set 82, length, duplicates, generator domain, existing serials through the unique
               constraint), COPY into serialization_listedserial, the pool's fill — and, as a breakdown, the
               write (under the import's advisory lock; the checks run in it while the rows stream) and the
               reading before it;
  * baseline   the naive import of ``--baseline-rows`` serials in one transaction: per row an ``exists()`` query
               for the product code + serial, then ``ListedSerial.objects.create`` (rate extrapolated);

prints rows/s for both and their ratio, and checks that the import stored exactly the file's serials. With
``--reject`` it also times the rejection of a file of the same size whose last serial already exists (the failed
COPY, then TEMP table + JOIN for the report). ``main(argv)`` returns the figures for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

ALPHABET = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"
TARGET_ROWS_PER_S = 200_000  # issue 3: a million listed serials on PostgreSQL on the 2-core machine
# What config/settings.py gives an SQLite DATABASE_URL, for a SQLite run when the configured database is another.
SQLITE_OPTIONS = {
    "timeout": 30,
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


def random_serials(count: int, length: int = 16, seed: int = 20240514) -> list[str]:
    """Distinct random serials of ``length`` characters from 0-9A-Z (vectorised; duplicates redrawn)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        need = count - len(out)
        codes = ALPHABET[rng.integers(0, len(ALPHABET), size=(need, length))]
        for serial in codes.view(f"S{length}").ravel().astype(f"U{length}").tolist():
            if serial not in seen:
                seen.add(serial)
                out.append(serial)
    return out


class ScratchDatabase:
    """A database that exists only for the run: PostgreSQL ``bench_import_<pid>`` or a temporary SQLite file."""

    def __init__(self, url: str) -> None:
        self.server_url = url
        parts = urlsplit(url)
        self.postgres = parts.scheme.startswith("postgres")
        if self.postgres:
            self.name = f"bench_import_{os.getpid()}"
            self.url = urlunsplit(parts._replace(path=f"/{self.name}"))
            self.admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
        else:
            self.tmp = tempfile.TemporaryDirectory(prefix="bench_import_")
            self.name = str(Path(self.tmp.name) / "bench.sqlite3")
            self.url = f"sqlite:///{self.name}"

    def __enter__(self) -> ScratchDatabase:
        if self.postgres:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
                conn.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc) -> None:
        from django.db import connections

        connections.close_all()
        if self.postgres:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
        else:
            self.tmp.cleanup()


@contextlib.contextmanager
def django_pointed_at(url: str) -> Iterator[None]:
    """Use ``url`` as the default database inside the block — whether or not Django is set up already (bench/run.py
    calls ``main`` in a process that may have) — and give the default connection its own settings back afterwards."""
    import django
    from django.db import connections

    django.setup()  # a no-op when it already is: then DATABASES is whatever the caller has been using
    saved = copy.deepcopy(connections.settings["default"])
    _use_database(_scratch_settings(url, saved))
    try:
        yield
    finally:
        _use_database(saved)


def _use_database(config: dict) -> None:
    """Make ``config`` the default database: a new connection wrapper, as the engine may differ from the last one."""
    from django.db import connections

    connections.close_all()
    connections.settings["default"].clear()  # the very dict settings.DATABASES["default"] is
    connections.settings["default"].update(copy.deepcopy(config))
    with contextlib.suppress(AttributeError):  # no wrapper yet in this thread
        del connections["default"]


def _scratch_settings(url: str, current: dict) -> dict:
    """Database settings for ``url`` as config/settings.py would make them: on the configured engine, the configured
    options (SQLite's IMMEDIATE transactions and WAL journal matter to the figures) with the scratch name."""
    import dj_database_url

    parsed = dj_database_url.parse(url)
    if parsed["ENGINE"] == current["ENGINE"]:
        where = {key: parsed[key] for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT") if key in parsed}
        return {**copy.deepcopy(current), **where}
    parsed["OPTIONS"] = dict(SQLITE_OPTIONS) if parsed["ENGINE"] == "django.db.backends.sqlite3" else {}
    return {**copy.deepcopy(current), **parsed}


def setup_pools():
    from django.contrib.auth import get_user_model

    from masterdata import gs1
    from masterdata.models import Company, CompanyPrefix, Product
    from serialization.models import SerialPool
    from serialization.services import create_generated_pool, create_list_pool

    actor = get_user_model().objects.create_user(username="bench", password="bench-only-password")
    owner = Company.objects.create(name="Bench Pharma", is_mah=True, country="IE")
    CompanyPrefix.objects.create(company=owner, prefix="9524321", length=7)
    body = "0952432100001"
    product = Product.objects.create(
        owner=owner, product_code=body + gs1.check_digit(body), company_prefix_length=7, name="Bench tablets"
    )
    create_generated_pool(owner=owner, actor=actor, product=product, length=12, randomised=True)
    pool = create_list_pool(owner=owner, actor=actor, product=product, source=SerialPool.Source.SAP_ATTP)
    baseline_pool = create_list_pool(
        owner=owner, actor=actor, product=product, source=SerialPool.Source.FILE, name="naive baseline"
    )
    return actor, pool, baseline_pool


def run_import(pool, actor, serials: list[str]) -> tuple[object, float, float]:
    """``import_serials`` of ``serials`` as a CSV; returns (result, seconds, seconds inside the write)."""
    from serialization.services import imports

    data = ("serial\n" + "\n".join(serials) + "\n").encode()
    write_seconds = [0.0]
    original_insert = imports._insert

    def timed_insert(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original_insert(*args, **kwargs)
        finally:
            write_seconds[0] = time.perf_counter() - started

    imports._insert = timed_insert
    try:
        started = time.perf_counter()
        result = imports.import_serials(pool=pool, layout="csv", stream=io.BytesIO(data), actor=actor)
        seconds = time.perf_counter() - started
    finally:
        imports._insert = original_insert
    return result, seconds, write_seconds[0]


def run_baseline(pool, actor, serials: list[str]) -> float:
    """The naive import: one existence query and one ORM insert per row, in one transaction."""
    from django.db import transaction

    from serialization.models import ListedSerial

    started = time.perf_counter()
    with transaction.atomic():
        for ordinal, serial in enumerate(serials):
            if ListedSerial.objects.filter(product_code=pool.product_code, serial=serial).exists():
                raise SystemExit(f"baseline: {serial} exists")
            ListedSerial.objects.create(pool=pool, ordinal=ordinal, product_code=pool.product_code, serial=serial)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="serials in the imported CSV")
    parser.add_argument("--baseline-rows", type=int, default=20_000, help="serials for the naive per-row baseline")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_URL)
    parser.add_argument("--reject", action="store_true", help="also time rejecting a file whose last serial exists")
    args = parser.parse_args(argv)

    with ScratchDatabase(args.database_url) as scratch, django_pointed_at(scratch.url):
        from django.core.management import call_command
        from django.db import connection

        from serialization.models import ListedSerial

        call_command("migrate", verbosity=0)
        actor, pool, baseline_pool = setup_pools()
        serials = random_serials(args.rows + args.baseline_rows)
        imported, baseline = serials[: args.rows], serials[args.rows :]
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()" if scratch.postgres else "SELECT 'SQLite ' || sqlite_version()")
            server = cursor.fetchone()[0].split(" on ")[0]

        result, seconds, write_seconds = run_import(pool, actor, imported)
        if result.status != "done" or result.imported != args.rows:
            raise SystemExit(f"import did not succeed: {result.status}, {result.errors[:3]}")
        stored = list(ListedSerial.objects.filter(pool=pool).order_by("ordinal").values_list("serial", flat=True))
        if stored != imported:
            raise SystemExit("import stored other serials than the file holds")
        del stored
        baseline_seconds = run_baseline(baseline_pool, actor, baseline)

        rate, baseline_rate = args.rows / seconds, args.baseline_rows / baseline_seconds
        figures = {
            "database": server,
            "rows": args.rows,
            "import_seconds": seconds,
            "import_rows_per_s": rate,
            "write_seconds": write_seconds,
            "baseline_rows": args.baseline_rows,
            "baseline_rows_per_s": baseline_rate,
            "ratio": rate / baseline_rate,
        }
        print(f"{platform.node()}  cpus={os.cpu_count()}  {server}")
        print(f"import   {args.rows:>10,} rows  {seconds:7.2f} s  {rate:>10,.0f} rows/s", end="")
        print(f"   (write + checks: {write_seconds:.2f} s, reading: {seconds - write_seconds:.2f} s)")
        print(
            f"baseline {args.baseline_rows:>10,} rows  {baseline_seconds:7.2f} s  {baseline_rate:>10,.0f} rows/s"
            f"   (per-row exists() + create(), extrapolated: {args.rows / baseline_rate:,.0f} s for {args.rows:,})"
        )
        print(f"ratio    {rate / baseline_rate:,.0f}x")
        if scratch.postgres:
            figures["target_met"] = rate >= TARGET_ROWS_PER_S
            print(f"target   {TARGET_ROWS_PER_S:,} rows/s on PostgreSQL: {'PASS' if figures['target_met'] else 'MISS'}")

        if args.reject:
            clash = [*random_serials(args.rows - 1, seed=7), imported[-1]]
            result, seconds, _ = run_import(baseline_pool, actor, clash)
            if result.status != "rejected" or result.error_count != 1:
                raise SystemExit(f"rejection did not happen: {result.status}, {result.error_count}")
            figures["reject_seconds"] = seconds
            print(f"reject   {args.rows:>10,} rows  {seconds:7.2f} s  (last serial exists: failed COPY, TEMP + JOIN)")
    return figures


if __name__ == "__main__":
    main()
