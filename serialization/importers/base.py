"""What every serial-list parser yields, and the decoding they share.

A parser is ``parse(stream) -> Iterator[Row | RowProblem | Column]`` over a binary file object. It yields, in file
order:

- a ``Row`` ``(line, product_code_or_None, serial, parameters_or_None)`` for each serial it found: ``line`` is
  1-based as a person opening the file counts lines; ``product_code`` is what the row (or the document around it)
  says, before any check; ``parameters`` holds extra per-serial AIs (``{"91": …, "92": …}``) when the row has any;
- a ``RowProblem`` for a row it cannot turn into a serial at all (wrong number of CSV columns, a JSON item that is a
  number, an EPC URN that does not parse);
- or, for a run of rows that are nothing but serials on consecutive lines (no product code, no parameters), one
  ``Column`` holding all of them: a plain list of a million serials then costs one object, not a million tuples;

and raises ``ImportFileError`` when the file itself cannot be read any further (not UTF-8, malformed XML or JSON,
a DOCTYPE). Parsers check shape only; the import service checks the values (character set, length, duplicates,
product code, parameters, existing serials), so every layout gets the same checks and the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

from audit.exceptions import DomainError
from masterdata import gs1

Row = tuple[int, str | None, str, dict[str, str] | None]


class RowProblem(NamedTuple):
    """A row the parser could not read as a serial; the import reports it and imports nothing."""

    line: int | None
    serial: str
    problem: str


class ImportFileError(DomainError):
    """The file cannot be read (further): the message names the line where that was noticed, when known."""

    code = "invalid_import_file"

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message, field="file", details={"line": line} if line is not None else None)
        self.line = line


class Column(NamedTuple):
    """Serials on consecutive lines ``first_line``, ``first_line + 1``, …, with no product code or parameters."""

    first_line: int
    serials: list[str]


Parser = Callable[[BinaryIO], Iterator["Row | RowProblem | Column"]]

# Raw AI data "01" + GTIN-14 + "21" + serial, with no further AIs: TraceLink's "AI" SNFormat, SerialLab's gs123.
_RAW_01_21 = re.compile(r"01(\d{14})21([^\x1d]{1,20})")
_CLASS_URN = re.compile(r"urn:epc:(?:id|idpat):sgtin:(\d{6,12})\.(\d{1,7})(?:\.\*)?")


def decode_serial_value(value: str, product_code: str | None) -> tuple[str | None, str]:
    """``(product_code, serial)`` from a serial as vendor files write it.

    Accepted: the bare serial; an EPC pure-identity URN ``urn:epc:id:sgtin:<prefix>.<item>.<serial>``; an EPC tag
    URI ``urn:epc:tag:sgtin-96|198:<filter>.<prefix>.<item>.<serial>``; GS1 AI data ``01<GTIN-14>21<serial>``
    (raw, bracketed or with FNC1/GS separators). A bare value of 20 characters or fewer is always taken as the
    serial itself, so a numeric serial that happens to start with ``01…21`` is never misread. Raises
    ``gs1.GS1Error`` (with a message naming the fix) when a URN or element string does not parse.
    """
    if value.startswith("urn:epc:id:sgtin:"):
        gtin, serial, _ = gs1.parse_sgtin_urn(value)
        return gtin, serial
    if value.startswith("urn:epc:tag:sgtin-"):
        scheme, _, rest = value[len("urn:epc:tag:") :].partition(":")
        _filter, dot, identity = rest.partition(".")
        if scheme not in ("sgtin-96", "sgtin-198") or not dot:
            raise gs1.GS1Error(
                f"EPC tag URI {value!r} is not an SGTIN-96/198 tag URI — expected "
                "urn:epc:tag:sgtin-198:<filter>.<prefix>.<item>.<serial>."
            )
        gtin, serial, _ = gs1.parse_sgtin_urn("urn:epc:id:sgtin:" + identity)
        return gtin, serial
    if len(value) > 20 and (value.startswith(("01", "(01)", "]d2", "]Q3", "]C1")) or "\x1d" in value):
        raw = _RAW_01_21.fullmatch(value)
        if raw is not None:
            return raw.group(1), raw.group(2)
        ais = gs1.parse_element_string(value)
        if "21" not in ais:
            raise gs1.GS1Error(f"Element string {value!r} has no serial (AI 21) — give (01)<GTIN>(21)<serial>.")
        return ais.get("01", product_code), ais["21"]
    return product_code, value


def gtin_from_class_urn(value: str) -> str | None:
    """GTIN-14 of an EPC class-level URN (``urn:epc:id:sgtin:0369999.039801`` or ``….039801.*``), else None."""
    match = _CLASS_URN.fullmatch(value)
    if match is None or len(match.group(1)) + len(match.group(2)) != 13:
        return None
    prefix, item = match.groups()
    body = item[0] + prefix + item[1:]
    return body + gs1.check_digit(body)


def decode_text(data: bytes) -> str:
    """UTF-8 text (a leading BOM is dropped); anything else is refused with the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportFileError(
            f"Line {line}: byte 0x{data[exc.start]:02X} is not UTF-8 text — save the file as UTF-8 and upload it "
            "again.",
            line=line,
        ) from exc
