"""Is an EPCIS document valid? The official JSON schema (2.0) or XSD (2.0, 1.2), then the CBV lists.

The standards live in ``settings.STANDARDS_DIR`` (``epcis/EPCIS-JSON-Schema.json``, ``epcis/xsd-2.0``,
``epcis/xsd-1.2``), exactly as GS1 publishes them. ``validate_epcis_document`` answers with readable problems —
where, and what is wrong — or ``[]``; it never raises for a bad document.

Two checks go beyond what the files enforce by themselves:

- JSON formats: the schema marks URIs and times with ``format`` (``uri``, ``date-time``), which ``jsonschema`` checks
  only with optional packages this project does not install; both are checked here (RFC 3986 scheme and no
  whitespace; RFC 3339 date-time).
- Vocabulary: the JSON schema accepts any URI as bizStep or disposition, and the XSDs any ``anyURI``, so a misspelt
  standard term passes them. Here a bizStep/disposition must be a CBV term of ``serialization.cbv`` — bare in
  JSON, ``urn:epcglobal:cbv:bizstep:…``/``urn:epcglobal:cbv:disp:…`` (or the GS1 Web URI
  ``https://ref.gs1.org/cbv/BizStep-…``/``Disp-…``) in XML — or a URI of the sender's own (a private extension).

XML is parsed without entities, DTDs or network access. Documents up to ``TREE_LIMIT_BYTES`` are validated as a
tree, so problems carry line numbers; larger ones are validated while they stream through the parser (constant
memory; libxml2 reports no line numbers then). JSON documents are loaded whole (the schema needs the tree).
"""

from __future__ import annotations

import difflib
import functools
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from django.conf import settings
from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from lxml import etree

from serialization import cbv
from serialization.epcis import check_format

MAX_PROBLEMS = 100
TREE_LIMIT_BYTES = 16 * 1024 * 1024
XML_NAMESPACES = {"1.2": "urn:epcglobal:epcis:xsd:1", "2.0": "urn:epcglobal:epcis:xsd:2"}
XSD_FILES = {"1.2": "xsd-1.2/EPCglobal-epcis-1_2.xsd", "2.0": "xsd-2.0/EPCglobal-epcis-2_0.xsd"}
JSON_SCHEMA_FILE = "EPCIS-JSON-Schema.json"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s]*$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
# The URI forms GS1 gives each CBV term: kind → (prefixes before the term, the standard terms).
_CBV_FORMS = {
    "bizStep": (("urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-"), cbv.BIZ_STEPS),
    "disposition": (("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-"), cbv.DISPOSITIONS),
}


def standards_dir() -> Path:
    """The EPCIS folder of the standards (``STANDARDS_DIR``, by default ``../shared/standards`` beside the project)."""
    return Path(settings.STANDARDS_DIR) / "epcis"


def validate_epcis_document(data: bytes | str | Path, *, version: str, syntax: str) -> list[str]:
    """[] when valid, else readable problems (at most ``MAX_PROBLEMS``, the last one saying how many were left
    out). ``data`` is the document (bytes or text) or a Path to it. Raises ``EpcisError`` only for a version/syntax
    pair the standards do not define (1.2 is XML only)."""
    check_format(version=version, syntax=syntax)
    problems = _validate_json(_read_bytes(data)) if syntax == "json" else _validate_xml(data, version=version)
    if len(problems) > MAX_PROBLEMS:
        problems = [*problems[:MAX_PROBLEMS], f"… and {len(problems) - MAX_PROBLEMS} more problems."]
    return problems


def _read_bytes(data: bytes | str | Path) -> bytes:
    if isinstance(data, Path):
        return data.read_bytes()
    return data.encode() if isinstance(data, str) else bytes(data)


# --- JSON ---------------------------------------------------------------------------------------------------------


def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI.match(value))


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


@functools.cache
def _json_validator(path: Path) -> Draft7Validator:
    schema = json.loads(path.read_text(encoding="utf-8"))
    checker = FormatChecker()
    checker.checks("uri")(_is_uri)
    checker.checks("date-time")(_is_date_time)
    return Draft7Validator(schema, format_checker=checker)


def _validate_json(raw: bytes) -> list[str]:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"The document is not JSON: {exc}."]
    if not isinstance(document, dict):
        return ["The document is not a JSON object; an EPCIS document is one object of type EPCISDocument."]
    problems = []
    if document.get("type") != "EPCISDocument":
        problems.append(f"type is {document.get('type')!r}; an EPCIS document has type 'EPCISDocument'.")
    if document.get("schemaVersion") != "2.0":
        problems.append(f"schemaVersion is {document.get('schemaVersion')!r}; EPCIS JSON-LD is version '2.0'.")
    validator = _json_validator(standards_dir() / JSON_SCHEMA_FILE)
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    problems += [_json_problem(error) for error in errors]
    events = document.get("epcisBody", {}).get("eventList", []) if isinstance(document.get("epcisBody"), dict) else []
    for index, event in enumerate(events if isinstance(events, list) else []):
        if isinstance(event, dict):
            for kind in ("bizStep", "disposition"):
                if kind in event:
                    problem = _vocabulary_problem(kind, event[kind], bare=True)
                    if problem:
                        problems.append(f"epcisBody.eventList[{index}].{kind}: {problem}")
    return problems


def _json_path(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(document)"


def _json_problem(error: ValidationError) -> str:
    # anyOf / if-then failures say only "not valid under any of the given schemas": name the closest cause instead.
    cause = best_match(error.context) if error.context else error
    return f"{_json_path(cause.absolute_path)}: {cause.message}"


# --- XML ----------------------------------------------------------------------------------------------------------


@functools.cache
def _xml_schema(path: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(path), _safe_parser()))


def _safe_parser(**options) -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, **options)


def _validate_xml(data: bytes | str | Path, *, version: str) -> list[str]:
    schema = _xml_schema(standards_dir() / XSD_FILES[version])
    size = data.stat().st_size if isinstance(data, Path) else len(data)
    if size <= TREE_LIMIT_BYTES:
        return _validate_xml_tree(_read_bytes(data), schema, version)
    return _validate_xml_stream(data, schema, version)


def _root_problems(root: etree._Element, version: str) -> list[str]:
    expected = f"{{{XML_NAMESPACES[version]}}}EPCISDocument"
    if root.tag != expected:
        return [f"The root element is {root.tag}; an EPCIS {version} document has {expected}."]
    if root.get("schemaVersion") != version:
        return [f"schemaVersion is {root.get('schemaVersion')!r}; this is checked as an EPCIS {version} document."]
    return []


def _validate_xml_tree(raw: bytes, schema: etree.XMLSchema, version: str) -> list[str]:
    try:
        tree = etree.parse(io.BytesIO(raw), _safe_parser())
    except etree.XMLSyntaxError as exc:
        return [f"The document is not well-formed XML: {exc}."]
    root = tree.getroot()
    problems = _root_problems(root, version)
    if problems:
        return problems
    if not schema.validate(tree):
        problems += [f"line {entry.line}: {entry.message}" for entry in schema.error_log]
    for element in root.iter("bizStep", "disposition"):
        problem = _vocabulary_problem(element.tag, (element.text or "").strip(), bare=False)
        if problem:
            problems.append(f"line {element.sourceline}: {element.tag}: {problem}")
    return problems


def _validate_xml_stream(data: bytes | str | Path, schema: etree.XMLSchema, version: str) -> list[str]:
    source = str(data) if isinstance(data, Path) else io.BytesIO(_read_bytes(data))
    problems: list[str] = []
    try:
        for element in _stream(source, schema):
            if element.tag in ("bizStep", "disposition"):
                problem = _vocabulary_problem(element.tag, (element.text or "").strip(), bare=False)
                if problem:
                    problems.append(f"{element.tag}: {problem}")
            elif element.getparent() is None:
                problems = _root_problems(element, version) + problems
    except etree.XMLSyntaxError as exc:
        entries = [entry.message for entry in exc.error_log] or [str(exc)]
        problems += list(dict.fromkeys(entries))  # the streaming validator may report an entry twice
    return problems


def _stream(source, schema: etree.XMLSchema) -> Iterator[etree._Element]:
    """Each element once it is complete, validated as it goes; elements already seen are dropped from the tree so
    memory stays flat however long an epcList is."""
    for _, element in etree.iterparse(
        source, events=("end",), schema=schema, resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True
    ):
        yield element
        if element.getparent() is not None:
            element.clear(keep_tail=True)
            while element.getprevious() is not None:
                del element.getparent()[0]


# --- vocabulary -----------------------------------------------------------------------------------------------------


def _vocabulary_problem(kind: str, value: object, *, bare: bool) -> str | None:
    """Why ``value`` is no acceptable ``kind`` (bizStep or disposition), or None. ``bare``: JSON-LD, where a CBV term
    is written as the bare word."""
    prefixes, terms = _CBV_FORMS[kind]
    label = "business step" if kind == "bizStep" else "disposition"
    if not isinstance(value, str):
        return f"{value!r} is not text."
    for prefix in prefixes:
        if value.startswith(prefix):
            term = value[len(prefix) :]
            if term in terms:
                return None
            return f"{term!r} is not a CBV {label}{_suggestion(term, terms)}."
    if value in terms:
        if bare:
            return None
        return f"{value!r} is a bare CBV term; in XML write it as a URI, {prefixes[0]}{value}."
    if _URI.match(value):
        return None  # a URI of the sender's own: an extension EPCIS allows
    return f"{value!r} is not a CBV {label}{_suggestion(value, terms)}, nor a URI of your own."


def _suggestion(value: str, terms: frozenset[str]) -> str:
    close = difflib.get_close_matches(value, sorted(terms), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
