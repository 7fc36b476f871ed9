"""Plain CSV serial lists: what any system can export, including the CSV downloads of SAP ATTP and TraceLink.

Comma-separated, UTF-8 (a BOM is fine), quoted as RFC 4180 says. The header row is optional:

- with a header, columns are found by name, case-insensitively: ``serial`` (also ``serial_number``,
  ``serial number``, ``sn``, ``21``) is required; ``gtin`` / ``product_code`` / ``ntin`` / ``01`` and ``91`` / ``92``
  (also ``crypto_key`` / ``crypto_code``) are optional; other columns are refused rather than silently dropped;
- without a header, the columns are ``serial[,91[,92]]`` by position (one column is just the serial).

Cells are trimmed of surrounding spaces (set 82 has no space, so no serial loses a character); blank lines are
skipped; a line's number is the physical line of the file (a quoted field spanning lines counts every line).
Comment lines starting with ``#`` at the top of the file — the stamp of this system's own exports (who asked, when,
which export) — are skipped: ``#`` is not in GS1 set 82, so no serial starts with it.

The file is read whole. The common file — one bare serial per line, nothing quoted, trimmed or blank — is recognised
in one pass over its bytes and split in C into a single ``Column``; anything else goes through ``csv.reader``.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from typing import BinaryIO

from serialization.importers.base import Column, ImportFileError, Row, RowProblem, decode_text

_COLUMN_NAMES = {
    "serial": "serial",
    "serial_number": "serial",
    "serial number": "serial",
    "serialnumber": "serial",
    "sn": "serial",
    "21": "serial",
    "(21)": "serial",
    "gtin": "product_code",
    "ntin": "product_code",
    "product_code": "product_code",
    "product code": "product_code",
    "01": "product_code",
    "(01)": "product_code",
    "91": "91",
    "(91)": "91",
    "crypto_key": "91",
    "crypto key": "91",
    "92": "92",
    "(92)": "92",
    "crypto_code": "92",
    "crypto code": "92",
}
_POSITIONAL = ("serial", "91", "92")
_KNOWN = "serial, gtin (or product_code), 91, 92"
# The bytes a plain column holds: printable ASCII but the space, the quote and the delimiter (csv.reader treats those,
# a NUL and other white space in ways of its own), and line ends.
_PLAIN_BYTES = bytes(sorted(set(range(0x21, 0x7F)) - {ord('"'), ord(",")})) + b"\r\n"


def parse(stream: BinaryIO) -> Iterator[Row | RowProblem | Column]:
    data = stream.read().removeprefix(codecs.BOM_UTF8)
    comments, data = _split_leading_comments(data)
    column = _plain_column(data, lines_before=comments)
    if column is not None:
        yield column
        return
    # Blank lines in place of the comments keep every line's number that of the file (csv.reader skips them).
    data = b"\n" * comments + data
    decode_text(data)  # a file that is not UTF-8 is refused with the line of its first bad byte
    yield from _parse(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=""))


def _split_leading_comments(data: bytes) -> tuple[int, bytes]:
    """(how many ``#`` lines lead the file, the rest of it)."""
    count, start = 0, 0
    while data.startswith(b"#", start):
        end = data.find(b"\n", start)
        if end < 0:
            return count + 1, b""
        count, start = count + 1, end + 1
    return count, data[start:] if start else data


def _plain_column(body: bytes, *, lines_before: int = 0) -> Column | None:
    """The whole file as one ``Column`` when every line is one bare serial (CRLF line ends are fine), else None."""
    if body.translate(None, _PLAIN_BYTES):
        return None  # some byte outside the plain set: one C pass over the file tells
    text = body.decode("ascii")
    del body
    if "\r" in text:
        if text.count("\r") != text.count("\r\n"):
            return None
        text = text.replace("\r\n", "\n")
    text = text.rstrip("\n")
    if not text:
        return None
    serials = text.split("\n")
    del text
    if "" in serials:
        return None  # a blank line inside: csv.reader skips it and keeps counting lines
    first = serials[0].lower()
    if _COLUMN_NAMES.get(first) == "serial" and not first.strip("()").isdigit():
        del serials[0]
        return Column(lines_before + 2, serials)
    return Column(lines_before + 1, serials)


def _parse(text: io.TextIOWrapper) -> Iterator[Row | RowProblem]:
    reader = csv.reader(text, strict=True)
    rows = _records(reader)
    first = next(rows, None)
    if first is None:
        return
    line, cells = first
    names = [cell.strip().lower() for cell in cells]
    if len(cells) == 1 and names[0].strip("()").isdigit():
        names = []  # a lone "21" is more likely a short numeric serial than a header naming AI (21)
    if any(_COLUMN_NAMES.get(name) == "serial" for name in names):
        columns = _header_columns(names, line)
    elif any(name in _COLUMN_NAMES for name in names) and len(cells) > 1:
        raise ImportFileError(
            f"Line {line}: the header names no serial column — name it 'serial' (columns: {_KNOWN}).", line=line
        )
    else:
        if len(cells) > len(_POSITIONAL):
            raise ImportFileError(
                f"Line {line}: {len(cells)} columns but no header — without a header the columns are serial[,91,92]; "
                f"add a header row naming the columns ({_KNOWN}).",
                line=line,
            )
        columns = _POSITIONAL[: len(cells)]
        yield _row(line, cells, columns)
    if columns == ("serial",):
        # One column: the common case, kept free of per-row column bookkeeping.
        for line, cells in rows:
            if len(cells) == 1:
                yield (line, None, cells[0].strip(), None)
            else:
                yield _row(line, cells, columns)
        return
    for line, cells in rows:
        yield _row(line, cells, columns)


def _records(reader) -> Iterator[tuple[int, list[str]]]:
    previous_end = 0
    try:
        for cells in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if cells and any(cell.strip() for cell in cells):
                yield start, cells
            elif cells:
                yield start, [""]
    except csv.Error as exc:
        line = reader.line_num or 1
        raise ImportFileError(f"Line {line}: the CSV cannot be read ({exc}) — check the quotes on that line.") from exc


def _header_columns(names: list[str], line: int) -> tuple[str | None, ...]:
    columns: list[str | None] = []
    for position, name in enumerate(names, start=1):
        column = _COLUMN_NAMES.get(name)
        if column is None:
            if name == "":
                columns.append(None)  # an empty header cell (a trailing comma) names nothing
                continue
            raise ImportFileError(
                f"Line {line}: column {position} is named {name!r}, which this layout does not know — "
                f"use {_KNOWN}, or remove the column.",
                line=line,
            )
        if column in columns:
            raise ImportFileError(f"Line {line}: two columns mean {column!r} — keep one of them.", line=line)
        columns.append(column)
    return tuple(columns)


def _row(line: int, cells: list[str], columns: tuple[str | None, ...]) -> Row | RowProblem:
    if len(cells) > len(columns) and any(cell.strip() for cell in cells[len(columns) :]):
        return RowProblem(
            line, cells[0].strip(), f"has {len(cells)} columns but the file has {len(columns)} ({_KNOWN} by header)"
        )
    values = dict(zip(columns, (cell.strip() for cell in cells), strict=False))
    values.pop(None, None)
    parameters = {ai: values[ai] for ai in ("91", "92") if values.get(ai)}
    return (line, values.get("product_code") or None, values.get("serial", ""), parameters or None)
