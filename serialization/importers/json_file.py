"""JSON serial lists, in one of two shapes:

    {"product_code": "09521234543213", "serials": ["A1B2C3", "D4E5F6", …]}
    {"product_code": "…", "serials": [{"serial": "A1B2C3", "91": "AB12", "92": "…44 characters…"}, …]}

``product_code`` (or ``gtin``) is optional and, when given, must be the pool's; an item object may carry its own
``product_code``/``gtin``. Every serial is reported with the line of the file it is on: the document is walked
item by item with the standard library's JSON scanner (``JSONDecoder.raw_decode``) so each item's offset is known;
only the serial strings of one file are held in memory, never a second parsed copy of the document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import BinaryIO

from serialization.importers.base import ImportFileError, Row, RowProblem, decode_text

_SPACE = re.compile(r"[ \t\n\r]*")
_ITEM_KEYS = {"serial", "91", "92", "product_code", "gtin"}
_SHAPE = '{"product_code": "…", "serials": ["…", …]}'


class _Lines:
    """Line number of increasing offsets in ``text``, counting newlines only once overall."""

    def __init__(self, text: str) -> None:
        self.text, self.offset, self.line = text, 0, 1

    def at(self, offset: int) -> int:
        if offset < self.offset:
            return self.text.count("\n", 0, offset) + 1
        self.line += self.text.count("\n", self.offset, offset)
        self.offset = offset
        return self.line


def parse(stream: BinaryIO) -> Iterator[Row | RowProblem]:
    text = decode_text(stream.read())
    decoder = json.JSONDecoder()
    lines = _Lines(text)
    items: list[tuple[int, object]] = []
    product_code: object = None
    try:
        pos = _skip(text, 0)
        _expect(text, pos, "{", lines, f"the file must hold one JSON object such as {_SHAPE}")
        pos = _skip(text, pos + 1)
        seen_serials = False
        while text[pos : pos + 1] != "}":
            _expect(text, pos, '"', lines, "expected a key in double quotes")
            key, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            _expect(text, pos, ":", lines, "expected ':' after the key")
            pos = _skip(text, pos + 1)
            if key == "serials":
                _expect(text, pos, "[", lines, '"serials" must be a list: "serials": ["…", …]')
                seen_serials = True
                pos = _skip(text, pos + 1)
                while text[pos : pos + 1] != "]":
                    value, end = decoder.raw_decode(text, pos)
                    items.append((pos, value))
                    pos = _skip(text, end)
                    if text[pos : pos + 1] == ",":
                        pos = _skip(text, pos + 1)
                    else:
                        _expect(text, pos, "]", lines, "expected ',' or ']' in the serials list")
                pos += 1
            else:
                value, pos = decoder.raw_decode(text, pos)
                if key in ("product_code", "gtin"):
                    product_code = value
            pos = _skip(text, pos)
            if text[pos : pos + 1] == ",":
                pos = _skip(text, pos + 1)
            else:
                _expect(text, pos, "}", lines, "expected ',' or '}' after a value")
        pos = _skip(text, pos + 1)
        if pos < len(text):
            line = lines.at(pos)
            raise ImportFileError(f"Line {line}: text after the end of the JSON object — remove it.", line=line)
    except json.JSONDecodeError as exc:
        raise ImportFileError(
            f"Line {exc.lineno}, column {exc.colno}: the JSON is malformed ({exc.msg}).", line=exc.lineno
        ) from exc
    if not seen_serials:
        raise ImportFileError(f'The JSON object has no "serials" list — use {_SHAPE}.', line=1)
    if product_code is not None and not isinstance(product_code, str):
        raise ImportFileError('"product_code" must be a string of digits, e.g. "09521234543213".', line=1)
    for offset, value in items:
        yield _row(lines.at(offset), value, product_code)


def _skip(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()


def _expect(text: str, pos: int, char: str, lines: _Lines, problem: str) -> None:
    if text[pos : pos + 1] != char:
        line, column = lines.at(pos), pos - text.rfind("\n", 0, pos)
        found = repr(text[pos]) if pos < len(text) else "the end of the file"
        raise ImportFileError(f"Line {line}, column {column}: {problem} (found {found}).", line=line)


def _row(line: int, value: object, product_code: str | None) -> Row | RowProblem:
    if isinstance(value, str):
        return (line, product_code, value, None)
    if not isinstance(value, dict):
        return RowProblem(line, "", f'item is {type(value).__name__}; give a serial string or {{"serial": "…"}}')
    serial = value.get("serial")
    if not isinstance(serial, str):
        return RowProblem(line, "", 'item has no "serial" string; give {"serial": "…"} (optionally "91", "92")')
    unknown = sorted(set(value) - _ITEM_KEYS)
    if unknown:
        return RowProblem(line, serial, f"item has unknown keys {', '.join(unknown)}; use serial, 91, 92, product_code")
    wrong = [ai for ai in ("91", "92", "product_code", "gtin") if ai in value and not isinstance(value[ai], str)]
    if wrong:
        return RowProblem(line, serial, f"{', '.join(wrong)} must be strings")
    parameters = {ai: value[ai] for ai in ("91", "92") if ai in value}
    code = value.get("product_code") or value.get("gtin") or product_code
    return (line, code, serial, parameters or None)
