"""What the packaging lines (L3) report back: commissioning, decommissioning, aggregation, unpacking, shipping.

``apply_line_report`` is the one entry point (the DRF view and, later, EPCIS capture call it). A report is

* **idempotent** by its id: the same id with the same content (kind, order, lines, time) returns the stored
  LineReport unchanged; the same id with other content is refused (``IdempotencyConflict``, 409);
* **all-or-nothing**: every line is checked first and *every* problem is listed with its 1-based line number
  (``result = {"errors": [{"line", "code", "serial", "problem"}], "error_count": n}``, the list capped at
  ``MAX_REPORTED_ERRORS`` while the count stays exact); a report with any problem is stored REJECTED and changes
  nothing else. A clean report is applied and stored APPLIED with its counts (``result = {"counts": {…}}``).

Line shapes (``lines`` is a list of objects; a pack is ``{"product_code", "serial"}`` for a unit or ``{"sscc"}``
for a container):

==================  ============================================================================================
commissioning       ``{"product_code", "serial"}`` (a unit of the order's product) or ``{"sscc", "level"}``
                    (a container, level 1 bundle, 2 case, 3 pallet); either may add ``"parent_sscc"`` to be
                    commissioned straight into that container
decommissioning     a pack plus ``"reason"``: one of ``serialization.cbv.DECOMMISSION_REASONS``
aggregation         ``{"parent_sscc", "children": [pack, …]}``
unpacking           ``{"parent_sscc"}`` (everything in it) or ``{"parent_sscc", "children": [pack, …]}``
shipping            a pack; everything below it ships with it
==================  ============================================================================================

Rules, checked set-based — a TEMP table joined to the pack table (``COPY`` on PostgreSQL, ``executemany`` on
SQLite), a few ``IN`` lists for the small sets (parents, ancestors), numpy over whole columns in Python; never a
query per line:

* commissioning: the serial lies in a pool of the order's product (a unit) or in an SSCC pool (a container) and in
  an allocation of this order (``Allocation.packaging_order``; allocations without one whose purpose is
  ``packaging_order`` and whose reference is the order number count too); it is commissioned once, across reports
  and within this one. A ``parent_sscc`` names a container commissioned on another line of the report (in any
  order) or before, not decommissioned or shipped, of a higher level, with room for the pack (its level's
  ``PackagingLevel.quantity``). One report then carries what a line knows at the end of an order — units into
  cases onto pallets — and is stored as a commissioning followed by an aggregation would be (a ``commissioned`` and
  a ``packed`` event per pack), without rewriting a million pack rows to set their parents;
* aggregation: parent and children are commissioned, not decommissioned, not shipped; a child has one parent at a
  time (already packed → unpack it first; twice in one report → refused); levels go upward (child level < parent
  level); a parent holds at most its level's ``PackagingLevel.quantity`` of the order's product; no cycles;
* unpacking: each child named is in that parent; a parent without children named gives up all it holds;
* shipping: the pack is commissioned, not decommissioned, not shipped, and not inside a container (ship the
  container); everything below it is shipped with it;
* decommissioning: the pack is commissioned and not decommissioned; a unit leaves its container (an ``unpacked``
  event is recorded before the ``decommissioned`` one); a container still holding packs is refused unless the same
  report decommissions all of them.

Writes are set-based too: Pack and PackEvent rows of a commissioning go in with binary ``COPY`` on PostgreSQL (the
pack ids reserved from the sequence in one statement), ``executemany`` on SQLite; every other change is one
``UPDATE … FROM`` the TEMP table (chained with the event ``INSERT … SELECT`` on PostgreSQL).

Concurrency: the order row is locked (``select_for_update``), so reports on one order run one after the other.
Reports on different orders that touch the same packs are caught by the database: commissioning by the unique
(product code, serial) constraint, every other change by the preconditions written into its ``UPDATE`` (``parent_id
IS NULL AND status = 'commissioned'``…) and a check of the rows it changed. Containers whose contents change are
locked first (with their ancestors, top down), so a pallet cannot ship while a case on it is being filled. When
a write loses such a race it is rolled back to its savepoint, the report is validated again — now seeing the
winner — and stored REJECTED with the clashing serials; if the loser was a deadlock victim and the winner has not
committed yet, the report is tried again (``MAX_ATTEMPTS``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit.exceptions import Conflict, DomainError, NotFound
from masterdata import gs1
from masterdata.models import PackagingLevel, Product
from masterdata.selectors import scope_to_company
from serialization import cbv
from serialization.exceptions import IdempotencyConflict
from serialization.ff1 import FF1
from serialization.keys import unwrap_pool_key
from serialization.models import (
    Allocation,
    AllocationRange,
    LineReport,
    ListedSerial,
    Pack,
    PackagingOrder,
    PackEvent,
    PartnerSegment,
    SerialPool,
)
from serialization.services.pools import serial_format

Kind = LineReport.Kind
Status = Pack.Status
Action = PackEvent.Action

MAX_LINES = 2_000_000  # a million units with their cases and pallets, each on a line of its own
MAX_ITEMS = 2_000_000  # lines + children of one report
MAX_REPORTED_ERRORS = 1_000
MAX_ATTEMPTS = 3
_REPORT_ID_MAX = LineReport._meta.get_field("report_id").max_length
_SHOWN_CHARS = 40
_IN_CHUNK = 500
_MAX_DEPTH = 8  # unit → bundle → case → pallet is 3 steps; the bound only stops a corrupt cycle from looping

LEVEL_NAMES = {0: "unit", 1: "bundle", 2: "case", 3: "pallet"}
CONTAINER_LEVELS = (1, 2, 3)
# Kinds that change what the line is producing: refused on a closed order. Shipping and decommissioning (a sample
# taken, a stolen pallet) happen after the order is closed.
_NEEDS_OPEN_ORDER = frozenset({Kind.COMMISSIONING, Kind.AGGREGATION, Kind.UNPACKING})

_SET_82 = "".join(re.escape(c) for c in sorted(gs1.CHARSET_82))
_SERIAL = re.compile(f"[{_SET_82}]{{1,20}}")
_PRODUCT_CODE = re.compile(r"[0-9A-Za-z]{1,14}")
_SSCC = re.compile(r"[0-9]{18}")
_NOT_SET_82 = re.compile(f"[^{_SET_82}\n]")


class InvalidReport(DomainError):
    code = "invalid_report"


class OrderClosed(Conflict):
    code = "order_closed"


class ReportConflict(Conflict):
    code = "report_conflict"


class _Clash(Exception):
    """A write found the database changed since validation (a concurrent report won the race)."""


# --- problems ---------------------------------------------------------------------------------------------------


class _Problems:
    """Every problem of a report: ``count`` counts them all, ``entries()`` gives the first MAX_REPORTED_ERRORS in line
    order. Only that many are kept (a report naming the wrong order has a problem on each of a million lines)."""

    def __init__(self) -> None:
        self._entries: list[tuple[int, int, dict]] = []
        self.count = 0

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, line: int, code: str, serial: object, problem: str) -> None:
        self.count += 1
        self._entries.append((line, self.count, _entry(line, code, serial, problem)))
        if len(self._entries) >= 2 * MAX_REPORTED_ERRORS + 1_000:
            self._entries = sorted(self._entries, key=lambda item: item[:2])[:MAX_REPORTED_ERRORS]

    def add_uncounted_total(self, extra: int) -> None:
        """Problems found by a query beyond the rows it returned (past the cap): counted, not listed."""
        self.count += extra

    def entries(self) -> list[dict]:
        ordered = sorted(self._entries, key=lambda item: item[:2])
        return [entry for _, _, entry in ordered[:MAX_REPORTED_ERRORS]]

    def result(self) -> dict:
        return {"errors": self.entries(), "error_count": self.count}

    def copy(self) -> _Problems:
        other = _Problems()
        other._entries, other.count = list(self._entries), self.count
        return other


def _entry(line: int, code: str, serial: object, problem: str) -> dict:
    text = serial if isinstance(serial, str) else json.dumps(serial, default=str)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "…"
    return {"line": line, "code": code, "serial": text, "problem": problem}


def _name(code: str, serial: str) -> str:
    """How a problem names a pack: 'serial X of product Y' or 'SSCC Z'."""
    return f"SSCC {serial}" if not code else f"serial {serial} of {code}"


def _sentence_name(code: str, serial: str) -> str:
    """``_name`` at the start of a sentence."""
    name = _name(code, serial)
    return name[:1].upper() + name[1:]


def _level_name(level: int | None) -> str:
    return LEVEL_NAMES.get(level, f"level {level}") if level is not None else "unknown level"


# --- parsing: lines → columns -----------------------------------------------------------------------------------


@dataclass
class _Parsed:
    """A report's lines as columns. "Subjects" are the pack each line is about (the parent of an aggregation or
    unpacking line); children are the packs listed under a line. Values here have the right type; ``s_ok``/``c_ok``
    say which also have the right format (problems for the others are in ``problems``)."""

    kind: str
    line_count: int
    problems: _Problems
    s_line: list[int] = field(default_factory=list)
    s_code: list[str] = field(default_factory=list)
    s_serial: list[str] = field(default_factory=list)
    s_level: list[int] = field(default_factory=list)
    s_reason: list[str] = field(default_factory=list)
    s_every_child: list[bool] = field(default_factory=list)
    # commissioning: the SSCC of the container each pack is commissioned into (None: none); empty when no line names one
    s_parent: list[str | None] = field(default_factory=list)
    s_ok: bytearray = field(default_factory=bytearray)
    c_line: list[int] = field(default_factory=list)
    c_code: list[str] = field(default_factory=list)
    c_serial: list[str] = field(default_factory=list)
    c_subject: list[int] = field(default_factory=list)
    c_ok: bytearray = field(default_factory=bytearray)
    invalid: list[tuple[int, Any]] = field(default_factory=list)

    @property
    def items(self) -> int:
        return len(self.s_line) + len(self.c_line)

    def fingerprint_parts(self) -> list:
        parts = [
            self.s_line,
            self.s_code,
            self.s_serial,
            self.s_level,
            self.s_reason,
            self.s_every_child,
            self.c_line,
            self.c_code,
            self.c_serial,
            self.c_subject,
            [[line, _canonical(raw)] for line, raw in self.invalid],
        ]
        if self.s_parent:  # only then, so reports stored before parents existed keep their fingerprints
            parts.append(["" if parent is None else parent for parent in self.s_parent])
        return parts


def _canonical(raw: Any) -> str:
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), default=repr)


_PACK_SHAPE = '{"product_code", "serial"} for a unit or {"sscc"} for a container'
_LINE_SHAPES = {
    Kind.COMMISSIONING: '{"product_code", "serial"} for a unit or {"sscc", "level"} (level 1–3) for a container, '
    'either with an optional "parent_sscc"',
    Kind.DECOMMISSIONING: '{"product_code", "serial", "reason"} for a unit or {"sscc", "reason"} for a container',
    Kind.AGGREGATION: '{"parent_sscc", "children": [...]} with each child ' + _PACK_SHAPE,
    Kind.UNPACKING: '{"parent_sscc"} (unpack everything) or {"parent_sscc", "children": [...]} with each child '
    + _PACK_SHAPE,
    Kind.SHIPPING: _PACK_SHAPE,
}


def _shape_problem(parsed: _Parsed, line_no: int, raw: Any, where: str = "") -> None:
    keys = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
    expected = _PACK_SHAPE if where else _LINE_SHAPES[parsed.kind]
    if isinstance(raw, dict) and raw.get("product_code") == "":
        problem = f"{where}The product code is empty; give the unit's GTIN/NTIN."
    else:
        problem = f"{where}Expected {expected}; got {keys}."
    parsed.problems.add(line_no, "invalid_line", raw, problem)
    parsed.invalid.append((line_no, raw if not where else {"child": where, "value": raw}))


def _pack_ref(obj: Any) -> tuple[str, str] | None:
    """(product code, serial) of a unit or ("", SSCC) of a container, if ``obj`` has the shape of one."""
    if type(obj) is not dict:
        return None
    if len(obj) == 2:
        code, serial = obj.get("product_code"), obj.get("serial")
        if type(code) is str and code and type(serial) is str:
            return code, serial
    elif len(obj) == 1:
        sscc = obj.get("sscc")
        if type(sscc) is str:
            return "", sscc
    return None


def _all_units(lines: Sequence[Any]) -> tuple[list[str], list[str]] | None:
    """(codes, serials) when every line is a well-typed unit ``{"product_code", "serial"}`` — a million-line report
    usually is, and whole-column comprehensions check that ~3× faster than a loop over the lines; else None."""
    if not all(type(line) is dict and len(line) == 2 for line in lines):
        return None
    try:
        codes = [line["product_code"] for line in lines]
        serials = [line["serial"] for line in lines]
    except KeyError:
        return None
    if all(type(code) is str for code in codes) and all(codes) and all(type(serial) is str for serial in serials):
        return codes, serials
    return None


def _all_containers(lines: Sequence[Any]) -> tuple[list[str], list[str]] | None:
    """("" codes, SSCCs) when every item is ``{"sscc": str}``; else None."""
    if not all(type(line) is dict and len(line) == 1 and type(line.get("sscc")) is str for line in lines):
        return None
    return [""] * len(lines), [line["sscc"] for line in lines]


def _all_units_into_containers(lines: Sequence[Any]) -> tuple[list[str], list[str], list[str]] | None:
    """(codes, serials, parent SSCCs) when every line is a well-typed ``{"product_code", "serial", "parent_sscc"}``
    — the units of a report that commissions them straight into their cases; else None."""
    if not all(type(line) is dict and len(line) == 3 for line in lines):
        return None
    try:
        codes = [line["product_code"] for line in lines]
        serials = [line["serial"] for line in lines]
        parents = [line["parent_sscc"] for line in lines]
    except KeyError:
        return None
    if (
        all(type(code) is str for code in codes)
        and all(codes)
        and all(type(serial) is str for serial in serials)
        and all(type(parent) is str for parent in parents)
    ):
        return codes, serials, parents
    return None


def _parse_commissioning(lines: Sequence[Any], parsed: _Parsed) -> None:
    units = _all_units(lines)
    if units is not None:
        parsed.s_code, parsed.s_serial = units
        parsed.s_line = list(range(1, len(lines) + 1))
        parsed.s_level = [0] * len(lines)
        return
    s_line, s_code, s_serial, s_level, s_parent = (
        parsed.s_line,
        parsed.s_code,
        parsed.s_serial,
        parsed.s_level,
        parsed.s_parent,
    )
    # Runs of units with a parent (most of a report that packs units into cases) are read a whole run at a time,
    # every other line on its own.
    start = 0
    while start < len(lines):
        end = start
        while end < len(lines) and type(lines[end]) is dict and len(lines[end]) == 3 and "serial" in lines[end]:
            end += 1
        run = _all_units_into_containers(lines[start:end]) if end - start > 1 else None
        if run is not None:
            s_line.extend(range(start + 1, end + 1))
            s_code.extend(run[0])
            s_serial.extend(run[1])
            s_level.extend([0] * (end - start))
            s_parent.extend(run[2])
            start = end
            continue
        end = max(end, start + 1)
        for n in range(start + 1, end + 1):
            _parse_commissioning_line(parsed, n, lines[n - 1])
        start = end
    if not any(parent is not None for parent in s_parent):
        parsed.s_parent = []


def _parse_commissioning_line(parsed: _Parsed, n: int, line: Any) -> None:
    if type(line) is dict and len(line) in (2, 3):
        parent = line.get("parent_sscc")
        if (parent is None) == (len(line) == 2) and (parent is None or type(parent) is str):
            serial = line.get("serial")
            if serial is not None:
                code = line.get("product_code")
                if type(code) is str and code and type(serial) is str:
                    parsed.s_line.append(n)
                    parsed.s_code.append(code)
                    parsed.s_serial.append(serial)
                    parsed.s_level.append(0)
                    parsed.s_parent.append(parent)
                    return
            else:
                sscc, level = line.get("sscc"), line.get("level")
                if type(sscc) is str and type(level) is int:
                    parsed.s_line.append(n)
                    parsed.s_code.append("")
                    parsed.s_serial.append(sscc)
                    parsed.s_level.append(level)
                    parsed.s_parent.append(parent)
                    return
    _shape_problem(parsed, n, line)


def _parse_single_pack(lines: Sequence[Any], parsed: _Parsed, *, with_reason: bool) -> None:
    for n, line in enumerate(lines, 1):
        if type(line) is dict:
            reason = None
            body = line
            if with_reason:
                reason = line.get("reason")
                body = {k: v for k, v in line.items() if k != "reason"}
            ref = _pack_ref(body)
            if ref is not None and (not with_reason or type(reason) is str):
                parsed.s_line.append(n)
                parsed.s_code.append(ref[0])
                parsed.s_serial.append(ref[1])
                if with_reason:
                    parsed.s_reason.append(reason)
                continue
        _shape_problem(parsed, n, line)


def _parse_with_children(lines: Sequence[Any], parsed: _Parsed, *, children_optional: bool) -> None:
    c_line, c_code, c_serial, c_subject = parsed.c_line, parsed.c_code, parsed.c_serial, parsed.c_subject
    for n, line in enumerate(lines, 1):
        parent = line.get("parent_sscc") if type(line) is dict else None
        children = line.get("children", None) if type(line) is dict else None
        keys_ok = type(line) is dict and set(line) <= {"parent_sscc", "children"}
        every = children is None and children_optional and keys_ok and "children" not in line
        if not keys_ok or type(parent) is not str or not (every or (type(children) is list and children)):
            _shape_problem(parsed, n, line)
            continue
        subject = len(parsed.s_line)
        parsed.s_line.append(n)
        parsed.s_code.append("")
        parsed.s_serial.append(parent)
        parsed.s_every_child.append(every)
        if not children:
            continue
        # A report of 10,000 cases lists a million children: whole lists of units (or of containers) at once.
        refs = _all_units(children) or _all_containers(children)
        if refs is not None:
            c_code.extend(refs[0])
            c_serial.extend(refs[1])
            c_line.extend([n] * len(children))
            c_subject.extend([subject] * len(children))
            continue
        for k, child in enumerate(children, 1):
            ref = _pack_ref(child)
            if ref is None:
                _shape_problem(parsed, n, child, where=f"Child {k}: ")
                continue
            c_line.append(n)
            c_code.append(ref[0])
            c_serial.append(ref[1])
            c_subject.append(subject)


def _parse(kind: str, lines: Sequence[Any]) -> _Parsed:
    parsed = _Parsed(kind=kind, line_count=len(lines), problems=_Problems())
    if kind == Kind.COMMISSIONING:
        _parse_commissioning(lines, parsed)
    elif kind == Kind.DECOMMISSIONING:
        _parse_single_pack(lines, parsed, with_reason=True)
    elif kind == Kind.SHIPPING:
        _parse_single_pack(lines, parsed, with_reason=False)
    else:
        _parse_with_children(lines, parsed, children_optional=kind == Kind.UNPACKING)
    parsed.s_ok = _check_formats(parsed, parsed.s_line, parsed.s_code, parsed.s_serial)
    parsed.c_ok = _check_formats(parsed, parsed.c_line, parsed.c_code, parsed.c_serial)
    if parsed.s_parent:
        _check_parent_formats(parsed)
    return parsed


def _sscc_problem(sscc: str) -> str | None:
    if not _SSCC.fullmatch(sscc):
        return f"{sscc!r} is not an SSCC: an SSCC has exactly 18 digits."
    if not gs1.is_valid_check_digit(sscc):
        return f"SSCC {sscc} has a wrong check digit; check the number as scanned."
    return None


def _check_parent_formats(parsed: _Parsed) -> None:
    """A problem on each line whose ``parent_sscc`` is no SSCC (each distinct parent is checked once)."""
    bad = {}
    for sscc in set(parsed.s_parent) - {None}:
        problem = _sscc_problem(sscc)
        if problem:
            bad[sscc] = problem
    if not bad:
        return
    for i, parent in enumerate(parsed.s_parent):
        if parent in bad:
            parsed.s_ok[i] = 0
            parsed.problems.add(parsed.s_line[i], "invalid_sscc", parent, f"parent_sscc: {bad[parent]}")


def _check_formats(parsed: _Parsed, lines: list[int], codes: list[str], serials: list[str]) -> bytearray:
    """1 for each pack whose product code and serial (or SSCC) are well formed; a problem for each other one.

    The common case — every value fine — is decided over the joined column by one regular expression search."""
    ok = bytearray(b"\x01") * len(lines)
    units = range(len(codes)) if all(codes) else [i for i, code in enumerate(codes) if code]
    containers = [i for i, code in enumerate(codes) if not code] if len(units) < len(codes) else []
    unit_serials = serials if len(units) == len(codes) else [serials[i] for i in units]
    suspects: Iterable[int] = ()
    if unit_serials and (
        _NOT_SET_82.search("\n".join(unit_serials))
        or max(map(len, unit_serials)) > 20
        or min(map(len, unit_serials)) < 1
    ):
        suspects = units
    for i in suspects:
        if not _SERIAL.fullmatch(serials[i]):
            ok[i] = 0
            parsed.problems.add(
                lines[i],
                "invalid_serial",
                serials[i],
                f"Serial {serials[i]!r} is not 1–20 characters of GS1 character set 82; correct the serial.",
            )
    distinct_codes = {codes[i] for i in units}
    bad_codes = {code for code in distinct_codes if not _PRODUCT_CODE.fullmatch(code)}
    if bad_codes:
        for i in units:
            if codes[i] in bad_codes:
                ok[i] = 0
                parsed.problems.add(
                    lines[i],
                    "invalid_product_code",
                    codes[i],
                    f"Product code {codes[i]!r} is not a GTIN/NTIN/PPN (up to 14 letters and digits).",
                )
    for i in containers:
        problem = _sscc_problem(serials[i])
        if problem:
            ok[i] = 0
            parsed.problems.add(lines[i], "invalid_sscc", serials[i], problem)
    return ok


def _fingerprint(kind: str, order: PackagingOrder, occurred_at: datetime | None, parsed: _Parsed) -> str:
    """SHA-256 over the report's content in a canonical form, built from the parsed columns rather than the lines'
    JSON (~10× cheaper for a million lines): each column is hashed as its values' lengths followed by the values
    concatenated, which determines the column exactly whatever characters the values hold."""
    when = occurred_at.isoformat() if occurred_at is not None else None
    digest = hashlib.sha256(json.dumps([kind, order.pk, when, parsed.line_count]).encode())
    for column in parsed.fingerprint_parts():
        digest.update(f"|{len(column)}|".encode())
        if not column:
            continue
        if type(column[0]) is str:
            digest.update(np.fromiter(map(len, column), dtype=np.int64, count=len(column)).tobytes())
            digest.update("".join(column).encode("utf-8", "surrogatepass"))
        elif type(column[0]) in (int, bool):
            digest.update(np.array(column, dtype=np.int64).tobytes())
        else:
            digest.update(json.dumps(column, separators=(",", ":")).encode())
    return digest.hexdigest()


def _duplicates(codes: Sequence[str], serials: Sequence[str]) -> list[tuple[int, int]]:
    """(position, position of its first occurrence) for every repeat of a (product code, serial) pair. Distinct
    serials — the usual case — are settled by one set; otherwise one pass over a dict finds the repeats."""
    if len(set(serials)) == len(serials):
        return []
    first: dict[tuple[str, str], int] = {}
    repeats = []
    for i, key in enumerate(zip(codes, serials, strict=True)):
        j = first.setdefault(key, i)
        if j != i:
            repeats.append((i, j))
    return repeats


# --- serial → pool index (vectorised) ---------------------------------------------------------------------------


def pool_indices(pool: SerialPool, values: Sequence[str]) -> np.ndarray:
    """Index of each serial (an SSCC pool: each serial *reference*) in generated ``pool``; -1 where a value cannot
    be one of its serials or lies beyond what the pool was filled with.

    The vectorised inverse of ``SerialPermutation.serial_at``: numerals by a lookup table, FF1 decryption of all
    rows at once (``FF1.decrypt_block``, cycle-walked like ``index_of`` for formats without a leading zero), then
    the integer value by Horner's rule. Equal to ``pool_permutation(pool).index_of`` row by row (tested).
    """
    n = len(values)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    fmt = serial_format(pool)
    length, radix = fmt.length, fmt.radix
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
    rows = np.flatnonzero(lengths == length)
    if not rows.size:
        return out
    chosen = values if rows.size == n else [values[i] for i in rows.tolist()]
    try:
        chars = np.array(chosen, dtype=f"S{length}").view(np.uint8).reshape(-1, length)
    except UnicodeEncodeError:  # a value outside ASCII is in no pool; find the others one by one
        keep = [k for k, value in enumerate(chosen) if value.isascii()]
        rows = rows[keep]
        chars = np.array([chosen[k] for k in keep], dtype=f"S{length}").view(np.uint8).reshape(-1, length)
    table = np.full(256, 255, dtype=np.uint8)
    table[np.frombuffer(fmt.alphabet.encode("ascii"), dtype=np.uint8)] = np.arange(radix, dtype=np.uint8)
    numerals = table[chars]
    good = (numerals != 255).all(axis=1)
    if fmt.no_leading_zero:
        good &= numerals[:, 0] != 0
    rows, numerals = rows[good], numerals[good]
    if pool.randomised:
        ff1 = FF1(unwrap_pool_key(pool.encrypted_key), radix)
        numerals = ff1.decrypt_block(numerals)
        while fmt.no_leading_zero:
            todo = np.flatnonzero(numerals[:, 0] == 0)
            if not todo.size:
                break
            numerals[todo] = ff1.decrypt_block(numerals[todo])
    offset = radix ** (length - 1) if fmt.no_leading_zero else 0
    if radix**length <= 2**63:
        value = np.zeros(rows.size, dtype=np.int64)
        for column in range(length):
            value = value * radix + numerals[:, column]
        index = value - offset
    else:  # formats beyond 64 bits (e.g. 20 digits): Python integers, still one pass per column
        value = np.zeros(rows.size, dtype=object)
        for column in range(length):
            value = value * radix + numerals[:, column].astype(object)
        index = value - offset
        inside = ((index >= 0) & (index < pool.filled)).astype(bool)
        index = np.where(inside, index, -1).astype(np.int64)
    inside = (index >= 0) & (index < pool.filled)
    out[rows[inside]] = index[inside]
    return out


# --- database helpers -------------------------------------------------------------------------------------------


def _postgres() -> bool:
    return connection.vendor == "postgresql"


_PACK = Pack._meta.db_table
_EVENT = PackEvent._meta.db_table


def _create_temp(cursor, name: str, columns: str) -> None:
    cursor.execute(f"DROP TABLE IF EXISTS {name}")
    suffix = " ON COMMIT DROP" if _postgres() else ""
    cursor.execute(f"CREATE TEMP TABLE {name} ({columns}){suffix}")


def _fill_temp(cursor, name: str, columns: Sequence[str], values: Sequence[Sequence[Any]]) -> None:
    """Rows given as columns (lists of equal length) into TEMP table ``name``. Strings here are validated product
    codes, serials and SSCCs (no tab, newline or backslash), so COPY's text format needs no escaping."""
    if not values or not len(values[0]):
        return
    names = ", ".join(columns)
    if _postgres():
        texts = [_copy_texts(col) for col in values]
        with connection.wrap_database_errors, cursor.copy(f"COPY {name} ({names}) FROM STDIN") as copy:
            for start in range(0, len(texts[0]), 200_000):
                rows = zip(*(text[start : start + 200_000] for text in texts), strict=True)
                copy.write("\n".join(map("\t".join, rows)) + "\n")
        cursor.execute(f"ANALYZE {name}")  # TEMP tables are never auto-analysed: without it, nested-loop plans
    else:
        marks = ", ".join(["%s"] * len(columns))
        cursor.executemany(f"INSERT INTO {name} ({names}) VALUES ({marks})", list(zip(*values, strict=True)))  # noqa: S608


def _copy_texts(column: Sequence[Any]) -> Sequence[str]:
    if type(column[0]) is str:
        return column
    if None in column:
        return ["\\N" if value is None else str(value) for value in column]
    return list(map(str, column))


def _drop_temp(cursor, *names: str) -> None:
    for name in names:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")


@dataclass(frozen=True)
class _PackRow:
    id: int
    code: str
    serial: str
    level: int
    status: str
    parent_id: int | None
    reason: str


_PACK_COLUMNS = "id, product_code, serial, level, status, parent_id, reason"


def _packs_by_keys(cursor, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], _PackRow]:
    """The packs of a few (product code, serial) keys — parents, shipped packs — per product code in IN lists of
    500 serials (one index scan each: PostgreSQL turns the list into ``= ANY(array)``)."""
    by_code: dict[str, list[str]] = defaultdict(list)
    for code, serial in set(keys):
        by_code[code].append(serial)
    found: dict[tuple[str, str], _PackRow] = {}
    for code, serials in sorted(by_code.items()):
        serials.sort()
        for start in range(0, len(serials), _IN_CHUNK):
            chunk = serials[start : start + _IN_CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(
                f"SELECT {_PACK_COLUMNS} FROM {_PACK} WHERE product_code = %s AND serial IN ({marks})",  # noqa: S608
                [code, *chunk],
            )
            for row in cursor.fetchall():
                pack = _PackRow(*row)
                found[(pack.code, pack.serial)] = pack
    return found


def _packs_by_ids(cursor, ids: Iterable[int]) -> dict[int, _PackRow]:
    ids = sorted(set(ids))
    found: dict[int, _PackRow] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        marks = ", ".join(["%s"] * len(chunk))
        cursor.execute(f"SELECT {_PACK_COLUMNS} FROM {_PACK} WHERE id IN ({marks})", chunk)  # noqa: S608
        for row in cursor.fetchall():
            found[row[0]] = _PackRow(*row)
    return found


def _with_ancestors(cursor, packs: dict[int, _PackRow]) -> dict[int, _PackRow]:
    """``packs`` and every container above them (one IN query per level of the hierarchy)."""
    known = dict(packs)
    todo = {p.parent_id for p in packs.values() if p.parent_id is not None} - known.keys()
    for _ in range(_MAX_DEPTH):
        if not todo:
            break
        found = _packs_by_ids(cursor, todo)
        known.update(found)
        todo = {p.parent_id for p in found.values() if p.parent_id is not None} - known.keys()
    return known


def _lock_packs(cursor, packs: Iterable[tuple[int, int]], *, statuses: Sequence[str] | None = None) -> None:
    """Lock pack rows, given as (id, level), top down — pallets, then cases, then bundles and units, each level in id
    order — so every report that changes a hierarchy takes its locks in the same order and none waits for another
    in a circle (PostgreSQL; SQLite serialises writers anyway). A pack gone from ``statuses`` meanwhile (shipped,
    decommissioned) is a lost race."""
    order = sorted(set(packs), key=lambda pack: (-pack[1], pack[0]))
    if not order or not _postgres():
        return
    for start in range(0, len(order), _IN_CHUNK):
        chunk = [pack_id for pack_id, _ in order[start : start + _IN_CHUNK]]
        marks = ", ".join(["%s"] * len(chunk))
        cursor.execute(
            f"SELECT id, status FROM {_PACK} WHERE id IN ({marks}) ORDER BY level DESC, id FOR UPDATE",  # noqa: S608
            chunk,
        )
        rows = cursor.fetchall()
        if len(rows) != len(chunk) or (statuses is not None and any(status not in statuses for _, status in rows)):
            raise _Clash


def _resolve_into_temp(cursor, name: str, columns: str, names: Sequence[str], values: Sequence[Sequence[Any]]):
    """Load ``values`` (with ``code`` and ``serial`` columns) into TEMP ``<name>_in`` and join them to their packs
    into TEMP ``name``: the input columns plus the pack's id, level, status, current parent and reason."""
    source = f"{name}_in"
    _create_temp(cursor, source, columns)
    _fill_temp(cursor, source, names, values)
    cursor.execute(f"DROP TABLE IF EXISTS {name}")
    suffix = " ON COMMIT DROP" if _postgres() else ""
    cursor.execute(
        f"CREATE TEMP TABLE {name}{suffix} AS SELECT i.*, p.id AS pack_id, p.level AS level, p.status AS status, "  # noqa: S608
        f"p.parent_id AS cur_parent, p.reason AS cur_reason FROM {source} i "
        f"LEFT JOIN {_PACK} p ON p.product_code = i.code AND p.serial = i.serial"
    )
    if _postgres():
        cursor.execute(f"ANALYZE {name}")
    cursor.execute(f"DROP TABLE {source}")


# --- the report being applied -----------------------------------------------------------------------------------


@dataclass
class _Context:
    report_id: str
    order: PackagingOrder
    product: Product
    actor: Any
    occurred_at: datetime
    parsed: _Parsed
    now: datetime
    counts: dict = field(default_factory=dict)
    temps: list[str] = field(default_factory=list)
    # commissioning: what validation found, for the write
    pools: np.ndarray | None = None
    indices: np.ndarray | None = None
    parents: _Parents | None = None


@dataclass
class _Parents:
    """The containers a commissioning report packs into (commissioning lines with ``parent_sscc``): ``slot[i]`` is
    line i's parent (-1: none); per slot, the parent's position in the report (-1: commissioned before) and the id
    of an existing parent (-1: in the report)."""

    slot: np.ndarray
    position: np.ndarray
    existing_id: np.ndarray
    existing: dict[int, _PackRow]

    def ids(self, pack_ids: np.ndarray) -> np.ndarray:
        """Each line's parent id (-1: none), given the ids reserved for the report's lines."""
        out = np.full(self.slot.shape[0], -1, dtype=np.int64)
        has = self.slot >= 0
        position = self.position[self.slot[has]]
        out[has] = np.where(position >= 0, pack_ids[np.maximum(position, 0)], self.existing_id[self.slot[has]])
        return out


def _order_ranges(order: PackagingOrder) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Index ranges of the order's allocations per pool, as sorted, merged (starts, ends) arrays.

    A CMO's order holds ranges of its partner pool, whose numbers are those of the MAH pool behind it: they are
    translated through the PartnerSegment rows into ranges of that parent pool, where the serial decrypts (or is
    listed) — so a pack is recorded at the MAH pool and index, and one serial cannot be commissioned twice through
    two pools."""
    allocations = Allocation.objects.filter(
        Q(packaging_order=order)
        | Q(packaging_order__isnull=True, purpose=Allocation.Purpose.PACKAGING_ORDER, reference=order.number)
    )
    per_pool: dict[int, list[tuple[int, int]]] = defaultdict(list)
    via_partner: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for pool_id, first, count, parent_id in AllocationRange.objects.filter(allocation__in=allocations).values_list(
        "pool_id", "first_index", "count", "pool__parent_pool_id"
    ):
        if parent_id is None:
            per_pool[pool_id].append((first, first + count))
        else:
            via_partner[(pool_id, parent_id)].append((first, first + count))
    for (pool_id, parent_id), spans in via_partner.items():
        segments = PartnerSegment.objects.filter(pool_id=pool_id).values_list(
            "first_index", "count", "parent_first_index"
        )
        for first, count, parent_first in segments:
            for low, high in spans:
                start, end = max(low, first), min(high, first + count)
                if start < end:
                    per_pool[parent_id].append((parent_first + start - first, parent_first + end - first))
    ranges = {}
    for pool_id, spans in per_pool.items():
        spans.sort()
        merged = [list(spans[0])]
        for start, end in spans[1:]:
            if start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        ranges[pool_id] = (
            np.array([start for start, _ in merged], dtype=np.int64),
            np.array([end for _, end in merged], dtype=np.int64),
        )
    return ranges


def _in_ranges(indices: np.ndarray, spans: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    if spans is None:
        return np.zeros(indices.shape[0], dtype=bool)
    starts, ends = spans
    at = np.searchsorted(starts, indices, side="right") - 1
    inside = at >= 0
    inside[inside] = indices[inside] < ends[at[inside]]
    return inside


# --- commissioning ----------------------------------------------------------------------------------------------


def _validate_commissioning(ctx: _Context, cursor, *, after_clash: bool = False) -> _Problems:
    parsed, order = ctx.parsed, ctx.order
    problems = parsed.problems
    product_code = ctx.product.product_code
    n = len(parsed.s_line)
    lines, codes, serials, levels = parsed.s_line, parsed.s_code, parsed.s_serial, parsed.s_level
    ok = np.frombuffer(bytes(parsed.s_ok), dtype=np.uint8).astype(bool) if n else np.zeros(0, dtype=bool)
    is_unit = np.fromiter(map(bool, codes), dtype=bool, count=n)
    pools = np.full(n, -1, dtype=np.int64)
    indices = np.full(n, -1, dtype=np.int64)

    for i in np.flatnonzero(~is_unit).tolist():
        if levels[i] not in CONTAINER_LEVELS:
            ok[i] = False
            problems.add(
                lines[i],
                "invalid_level",
                serials[i],
                f"SSCC {serials[i]}: level {levels[i]} is not a container level; use 1 (bundle), 2 (case) or 3 "
                "(pallet).",
            )
    foreign = np.flatnonzero(ok & is_unit & np.fromiter(map(product_code.__ne__, codes), dtype=bool, count=n))
    for i in foreign.tolist():
        ok[i] = False
        problems.add(
            lines[i],
            "wrong_product",
            serials[i],
            f"Product code {codes[i]} is not the product of order {order.number} ({product_code}); report this "
            "unit on an order of its own product.",
        )

    # Repeats inside the report: every later occurrence is a problem.
    for i, first in _duplicates(codes, serials):
        if ok[i]:
            ok[i] = False
            problems.add(
                lines[i],
                "duplicate_in_report",
                serials[i],
                f"{_sentence_name(codes[i], serials[i])} is commissioned on line {lines[first]} of this report "
                "already; a serial is commissioned once.",
            )

    ranges = _order_ranges(order)
    unit_rows = np.flatnonzero(ok & is_unit)
    if unit_rows.size:
        _resolve_units(ctx, cursor, unit_rows, pools, indices)
    container_rows = np.flatnonzero(ok & ~is_unit)
    if container_rows.size:
        _resolve_containers(serials, container_rows, pools, indices)

    candidates = np.flatnonzero(ok)
    unknown = candidates[pools[candidates] < 0]
    for i in unknown.tolist():
        ok[i] = False
        where = f"no serial pool of {codes[i]}" if codes[i] else "no SSCC pool here"
        problems.add(
            lines[i],
            "unknown_serial",
            serials[i],
            f"{_sentence_name(codes[i], serials[i])} is in {where}: it was never generated or imported. Check the "
            "number as scanned.",
        )
    assigned = np.zeros(n, dtype=bool)
    for pool_id in np.unique(pools[ok]).tolist():
        rows = np.flatnonzero(ok & (pools == pool_id))
        assigned[rows] = _in_ranges(indices[rows], ranges.get(pool_id))
    for i in np.flatnonzero(ok & ~assigned).tolist():
        ok[i] = False
        problems.add(
            lines[i],
            "not_assigned",
            serials[i],
            f"{_sentence_name(codes[i], serials[i])} is not assigned to order {order.number}: commission only "
            "serials allocated to this order.",
        )

    if parsed.s_parent:
        ctx.parents = _check_parents(ctx, cursor, ok, is_unit)

    # A clean report relies on the unique constraint (its COPY fails on a clash); a report being rejected anyway,
    # or one that just lost that race, lists the serials commissioned already too.
    parsed.s_ok = bytearray(ok.astype(np.uint8).tobytes())  # lines with a problem already are not looked up
    if after_clash or problems:
        _check_not_commissioned(ctx, cursor, problems)
    ctx.pools, ctx.indices = pools, indices
    return problems


def _check_parents(ctx: _Context, cursor, ok: np.ndarray, is_unit: np.ndarray) -> _Parents:
    """Commissioning straight into containers: each ``parent_sscc`` names a container commissioned on a line of this
    report (in any order) or before, not decommissioned or shipped, of a higher level than the pack, with room for
    it (its level's PackagingLevel quantity). Levels strictly upward also rule out cycles. Per distinct parent in
    Python (a report names thousands), per line in numpy (it names a million)."""
    parsed, problems = ctx.parsed, ctx.parsed.problems
    lines, serials, levels, parents = parsed.s_line, parsed.s_serial, parsed.s_level, parsed.s_parent
    n = len(lines)
    in_report: dict[str, int] = {}
    for i in np.flatnonzero(~is_unit).tolist():
        in_report.setdefault(serials[i], i)
    named = sorted(set(parents) - {None})
    slot_of = {sscc: k for k, sscc in enumerate(named)}
    slot = np.fromiter(map(slot_of.get, parents, itertools.repeat(-1)), dtype=np.int64, count=n)
    existing = _packs_by_keys(cursor, [("", sscc) for sscc in named if sscc not in in_report])
    size = len(named)
    level = np.full(size, -1, dtype=np.int64)
    position = np.full(size, -1, dtype=np.int64)
    existing_id = np.full(size, -1, dtype=np.int64)
    usable = np.zeros(size, dtype=bool)
    refusal: dict[int, tuple[str, str]] = {}
    for k, sscc in enumerate(named):
        at = in_report.get(sscc)
        if at is not None:
            # A parent whose own line has a problem rejects the report already; its children are not checked.
            position[k], level[k], usable[k] = at, levels[at], bool(ok[at])
            continue
        pack = existing.get(("", sscc))
        if pack is None:
            refusal[k] = (
                "not_commissioned",
                f"SSCC {sscc} is not commissioned; commission it on a line of this report or before.",
            )
        elif pack.status == Status.DECOMMISSIONED:
            refusal[k] = ("decommissioned", f"SSCC {sscc} is decommissioned ({pack.reason}) and cannot hold packs.")
        elif pack.status == Status.SHIPPED:
            refusal[k] = ("shipped", f"SSCC {sscc} is shipped already and cannot hold packs.")
        else:
            level[k], existing_id[k], usable[k] = pack.level, pack.id, True

    rows = np.flatnonzero(ok & (slot >= 0))
    refused = np.zeros(size, dtype=bool)
    refused[list(refusal)] = True
    for i in rows[refused[slot[rows]]].tolist():
        ok[i] = False
        code, problem = refusal[int(slot[i])]
        problems.add(lines[i], code, parents[i], problem)
    child_level = np.asarray(levels, dtype=np.int64)
    rows = rows[usable[slot[rows]]]
    for i in rows[child_level[rows] >= level[slot[rows]]].tolist():
        ok[i] = False
        if not is_unit[i] and serials[i] == parents[i]:
            problems.add(lines[i], "cycle", serials[i], f"SSCC {serials[i]} cannot contain itself.")
            continue
        parent_level = int(level[slot[i]])
        problems.add(
            lines[i],
            "level_order",
            serials[i],
            f"{_sentence_name(parsed.s_code[i], serials[i])} is a {_level_name(levels[i])} and cannot go into SSCC "
            f"{parents[i]}, a {_level_name(parent_level)}: levels go upward (unit → bundle/case → pallet).",
        )
    _check_room(ctx, cursor, ok, slot, level, existing_id, named)
    return _Parents(
        slot=slot,
        position=position,
        existing_id=existing_id,
        existing={pack.id: pack for pack in existing.values()},
    )


def _check_room(
    ctx: _Context,
    cursor,
    ok: np.ndarray,
    slot: np.ndarray,
    level: np.ndarray,
    existing_id: np.ndarray,
    named: list[str],
) -> None:
    """What each parent holds already plus the packs this report commissions into it, against its level's
    PackagingLevel quantity; the problem goes on the line where the count goes over."""
    limits = dict(PackagingLevel.objects.filter(product=ctx.product).values_list("level", "quantity"))
    limit = np.array([limits.get(int(value)) or -1 for value in level.tolist()], dtype=np.int64)
    if not (limit >= 0).any():
        return
    held = np.zeros(len(named), dtype=np.int64)
    limited_existing = {int(existing_id[k]): k for k in np.flatnonzero((limit >= 0) & (existing_id >= 0)).tolist()}
    for parent_id, count in _children_held(cursor, limited_existing).items():
        held[limited_existing[parent_id]] = count
    rows = np.flatnonzero(ok & (slot >= 0))
    added = np.bincount(slot[rows], minlength=len(named))
    over = np.flatnonzero((limit >= 0) & (held + added > limit))
    parsed = ctx.parsed
    for k in over.tolist():
        children = rows[slot[rows] == k]
        i = int(children[max(0, limit[k] - held[k])])
        ok[i] = False
        parent_level = _level_name(int(level[k]))
        parsed.problems.add(
            parsed.s_line[i],
            "too_many_children",
            named[k],
            f"SSCC {named[k]} ({parent_level}) would hold {held[k] + added[k]} packs; "
            f"{ctx.product.product_code} packs at most {limit[k]} per {parent_level}.",
        )


def _resolve_units(ctx: _Context, cursor, rows: np.ndarray, pools: np.ndarray, indices: np.ndarray) -> None:
    """Pool and index of each unit serial: list pools by one join against a TEMP table of the serials, then the
    generated pool by vectorised FF1 decryption for the rest."""
    parsed = ctx.parsed
    code = ctx.product.product_code
    # Partner pools hold no numbers of their own: their serials are found in the MAH pool behind them.
    candidates = SerialPool.objects.filter(kind=SerialPool.Kind.SGTIN, product_code=code).exclude(
        source=SerialPool.Source.PARTNER
    )
    generated = [p for p in candidates if p.is_generated]
    if any(not p.is_generated for p in candidates):
        positions = rows.tolist()
        name = "lr_listed"
        _create_temp(cursor, name, "pos integer NOT NULL, serial varchar(20) NOT NULL")
        _fill_temp(cursor, name, ["pos", "serial"], [positions, [parsed.s_serial[i] for i in positions]])
        cursor.execute(
            f"SELECT t.pos, l.pool_id, l.ordinal FROM {name} t JOIN {ListedSerial._meta.db_table} l "  # noqa: S608
            "ON l.product_code = %s AND l.serial = t.serial",
            [code],
        )
        for pos, pool_id, ordinal in cursor.fetchall():
            pools[pos], indices[pos] = pool_id, ordinal
        _drop_temp(cursor, name)
    for pool in generated:
        rest = rows[pools[rows] < 0]
        if not rest.size:
            break
        found = pool_indices(pool, [parsed.s_serial[i] for i in rest.tolist()])
        hit = found >= 0
        pools[rest[hit]] = pool.pk
        indices[rest[hit]] = found[hit]


def _resolve_containers(serials: list[str], rows: np.ndarray, pools: np.ndarray, indices: np.ndarray) -> None:
    """Pool and index of each SSCC: the SSCC pool of its extension digit and company prefix."""
    sscc_pools = list(SerialPool.objects.filter(kind=SerialPool.Kind.SSCC, source=SerialPool.Source.GENERATOR))
    for pool in sscc_pools:
        head = pool.sscc_extension_digit + pool.sscc_prefix
        mine = [i for i in rows.tolist() if pools[i] < 0 and serials[i].startswith(head)]
        if not mine:
            continue
        found = pool_indices(pool, [serials[i][len(head) : 17] for i in mine])
        mine_array = np.array(mine, dtype=np.int64)
        hit = found >= 0
        pools[mine_array[hit]] = pool.pk
        indices[mine_array[hit]] = found[hit]


def _check_not_commissioned(ctx: _Context, cursor, problems: _Problems) -> None:
    """Lines whose serial has a pack already: one TEMP-table join (run when the report is being rejected anyway, or
    after a commissioning lost a race; a clean report relies on the unique constraint instead)."""
    parsed = ctx.parsed
    positions = [i for i in range(len(parsed.s_line)) if parsed.s_ok[i]]
    if not positions:
        return
    name = "lr_commission"
    _create_temp(cursor, name, "pos integer NOT NULL, code varchar(14) NOT NULL, serial varchar(20) NOT NULL")
    _fill_temp(
        cursor,
        name,
        ["pos", "code", "serial"],
        [positions, [parsed.s_code[i] for i in positions], [parsed.s_serial[i] for i in positions]],
    )
    cursor.execute(
        f"SELECT t.pos, p.status, o.number, count(*) OVER () FROM {name} t "  # noqa: S608
        f"JOIN {_PACK} p ON p.product_code = t.code AND p.serial = t.serial "
        f"LEFT JOIN {PackagingOrder._meta.db_table} o ON o.id = p.order_id ORDER BY t.pos LIMIT %s",
        [MAX_REPORTED_ERRORS],
    )
    rows = cursor.fetchall()
    for pos, status, number, _ in rows:
        code, serial = parsed.s_code[pos], parsed.s_serial[pos]
        where = f" on order {number}" if number else ""
        problems.add(
            parsed.s_line[pos],
            "already_commissioned",
            serial,
            f"{_sentence_name(code, serial)} was commissioned already{where} (now {status}); a serial is "
            "commissioned once.",
        )
    if rows:
        problems.add_uncounted_total(rows[0][3] - len(rows))
    _drop_temp(cursor, name)


def _write_commissioning(ctx: _Context, cursor, report: LineReport) -> None:
    """Packs and their ``commissioned`` events; a pack commissioned into a container is written packed, with its
    parent, and gets a ``packed`` event after the ``commissioned`` one — the same rows as a commissioning followed
    by an aggregation, without rewriting every pack."""
    parsed = ctx.parsed
    n = len(parsed.s_line)
    order = ctx.order
    if ctx.parents is not None:
        # Containers filled by this report, and everything above them, locked top down as an aggregation does.
        known = _with_ancestors(cursor, ctx.parents.existing)
        _lock_packs(cursor, [(p.id, p.level) for p in known.values()], statuses=(Status.COMMISSIONED, Status.PACKED))
    ids = _reserve_pack_ids(cursor, n)
    levels = np.array(parsed.s_level, dtype=np.int16)
    parent_ids = ctx.parents.ids(ids) if ctx.parents is not None else np.full(n, -1, dtype=np.int64)
    packed = np.flatnonzero(parent_ids >= 0)
    if _postgres():
        _copy_packs(cursor, ctx, ids, levels, parent_ids)
        _copy_events(cursor, ids, report.pk, Action.COMMISSIONED, ctx.occurred_at)
        if packed.size:
            _copy_events(cursor, ids[packed], report.pk, Action.PACKED, ctx.occurred_at, parents=parent_ids[packed])
    else:
        cursor.executemany(
            f"INSERT INTO {_PACK} (id, pool_id, {connection.ops.quote_name('index')}, product_code, serial, level, "  # noqa: S608
            "batch_id, order_id, parent_id, status, reason, eu_state, commissioned_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '', %s, %s, %s)",
            [
                (
                    int(ids[i]),
                    int(ctx.pools[i]),
                    int(ctx.indices[i]),
                    parsed.s_code[i],
                    parsed.s_serial[i],
                    parsed.s_level[i],
                    order.batch_id,
                    order.pk,
                    parent if parent >= 0 else None,
                    Status.PACKED if parent >= 0 else Status.COMMISSIONED,
                    cbv.COMMISSIONED.eu_state,
                    ctx.occurred_at,
                    ctx.now,
                )
                for i, parent in enumerate(parent_ids.tolist())
            ],
        )
        events = [(pack_id, Action.COMMISSIONED, None) for pack_id in ids.tolist()]
        events += [(int(ids[i]), Action.PACKED, int(parent_ids[i])) for i in packed.tolist()]
        cursor.executemany(
            f"INSERT INTO {_EVENT} (pack_id, report_id, action, reason, occurred_at, parent_id) "  # noqa: S608
            "VALUES (%s, %s, %s, '', %s, %s)",
            [(pack_id, report.pk, action, ctx.occurred_at, parent) for pack_id, action, parent in events],
        )
    units = int((levels == 0).sum())
    ctx.counts.update({"units": units, "containers": n - units})
    if ctx.parents is not None:
        ctx.counts["packed"] = int(packed.size)


def _reserve_pack_ids(cursor, n: int) -> np.ndarray:
    """n new pack ids. PostgreSQL: drawn from the table's sequence in one statement; when no other session drew at
    the same moment they are one run ``min..max`` (the usual case, answered without sending them), otherwise the
    drawn values come back as an array. SQLite: after the current maximum — this transaction holds SQLite's write
    lock already (the report row is written first)."""
    if _postgres():
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [_PACK])
        sequence = cursor.fetchone()[0]
        cursor.execute(
            "WITH drawn AS MATERIALIZED (SELECT nextval(%s::regclass) AS id FROM generate_series(1, %s)), "
            "span AS (SELECT min(id) AS low, max(id) AS high FROM drawn) "
            "SELECT low, CASE WHEN high - low + 1 = %s THEN NULL ELSE (SELECT array_agg(id ORDER BY id) FROM drawn) "
            "END FROM span",
            [sequence, n, n],
        )
        low, scattered = cursor.fetchone()
        if scattered is not None:
            return np.array(scattered, dtype=np.int64)
        return np.arange(low, low + n, dtype=np.int64)
    cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {_PACK}")  # noqa: S608
    top = cursor.fetchone()[0]
    return np.arange(top + 1, top + 1 + n, dtype=np.int64)


# PostgreSQL binary COPY: a header, then per row a 16-bit field count and per field a 32-bit length (-1 NULL) and
# the value in network byte order; timestamps are microseconds since 2000-01-01 UTC. Rows of equal field widths are
# one numpy structured array, so a million packs are encoded without a Python object per row.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_COPY_CHUNK_BYTES = 8 << 20


def _pg_time(value: datetime) -> int:
    return (value - _PG_EPOCH) // timedelta(microseconds=1)


def _binary_rows(columns: Sequence[tuple[str, Any]], n: int) -> bytes:
    """Encode n rows; each column is ("i8" | "i2", array or scalar), ("text", fixed-width bytes array or bytes) or
    ("null", None)."""
    names, formats = ["fields"], [">i2"]
    for k, (kind, value) in enumerate(columns):
        names.append(f"n{k}")
        formats.append(">i4")
        if kind == "null":
            continue
        if kind == "text":
            width = value.dtype.itemsize if isinstance(value, np.ndarray) else len(value)
            if width:
                names.append(f"v{k}")
                formats.append(f"S{width}")
        else:
            names.append(f"v{k}")
            formats.append(">i8" if kind == "i8" else ">i2")
    rows = np.empty(n, dtype=np.dtype({"names": names, "formats": formats}))
    rows["fields"] = len(columns)
    for k, (kind, value) in enumerate(columns):
        if kind == "null":
            rows[f"n{k}"] = -1
        elif kind == "text":
            width = value.dtype.itemsize if isinstance(value, np.ndarray) else len(value)
            rows[f"n{k}"] = width
            if width:
                rows[f"v{k}"] = value
        else:
            rows[f"n{k}"] = 8 if kind == "i8" else 2
            rows[f"v{k}"] = value
    return rows.tobytes()


def _copy_binary(cursor, sql: str, blocks: Iterable[bytes]) -> None:
    # ``copy`` is psycopg's own method, so its errors need Django's wrapping (a unique violation → IntegrityError).
    with connection.wrap_database_errors, cursor.copy(sql) as copy:
        copy.write(_COPY_HEADER)
        for block in blocks:
            for start in range(0, len(block), _COPY_CHUNK_BYTES):
                copy.write(block[start : start + _COPY_CHUNK_BYTES])
        copy.write(_COPY_TRAILER)


def _copy_packs(cursor, ctx: _Context, ids: np.ndarray, levels: np.ndarray, parent_ids: np.ndarray) -> None:
    parsed, order = ctx.parsed, ctx.order
    codes, serials = parsed.s_code, parsed.s_serial
    # Rows with the same product-code and serial widths and the same parent-or-not share one structured array
    # (usually there are one or two groups).
    n = len(codes)
    shapes = (
        np.fromiter(map(len, codes), dtype=np.int64, count=n) * 128
        + np.fromiter(map(len, serials), dtype=np.int64, count=n) * 2
        + (parent_ids >= 0)
    )
    order_of_rows = np.argsort(shapes, kind="stable")
    bounds = np.flatnonzero(np.diff(shapes[order_of_rows])) + 1
    when, now = _pg_time(ctx.occurred_at), _pg_time(ctx.now)
    eu_state = cbv.COMMISSIONED.eu_state.encode()

    def blocks():
        for at in np.split(order_of_rows, bounds):
            shape = int(shapes[at[0]])
            code_width, serial_width, packed = shape // 128, shape % 128 // 2, shape % 2
            rows = at.tolist()
            code_column = np.array([codes[i] for i in rows], dtype=f"S{code_width}") if code_width else b""
            yield _binary_rows(
                [
                    ("i8", ids[at]),
                    ("i8", ctx.pools[at]),
                    ("i8", ctx.indices[at]),
                    ("text", code_column),
                    ("text", np.array([serials[i] for i in rows], dtype=f"S{serial_width}")),
                    ("i2", levels[at]),
                    ("i8", order.batch_id),
                    ("i8", order.pk),
                    ("i8", parent_ids[at]) if packed else ("null", None),
                    ("text", (Status.PACKED if packed else Status.COMMISSIONED).encode()),
                    ("text", b""),
                    ("text", eu_state),
                    ("i8", when),
                    ("i8", now),
                ],
                len(rows),
            )

    _copy_binary(
        cursor,
        f'COPY {_PACK} (id, pool_id, "index", product_code, serial, level, batch_id, order_id, parent_id, status, '
        "reason, eu_state, commissioned_at, updated_at) FROM STDIN (FORMAT BINARY)",
        blocks(),
    )


def _copy_events(
    cursor,
    pack_ids: np.ndarray,
    report_id: int,
    action: str,
    occurred_at: datetime,
    *,
    parents: np.ndarray | None = None,
) -> None:
    block = _binary_rows(
        [
            ("i8", pack_ids),
            ("i8", report_id),
            ("text", action.encode()),
            ("text", b""),
            ("i8", _pg_time(occurred_at)),
            ("i8", parents) if parents is not None else ("null", None),
        ],
        pack_ids.shape[0],
    )
    _copy_binary(
        cursor,
        f"COPY {_EVENT} (pack_id, report_id, action, reason, occurred_at, parent_id) FROM STDIN (FORMAT BINARY)",
        [block],
    )


# --- subjects and children in TEMP tables -------------------------------------------------------------------------


def _subject_problem(problems: _Problems, line: int, code: str, serial: str, pack: _PackRow | None, doing: str) -> bool:
    """The common checks on a pack a line is about; True when it may take part in ``doing``."""
    name = _sentence_name(code, serial)
    if pack is None:
        problems.add(line, "not_commissioned", serial, f"{name} is not commissioned; commission it first.")
        return False
    if pack.status == Status.DECOMMISSIONED:
        problems.add(
            line,
            "decommissioned",
            serial,
            f"{name} is decommissioned ({pack.reason or 'no reason'}) and cannot be {doing}.",
        )
        return False
    if pack.status == Status.SHIPPED:
        problems.add(line, "shipped", serial, f"{name} is shipped already and cannot be {doing}.")
        return False
    return True


def _children_into_temp(ctx: _Context, cursor, name: str, parents: list[_PackRow | None]) -> list[int]:
    """Load the well-formed children into TEMP ``name`` joined to their packs; returns their positions."""
    parsed = ctx.parsed
    positions = [k for k in range(len(parsed.c_line)) if parsed.c_ok[k]]
    parent_ids = [parents[parsed.c_subject[k]].id if parents[parsed.c_subject[k]] else None for k in positions]
    parent_levels = [parents[parsed.c_subject[k]].level if parents[parsed.c_subject[k]] else None for k in positions]
    _resolve_into_temp(
        cursor,
        name,
        "pos integer NOT NULL, line integer NOT NULL, code varchar(14) NOT NULL, serial varchar(20) NOT NULL, "
        "parent_pack bigint, parent_level integer",
        ["pos", "line", "code", "serial", "parent_pack", "parent_level"],
        [
            positions,
            [parsed.c_line[k] for k in positions],
            [parsed.c_code[k] for k in positions],
            [parsed.c_serial[k] for k in positions],
            parent_ids,
            parent_levels,
        ],
    )
    ctx.temps.append(name)
    return positions


def _subjects(ctx: _Context, cursor, doing: str) -> list[_PackRow | None]:
    """The pack of each line's subject (few: parents), with the common checks; None where it failed them."""
    parsed = ctx.parsed
    keys = [(parsed.s_code[i], parsed.s_serial[i]) for i in range(len(parsed.s_line)) if parsed.s_ok[i]]
    found = _packs_by_keys(cursor, keys)
    subjects: list[_PackRow | None] = []
    for i in range(len(parsed.s_line)):
        pack = None
        if parsed.s_ok[i]:
            code, serial = parsed.s_code[i], parsed.s_serial[i]
            candidate = found.get((code, serial))
            if _subject_problem(parsed.problems, parsed.s_line[i], code, serial, candidate, doing):
                pack = candidate
        subjects.append(pack)
    return subjects


def _problem_rows(cursor, problems: _Problems, sql: str, params: list, on_row: Callable[[tuple], None]) -> None:
    """Run a problem query — rows in line order, the number of all matching rows (``count(*) OVER ()``) last —
    for at most MAX_REPORTED_ERRORS rows; the rows past the cap count one problem each."""
    cursor.execute(f"{sql} LIMIT %s", [*params, MAX_REPORTED_ERRORS])
    rows = cursor.fetchall()
    for row in rows:
        on_row(row)
    if rows:
        problems.add_uncounted_total(rows[0][-1] - len(rows))


# --- aggregation --------------------------------------------------------------------------------------------------


def _validate_aggregation(ctx: _Context, cursor, *, after_clash: bool = False) -> _Problems:
    parsed = ctx.parsed
    problems = parsed.problems
    parents = _subjects(ctx, cursor, "packed into")
    for i, pack in enumerate(parents):
        if pack is not None and pack.level not in CONTAINER_LEVELS:
            problems.add(
                parsed.s_line[i],
                "level_order",
                pack.serial,
                f"SSCC {pack.serial} is a {_level_name(pack.level)} and cannot hold other packs.",
            )
            parents[i] = None

    # A pack inside itself on its own line, or a child twice in the report: decided on the strings, before the
    # database.
    for k in range(len(parsed.c_line)):
        subject = parsed.c_subject[k]
        if parsed.c_ok[k] and not parsed.c_code[k] and parsed.c_serial[k] == parsed.s_serial[subject]:
            parsed.c_ok[k] = 0
            problems.add(
                parsed.c_line[k],
                "cycle",
                parsed.c_serial[k],
                f"SSCC {parsed.c_serial[k]} cannot contain itself.",
            )

    for k, first in _duplicates(parsed.c_code, parsed.c_serial):
        if parsed.c_ok[k]:
            parsed.c_ok[k] = 0
            problems.add(
                parsed.c_line[k],
                "packed_twice",
                parsed.c_serial[k],
                f"{_sentence_name(parsed.c_code[k], parsed.c_serial[k])} is packed on line {parsed.c_line[first]} "
                "of this report too; a pack has one parent at a time.",
            )
    positions = _children_into_temp(ctx, cursor, "lr_children", parents)
    _problem_rows(
        cursor,
        problems,
        "SELECT c.line, c.code, c.serial, c.pack_id, c.level, c.status, c.cur_reason, cp.serial, c.parent_level, "  # noqa: S608
        f"pp.serial, count(*) OVER () FROM lr_children c LEFT JOIN {_PACK} cp ON cp.id = c.cur_parent "
        f"LEFT JOIN {_PACK} pp ON pp.id = c.parent_pack "
        "WHERE c.pack_id IS NULL OR c.status <> %s OR c.cur_parent IS NOT NULL OR c.level >= c.parent_level "
        "ORDER BY c.pos",
        [Status.COMMISSIONED],
        lambda row: _aggregation_child_problem(problems, row),
    )

    _check_quantities(ctx, cursor, parents, problems)
    _check_cycles(ctx, cursor, parents, problems)
    ctx.counts.update({"packed": len(positions), "parents": len({p.id for p in parents if p is not None})})
    return problems


def _aggregation_child_problem(problems: _Problems, row: tuple) -> None:
    line, code, serial, pack_id, level, status, reason, current_parent, parent_level, parent_sscc, _ = row
    name = _sentence_name(code, serial)
    if pack_id is None:
        problems.add(line, "not_commissioned", serial, f"{name} is not commissioned; commission it before packing.")
    elif status == Status.DECOMMISSIONED:
        problems.add(line, "decommissioned", serial, f"{name} is decommissioned ({reason}) and cannot be packed.")
    elif status == Status.SHIPPED:
        problems.add(line, "shipped", serial, f"{name} is shipped already and cannot be packed.")
    else:
        if current_parent is not None:
            problems.add(
                line,
                "already_packed",
                serial,
                f"{name} is packed in SSCC {current_parent} already; unpack it first (a pack has one parent at a "
                "time).",
            )
        if parent_sscc is not None and level >= parent_level:
            problems.add(
                line,
                "level_order",
                serial,
                f"{name} is a {_level_name(level)} and cannot go into SSCC {parent_sscc}, a "
                f"{_level_name(parent_level)}: levels go upward (unit → bundle/case → pallet).",
            )


def _check_quantities(ctx: _Context, cursor, parents: list[_PackRow | None], problems: _Problems) -> None:
    """A parent may hold at most its level's PackagingLevel.quantity of the order's product (when that level has
    one): what it holds now plus what the report adds, reported on the line where the count goes over."""
    limits = dict(PackagingLevel.objects.filter(product=ctx.product).values_list("level", "quantity"))
    limited = {p.id: p for p in parents if p is not None and limits.get(p.level)}
    if not limited:
        return
    held = _children_held(cursor, limited)
    cursor.execute(
        "SELECT parent_pack, line, count(*) FROM lr_children WHERE parent_pack IS NOT NULL "
        "GROUP BY parent_pack, line ORDER BY parent_pack, line"
    )
    total = dict(held)
    reported = set()
    for parent_id, line, added in cursor.fetchall():
        parent = limited.get(parent_id)
        if parent is None:
            continue
        total[parent_id] = total.get(parent_id, 0) + added
        limit = limits[parent.level]
        if total[parent_id] > limit and parent_id not in reported:
            reported.add(parent_id)
            problems.add(
                line,
                "too_many_children",
                parent.serial,
                f"SSCC {parent.serial} ({_level_name(parent.level)}) would hold {total[parent_id]} packs; "
                f"{ctx.product.product_code} packs at most {limit} per {_level_name(parent.level)}.",
            )


def _children_held(cursor, parent_ids: Iterable[int]) -> dict[int, int]:
    """How many packs each of ``parent_ids`` holds now (parents holding none are left out)."""
    ids = sorted(parent_ids)
    held: dict[int, int] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        marks = ", ".join(["%s"] * len(chunk))
        cursor.execute(
            f"SELECT parent_id, count(*) FROM {_PACK} WHERE parent_id IN ({marks}) GROUP BY parent_id",  # noqa: S608
            chunk,
        )
        held.update(dict(cursor.fetchall()))
    return held


def _check_cycles(ctx: _Context, cursor, parents: list[_PackRow | None], problems: _Problems) -> None:
    """No pack may end up inside itself: walk up from each parent through the hierarchy as it will be after the
    report (containers only — units hold nothing) and refuse a child met on the way."""
    cursor.execute(
        "SELECT line, serial, pack_id, parent_pack FROM lr_children "
        "WHERE code = '' AND pack_id IS NOT NULL AND parent_pack IS NOT NULL ORDER BY pos"
    )
    edges = cursor.fetchall()
    if not edges:
        return
    known = _with_ancestors(cursor, {p.id: p for p in parents if p is not None})
    after = {pack_id: p.parent_id for pack_id, p in known.items()}
    after.update({child: parent for _, _, child, parent in edges})
    for line, serial, child, parent in edges:
        node, steps = parent, 0
        while node is not None and steps <= _MAX_DEPTH:
            if node == child:
                parent_sscc = known[parent].serial if parent in known else parent
                problems.add(
                    line,
                    "cycle",
                    serial,
                    f"SSCC {serial} holds SSCC {parent_sscc} (directly or further down), so it cannot go into it: "
                    "aggregation has no cycles.",
                )
                break
            node, steps = after.get(node), steps + 1


def _write_aggregation(ctx: _Context, cursor, report: LineReport) -> None:
    # Parents and everything above them first, top down: a pallet being shipped and a case on it being filled queue
    # on the pallet instead of interleaving.
    cursor.execute("SELECT DISTINCT parent_pack FROM lr_children")
    parent_ids = [row[0] for row in cursor.fetchall()]
    known = _with_ancestors(cursor, _packs_by_ids(cursor, parent_ids))
    _lock_packs(cursor, [(p.id, p.level) for p in known.values()], statuses=(Status.COMMISSIONED, Status.PACKED))
    moved = _move(
        cursor,
        report,
        ctx,
        set_sql="parent_id = r.parent_pack, status = %s",
        set_params=[Status.PACKED],
        where_sql="p.parent_id IS NULL AND p.status = %s",
        where_params=[Status.COMMISSIONED],
        table="lr_children",
        action=Action.PACKED,
        event_parent="r.parent_pack",
    )
    if moved != ctx.counts["packed"]:
        raise _Clash


def _move(
    cursor,
    report: LineReport,
    ctx: _Context,
    *,
    set_sql: str,
    set_params: list,
    where_sql: str,
    where_params: list,
    table: str,
    action: str,
    event_parent: str,
    event_reason: str = "''",
    key: str = "pack_id",
) -> int:
    """UPDATE the packs listed in TEMP ``table`` where the preconditions still hold, and record one ``action``
    event for each; returns how many changed (the caller compares with what validation expected)."""
    update = (
        f"UPDATE {_PACK} AS p SET {set_sql}, updated_at = %s FROM {table} r "  # noqa: S608
        f"WHERE p.id = r.{key} AND {where_sql}"
    )
    params = [*set_params, ctx.now, *where_params]
    if _postgres():
        # One statement: the event rows come from the UPDATE's RETURNING, so they are exactly the changed packs.
        cursor.execute(
            f"WITH moved AS ({update} RETURNING p.id AS pack_id, {event_parent} AS parent, {event_reason} AS reason) "  # noqa: S608
            f"INSERT INTO {_EVENT} (pack_id, report_id, action, reason, occurred_at, parent_id) "
            "SELECT pack_id, %s, %s, reason, %s, parent FROM moved",
            [*params, report.pk, action, ctx.occurred_at],
        )
        return cursor.rowcount
    cursor.execute(
        f"INSERT INTO {_EVENT} (pack_id, report_id, action, reason, occurred_at, parent_id) "  # noqa: S608
        f"SELECT r.{key}, %s, %s, {event_reason}, %s, {event_parent} FROM {table} r",
        [report.pk, action, ctx.occurred_at],
    )
    cursor.execute(update, params)
    return cursor.rowcount


# --- unpacking ----------------------------------------------------------------------------------------------------


def _validate_unpacking(ctx: _Context, cursor, *, after_clash: bool = False) -> _Problems:
    parsed = ctx.parsed
    problems = parsed.problems
    parents = _subjects(ctx, cursor, "unpacked")
    for k, first in _duplicates(parsed.c_code, parsed.c_serial):
        if parsed.c_ok[k]:
            parsed.c_ok[k] = 0
            problems.add(
                parsed.c_line[k],
                "duplicate_in_report",
                parsed.c_serial[k],
                f"{_sentence_name(parsed.c_code[k], parsed.c_serial[k])} is unpacked on line "
                f"{parsed.c_line[first]} of this report already.",
            )
    _children_into_temp(ctx, cursor, "lr_children", parents)
    # "Everything in it": the parents' current children join the table (pos -1: named by no line).
    every = [(parsed.s_line[i], p.id) for i, p in enumerate(parents) if p is not None and parsed.s_every_child[i]]
    if every:
        _create_temp(cursor, "lr_every", "line integer NOT NULL, parent_pack bigint NOT NULL")
        _fill_temp(cursor, "lr_every", ["line", "parent_pack"], [[e[0] for e in every], [e[1] for e in every]])
        cursor.execute(
            "INSERT INTO lr_children (pos, line, code, serial, parent_pack, parent_level, pack_id, level, status, "  # noqa: S608
            "cur_parent, cur_reason) SELECT -1, e.line, p.product_code, p.serial, e.parent_pack, NULL, p.id, p.level, "
            f"p.status, p.parent_id, p.reason FROM lr_every e JOIN {_PACK} p ON p.parent_id = e.parent_pack"
        )
        cursor.execute(
            "SELECT e.line, e.parent_pack FROM lr_every e WHERE NOT EXISTS "
            "(SELECT 1 FROM lr_children c WHERE c.parent_pack = e.parent_pack AND c.pos = -1)"
        )
        empty = dict(cursor.fetchall())
        by_id = {p.id: p for p in parents if p is not None}
        for line, parent_id in sorted(empty.items()):
            problems.add(
                line,
                "nothing_to_unpack",
                by_id[parent_id].serial,
                f"SSCC {by_id[parent_id].serial} holds nothing to unpack.",
            )
        _drop_temp(cursor, "lr_every")

    _problem_rows(
        cursor,
        problems,
        "SELECT c.line, c.code, c.serial, c.pack_id, c.status, c.cur_reason, cp.serial, pp.serial, "  # noqa: S608
        "count(*) OVER () FROM lr_children c "
        f"LEFT JOIN {_PACK} cp ON cp.id = c.cur_parent LEFT JOIN {_PACK} pp ON pp.id = c.parent_pack "
        "WHERE c.pos >= 0 AND (c.pack_id IS NULL OR c.parent_pack IS NULL OR c.cur_parent IS NULL "
        "OR c.cur_parent <> c.parent_pack OR c.status <> %s) ORDER BY c.pos",
        [Status.PACKED],
        lambda row: _unpacking_child_problem(problems, row),
    )
    # A pack both named and included by "everything in it" (or by two such lines).
    cursor.execute(
        "SELECT c.line, c.code, c.serial, c.pos FROM lr_children c WHERE c.pack_id IN "
        "(SELECT pack_id FROM lr_children WHERE pack_id IS NOT NULL GROUP BY pack_id HAVING count(*) > 1) "
        "ORDER BY c.pack_id, c.line, c.pos"
    )
    seen: set[tuple[str, str]] = set()
    for line, code, serial, _ in cursor.fetchall():
        if (code, serial) in seen:
            problems.add(
                line,
                "duplicate_in_report",
                serial,
                f"{_sentence_name(code, serial)} is unpacked by another line of this report too.",
            )
        seen.add((code, serial))
    cursor.execute("SELECT count(*), count(DISTINCT parent_pack) FROM lr_children WHERE parent_pack IS NOT NULL")
    unpacked, from_parents = cursor.fetchone()
    ctx.counts.update({"unpacked": unpacked, "parents": from_parents})
    return problems


def _unpacking_child_problem(problems: _Problems, row: tuple) -> None:
    line, code, serial, pack_id, status, _reason, current_parent, parent_sscc, _ = row
    name = _sentence_name(code, serial)
    if pack_id is None:
        problems.add(line, "not_commissioned", serial, f"{name} is not commissioned, so it is in no container.")
    elif parent_sscc is None:
        return  # the parent itself failed its checks; that problem is listed on the line already
    elif status == Status.SHIPPED:
        problems.add(line, "shipped", serial, f"{name} is shipped already and cannot be unpacked.")
    elif current_parent is None:
        problems.add(line, "not_in_parent", serial, f"{name} is not in SSCC {parent_sscc}: it is in no container.")
    else:
        problems.add(
            line,
            "not_in_parent",
            serial,
            f"{name} is not in SSCC {parent_sscc}: it is in SSCC {current_parent}; unpack it from there.",
        )


def _write_unpacking(ctx: _Context, cursor, report: LineReport) -> None:
    cursor.execute("SELECT DISTINCT parent_pack FROM lr_children")
    known = _with_ancestors(cursor, _packs_by_ids(cursor, [row[0] for row in cursor.fetchall()]))
    _lock_packs(cursor, [(p.id, p.level) for p in known.values()], statuses=(Status.COMMISSIONED, Status.PACKED))
    moved = _move(
        cursor,
        report,
        ctx,
        set_sql="parent_id = NULL, status = %s",
        set_params=[Status.COMMISSIONED],
        where_sql="p.parent_id = r.parent_pack AND p.status = %s",
        where_params=[Status.PACKED],
        table="lr_children",
        action=Action.UNPACKED,
        event_parent="r.parent_pack",
    )
    if moved != ctx.counts["unpacked"]:
        raise _Clash


# --- shipping and decommissioning: one pack per line --------------------------------------------------------------


def _subjects_into_temp(ctx: _Context, cursor, name: str, extra: dict[str, tuple[str, list]] | None = None) -> None:
    parsed = ctx.parsed
    positions = [i for i in range(len(parsed.s_line)) if parsed.s_ok[i]]
    columns = "pos integer NOT NULL, line integer NOT NULL, code varchar(14) NOT NULL, serial varchar(20) NOT NULL"
    names = ["pos", "line", "code", "serial"]
    values: list[list] = [
        positions,
        [parsed.s_line[i] for i in positions],
        [parsed.s_code[i] for i in positions],
        [parsed.s_serial[i] for i in positions],
    ]
    for column, (sql_type, full) in (extra or {}).items():
        columns += f", {column} {sql_type}"
        names.append(column)
        values.append([full[i] for i in positions])
    _resolve_into_temp(cursor, name, columns, names, values)
    ctx.temps.append(name)


def _single_pack_duplicates(ctx: _Context, what: str) -> None:
    parsed = ctx.parsed
    for i, first in _duplicates(parsed.s_code, parsed.s_serial):
        if parsed.s_ok[i]:
            parsed.s_ok[i] = 0
            parsed.problems.add(
                parsed.s_line[i],
                "duplicate_in_report",
                parsed.s_serial[i],
                f"{_sentence_name(parsed.s_code[i], parsed.s_serial[i])} is {what} on line {parsed.s_line[first]} "
                "of this report already.",
            )


def _validate_shipping(ctx: _Context, cursor, *, after_clash: bool = False) -> _Problems:
    problems = ctx.parsed.problems
    _single_pack_duplicates(ctx, "shipped")
    _subjects_into_temp(ctx, cursor, "lr_ship")

    def on_row(row: tuple) -> None:
        line, code, serial, pack_id, status, reason, parent_sscc, _ = row
        name = _sentence_name(code, serial)
        if pack_id is None:
            problems.add(line, "not_commissioned", serial, f"{name} is not commissioned; it cannot be shipped.")
        elif status == Status.DECOMMISSIONED:
            problems.add(line, "decommissioned", serial, f"{name} is decommissioned ({reason}) and cannot be shipped.")
        elif status == Status.SHIPPED:
            problems.add(line, "already_shipped", serial, f"{name} is shipped already.")
        else:
            problems.add(
                line,
                "packed_in_container",
                serial,
                f"{name} is packed in SSCC {parent_sscc}; ship SSCC {parent_sscc}, or unpack it first.",
            )

    _problem_rows(
        cursor,
        problems,
        "SELECT s.line, s.code, s.serial, s.pack_id, s.status, s.cur_reason, cp.serial, count(*) OVER () "  # noqa: S608
        f"FROM lr_ship s LEFT JOIN {_PACK} cp ON cp.id = s.cur_parent "
        "WHERE s.pack_id IS NULL OR s.status IN (%s, %s) OR s.cur_parent IS NOT NULL ORDER BY s.pos",
        [Status.DECOMMISSIONED, Status.SHIPPED],
        on_row,
    )
    return problems


_DESCENDANTS = (
    "WITH RECURSIVE tree(id, parent, depth) AS ("  # noqa: S608
    "SELECT pack_id, CAST(NULL AS bigint), 0 FROM lr_ship WHERE pack_id IS NOT NULL "
    f"UNION ALL SELECT p.id, p.parent_id, t.depth + 1 FROM {_PACK} p JOIN tree t ON p.parent_id = t.id "
    f"WHERE t.depth < {_MAX_DEPTH}) "
)


def _write_shipping(ctx: _Context, cursor, report: LineReport) -> None:
    # The shipped packs first: anything that changes what is in one of them locks it (as an ancestor) too, so the
    # tree read next cannot grow until this report commits.
    cursor.execute("SELECT pack_id, level FROM lr_ship")
    _lock_packs(cursor, cursor.fetchall(), statuses=(Status.COMMISSIONED,))
    _create_temp(cursor, "lr_tree", "pack_id bigint NOT NULL, parent bigint")
    ctx.temps.append("lr_tree")
    cursor.execute(f"{_DESCENDANTS}INSERT INTO lr_tree (pack_id, parent) SELECT id, parent FROM tree")  # noqa: S608
    cursor.execute("SELECT count(*) FROM lr_tree")
    expected = cursor.fetchone()[0]
    moved = _move(
        cursor,
        report,
        ctx,
        set_sql="status = %s",
        set_params=[Status.SHIPPED],
        where_sql="p.status IN (%s, %s)",
        where_params=[Status.COMMISSIONED, Status.PACKED],
        table="lr_tree",
        action=Action.SHIPPED,
        event_parent="r.parent",
    )
    if moved != expected:
        raise _Clash
    ctx.counts.update({"shipped": expected, "lines": ctx.parsed.line_count})


def _validate_decommissioning(ctx: _Context, cursor, *, after_clash: bool = False) -> _Problems:
    parsed = ctx.parsed
    problems = parsed.problems
    for i, reason in enumerate(parsed.s_reason):
        if parsed.s_ok[i] and reason not in cbv.DECOMMISSION:
            parsed.s_ok[i] = 0
            problems.add(
                parsed.s_line[i],
                "invalid_reason",
                parsed.s_serial[i],
                f"Reason {reason!r} is unknown; use one of {', '.join(cbv.DECOMMISSION_REASONS)}.",
            )
    _single_pack_duplicates(ctx, "decommissioned")
    eu_states = [cbv.DECOMMISSION[r].eu_state if r in cbv.DECOMMISSION else "" for r in parsed.s_reason]
    _subjects_into_temp(
        ctx,
        cursor,
        "lr_decommission",
        {"reason": ("varchar(20) NOT NULL", parsed.s_reason), "eu_state": ("varchar(20) NOT NULL", eu_states)},
    )

    def on_row(row: tuple) -> None:
        line, code, serial, pack_id, reason, _ = row
        name = _sentence_name(code, serial)
        if pack_id is None:
            problems.add(line, "not_commissioned", serial, f"{name} is not commissioned; nothing to decommission.")
        else:
            problems.add(line, "already_decommissioned", serial, f"{name} is decommissioned already ({reason}).")

    _problem_rows(
        cursor,
        problems,
        "SELECT line, code, serial, pack_id, cur_reason, count(*) OVER () FROM lr_decommission "
        "WHERE pack_id IS NULL OR status = %s ORDER BY pos",
        [Status.DECOMMISSIONED],
        on_row,
    )
    # A container must be empty once the report is applied: what it holds minus what the report takes out.
    cursor.execute(
        f"SELECT d.line, d.serial, count(c.id) FROM lr_decommission d JOIN {_PACK} c ON c.parent_id = d.pack_id "  # noqa: S608
        "WHERE NOT EXISTS (SELECT 1 FROM lr_decommission o WHERE o.pack_id = c.id) "
        "GROUP BY d.line, d.serial ORDER BY d.line"
    )
    for line, sscc, holding in cursor.fetchall():
        problems.add(
            line,
            "has_children",
            sscc,
            f"SSCC {sscc} still holds {holding} pack{'s' if holding != 1 else ''}; unpack them, or decommission them "
            "in the same report.",
        )
    cursor.execute("SELECT count(*), count(cur_parent) FROM lr_decommission WHERE pack_id IS NOT NULL")
    total, leaving = cursor.fetchone()
    cursor.execute(
        "SELECT reason, count(*) FROM lr_decommission WHERE pack_id IS NOT NULL GROUP BY reason ORDER BY reason"
    )
    ctx.counts.update({"decommissioned": total, "left_container": leaving, "by_reason": dict(cursor.fetchall())})
    return problems


def _write_decommissioning(ctx: _Context, cursor, report: LineReport) -> None:
    cursor.execute("SELECT pack_id, level, cur_parent FROM lr_decommission")
    rows = cursor.fetchall()
    known = _with_ancestors(cursor, _packs_by_ids(cursor, {parent for _, _, parent in rows if parent is not None}))
    _lock_packs(cursor, [(p.id, p.level) for p in known.values()] + [(pack, level) for pack, level, _ in rows])
    # Leaving the container comes first in the pack's history, then the decommissioning itself.
    cursor.execute(
        f"INSERT INTO {_EVENT} (pack_id, report_id, action, reason, occurred_at, parent_id) "  # noqa: S608
        "SELECT pack_id, %s, %s, '', %s, cur_parent FROM lr_decommission WHERE cur_parent IS NOT NULL",
        [report.pk, Action.UNPACKED, ctx.occurred_at],
    )
    moved = _move(
        cursor,
        report,
        ctx,
        set_sql="status = %s, reason = r.reason, eu_state = r.eu_state, parent_id = NULL",
        set_params=[Status.DECOMMISSIONED],
        where_sql="p.status <> %s AND COALESCE(p.parent_id, 0) = COALESCE(r.cur_parent, 0)",
        where_params=[Status.DECOMMISSIONED],
        table="lr_decommission",
        action=Action.DECOMMISSIONED,
        event_parent="CAST(NULL AS bigint)",
        event_reason="r.reason",
    )
    if moved != ctx.counts["decommissioned"]:
        raise _Clash


# --- the service --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Handler:
    validate: Callable[..., _Problems]
    write: Callable[[_Context, Any, LineReport], None]


_HANDLERS = {
    Kind.COMMISSIONING: _Handler(_validate_commissioning, _write_commissioning),
    Kind.AGGREGATION: _Handler(_validate_aggregation, _write_aggregation),
    Kind.UNPACKING: _Handler(_validate_unpacking, _write_unpacking),
    Kind.SHIPPING: _Handler(_validate_shipping, _write_shipping),
    Kind.DECOMMISSIONING: _Handler(_validate_decommissioning, _write_decommissioning),
}


def apply_line_report(
    *,
    report_id: str,
    kind: str,
    order: PackagingOrder,
    lines: list[dict],
    actor,
    occurred_at: datetime | None = None,
) -> LineReport:
    """Apply one line report all-or-nothing, or store it REJECTED with every problem; idempotent by ``report_id``.

    Returns the LineReport (APPLIED or REJECTED). ``report.replayed`` is True when the id had been applied before
    with the same content and the stored report is returned unchanged. Raises ``IdempotencyConflict`` (409) for an
    id reused with other content, ``InvalidReport`` (400) for a malformed envelope (kind, id, lines not a list, too
    many lines — nothing is stored), ``OrderClosed`` (409) for production reports on a closed order, and
    ``ReportConflict`` (409, nothing stored; send it again) if concurrent reports kept winning every attempt.
    """
    _check_envelope(report_id=report_id, kind=kind, order=order, lines=lines, occurred_at=occurred_at)
    parsed = _parse(kind, lines)
    if parsed.items > MAX_ITEMS:
        raise InvalidReport(
            f"A report may name at most {MAX_ITEMS:,} packs (lines and children); this one names {parsed.items:,}. "
            "Split it into several reports.",
            field="lines",
        )
    fingerprint = _fingerprint(kind, order, occurred_at, parsed)
    replay = _replay(report_id, fingerprint)
    if replay is not None:
        return replay
    try:
        for _ in range(MAX_ATTEMPTS):
            report = _attempt(report_id, kind, order, parsed, actor, occurred_at, fingerprint)
            if report is not None:
                return report
    except IntegrityError:
        # The same report id stored meanwhile by a request on another order: answer as a replay would.
        replay = _replay(report_id, fingerprint)
        if replay is not None:
            return replay
        raise
    raise ReportConflict(
        f"Report {report_id} kept clashing with other reports changing the same packs at the same moment; nothing "
        "was applied. Send it again.",
        field="report_id",
    )


def _check_envelope(
    *, report_id: str, kind: str, order: PackagingOrder, lines: Any, occurred_at: datetime | None
) -> None:
    if not isinstance(report_id, str) or not report_id or len(report_id) > _REPORT_ID_MAX:
        raise InvalidReport(f"Give the report an id of 1 to {_REPORT_ID_MAX} characters.", field="report_id")
    if kind not in Kind.values:
        raise InvalidReport(f"Unknown report kind {kind!r}; use one of {', '.join(Kind.values)}.", field="kind")
    if not isinstance(lines, list) or not lines:
        raise InvalidReport("Give the report's lines as a non-empty list.", field="lines")
    if len(lines) > MAX_LINES:
        raise InvalidReport(
            f"A report has at most {MAX_LINES:,} lines; this one has {len(lines):,}. Split it into several reports.",
            field="lines",
        )
    if not isinstance(order, PackagingOrder) or order.pk is None:
        raise InvalidReport("Name the packaging order the report is about.", field="order")
    if occurred_at is not None and timezone.is_naive(occurred_at):
        raise InvalidReport("Give occurred_at with its time zone (or UTC offset).", field="occurred_at")


def _replay(report_id: str, fingerprint: str) -> LineReport | None:
    existing = LineReport.objects.select_related("order", "submitted_by").filter(report_id=report_id).first()
    if existing is None:
        return None
    if existing.fingerprint != fingerprint:
        raise IdempotencyConflict(
            f"Report id {report_id} was used already for a different {existing.get_kind_display().lower()} report "
            f"(received {existing.received_at:%Y-%m-%d %H:%M:%S}); send a new report id for a new report.",
            field="report_id",
            details={"report_id": report_id, "status": existing.status},
        )
    existing.replayed = True
    return existing


def _attempt(report_id, kind, order, parsed, actor, occurred_at, fingerprint) -> LineReport | None:
    """One try under the order lock: validate, then write in a savepoint. None when a concurrent report made the
    write fail but validation cannot see why yet (it has not committed): the caller tries again."""
    handler = _HANDLERS[kind]
    with transaction.atomic(), connection.cursor() as cursor:
        locked = (
            PackagingOrder.objects.select_for_update(of=("self",)).select_related("batch__product").get(pk=order.pk)
        )
        replay = _replay(report_id, fingerprint)
        if replay is not None:  # the same report, sent twice at once, applied while we waited for the lock
            return replay
        if kind in _NEEDS_OPEN_ORDER and locked.status != PackagingOrder.Status.OPEN:
            raise OrderClosed(
                f"Order {locked.number} is closed; {kind} reports are taken only while the order is open.",
                field="order",
            )
        now = timezone.now()
        ctx = _Context(
            report_id=report_id,
            order=locked,
            product=locked.batch.product,
            actor=actor,
            occurred_at=occurred_at or now,
            parsed=_fresh(parsed),
            now=now,
        )
        problems = handler.validate(ctx, cursor)
        if problems:
            return _store(ctx, kind, fingerprint, problems=problems, cursor=cursor)
        try:
            with transaction.atomic():
                report = _store(ctx, kind, fingerprint, cursor=None)
                handler.write(ctx, cursor, report)
                report.result = {"counts": ctx.counts}
                report.save(update_fields=["result"])
        except (_Clash, IntegrityError, OperationalError) as exc:
            if isinstance(exc, OperationalError) and not _lost_race(exc):
                raise
            ctx = _Context(**{**ctx.__dict__, "parsed": _fresh(parsed), "counts": {}, "temps": []})
            problems = handler.validate(ctx, cursor, after_clash=True)
            if not problems:
                if isinstance(exc, IntegrityError) and not _lost_race(exc):
                    raise
                return None
            return _store(ctx, kind, fingerprint, problems=problems, cursor=cursor)
        _drop_temp(cursor, *ctx.temps)
        report.replayed = False
        return report


def _fresh(parsed: _Parsed) -> _Parsed:
    """A copy whose problems and ok-flags validation may extend, so a second attempt starts from the parse."""
    return _Parsed(
        **{
            **parsed.__dict__,
            "problems": parsed.problems.copy(),
            "s_ok": bytearray(parsed.s_ok),
            "c_ok": bytearray(parsed.c_ok),
        }
    )


def _lost_race(exc: Exception) -> bool:
    """A unique violation, a deadlock or a serialisation failure: the database resolved a race against us."""
    cause = exc.__cause__
    state = getattr(cause, "sqlstate", None) or getattr(getattr(cause, "diag", None), "sqlstate", None)
    if state in ("23505", "40P01", "40001"):
        return True
    return connection.vendor == "sqlite" and isinstance(exc, IntegrityError) and "UNIQUE" in str(exc)


def _store(ctx: _Context, kind: str, fingerprint: str, *, cursor, problems: _Problems | None = None) -> LineReport:
    """The LineReport row: REJECTED with the problems (the TEMP tables dropped), or APPLIED — written before the
    packs and events that point at it; its counts are filled in once they are known."""
    report = LineReport(
        report_id=ctx.report_id,
        kind=kind,
        order=ctx.order,
        fingerprint=fingerprint,
        status=LineReport.Status.REJECTED if problems else LineReport.Status.APPLIED,
        lines=ctx.parsed.line_count,
        result=problems.result() if problems else {"counts": ctx.counts},
        submitted_by=ctx.actor if getattr(ctx.actor, "pk", None) else None,
        occurred_at=ctx.occurred_at,
    )
    report.save()
    if problems:
        _drop_temp(cursor, *ctx.temps, "lr_children")
        report.replayed = False
    return report


# --- reads ----------------------------------------------------------------------------------------------------------


def scope_line_reports(queryset: QuerySet[LineReport], *, user) -> QuerySet[LineReport]:
    """Reports on orders of products the user's company owns (everything for the operator's staff)."""
    return scope_to_company(queryset, user=user, company_field="order__batch__product__owner_id")


def get_line_report(*, user, report_id: str) -> LineReport:
    queryset = scope_line_reports(LineReport.objects.select_related("order", "submitted_by"), user=user).filter(
        report_id=report_id
    )
    report = queryset.first()
    if report is None:
        raise NotFound(f"No line report {report_id!r} is visible to you.")
    return report


def find_order_for_report(*, user, reference: str | int) -> PackagingOrder:
    """The packaging order a report names — by number, or by id — among those the user may see."""
    queryset = scope_to_company(
        PackagingOrder.objects.select_related("batch__product"), user=user, company_field="batch__product__owner_id"
    )
    text = str(reference).strip()
    order = queryset.filter(number=text).first()
    if order is None and text.isdigit():
        order = queryset.filter(pk=int(text)).first()
    if order is None:
        raise InvalidReport(f"No packaging order {text!r} (number or id) is visible to you.", field="order")
    return order
