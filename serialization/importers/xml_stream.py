"""The streaming XML reader behind the SAP ATTP, SAP ICH and TraceLink layouts.

Each layout names, by element local name (namespaces and the case/underscores of names are ignored, because the
same message arrives from SOAP, PI/PO mappings and file exports with different prefixes and spellings):

- ``serial_tags``: elements whose text is one serial (bare, EPC URN, EPC tag URI or GS1 AI data);
- ``item_tags``: elements that group one serial with its own product code and parameters (a bare item with only
  text is a serial too);
- ``product_tags``: elements whose text is the product code of the serials after them (or of their item);
- ``keyed_product_tags``: ``<ObjectKey><Name>GTIN</Name><Value>…</Value></ObjectKey>``-style pairs;
- ``parameter_tags``: per-serial extra AIs inside an item (``CryptoKey`` → 91, ``CryptoCode`` → 92).

The file is read with lxml's ``iterparse`` — one element at a time, each cleared once reported, so memory stays flat
whatever the file size — by a parser that resolves no entities, loads no DTD, touches no network and keeps libxml2's
limits on text size and nesting (``huge_tree=False``). A document that declares a DOCTYPE is refused before its
first element is read: serial lists never need one, and refusing it closes the door on entity-expansion
("billion laughs") and external-entity tricks. Line numbers are those lxml reports: the line of the element's
start tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from lxml import etree

from masterdata import gs1
from serialization.importers.base import ImportFileError, Row, RowProblem, decode_serial_value, gtin_from_class_urn

_WHERE_SUFFIX = re.compile(r",? line \d+, column \d+$")  # libxml2 repeats the position we already give
_CODE_KEYS = {"gtin", "ntin", "ppn", "gtin14", "productcode"}


def _norm(tag: object) -> str:
    if not isinstance(tag, str):
        return ""  # comments and processing instructions
    if tag[:1] == "{":
        tag = tag.rpartition("}")[2]
    return tag.replace("_", "").replace("-", "").lower()


def _names(names: Iterable[str]) -> frozenset[str]:
    return frozenset(_norm(name) for name in names)


@dataclass(frozen=True)
class XmlLayout:
    name: str
    expected: str
    serial_tags: frozenset[str]
    item_tags: frozenset[str] = frozenset()
    product_tags: frozenset[str] = frozenset()
    keyed_product_tags: frozenset[str] = frozenset()
    parameter_tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def define(
        cls, *, name, expected, serial_tags, item_tags=(), product_tags=(), keyed_product_tags=(), parameters=()
    ) -> XmlLayout:
        return cls(
            name=name,
            expected=expected,
            serial_tags=_names(serial_tags),
            item_tags=_names(item_tags),
            product_tags=_names(product_tags),
            keyed_product_tags=_names(keyed_product_tags),
            parameter_tags={_norm(tag): ai for tag, ai in parameters},
        )


def parse_xml(stream: BinaryIO, layout: XmlLayout) -> Iterator[Row | RowProblem]:
    containers = layout.serial_tags | layout.item_tags
    events = etree.iterparse(
        stream,
        events=("start", "end"),
        resolve_entities=False,
        load_dtd=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    product_code: str | None = None
    found = 0
    checked_doctype = False
    try:
        for event, elem in events:
            if event == "start":
                if not checked_doctype:
                    _refuse_doctype(elem)
                    checked_doctype = True
                continue
            name = _norm(elem.tag)
            parent = elem.getparent()
            inside_item = parent is not None and _norm(parent.tag) in containers
            if name in layout.product_tags:
                if not inside_item:
                    product_code = _text(elem) or None
            elif name in layout.keyed_product_tags:
                product_code = _keyed_code(elem) or product_code
            elif name in containers and not inside_item:
                row = _item_row(elem, layout, product_code)
                if row is not None:
                    found += 1
                    yield row
                # Flat memory: drop the reported element and everything already read before it.
                elem.clear()
                while elem.getprevious() is not None:
                    del parent[0]
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or None
        where = f"Line {line}, column {exc.position[1]}: " if line else ""
        message = _WHERE_SUFFIX.sub("", exc.msg or "")
        raise ImportFileError(f"{where}the XML is malformed ({message}).", line=line) from exc
    if found == 0:
        raise ImportFileError(f"No serials found: a {layout.name} file lists them in {layout.expected}.", line=None)


def _refuse_doctype(root) -> None:
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise ImportFileError(
            f"The file declares a DOCTYPE before its first element (line {root.sourceline}): serial lists never need "
            "one (a DTD or entities) and such files are refused for safety — export the file again without it.",
            line=None,
        )


def _text(elem) -> str:
    return (elem.text or "").strip()


def _keyed_code(elem) -> str | None:
    key = value = None
    for child in elem:
        child_name = _norm(child.tag)
        if child_name in ("name", "type", "key", "idtype"):
            key = _text(child).lower()
        elif child_name == "value":
            value = _text(child)
    if not value:
        return None
    class_gtin = gtin_from_class_urn(value)
    if class_gtin is not None:
        return class_gtin
    return value if key in _CODE_KEYS else None


def _item_row(elem, layout: XmlLayout, product_code: str | None) -> Row | RowProblem | None:
    containers = layout.serial_tags | layout.item_tags
    serial_elem, parameters = None, {}
    for child in elem:
        child_name = _norm(child.tag)
        if child_name in containers and serial_elem is None:
            serial_elem = child
        elif child_name in layout.product_tags:
            product_code = _text(child) or product_code
        elif child_name in layout.parameter_tags:
            parameters[layout.parameter_tags[child_name]] = _text(child)
    if serial_elem is None:
        if len(elem):
            return None  # a group without a serial (e.g. an ABAP <item> of some other table)
        serial_elem = elem
    line, value = serial_elem.sourceline, _text(serial_elem)
    try:
        code, serial = decode_serial_value(value, product_code)
    except gs1.GS1Error as exc:
        return RowProblem(line, value, str(exc))
    return (line, code, serial, parameters or None)
