"""Importing serial lists into list pools: all or nothing, with a report of every problem by line.

``start_import`` stores the upload and, once its transaction commits, schedules ``run_import_job`` on django-q2;
the job calls ``import_serials``, which can also be called directly (the benchmark and the tests do).

How ``import_serials`` stays fast at a million rows (STYLE: bulk paths are set-based):

1. The layout's parser (``serialization.importers``) streams the file — a plain one-column CSV is split in C into
   one ``Column`` — and the service keeps three columns: line numbers (an ``array``), serials (a list of str) and
   the few rows' parameters (a dict by row); product codes and AI 91/92 parameters are checked as rows arrive (only
   rows that carry them cost anything).
2. The serials are checked all at once in C: one regex over the joined column for characters outside GS1 set 82,
   ``max(map(len, …))`` for length, a ``set`` for duplicates and empties. Only when one of those finds something
   are the rows walked one by one, to say which line and why.
3. The generator check is one multi-line regex over the same joined column: a serial of the generated pool's
   length whose characters all come from its alphabet lies in its domain, so its generator has issued it or may.
4. The rows go into ``serialization_listedserial`` in one statement — ``COPY … FROM STDIN`` on PostgreSQL, sorted by
   serial, ``executemany`` elsewhere — inside a savepoint. On PostgreSQL the checks of 2 and 3 run while the rows
   stream (the database is the slower side; a problem ends the COPY and rolls it back). The unique constraint on
   (product_code, serial) is the set-based check against every list pool of the product code: there is no second
   pass over that index on the happy path. When the constraint fires, or when the file has other problems, the rows
   are copied into a TEMP table and one JOIN against ``serialization_listedserial`` lists every clash for the
   report; the savepoint rollback leaves nothing behind.
5. Locks: imports into one pool queue on a transaction-scoped advisory lock and take their ordinals from its
   ``filled``; the pool row itself is locked only for the few statements that raise ``filled`` at the end, so
   allocations of the serials already there go on during the write.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import chain

import numpy as np
from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from audit.exceptions import DomainError
from masterdata import gs1
from masterdata.models import NUMERIC, UPPER_ALNUM, Market
from serialization.exceptions import InvalidPoolDefinition
from serialization.importers import Column, ImportFileError, Parser, RowProblem, get_parser
from serialization.models import ImportJob, ListedSerial, PoolFill, SerialPool

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 1_000
MAX_SERIAL_LENGTH = 20
DEFAULT_MAX_ROWS = 10_000_000
_COPY_CHUNK = 50_000
_CHECK_AFTER_ROWS = 400_000  # rows sent before the checks run: enough for the server to write meanwhile
_TEMP_TABLE = "serial_import_rows"
_COPY_COLUMNS = "serial, ordinal, pool_id, product_code, parameters"
_SQLITE_CACHE_SIZE = -262_144  # KiB: 256 MiB at most
_IMPORT_LOCK_CLASS = 0x53_49  # pg_advisory_xact_lock(class, pool) keys of import_serials: "SI"
_REPORTED_SERIAL_CHARS = 40

_SET_82_CLASS = "".join(re.escape(char) for char in sorted(gs1.CHARSET_82))
_OUTSIDE_SET_82 = re.compile(f"[^{_SET_82_CLASS}]")
# The joined column separates serials by "\n", so that one character is allowed here and counted separately.
_OUTSIDE_SET_82_JOINED = re.compile(f"[^{_SET_82_CLASS}\n]")
_PARAMETER_LENGTHS = {"91": 4, "92": 44}
_PARAMETER_TITLES = {"91": "crypto key", "92": "crypto code"}
_FILE_SUFFIXES = {".csv", ".txt", ".json", ".xml"}
_LAYOUT_SUFFIXES = {"csv": ".csv", "json": ".json"}
_MISSING = object()


@dataclass
class ImportResult:
    """What an import did: ``status`` is ``done`` (every row imported) or ``rejected`` (nothing changed)."""

    status: str
    rows: int = 0
    imported: int = 0
    errors: list[dict] = field(default_factory=list)
    error_count: int = 0
    first_ordinal: int | None = None


# --- public services -------------------------------------------------------------------------------------------


def start_import(*, pool: SerialPool, layout: str, uploaded_file, actor) -> ImportJob:
    """Store ``uploaded_file`` for an import into ``pool`` and schedule the job once this transaction commits."""
    _parser_for(pool, layout)
    if uploaded_file is None or getattr(uploaded_file, "size", None) == 0:
        raise DomainError("The uploaded file is empty — choose the serial list file again.", field="file")
    original_name = os.path.basename(getattr(uploaded_file, "name", "") or "")[:255]
    job = ImportJob(pool=pool, layout=layout, original_name=original_name, requested_by=actor)
    upload = uploaded_file if isinstance(uploaded_file, File) else File(uploaded_file)
    # The storage write happens before the transaction: no file I/O while the database holds anything for us.
    job.file.save(_storage_name(original_name, layout), upload, save=False)
    with transaction.atomic():
        job.save()
        transaction.on_commit(partial(async_task, "serialization.tasks.run_import", job.pk))
    return job


def run_import_job(job_id: int) -> ImportJob:
    """django-q2 entry point: claim a pending job, import its file, leave the outcome on the job."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.PENDING).update(
        status=ImportJob.Status.RUNNING
    )
    job = ImportJob.objects.select_related("pool", "requested_by").get(pk=job_id)
    if not claimed:
        return job  # already run: a repeated task must not import the file twice
    try:
        with job.file.open("rb") as stream:
            import_serials(pool=job.pool, layout=job.layout, stream=stream, actor=job.requested_by, job=job)
    except DomainError as exc:
        _finish(job, status=ImportJob.Status.REJECTED, errors=[_entry(None, "", exc.message)], error_count=1)
    except Exception:
        logger.exception("serial import job %s failed", job_id)
        problem = "The import stopped on an internal error; nothing was imported. Try again, or tell support."
        _finish(job, status=ImportJob.Status.FAILED, errors=[_entry(None, "", problem)], error_count=1)
    job.refresh_from_db()
    return job


def import_serials(*, pool: SerialPool, layout: str, stream, actor, job: ImportJob | None = None) -> ImportResult:
    """Import every serial of ``stream`` into list pool ``pool``, or none of them.

    Returns ``done`` with the count and first ordinal, or ``rejected`` with the report (at most
    ``MAX_REPORTED_ERRORS`` entries ``{line, serial, problem}`` in line order, and ``error_count`` with the total).
    When ``job`` is given, its status, counts and report are saved with the outcome — with the rows, for ``done``.
    """
    parser = _parser_for(pool, layout)
    report = _Report(MAX_REPORTED_ERRORS)
    rows = _read(parser, stream, pool, report)
    checks = _Checks(pool, rows, report)
    if report.count == 0 and checks.copyable:
        # The usual file: the checks run while its first rows are on their way into the table (see _insert_rows).
        result = _insert(pool, rows, actor, report, job, checks)
        if result is not None:
            return result
    else:
        checks.run()
        if not rows.fatal and len(checks.invalid) < len(rows.serials):
            with transaction.atomic():
                _report_existing(pool, rows, checks.invalid, report)
    return _reject(job, rows, report)


# --- reading ---------------------------------------------------------------------------------------------------


class _Report:
    """Problems in the order they are found, kept to ``cap`` per pass; ``entries()`` merges them by line."""

    def __init__(self, cap: int) -> None:
        self.cap, self.count = cap, 0
        self._sections: list[list[dict]] = []
        self.section()

    def section(self) -> None:
        self._current: list[dict] = []
        self._sections.append(self._current)

    def add(self, line: int | None, serial: str, problem: str) -> None:
        self.count += 1
        if len(self._current) < self.cap:
            self._current.append(_entry(line, serial, problem))

    def entries(self) -> list[dict]:
        merged = sorted(chain.from_iterable(self._sections), key=lambda e: (e["line"] is not None, e["line"] or 0))
        return merged[: self.cap]


@dataclass
class _Rows:
    lines: array = field(default_factory=lambda: array("q"))
    serials: list[str] = field(default_factory=list)
    parameters: dict[int, dict[str, str]] = field(default_factory=dict)
    count: int = 0
    fatal: bool = False


def _read(parser: Parser, stream, pool: SerialPool, report: _Report) -> _Rows:
    rows = _Rows()
    lines, serials, parameters = rows.lines, rows.serials, rows.parameters
    required, markets = _required_parameters(pool)
    pool_code = pool.product_code
    code_problems: dict[str, str | None] = {}
    max_rows = getattr(settings, "SERIAL_IMPORT_MAX_ROWS", DEFAULT_MAX_ROWS)
    count = 0
    try:
        for item in parser(stream):
            if type(item) is Column:
                first_line, column = item
                if count + len(column) > max_rows:
                    line = first_line + max_rows - count
                    count = max_rows + 1
                    raise ImportFileError(
                        f"Line {line}: the file has more than {max_rows:,} serials — split it into smaller files.",
                        line=line,
                    )
                count += len(column)
                if required:
                    problem = _parameter_problem(None, required, markets)
                    for line, serial in enumerate(column, first_line):
                        report.add(line, serial, problem)
                lines.extend(range(first_line, first_line + len(column)))
                serials.extend(column)
                continue
            count += 1
            if type(item) is RowProblem:
                report.add(item.line, item.serial, item.problem)
                continue
            line, code, serial, params = item
            if code is not None and code != pool_code:
                problem = code_problems.get(code, _MISSING)
                if problem is _MISSING:
                    problem = code_problems[code] = _product_code_problem(code, pool)
                if problem:
                    report.add(line, serial, problem)
            if params is not None or required:
                problem = _parameter_problem(params, required, markets)
                if problem:
                    report.add(line, serial, problem)
                if params:
                    parameters[len(serials)] = params
            lines.append(line)
            serials.append(serial)
            if count > max_rows:
                raise ImportFileError(
                    f"Line {line}: the file has more than {max_rows:,} serials — split it into smaller files.",
                    line=line,
                )
    except ImportFileError as exc:
        report.add(exc.line, "", exc.message)
        rows.fatal = True
    rows.count = count
    return rows


def _required_parameters(pool: SerialPool) -> tuple[list[str], str]:
    if pool.product_id is None:
        return [], ""
    markets = [m for m in Market.objects.filter(products=pool.product_id) if m.extra_serial_parameters]
    required = sorted({ai for market in markets for ai in market.extra_serial_parameters})
    return required, ", ".join(sorted(market.code for market in markets))


def _product_code_problem(code: str, pool: SerialPool) -> str | None:
    normalised = code
    if code.isascii() and code.isdigit() and len(code) in (8, 12, 13, 14):
        try:
            normalised = gs1.normalise_gtin(code)
        except gs1.GS1Error as exc:
            return f"Product code {code} is not a valid GTIN: {exc}"
    if normalised == pool.product_code:
        return None
    return (
        f"Product code {code} is not this pool's product code {pool.product_code} — remove the row, or import it "
        f"into a pool of {code}."
    )


def _parameter_problem(params: dict[str, str] | None, required: Sequence[str], markets: str) -> str | None:
    missing = [ai for ai in required if not params or ai not in params]
    if missing:
        what = " and ".join(f"AI ({ai}) {_PARAMETER_TITLES[ai]}" for ai in missing)
        return (
            f"{what} missing — market {markets} requires AI {' and '.join(required)} with every serial of this "
            "product; add them to the row."
        )
    for ai, value in (params or {}).items():
        # The values are secrets of the market's operator: describe what is wrong, never echo them.
        title, wanted = f"AI ({ai}) {_PARAMETER_TITLES[ai]}", _PARAMETER_LENGTHS[ai]
        outside = _OUTSIDE_SET_82.search(value)
        if outside is not None:
            char = outside.group()
            return (
                f"{title} has {char!r} (U+{ord(char):04X}) at position {outside.start() + 1}, which is not in GS1 "
                "character set 82."
            )
        if len(value) != wanted:
            return f"{title} has {len(value)} characters; it must have exactly {wanted}."
    return None


# --- checking --------------------------------------------------------------------------------------------------


class _Checks:
    """Every check of the serials against each other and against the generator, run once: before the write, or
    during it (``_insert_rows``), which hides their cost behind the database's."""

    def __init__(self, pool: SerialPool, rows: _Rows, report: _Report) -> None:
        self.rows, self.report = rows, report
        self.generated = None if rows.fatal else _generated_pool(pool)  # read now: not while a COPY holds the line
        self.joined = "\n".join(rows.serials)
        self.invalid: set[int] = set()
        self.passed: bool | None = None

    @property
    def copyable(self) -> bool:
        """Whether every row can go into COPY's text format as it is — ASCII, no tab, line break or backslash in a
        serial — so that rows may reach the table before the checks have run (they roll back if the checks find
        anything, and a row the database refuses makes no difference then: the checks refuse it too, first)."""
        joined, count = self.joined, len(self.rows.serials)
        return (
            count > 0
            and not self.rows.fatal
            and joined.isascii()
            and joined.count("\n") == count - 1
            and not any(char in joined for char in "\t\r\\")
        )

    def run(self) -> bool:
        """Run the checks (the first call only); True when they found no problem."""
        if self.passed is None:
            before = self.report.count
            self.invalid, self.joined = _check_serials(self.rows, self.report, self.joined)
            if not self.rows.fatal:
                _check_generator_domain(self.generated, self.rows, self.joined, self.invalid, self.report)
                if not self.rows.serials and self.report.count == 0:
                    self.report.add(None, "", "The file holds no serials.")
            self.passed = self.report.count == before
            self.joined = ""
        return self.passed


class _ChecksFailed(Exception):
    """Raised inside a running write when the checks find a problem: the write rolls back, the report says why."""


def _check_serials(rows: _Rows, report: _Report, joined: str) -> tuple[set[int], str]:
    """Bulk checks over the whole column (``joined``: the serials joined by line breaks); a per-row pass only when
    one of them fails. Returns the rows whose serial cannot be stored at all (empty, outside set 82, too long) and the
    joined column, one line per row, for later regex checks."""
    serials, lines = rows.serials, rows.lines
    if not serials:
        return set(), ""
    unique = set(serials)
    bad_chars = _OUTSIDE_SET_82_JOINED.search(joined) is not None
    if joined.count("\n") != len(serials) - 1:
        # A serial with a line break in it (a quoted CSV field): it is invalid, and the joined column must keep one
        # line per row for the regex checks that map a match back to its row.
        bad_chars = True
        joined = "\n".join(serial.replace("\n", " ") for serial in serials)
    too_long = max(map(len, serials)) > MAX_SERIAL_LENGTH
    empty = "" in unique
    duplicates = len(unique) != len(serials)
    del unique
    invalid: set[int] = set()
    if not (bad_chars or too_long or empty or duplicates):
        return invalid, joined
    report.section()
    first_seen: dict[str, int] = {}
    for index, serial in enumerate(serials):
        line = lines[index]
        if not serial:
            report.add(line, serial, "Empty serial — give 1 to 20 characters of GS1 character set 82.")
            invalid.add(index)
            continue
        if bad_chars and _OUTSIDE_SET_82.search(serial) is not None:
            report.add(line, serial, _charset_problem(serial))
            invalid.add(index)
        if too_long and len(serial) > MAX_SERIAL_LENGTH:
            report.add(
                line,
                serial,
                f"Serial has {len(serial)} characters; GS1 allows at most {MAX_SERIAL_LENGTH} (AI 21).",
            )
            invalid.add(index)
        if duplicates:
            first = first_seen.setdefault(serial, index)
            if first != index:
                report.add(
                    line,
                    serial,
                    f"Duplicate in the file: this serial is on line {lines[first]} and on line {line} — keep it once.",
                )
    return invalid, joined


def _charset_problem(serial: str) -> str:
    outside = [(position, char) for position, char in enumerate(serial, start=1) if char not in gs1.CHARSET_82]
    named = ", ".join(f"{char!r} (U+{ord(char):04X}) at position {position}" for position, char in outside[:5])
    more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
    return f"Serial has {named}{more}, not in GS1 character set 82 — use only A–Z, a–z, 0–9 and !\"%&'()*+,-./:;<=>?_."


def _generated_pool(pool: SerialPool) -> SerialPool | None:
    """The generated pool of ``pool``'s product code, if it has one."""
    return (
        SerialPool.objects.filter(
            kind=SerialPool.Kind.SGTIN, source=SerialPool.Source.GENERATOR, product_code=pool.product_code
        )
        .only("name", "alphabet", "length", "no_leading_zero")
        .first()
    )


def _check_generator_domain(
    generated: SerialPool | None, rows: _Rows, joined: str, invalid: set[int], report: _Report
) -> None:
    """Serials the product code's generator has issued or could issue: same length, every character in its alphabet
    (and not starting with its zero when it skips those). One regex over the joined column finds them all."""
    if generated is None or not joined:
        return
    alphabet, length = generated.alphabet, generated.length
    first_chars = alphabet[1:] if generated.no_leading_zero else alphabet
    pattern = re.compile(
        f"^[{''.join(map(re.escape, first_chars))}][{''.join(map(re.escape, alphabet))}]{{{length - 1}}}$", re.M
    )
    described = _describe_alphabet(alphabet) + (
        f", not starting with {alphabet[0]}" if generated.no_leading_zero else ""
    )
    problem = (
        f"Serial lies in the range of generated pool '{generated.name}' ({length} characters from {described}): its "
        "generator has issued this serial or could issue it later, which would give the product code the same "
        "serial twice — remove it, or have the list made in another length or alphabet."
    )
    report.section()
    index, position = 0, 0
    for match in pattern.finditer(joined):
        index += joined.count("\n", position, match.start())
        position = match.start()
        if index not in invalid:
            report.add(rows.lines[index], rows.serials[index], problem)


def _describe_alphabet(alphabet: str) -> str:
    if alphabet == NUMERIC:
        return "0–9"
    if alphabet == UPPER_ALNUM:
        return "0–9 and A–Z"
    return repr(alphabet) if len(alphabet) <= 24 else f"{len(alphabet)} characters {alphabet[:12]!r}…"


# --- writing ---------------------------------------------------------------------------------------------------


def _insert(
    pool: SerialPool, rows: _Rows, actor, report: _Report, job: ImportJob | None, checks: _Checks
) -> ImportResult | None:
    count = len(rows.serials)
    with transaction.atomic():
        first_ordinal = _claim_ordinals(pool)
        try:
            with transaction.atomic(), connection.wrap_database_errors:
                _insert_rows(pool, first_ordinal, rows, checks)
        except _ChecksFailed:
            # The savepoint took the rows back; the report also lists what the valid rows clash with.
            if len(checks.invalid) < count:
                _report_existing(pool, rows, checks.invalid, report)
            return None
        except IntegrityError:
            # The unique constraint saw a serial that a list pool of this product code already holds (or that a
            # concurrent import just added): the savepoint is gone, so list every clash for the report.
            if not _report_existing(pool, rows, checks.invalid, report) and checks.run():
                raise
            return None
        # Only now the pool row, for the few statements that make the rows count: allocations of the serials the pool
        # already had went on during the write. FOR NO KEY UPDATE, the lock an UPDATE of a counter takes anyway.
        locked = SerialPool.objects.select_for_update(no_key=True).get(pk=pool.pk)
        if locked.filled != first_ordinal:
            raise RuntimeError(f"{pool}: filled moved from {first_ordinal} to {locked.filled} during an import")
        SerialPool.objects.filter(pk=pool.pk).update(filled=F("filled") + count)
        reason = f"import of {count:,} serials" + (f" (job {job.pk}: {job.original_name})" if job else "")
        PoolFill.objects.create(
            pool=locked, quantity=count, filled_after=first_ordinal + count, reason=reason[:200], actor=actor
        )
        if job is not None:
            _finish(job, status=ImportJob.Status.DONE, rows=rows.count, imported=count, errors=[], error_count=0)
    pool.filled = first_ordinal + count
    return ImportResult(
        status=ImportJob.Status.DONE, rows=rows.count, imported=count, first_ordinal=first_ordinal, errors=[]
    )


def _claim_ordinals(pool: SerialPool) -> int:
    """Queue behind any other import into ``pool`` (until this transaction ends) and return its first free ordinal.

    Only imports change a list pool's ``filled``, so on PostgreSQL a transaction-scoped advisory lock per pool is
    enough to keep two imports from taking the same ordinals, and the pool row stays free for allocations during the
    write. SQLite's IMMEDIATE transactions hold the database's write lock from BEGIN; other databases lock the row.
    """
    if connection.vendor != "postgresql":
        return SerialPool.objects.select_for_update().values_list("filled", flat=True).get(pk=pool.pk)
    with connection.cursor() as cursor:
        # Two int4 keys: a class of our own, then the pool (wrapped past 2^31: a shared key only queues two imports).
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_IMPORT_LOCK_CLASS, pool.pk % 2**31])
    # READ COMMITTED: this query's snapshot is taken after the lock is granted, so it sees the last import's filled.
    return SerialPool.objects.values_list("filled", flat=True).get(pk=pool.pk)


def _reject(job: ImportJob | None, rows: _Rows, report: _Report) -> ImportResult:
    entries = report.entries()
    if job is not None:
        _finish(job, status=ImportJob.Status.REJECTED, rows=rows.count, errors=entries, error_count=report.count)
    return ImportResult(
        status=ImportJob.Status.REJECTED, rows=rows.count, imported=0, errors=entries, error_count=report.count
    )


def _finish(job: ImportJob, *, status: str, errors: list[dict], error_count: int, rows=None, imported=0) -> None:
    job.status, job.errors, job.error_count, job.imported = status, errors, error_count, imported
    job.rows = job.rows if rows is None else rows
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "rows", "imported", "errors", "error_count", "finished_at"])


def _insert_rows(pool: SerialPool, first_ordinal: int, rows: _Rows, checks: _Checks) -> None:
    """Write the rows, and run ``checks`` on the way: raises ``_ChecksFailed`` when they find a problem."""
    table = connection.ops.quote_name(ListedSerial._meta.db_table)
    serials, parameters = rows.serials, rows.parameters
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.copy(f"COPY {table} ({_COPY_COLUMNS}) FROM STDIN") as copy:
                sent = 0
                chunks = _copy_chunks(pool, first_ordinal, serials, parameters, checks.joined)
                for chunk, chunk_rows in chunks:
                    copy.write(chunk)
                    sent += chunk_rows
                    # Once the server has rows enough to write for a while, the checks run meanwhile; a problem
                    # raises inside the COPY, which ends it at once (its rows never commit).
                    if sent >= _CHECK_AFTER_ROWS and not checks.run():
                        raise _ChecksFailed
                if not checks.run():
                    raise _ChecksFailed
            return
        if not checks.run():
            raise _ChecksFailed
        # SQLite's page cache (2 MB by default) is far smaller than the indexes a big list updates: give this
        # statement room (pages are allocated only as used), then the connection its own setting back.
        cursor.execute("PRAGMA cache_size")
        (cache_size,) = cursor.fetchone()
        cursor.execute(f"PRAGMA cache_size = {_SQLITE_CACHE_SIZE}")
        try:
            cursor.executemany(
                f"INSERT INTO {table} (pool_id, ordinal, product_code, serial, parameters) "  # noqa: S608 - _meta
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    (pool.pk, first_ordinal + index, pool.product_code, serial, _json(parameters.get(index)))
                    for index, serial in enumerate(serials)
                ),
            )
        finally:
            cursor.execute(f"PRAGMA cache_size = {int(cache_size)}")


def _copy_chunks(
    pool: SerialPool, first_ordinal: int, serials: list[str], parameters: dict, joined: str
) -> Iterator[tuple[str, int]]:
    """COPY text rows ``serial, ordinal, pool, product code, parameters`` in the order of their serials, in chunks
    ``(text, rows)``; ``joined`` is the serials joined by line breaks, all ASCII (``_Checks.copyable``).

    Sorted, the rows reach the unique index on (product_code, serial) in its own order: it fills page after page
    instead of splitting pages all over a tree far larger than the CPU caches. Each row keeps its file position as
    its ordinal, the order serials are handed out in. The rows are grouped by the first character in which serials
    differ, and each group is formatted and sorted only when the server has the groups before it to write.

    Serials hold no tab, line break or backslash (``_Checks.copyable``), so they go into COPY's text format as they
    are; parameter JSON may hold backslashes, which that format doubles. A line sorts by its serial: every character
    a valid serial may have comes after the tab that ends it (the checks refuse the others before anything commits).
    """
    tail = f"\t{pool.pk}\t{pool.product_code}\t"
    end = tail + "\\N\n"
    # Every serial starts with the prefix that the least and the greatest share; the groups are by the character
    # after it, read for all serials at once from the joined column (a serial that is all prefix gets the line break
    # that ends it, which sorts first).
    least, greatest = min(serials), max(serials)
    position = next((i for i, (a, b) in enumerate(zip(least, greatest, strict=False)) if a != b), len(least))
    text = np.frombuffer((joined + "\n").encode("ascii"), dtype=np.uint8)
    starts = np.empty(len(serials), dtype=np.int64)
    starts[0], starts[1:] = 0, np.flatnonzero(text == ord("\n"))[:-1] + 1
    keys = text[starts + position]
    del text, starts
    order = np.argsort(keys, kind="stable")
    bounds = np.cumsum(np.bincount(keys, minlength=256)).tolist()
    del keys
    for low, high in zip([0, *bounds[:-1]], bounds, strict=True):
        if low == high:
            continue
        indexes = order[low:high].tolist()
        if parameters:
            lines = []
            for index in indexes:
                params = parameters.get(index)
                value = _json(params).replace("\\", "\\\\") + "\n" if params else "\\N\n"
                lines.append(f"{serials[index]}\t{first_ordinal + index}{tail}{value}")
        else:
            lines = [f"{serials[index]}\t{first_ordinal + index}{end}" for index in indexes]
        lines.sort()
        for start in range(0, len(lines), _COPY_CHUNK):
            part = lines[start : start + _COPY_CHUNK]
            yield "".join(part), len(part)


def _json(params: dict | None) -> str | None:
    return json.dumps(params, separators=(",", ":"), sort_keys=True) if params else None


def _report_existing(pool: SerialPool, rows: _Rows, invalid: set[int], report: _Report) -> int:
    """Every row whose serial a list pool of the product code already holds: the rows go into a TEMP table (COPY on
    PostgreSQL) and one JOIN against serialization_listedserial finds them. Must run inside a transaction."""
    table = connection.ops.quote_name(ListedSerial._meta.db_table)
    temp = connection.ops.quote_name(_TEMP_TABLE)
    serials = rows.serials
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {temp}")
        if postgres:
            cursor.execute(f"CREATE TEMP TABLE {temp} (idx bigint NOT NULL, serial text NOT NULL) ON COMMIT DROP")
            with cursor.copy(f"COPY {temp} (idx, serial) FROM STDIN") as copy:
                for start in range(0, len(serials), _COPY_CHUNK):
                    stop = min(start + _COPY_CHUNK, len(serials))
                    copy.write(
                        "".join([f"{i}\t{serials[i]}\n" for i in range(start, stop) if i not in invalid])
                        if invalid
                        else "".join([f"{i}\t{serials[i]}\n" for i in range(start, stop)])
                    )
            cursor.execute(f"ANALYZE {temp}")  # a million unknown rows would otherwise get a nested-loop plan
        else:
            cursor.execute(f"CREATE TEMP TABLE {temp} (idx integer NOT NULL, serial text NOT NULL)")
            cursor.executemany(
                f"INSERT INTO {temp} (idx, serial) VALUES (%s, %s)",  # noqa: S608 - constant name
                ((index, serial) for index, serial in enumerate(serials) if index not in invalid),
            )
        cursor.execute(
            f"SELECT t.idx, l.pool_id, l.ordinal, count(*) OVER () FROM {temp} t JOIN {table} l "  # noqa: S608
            "ON l.product_code = %s AND l.serial = t.serial ORDER BY t.idx LIMIT %s",
            [pool.product_code, report.cap],
        )
        clashes = cursor.fetchall()
        cursor.execute(f"DROP TABLE {temp}")
    if not clashes:
        return 0
    names = dict(SerialPool.objects.filter(pk__in={pool_id for _, pool_id, _, _ in clashes}).values_list("pk", "name"))
    report.section()
    for index, pool_id, ordinal, _ in clashes:
        where = "this pool" if pool_id == pool.pk else f"pool '{names.get(pool_id, pool_id)}'"
        report.add(
            rows.lines[index],
            serials[index],
            f"Serial already exists for product code {pool.product_code}: {where} holds it at index {ordinal} — "
            "a product code + serial pair is never used twice; remove the row.",
        )
    total = clashes[0][3]
    report.count += total - len(clashes)  # the rows past the report's cap still count
    return total


# --- helpers ---------------------------------------------------------------------------------------------------


def _parser_for(pool: SerialPool, layout: str) -> Parser:
    if pool.source not in SerialPool.LIST_SOURCES or pool.kind != SerialPool.Kind.SGTIN:
        raise InvalidPoolDefinition(
            f"{pool} is a {SerialPool.Source(pool.source).label.lower()} pool; serial lists are imported into list "
            f"pools only — create a list pool for {pool.code} and import into it.",
            field="pool",
        )
    parser = get_parser(layout)
    if parser is None:
        known = ", ".join(ImportJob.Layout.values)
        raise DomainError(f"Unknown import layout {layout!r} — use one of {known}.", field="layout")
    return parser


def _storage_name(original_name: str, layout: str) -> str:
    suffix = os.path.splitext(original_name)[1].lower()
    if suffix not in _FILE_SUFFIXES:
        suffix = _LAYOUT_SUFFIXES.get(layout, ".xml")
    return f"{uuid.uuid4().hex}{suffix}"


def _entry(line: int | None, serial: str, problem: str) -> dict:
    if len(serial) > _REPORTED_SERIAL_CHARS:
        serial = serial[:_REPORTED_SERIAL_CHARS] + "…"
    return {"line": line, "serial": serial, "problem": problem}
