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
memory; libxml2 reports no line numbers then). JSON documents are always read as a stream (``ijson``): the document
without its events is checked against the schema, then each event, as it is read, against the schema's definition
of an event in a document (``EPCIS-Document-Event``) — the same rules the whole-document check applies, since the
schema relates nothing across events — so memory holds one event at a time however many EPCs the document names.
"""

from __future__ import annotations

import difflib
import functools
import heapq
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO
from urllib.parse import unquote

import ijson
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
# Where ijson reports the events of a document: the items of epcisBody.eventList.
_EVENT_PREFIX = "epcisBody.eventList.item"
# The lists of an event that may name millions of EPCs, and how many of their items are checked at a time.
_EPC_LISTS = frozenset({"epcList", "childEPCs", "inputEPCList", "outputEPCList"})
EPC_CHUNK = 10_000
_REPEATED_ITEMS = "the list holds an item more than once; each may appear once."
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
    problems = _validate_json(data) if syntax == "json" else _validate_xml(data, version=version)
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
def _json_validators(path: Path) -> tuple[Draft7Validator, Draft7Validator]:
    """The schema's validators for a whole document and for one event of a document's eventList."""
    schema = _inline_references(json.loads(path.read_text(encoding="utf-8")))
    checker = FormatChecker()
    checker.checks("uri")(_is_uri)
    checker.checks("date-time")(_is_date_time)
    event_schema = {
        "$id": schema["$id"],
        "$schema": schema["$schema"],
        "definitions": schema["definitions"],
        "allOf": [schema["definitions"]["EPCIS-Document-Event"]],
    }
    return Draft7Validator(schema, format_checker=checker), Draft7Validator(event_schema, format_checker=checker)


def _inline_references(schema: dict) -> dict:
    """``schema`` with each local ``$ref`` replaced by the definition it names, except where a definition refers to
    itself, directly or not (those stay references, resolved against ``definitions`` as before). The same rules —
    in draft 7 a ``$ref`` replaces its whole object, so the object becomes the definition — checked without
    resolving a reference per value: resolving ``#/definitions/uri`` for each EPC of an epcList took three quarters
    of the validation time. Each definition is expanded once and shared wherever it is named (the validator never
    changes a schema), so the result is no larger than the file."""
    definitions = schema["definitions"]
    expanded: dict[str, object] = {}
    expanding: set[str] = set()

    def definition(name: str) -> object | None:
        """The expanded definition, or None while it is being expanded (a reference to it stays a reference)."""
        if name not in expanded:
            if name in expanding:
                return None
            expanding.add(name)
            expanded[name] = inline(definitions[name])
            expanding.discard(name)
        return expanded[name]

    def inline(node: object) -> object:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            name = unquote(ref[len("#/definitions/") :]).replace("~1", "/").replace("~0", "~")
            found = definition(name) if name in definitions else None
            return node if found is None else found
        return {key: inline(value) for key, value in node.items()}

    inlined = {key: inline(value) for key, value in schema.items() if key != "definitions"}
    return {**inlined, "definitions": {name: definition(name) for name in definitions}}


def _validate_json(data: bytes | str | Path) -> list[str]:
    document_validator, event_validator = _json_validators(standards_dir() / JSON_SCHEMA_FILE)
    events = _JsonEvents(event_validator)
    try:
        with _open_bytes(data) as handle:
            shell = events.read(handle)
        if events.long_lists:
            with _open_bytes(data) as handle:
                events.read_long_lists(handle)
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        return [f"The document is not JSON: {exc}."]
    if not isinstance(shell, dict):
        return ["The document is not a JSON object; an EPCIS document is one object of type EPCISDocument."]
    head = []
    if shell.get("type") != "EPCISDocument":
        head.append(f"type is {shell.get('type')!r}; an EPCIS document has type 'EPCISDocument'.")
    if shell.get("schemaVersion") != "2.0":
        head.append(f"schemaVersion is {shell.get('schemaVersion')!r}; EPCIS JSON-LD is version '2.0'.")
    errors = sorted(document_validator.iter_errors(shell), key=lambda e: [str(p) for p in e.absolute_path])
    # Several rules of the schema can refuse a value for the same reason (a non-object event), and an event's other
    # fields are checked again with each part of a long EPC list: each problem said once.
    return list(dict.fromkeys([*head, *(_json_problem(error) for error in errors), *events.problems]))


def _open_bytes(data: bytes | str | Path) -> IO[bytes]:
    return data.open("rb") if isinstance(data, Path) else io.BytesIO(_read_bytes(data))


_SCALARS = frozenset({"string", "number", "boolean", "null"})
# The parse events that begin a value (map keys and ends share the prefix of the value they belong to).
_STARTS = _SCALARS | {"start_map", "start_array"}


class _JsonEvents:
    """The events of one JSON document, checked as ijson reads them, so that memory never holds more than one event
    with at most ``EPC_CHUNK`` EPCs of each of its EPC lists (a commissioning event may name a million units).

    First pass (:meth:`read`): each event is built with its EPC lists cut to their first ``EPC_CHUNK`` items and
    checked against the schema. Second pass, only for the lists that were longer (:meth:`read_long_lists`): the rest
    of each, a part of ``EPC_CHUNK`` items at a time, checked in place of the list in the event read before; the
    schema's rules on these lists are per item, except ``uniqueItems``, which the second pass checks over the whole
    list by sorting it in parts on disk and merging them (:class:`_RepeatFinder`)."""

    def __init__(self, validator: Draft7Validator) -> None:
        self.validator = validator
        self.problems: list[str] = []
        # Events whose EPC lists ran past EPC_CHUNK: index → (the event with those lists cut to one item, the lists).
        self.long_lists: dict[int, tuple[dict, set[str]]] = {}

    def read(self, handle: IO[bytes]) -> object:
        """The document with an empty eventList (when it has one); its events checked on the way."""
        shell = ijson.ObjectBuilder()
        index, event = -1, None
        for prefix, kind, value in ijson.parse(handle, use_float=True):
            if event is not None:
                if event.feed(prefix, kind, value):
                    self._event_read(index, event)
                    event = None
            elif prefix == _EVENT_PREFIX:
                index += 1
                if kind in _SCALARS:
                    self._check(index, value)  # an event that is not an object: the schema says what is wrong
                else:
                    event = _EventBuilder()
                    event.feed(prefix, kind, value)
            else:
                shell.event(kind, value)
        return shell.value

    def read_long_lists(self, handle: IO[bytes]) -> None:
        index, key, item, part, count, repeats = -1, None, None, [], 0, None
        for prefix, kind, value in ijson.parse(handle, use_float=True):
            if prefix == _EVENT_PREFIX and kind in _STARTS:
                index += 1
            elif key is None:
                name = prefix[len(_EVENT_PREFIX) + 1 :] if prefix.startswith(f"{_EVENT_PREFIX}.") else None
                if kind == "start_array" and index in self.long_lists and name in self.long_lists[index][1]:
                    key, part, count, repeats = name, [], 0, _RepeatFinder()
            elif prefix == f"{_EVENT_PREFIX}.{key}" and kind == "end_array":
                self._check_part(index, key, count - len(part), part)
                if repeats.close():
                    self.problems.append(f"epcisBody.eventList[{index}].{key}: {_REPEATED_ITEMS}")
                key = None
            else:
                if prefix == f"{_EVENT_PREFIX}.{key}.item" and kind in _STARTS:
                    count += 1
                if item is None and kind in _SCALARS:
                    done = value
                else:
                    item = item or ijson.ObjectBuilder()
                    item.event(kind, value)
                    if not (prefix == f"{_EVENT_PREFIX}.{key}.item" and kind in ("end_map", "end_array")):
                        continue
                    done, item = item.value, None
                repeats.add(done)
                if count > EPC_CHUNK:  # the first part was checked in the first pass
                    part.append(done)
                    if len(part) == EPC_CHUNK:
                        self._check_part(index, key, count - len(part), part)
                        part = []

    def _event_read(self, index: int, event: _EventBuilder) -> None:
        value = event.builder.value
        self._check(index, value)
        long = {key for key, count in event.counts.items() if count > EPC_CHUNK}
        if long and isinstance(value, dict):
            cut = {key: items[:1] if key in long else items for key, items in value.items()}
            self.long_lists[index] = (cut, long)

    def _check(self, index: int, event: object) -> None:
        where = f"epcisBody.eventList[{index}]"
        errors = sorted(self.validator.iter_errors(event), key=lambda e: [str(p) for p in e.absolute_path])
        self.problems.extend(_json_problem(error, within=where) for error in errors)
        if isinstance(event, dict):
            for kind in ("bizStep", "disposition"):
                if kind in event:
                    problem = _vocabulary_problem(kind, event[kind], bare=True)
                    if problem:
                        self.problems.append(f"{where}.{kind}: {problem}")

    def _check_part(self, index: int, key: str, start: int, part: list) -> None:
        if not part:
            return
        event = {**self.long_lists[index][0], key: part}
        for error in self.validator.iter_errors(event):
            if error.validator != "uniqueItems":  # the whole list's repeats are the _RepeatFinder's
                self.problems.append(_json_problem(error, within=f"epcisBody.eventList[{index}]", shift=(key, start)))


class _EventBuilder:
    """One event from ijson's parse events, its EPC lists cut to their first ``EPC_CHUNK`` items and counted."""

    def __init__(self) -> None:
        self.builder = ijson.ObjectBuilder()
        self.counts: dict[str, int] = {}
        self._list: str | None = None

    def feed(self, prefix: str, kind: str, value: object) -> bool:
        """Take one parse event; True when it ended the event."""
        key = self._list
        if key is not None:
            items = f"{_EVENT_PREFIX}.{key}.item"
            if prefix == items and kind in _STARTS:
                self.counts[key] += 1
            if prefix == items or prefix.startswith(f"{items}."):
                if self.counts[key] <= EPC_CHUNK:
                    self.builder.event(kind, value)
                return False
            self._list = None  # the list's end
        elif kind == "start_array" and prefix.startswith(f"{_EVENT_PREFIX}."):
            name = prefix[len(_EVENT_PREFIX) + 1 :]
            if name in _EPC_LISTS:
                self._list, self.counts[name] = name, 0
        self.builder.event(kind, value)
        return prefix == _EVENT_PREFIX and kind in ("end_map", "end_array")


class _RepeatFinder:
    """Whether a list holds an item twice, in near-constant memory however long it is: items are sorted
    ``EPC_CHUNK`` at a time into runs in a temporary file (one JSON text per line; JSON escapes newlines and
    non-ASCII), then the runs are merged, each read in blocks of its own, and neighbours compared."""

    BLOCK = 4 * 1024  # per run being merged: a million EPCs make 100 runs

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close(), after the list's last item
        self._runs: list[tuple[int, int]] = []  # (start, end) byte offsets of each sorted run
        self._items: list[bytes] = []

    def add(self, item: object) -> None:
        self._items.append(json.dumps(item, sort_keys=True).encode())
        if len(self._items) == EPC_CHUNK:
            self._flush()

    def close(self) -> bool:
        """True when some item came twice; the temporary file is gone after."""
        self._flush()
        with self._file:
            previous = None
            for line in heapq.merge(*(self._run(start, end) for start, end in self._runs)):
                if line == previous:
                    return True
                previous = line
        return False

    def _flush(self) -> None:
        if self._items:
            start = self._file.seek(0, io.SEEK_END)
            self._file.write(b"".join(item + b"\n" for item in sorted(self._items)))
            self._file.flush()
            self._runs.append((start, self._file.tell()))
            self._items = []

    def _run(self, start: int, end: int) -> Iterator[bytes]:
        # os.pread keeps no shared file position, so the merge can read the runs in any interleaving.
        rest, position = b"", start
        while position < end:
            block = os.pread(self._file.fileno(), min(self.BLOCK, end - position), position)
            position += len(block)
            *lines, rest = (rest + block).split(b"\n")
            yield from lines


def _json_path(path, *, within: str = "", shift: tuple[str, int] | None = None) -> str:
    """``path`` as a reader writes it (``epcisBody.eventList[3].action``), continuing ``within``; ``shift`` (key,
    start): the path is in a part of that list which starts at item ``start``."""
    path = list(path)
    if shift is not None and len(path) > 1 and path[0] == shift[0] and isinstance(path[1], int):
        path[1] += shift[1]
    text = within
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(document)"


def _json_problem(error: ValidationError, *, within: str = "", shift: tuple[str, int] | None = None) -> str:
    """Where (the path continuing ``within``, the path of the event checked on its own) and what."""
    # anyOf / if-then failures say only "not valid under any of the given schemas": name the closest cause instead.
    cause = best_match(error.context) if error.context else error
    # jsonschema's uniqueItems message repeats the whole list, which may hold a million EPCs.
    message = _REPEATED_ITEMS if cause.validator == "uniqueItems" else cause.message
    return f"{_json_path(cause.absolute_path, within=within, shift=shift)}: {message}"


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
