"""Turning an allocation's index ranges into the serial list someone asked for: chunks, notations, file formats.

Nothing here builds one Python object per serial on the fast path. A chunk is a numpy array of fixed-width ASCII
bytes (``S<width>``); a notation and a file format wrap every value in the same constant bytes, so a block of rows is
written as one byte matrix (or, for values of unequal length, as one ``bytes.join``). Only rows holding a character
that must be escaped — ``(`` in an element string, a reserved character in a Digital Link, ``,``/``"`` in CSV,
``"`` in JSON — go through the scalar ``masterdata.gs1`` / ``csv`` / ``json`` rules, one by one.

Memory stays flat whatever the allocation's size: one chunk of serials and one block of output rows at a time.
"""

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import quote

import numpy as np

from audit.exceptions import DomainError
from masterdata import gs1
from serialization.exceptions import NotationUnavailable
from serialization.models import Allocation, ExportJob, ListedSerial, SerialPool
from serialization.services.allocation import allocation_ranges
from serialization.services.partner_pools import parent_ranges, partner_indices
from serialization.services.pools import pool_permutation

Interval = tuple[int, int]  # (first_index, count)

CHUNK_SIZE = 262_144
# Writers materialise and render 65,536 rows at a time: FF1's working arrays for a 262,144-row chunk peak near 25 MB,
# for 65,536 rows near 6 MB, at the same throughput; a block of Digital Link rows is then ~4 MB.
ROWS_PER_BLOCK = 65_536
PROGRESS_EVERY = 262_144
DIGITAL_LINK_BASE = "https://id.gs1.org"
LIST_SERIAL_WIDTH = 20  # ListedSerial.serial max_length

Format = ExportJob.Format
Notation = ExportJob.Notation

CONTENT_TYPES = {
    Format.CSV: "text/csv; charset=utf-8",
    Format.JSON: "application/json",
    Format.TEXT: "text/plain; charset=utf-8",
}

# Characters of GS1 set 82 that urllib's quote(safe="") — hence gs1.build_digital_link — percent-encodes.
_DIGITAL_LINK_RESERVED = b"!\"%&'()*+,/:;<=>?"
# GS1 mod-10 weights for the 17 body digits of an SSCC: 3 on the rightmost body digit, alternating leftwards.
_SSCC_WEIGHTS = np.array([3 if (16 - i) % 2 == 0 else 1 for i in range(17)], dtype=np.int32)


# --- serial chunks ----------------------------------------------------------------------------------------------


def iter_serial_chunks(
    allocation: Allocation, *, chunk_size: int = CHUNK_SIZE, ranges: Sequence[Interval] | None = None
) -> Iterator[np.ndarray]:
    """The allocation's serials in index order, as 1-D numpy arrays of ASCII bytes of at most ``chunk_size`` rows.

    Generated unit pools give ``S<length>`` arrays; SSCC pools give the full 18-digit SSCCs (``S18``: extension digit,
    company prefix, serial reference, check digit); list pools give ``S20`` arrays whose shorter values are padded
    with NUL bytes (numpy strips them when a value is read). ``ranges`` pins the index ranges read earlier, so two
    passes over the same allocation give the same serials even if a release happens in between.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    pool = allocation.pool
    ranges = allocation_ranges(allocation) if ranges is None else ranges
    if pool.source == SerialPool.Source.PARTNER:
        # A partner pool's numbers are its parent's: the same ranges, translated through its segments.
        pool, ranges = parent_ranges(partner_pool=pool, ranges=ranges)
    if pool.is_generated:
        permutation = pool_permutation(pool)
        for first, count in ranges:
            for start in range(first, first + count, chunk_size):
                references = permutation.serials_array(start, min(chunk_size, first + count - start))
                yield _sscc_array(pool, references) if pool.kind == SerialPool.Kind.SSCC else references
    else:
        yield from _listed_chunks(pool, ranges, chunk_size)


def _listed_chunks(pool: SerialPool, ranges: Sequence[Interval], chunk_size: int) -> Iterator[np.ndarray]:
    buffer: list[str] = []
    for first, count in ranges:
        serials = (
            ListedSerial.objects.filter(pool_id=pool.pk, ordinal__gte=first, ordinal__lt=first + count)
            .order_by("ordinal")
            .values_list("serial", flat=True)
        )
        for serial in serials.iterator(chunk_size=min(chunk_size, 20_000)):
            buffer.append(serial)
            if len(buffer) == chunk_size:
                yield np.array(buffer, dtype=f"S{LIST_SERIAL_WIDTH}")
                buffer = []
    if buffer:
        yield np.array(buffer, dtype=f"S{LIST_SERIAL_WIDTH}")


def _sscc_array(pool: SerialPool, references: np.ndarray) -> np.ndarray:
    """Serial references → 18-digit SSCCs with their mod-10 check digit, computed for the whole array at once."""
    n = references.shape[0]
    head = (pool.sscc_extension_digit + pool.sscc_prefix).encode()
    digits = np.empty((n, 18), dtype=np.uint8)
    digits[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    digits[:, len(head) : 17] = references.view(np.uint8).reshape(n, -1)
    weighted = (digits[:, :17] - ord("0")).astype(np.int32) @ _SSCC_WEIGHTS
    digits[:, 17] = (10 - weighted % 10) % 10 + ord("0")
    return digits.view("S18").reshape(n)


# --- notations and file formats ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowLayout:
    """How one value becomes one row of the output: ``pre + head + value + post`` unless the value holds one of
    ``special``; such rows are written by ``careful(value)`` instead (escaping by the scalar rules)."""

    pre: bytes
    head: bytes
    post: bytes
    special: bytes
    careful: Callable[[str], str]

    def render(self, values: np.ndarray) -> bytes:
        """All rows for ``values`` (a 1-D ``S<width>`` array) as one bytes string."""
        n = values.shape[0]
        if n == 0:
            return b""
        width = values.dtype.itemsize
        chars = values.view(np.uint8).reshape(n, width)
        flagged = _rows_with(chars, self.special)
        # Values shorter than the array's width (list pools) end in NUL padding: those take the join path.
        padded = bool((chars[:, -1] == 0).any())
        if not padded and flagged is None:
            lead = self.pre + self.head
            rows = np.empty((n, len(lead) + width + len(self.post)), dtype=np.uint8)
            rows[:, : len(lead)] = np.frombuffer(lead, dtype=np.uint8)
            rows[:, len(lead) : len(lead) + width] = chars
            rows[:, len(lead) + width :] = np.frombuffer(self.post, dtype=np.uint8)
            return rows.tobytes()
        cells = values.tolist()
        lead, glue = self.pre + self.head, self.post + self.pre + self.head
        parts: list[bytes] = []
        start = 0
        for i in () if flagged is None else np.flatnonzero(flagged).tolist():
            if i > start:
                parts.append(lead + glue.join(cells[start:i]) + self.post)
            parts.append(self.careful(cells[i].decode("ascii")).encode("ascii"))
            start = i + 1
        if start < n:
            parts.append(lead + glue.join(cells[start:]) + self.post)
        return b"".join(parts)


def _rows_with(chars: np.ndarray, special: bytes) -> np.ndarray | None:
    """Boolean mask of the rows holding any byte of ``special``; None when no row does."""
    if not special:
        return None
    table = np.zeros(256, dtype=bool)
    table[list(special)] = True
    mask = table[chars].any(axis=1)
    return mask if mask.any() else None


def _gtin_of(pool: SerialPool, notation: str) -> str:
    try:
        return gs1.normalise_gtin(pool.product_code)
    except gs1.GS1Error:
        raise NotationUnavailable(
            f"Product code {pool.product_code} is not a GTIN/NTIN, so its serials have no GS1 "
            f"{Notation(notation).label}; download them with notation=serial.",
            field="notation",
        ) from None


def notation_parts(pool: SerialPool, notation: str) -> tuple[str, Callable[[str], str], bytes]:
    """(constant text before each value, the value's escape rule, the characters that need it) for ``notation``."""
    sscc = pool.kind == SerialPool.Kind.SSCC
    if notation == Notation.SERIAL:
        return "", str, b""
    if notation == Notation.ELEMENT_STRING:
        if sscc:
            return "(00)", str, b""
        # gs1.build_element_string writes a literal "(" in a value as "\(" so the string parses back.
        return f"(01){_gtin_of(pool, notation)}(21)", lambda value: value.replace("(", "\\("), b"("
    if notation == Notation.DIGITAL_LINK:
        if sscc:
            return f"{DIGITAL_LINK_BASE}/00/", str, b""
        head = f"{DIGITAL_LINK_BASE}/01/{_gtin_of(pool, notation)}/21/"
        return head, lambda value: quote(value, safe=""), _DIGITAL_LINK_RESERVED
    raise NotationUnavailable(
        f"Unknown notation {notation!r}; use one of {', '.join(Notation.values)}.", field="notation"
    )


def _csv_cell(text: str) -> str:
    # RFC 4180 / csv.QUOTE_MINIMAL: quote a field holding the delimiter or the quote character, doubling quotes.
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def row_layout(pool: SerialPool, *, format: str, notation: str) -> RowLayout:
    head, escape, special = notation_parts(pool, notation)
    if format == Format.CSV:
        return RowLayout(b"", head.encode(), b"\n", special + b',"', lambda v: _csv_cell(head + escape(v)) + "\n")
    if format == Format.JSON:
        # Each row starts with its separator; the writer drops the very first comma of the array.
        return RowLayout(b',\n"', head.encode(), b'"', special + b'"\\', lambda v: ",\n" + json.dumps(head + escape(v)))
    if format == Format.TEXT:
        return RowLayout(b"", head.encode(), b"\n", special, lambda v: head + escape(v) + "\n")
    raise NotationUnavailable(f"Unknown format {format!r}; use one of {', '.join(Format.values)}.", field="format")


def column_name(pool: SerialPool, notation: str) -> str:
    if notation == Notation.SERIAL:
        return "sscc" if pool.kind == SerialPool.Kind.SSCC else "serial"
    return str(notation)


def check_notation(pool: SerialPool, *, format: str, notation: str) -> None:
    """Raise NotationUnavailable (400) when ``format``/``notation`` cannot be written for ``pool``."""
    row_layout(pool, format=format, notation=notation)


def _document_head(allocation: Allocation, *, format: str, notation: str, quantity: int, stamp: dict | None) -> bytes:
    pool = allocation.pool
    # The stamp (who asked, when, which export) leads the file: "# key: value" lines in CSV and text, which the
    # CSV importer skips ("#" is not in GS1 set 82, so no serial starts with it), an "export" object in JSON.
    comments = "".join(f"# {key}: {value}\n" for key, value in (stamp or {}).items())
    if format == Format.CSV:
        return f"{comments}{column_name(pool, notation)}\n".encode()
    if format == Format.JSON:
        meta = {
            "id": allocation.pk,
            "request_id": allocation.request_id,
            "pool": pool.pk,
            "kind": pool.kind,
            "product_code": pool.product_code or None,
            "sscc_prefix": pool.sscc_prefix or None,
            "purpose": allocation.purpose,
            "reference": allocation.reference,
            "quantity": quantity,
        }
        export = f'"export": {json.dumps(stamp)}, ' if stamp else ""
        head = f'{{{export}"allocation": {json.dumps(meta)}, "notation": {json.dumps(str(notation))}, "serials": ['
        return head.encode()
    return comments.encode()


def _document_tail(format: str) -> bytes:
    return b"\n]}\n" if format == Format.JSON else b""


# --- writers ------------------------------------------------------------------------------------------------------


def iter_serial_blocks(
    allocation: Allocation,
    *,
    format: str,
    notation: str,
    ranges: Sequence[Interval] | None = None,
    chunk_size: int = ROWS_PER_BLOCK,
    stamp: dict | None = None,
) -> Iterator[tuple[bytes, int]]:
    """The whole document as (bytes, rows in them) blocks: header (with ``stamp``, see exports), rows in index order,
    footer."""
    pool = allocation.pool
    layout = row_layout(pool, format=format, notation=notation)
    ranges = allocation_ranges(allocation) if ranges is None else list(ranges)
    quantity = sum(count for _, count in ranges)
    yield _document_head(allocation, format=format, notation=notation, quantity=quantity, stamp=stamp), 0
    first_row = True
    for chunk in iter_serial_chunks(allocation, chunk_size=chunk_size, ranges=ranges):
        for lo in range(0, chunk.shape[0], ROWS_PER_BLOCK):
            block = chunk[lo : lo + ROWS_PER_BLOCK]
            data = layout.render(block)
            if first_row and format == Format.JSON:
                data = data[1:]  # the first row of the array has no comma before it
            first_row = False
            yield data, block.shape[0]
    yield _document_tail(format), 0


def stream_serials(
    allocation: Allocation,
    *,
    format: str,
    notation: str,
    ranges: Sequence[Interval] | None = None,
    stamp: dict | None = None,
) -> Iterator[bytes]:
    """The document as bytes blocks, e.g. for a StreamingHttpResponse."""
    for data, _ in iter_serial_blocks(allocation, format=format, notation=notation, ranges=ranges, stamp=stamp):
        if data:
            yield data


def write_serials(
    allocation: Allocation,
    *,
    format: str,
    notation: str,
    out: BinaryIO | None,
    progress: Callable[[int], None] | None = None,
    ranges: Sequence[Interval] | None = None,
    stamp: dict | None = None,
) -> tuple[int, str]:
    """Write the allocation's serials to ``out`` (None: only count and hash); returns (rows, sha256 hex digest).

    ``progress(rows_written)`` is called every PROGRESS_EVERY rows and at the end.
    """
    digest = hashlib.sha256()
    rows = 0
    pending = 0
    for data, count in iter_serial_blocks(allocation, format=format, notation=notation, ranges=ranges, stamp=stamp):
        digest.update(data)
        if out is not None:
            out.write(data)
        rows += count
        pending += count
        if progress is not None and pending >= PROGRESS_EVERY:
            progress(rows)
            pending = 0
    if progress is not None:
        progress(rows)
    return rows, digest.hexdigest()


# --- serial → index -------------------------------------------------------------------------------------------------


def indices_of_serials(pool: SerialPool, serials: Sequence[str]) -> list[int]:
    """The pool indices of ``serials`` (full SSCCs for an SSCC pool), in the given order; DomainError naming the
    first serial that is not in the pool."""
    serials = list(serials)
    found = indices_or_missing(pool, serials)
    missing = np.flatnonzero(found < 0)
    if missing.size:
        raise DomainError(f"Serial {serials[missing[0]]!r} is not in pool {pool}; check the serial.", field="serials")
    return found.tolist()


def indices_or_missing(pool: SerialPool, serials: Sequence[str]) -> np.ndarray:
    """The pool index of each of ``serials`` (−1 for one not in the pool), for generated, list and partner pools.

    A partner pool resolves through its parent: the parent index first, then the partner index of that."""
    serials = list(serials)
    if pool.source == SerialPool.Source.PARTNER:
        if pool.parent_pool_id is None:
            return np.full(len(serials), -1, dtype=np.int64)
        parent = indices_or_missing(pool.parent_pool, serials)
        return partner_indices(partner_pool=pool, parent_indices=parent)
    if not pool.is_generated:
        found: dict[str, int] = {}
        for lo in range(0, len(serials), 500):
            batch = serials[lo : lo + 500]
            found.update(
                ListedSerial.objects.filter(pool_id=pool.pk, serial__in=batch).values_list("serial", "ordinal")
            )
        return np.array([found.get(s, -1) for s in serials], dtype=np.int64)
    permutation = pool_permutation(pool)
    indices = np.empty(len(serials), dtype=np.int64)
    for i, serial in enumerate(serials):
        try:
            reference = _sscc_reference(pool, serial) if pool.kind == SerialPool.Kind.SSCC else serial
            index = permutation.index_of(reference)
        except (ValueError, gs1.GS1Error):
            index = -1
        indices[i] = index if 0 <= index < pool.filled else -1
    return indices


def _sscc_reference(pool: SerialPool, sscc: str) -> str:
    gs1.validate_sscc(sscc)
    head = pool.sscc_extension_digit + pool.sscc_prefix
    if not sscc.startswith(head):
        raise ValueError(f"SSCC {sscc} is not under extension digit and prefix {head}")
    return sscc[len(head) : 17]
