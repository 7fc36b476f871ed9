"""EPCIS documents sent to the capture interface, read safely into one normalised event shape.

Accepted: EPCIS 2.0 JSON / JSON-LD (``EPCISDocument`` or ``EPCISQueryDocument``) and EPCIS 1.2 / 2.0 XML (either
document, by the root's namespace). ``read_capture_document`` answers with the events in document order, or raises:

* ``CaptureTooLarge`` (413) past ``EPCIS_CAPTURE_MAX_BYTES`` bytes — checked before anything is parsed — or past
  ``EPCIS_CAPTURE_MAX_EVENTS`` events;
* ``CaptureDocumentError`` (400) for a document that is not well-formed (naming line and column: XML, and JSON
  syntax), fails the official schema (the XSD of its version, with line numbers; the JSON schema, with the JSON
  path), or holds no events.

XML safety: lxml with ``resolve_entities=False``, ``no_network=True``, ``load_dtd=False`` and ``huge_tree=False``, so
no entity is ever expanded and nothing is fetched. A DOCTYPE that declares anything (an internal subset: entities,
elements, attributes) or points at an external DTD is refused; a bare ``<!DOCTYPE name>``, which declares nothing
(two official GS1 examples carry one), is accepted.

Why not ``validation.validate_epcis_document`` (which checks the documents this system writes): capture must answer
while the body is in the request, so JSON EPC lists are checked by sample against the schema (every EPC is parsed
here anyway, for about a fifth of what the schema spends on one); it takes query documents too; and a bizStep
outside CBV is not a malformed document here but an event this system refuses by itself, so ``proceed`` can still
apply the rest.

Per event, what is read is what the rulebook needs (type, action, bizStep, disposition, eventTime, eventID, EPCs,
parentID, ilmd lot/expiry, bizTransactions, errorDeclaration) plus the fields kept with the event (readPoint,
bizLocation, sources, destinations). Field-level problems (a time without zone, an EPC that is no SGTIN or SSCC)
do not fail the document: they are kept on the event, which the capture service refuses with them.

``CaptureEvent.content_hash`` identifies an event by what it says, whatever the syntax: the SHA-256 of a canonical
JSON of its type, action, bizStep, disposition, eventTime (UTC), EPCs (as product code + serial, sorted: a URN and a
Digital Link of one unit are equal), parentID, readPoint, bizLocation, bizTransactions, sources, destinations and
CBV ilmd — not its eventID, recordTime or errorDeclaration (an error declaration repeats the event it corrects).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from django.conf import settings
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from lxml import etree

from audit.exceptions import DomainError
from masterdata import gs1
from serialization.epcis.validation import JSON_SCHEMA_FILE, standards_dir

JSON = "json"
XML = "xml"
MEDIA_TYPES = {
    "application/json": JSON,
    "application/ld+json": JSON,
    "application/xml": XML,
    "text/xml": XML,
}
EPCIS_XML_NAMESPACES = {"urn:epcglobal:epcis:xsd:1": "1.2", "urn:epcglobal:epcis:xsd:2": "2.0"}
EPCIS_QUERY_NAMESPACES = {"urn:epcglobal:epcis-query:xsd:1": "1.2", "urn:epcglobal:epcis-query:xsd:2": "2.0"}
# The query XSD imports the document XSD: one schema validates both documents of a version.
QUERY_XSD_FILES = {"1.2": "xsd-1.2/EPCglobal-epcis-query-1_2.xsd", "2.0": "xsd-2.0/EPCglobal-epcis-query-2_0.xsd"}
CBVMDA_NAMESPACE = "urn:epcglobal:cbv:mda"
EVENT_TYPES = ("ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent")
EPC_LIST_KEYS = ("epcList", "childEPCs", "inputEPCList", "outputEPCList")
# Content that says something this system does not record: an event carrying it is refused, not half-applied.
UNSUPPORTED_CONTENT = {
    "quantityList": "class-level quantities (quantityList)",
    "childQuantityList": "class-level quantities (childQuantityList)",
    "sensorElementList": "sensor data (sensorElementList)",
    "inputEPCList": "transformation inputs (inputEPCList)",
    "outputEPCList": "transformation outputs (outputEPCList)",
    "inputQuantityList": "transformation inputs (inputQuantityList)",
    "outputQuantityList": "transformation outputs (outputQuantityList)",
}
MAX_DOCUMENT_PROBLEMS = 10
_SCHEMA_SAMPLE = 3  # EPCs of each list the JSON schema sees
_SERIAL_PLAIN = re.compile(r"[0-9A-Za-z!'()*+,\-.:;=_]{1,20}")  # set 82 without the characters a URN escapes
_CBV_PREFIXES = {
    "bizStep": ("urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-", "cbv:BizStep-"),
    "disposition": ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-", "cbv:Disp-"),
    "btt": ("urn:epcglobal:cbv:btt:", "https://ref.gs1.org/cbv/BTT-", "cbv:BTT-"),
    "sdt": ("urn:epcglobal:cbv:sdt:", "https://ref.gs1.org/cbv/SDT-", "cbv:SDT-"),
    "er": ("urn:epcglobal:cbv:er:", "https://ref.gs1.org/cbv/ER-", "cbv:ER-"),
}
_CBVMDA_PREFIXES = ("cbvmda:", "urn:epcglobal:cbv:mda#", "urn:epcglobal:cbv:mda:")


class CaptureDocumentError(DomainError):
    code = "invalid_epcis_document"


class CaptureTooLarge(DomainError):
    status_code = 413
    code = "capture_too_large"


def max_capture_bytes() -> int:
    return settings.EPCIS_CAPTURE_MAX_BYTES


def max_capture_events() -> int:
    return settings.EPCIS_CAPTURE_MAX_EVENTS


def document_format(content_type: str) -> str | None:
    """``json`` or ``xml`` for a Content-Type the capture interface takes (parameters such as charset ignored)."""
    return MEDIA_TYPES.get((content_type or "").split(";", 1)[0].strip().lower())


# --- the normalised event -------------------------------------------------------------------------------------------


class PackRef(NamedTuple):
    """A serialised unit (GTIN-14 + serial) or, with an empty ``product_code``, a container (its SSCC as ``serial``)
    — the two pack shapes of a line report. A tuple: a document makes one per EPC."""

    product_code: str
    serial: str

    @property
    def is_container(self) -> bool:
        return not self.product_code

    def line(self) -> dict:
        """The pack as a line-report pack: ``{"product_code", "serial"}`` or ``{"sscc"}``."""
        return (
            {"sscc": self.serial} if self.is_container else {"product_code": self.product_code, "serial": self.serial}
        )

    def __str__(self) -> str:
        return f"SSCC {self.serial}" if self.is_container else f"serial {self.serial} of {self.product_code}"


@dataclass(frozen=True)
class ErrorDeclaration:
    """An EPCIS 2.0 errorDeclaration: the event it is attached to was wrong; ``corrective_event_ids`` say what
    happened instead."""

    declaration_time: datetime | None
    reason: str
    corrective_event_ids: tuple[str, ...]

    def as_json(self) -> dict:
        data: dict[str, Any] = {
            "declarationTime": self.declaration_time.isoformat() if self.declaration_time else None,
        }
        if self.reason:
            data["reason"] = self.reason
        if self.corrective_event_ids:
            data["correctiveEventIDs"] = list(self.corrective_event_ids)
        return data


@dataclass
class CaptureEvent:
    """One event of a captured document, normalised: CBV terms as bare words (``shipping``), EPCs as they were sent
    and as packs (``packs``/``parent``, None where one is no SGTIN or SSCC), times as aware datetimes."""

    index: int  # 0-based position in the document
    where: str  # "event 3" / "event 3 (line 41)", for messages
    type: str
    action: str = ""
    biz_step: str = ""
    disposition: str = ""
    event_time: datetime | None = None
    time_zone_offset: str = ""
    event_id: str = ""
    epcs: list[str] = field(default_factory=list)  # epcList, or childEPCs of an AggregationEvent
    parent_id: str = ""
    read_point: str = ""
    biz_location: str = ""
    biz_transactions: list[tuple[str, str]] = field(default_factory=list)  # (type as bare word, value)
    sources: list[tuple[str, str]] = field(default_factory=list)
    destinations: list[tuple[str, str]] = field(default_factory=list)
    ilmd: dict[str, str] = field(default_factory=dict)  # CBV master data by bare name: lotNumber, itemExpirationDate
    error_declaration: ErrorDeclaration | None = None
    unsupported: list[str] = field(default_factory=list)  # UNSUPPORTED_CONTENT descriptions present
    problems: list[str] = field(default_factory=list)
    packs: list[PackRef | None] = field(default_factory=list)
    parent: PackRef | None = None

    @property
    def label(self) -> str:
        """How messages name the event: its eventID, or its place in the document."""
        return f"{self.where} ({self.event_id})" if self.event_id else self.where

    @functools.cached_property
    def content_hash(self) -> str:
        canonical = {
            "type": self.type,
            "action": self.action,
            "bizStep": self.biz_step,
            "disposition": self.disposition,
            "eventTime": self.event_time.astimezone(UTC).isoformat() if self.event_time else None,
            "epcs": sorted(_canonical_epc(raw, pack) for raw, pack in zip(self.epcs, self.packs, strict=True)),
            "parentID": _canonical_epc(self.parent_id, self.parent) if self.parent_id else "",
            "readPoint": self.read_point,
            "bizLocation": self.biz_location,
            "bizTransactions": sorted(self.biz_transactions),
            "sources": sorted(self.sources),
            "destinations": sorted(self.destinations),
            "ilmd": sorted(self.ilmd.items()),
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def envelope(self) -> dict:
        """What is kept with the line report: the event without its EPCs (they are the report's packs)."""
        data: dict[str, Any] = {"type": self.type, "action": self.action, "bizStep": self.biz_step}
        optional = {
            "disposition": self.disposition,
            "eventTimeZoneOffset": self.time_zone_offset,
            "readPoint": {"id": self.read_point} if self.read_point else None,
            "bizLocation": {"id": self.biz_location} if self.biz_location else None,
            "bizTransactionList": [
                {"type": t, "bizTransaction": v} if t else {"bizTransaction": v} for t, v in self.biz_transactions
            ],
            "sourceList": [{"type": t, "source": v} for t, v in self.sources],
            "destinationList": [{"type": t, "destination": v} for t, v in self.destinations],
            "ilmd": {f"cbvmda:{name}": value for name, value in self.ilmd.items()},
        }
        data.update({key: value for key, value in optional.items() if value})
        return data


def _canonical_epc(raw: str, pack: PackRef | None) -> str:
    if pack is None:
        return raw
    return f"sscc:{pack.serial}" if pack.is_container else f"sgtin:{pack.product_code}.{pack.serial}"


# --- EPCs -----------------------------------------------------------------------------------------------------------


class EpcReader:
    """EPC text → PackRef, for the URN and Digital Link forms of SGTINs and SSCCs; None for anything else.

    A document names thousands of EPCs of a few products: the GTIN of each ``prefix.itemref`` is worked out (and
    check-digited) once, and a plain serial needs no further parsing; anything unusual goes through
    ``masterdata.gs1``, which validates it fully."""

    def __init__(self) -> None:
        self._gtins: dict[str, str] = {}
        self.problem = ""  # why the last EPC read was None

    def read(self, text: Any) -> PackRef | None:
        self.problem = ""
        if not isinstance(text, str):
            self.problem = f"{text!r} is not text"
            return None
        try:
            if text.startswith("urn:epc:id:sgtin:"):
                return self._sgtin_urn(text)
            if text.startswith("urn:epc:id:sscc:"):
                return PackRef("", gs1.parse_sscc_urn(text)[0])
            if text.startswith(("https://", "http://")):
                return self._digital_link(text)
        except gs1.GS1Error as exc:
            self.problem = str(exc)
            return None
        self.problem = f"{text!r} is neither a serialised unit (SGTIN) nor an SSCC; this system tracks only those"
        return None

    def _sgtin_urn(self, text: str) -> PackRef:
        parts = text[len("urn:epc:id:sgtin:") :].split(".", 2)
        if len(parts) == 3 and _SERIAL_PLAIN.fullmatch(parts[2]):
            head = f"{parts[0]}.{parts[1]}"
            gtin = self._gtins.get(head)
            if gtin is None:
                gtin = gs1.parse_sgtin_urn(f"urn:epc:id:sgtin:{head}.0")[0]
                self._gtins[head] = gtin
            return PackRef(gtin, parts[2])
        gtin, serial, _ = gs1.parse_sgtin_urn(text)
        return PackRef(gtin, serial)

    def _digital_link(self, text: str) -> PackRef | None:
        ais = gs1.parse_digital_link(text)
        if "00" in ais:
            return PackRef("", ais["00"])
        if "01" in ais and "21" in ais:
            return PackRef(ais["01"], ais["21"])
        self.problem = f"{text!r} names no serialised unit (GTIN with serial) nor SSCC; this system tracks only those"
        return None


# --- the document ---------------------------------------------------------------------------------------------------


@dataclass
class CaptureDocument:
    format: str  # JSON or XML
    version: str  # "1.2" or "2.0"
    events: list[CaptureEvent]


def read_capture_document(data: bytes, *, format: str) -> CaptureDocument:
    """The events of ``data`` (a ``format`` document), checked and normalised; see the module docstring for what
    is refused and how."""
    limit = max_capture_bytes()
    if len(data) > limit:
        raise CaptureTooLarge(
            f"The document has {len(data):,} bytes; the capture interface takes at most {limit:,} "
            "(GS1-EPCIS-Capture-File-Size-Limit). Split it into several documents."
        )
    if format == JSON:
        version, raw_events = _json_events(data)
    elif format == XML:
        version, raw_events = _xml_events(data)
    else:
        raise CaptureDocumentError(f"Unknown document format {format!r}; send JSON or XML.")
    if not raw_events:
        raise CaptureDocumentError(
            "The document holds no events (an empty eventList). Master data in the header is not captured here: "
            "keep products and locations in the master data (admin or API) and send events only."
        )
    if len(raw_events) > max_capture_events():
        raise CaptureTooLarge(
            f"The document holds {len(raw_events):,} events; the capture interface takes at most "
            f"{max_capture_events():,} per document (GS1-EPCIS-Capture-Limit). Split it into several documents."
        )
    reader = EpcReader()
    events = [_event(index, raw, where, reader) for index, (raw, where) in enumerate(raw_events)]
    return CaptureDocument(format=format, version=version, events=events)


# --- JSON -----------------------------------------------------------------------------------------------------------


@functools.cache
def _json_validator() -> Draft7Validator:
    schema = json.loads((standards_dir() / JSON_SCHEMA_FILE).read_text(encoding="utf-8"))
    return Draft7Validator(schema)


def _json_events(data: bytes) -> tuple[str, list[tuple[Any, str]]]:
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CaptureDocumentError(f"The body is not UTF-8 text (byte {exc.start}); send the JSON as UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise CaptureDocumentError(
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            details={"line": exc.lineno, "column": exc.colno},
        ) from None
    if not isinstance(document, dict) or document.get("type") not in ("EPCISDocument", "EPCISQueryDocument"):
        found = document.get("type") if isinstance(document, dict) else type(document).__name__
        raise CaptureDocumentError(
            f"Send an EPCIS document: a JSON object of type EPCISDocument (or EPCISQueryDocument); got {found!r}."
        )
    events = _json_event_list(document)
    sampled = _sampled(document, events)
    errors = sorted(_json_validator().iter_errors(sampled), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        problems = []
        for error in errors[:MAX_DOCUMENT_PROBLEMS]:
            cause = best_match(error.context) if error.context else error
            problems.append(f"{_json_path(cause.absolute_path)}: {cause.message}")
        raise CaptureDocumentError(
            "The document does not follow the EPCIS 2.0 JSON schema: " + "; ".join(problems),
            details={"problems": problems, "problem_count": len(errors)},
        )
    version = str(document.get("schemaVersion", "2.0"))
    return version, [(event, f"event {index + 1}") for index, event in enumerate(events or [])]


def _json_event_list(document: dict) -> list | None:
    body = document.get("epcisBody")
    if not isinstance(body, dict):
        return None
    if document["type"] == "EPCISQueryDocument":
        results = body.get("queryResults")
        body = results.get("resultsBody") if isinstance(results, dict) else None
        if not isinstance(body, dict):
            return None
    events = body.get("eventList")
    return events if isinstance(events, list) else None


def _sampled(document: dict, events: list | None) -> dict:
    """``document`` with each event's EPC lists cut to a few entries, for the schema: the entries are all alike to
    it, and every EPC is parsed by this module anyway. The caller's document is not changed."""
    if not events or not any(isinstance(e, dict) and _long_lists(e) for e in events):
        return document
    sampled_events = [
        {**e, **{k: e[k][:_SCHEMA_SAMPLE] for k in _long_lists(e)}} if isinstance(e, dict) else e for e in events
    ]
    clone = copy.copy(document)
    body = clone["epcisBody"] = dict(clone["epcisBody"])
    if document["type"] == "EPCISQueryDocument":
        results = body["queryResults"] = dict(body["queryResults"])
        body = results["resultsBody"] = dict(results["resultsBody"])
    body["eventList"] = sampled_events
    return clone


def _long_lists(event: dict) -> list[str]:
    return [k for k in EPC_LIST_KEYS if isinstance(event.get(k), list) and len(event[k]) > _SCHEMA_SAMPLE]


def _json_path(path: Iterable) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(document)"


# --- XML ------------------------------------------------------------------------------------------------------------


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


@functools.cache
def _xml_schema(version: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(standards_dir() / QUERY_XSD_FILES[version]), _safe_parser()))


_DTD_REFUSED = (
    "The document has a DOCTYPE that declares entities or elements or names an external DTD; EPCIS documents need "
    "none, and they are not accepted (nothing in it was expanded or fetched). Send the document without the DOCTYPE."
)
# A DOCTYPE with an internal subset ("[") or an external identifier, in the prolog of an ASCII-compatible document:
# refused before libxml2 reads the declarations. The check on the parsed tree below covers every other encoding.
_DECLARING_DOCTYPE = re.compile(rb"<!DOCTYPE\s+[^\s>\[]+\s*(\[|SYSTEM\b|PUBLIC\b)")
_POSITION_SUFFIX = re.compile(r",? line \d+, column \d+$")
_ELEMENT_START = re.compile(rb"<[A-Za-z_]")
_PROLOG_BYTES = 64 * 1024


def _xml_events(data: bytes) -> tuple[str, list[tuple[Any, str]]]:
    head = data[:_PROLOG_BYTES]
    root_start = _ELEMENT_START.search(head)
    if _DECLARING_DOCTYPE.search(head[: root_start.start()] if root_start else head):
        raise CaptureDocumentError(_DTD_REFUSED)
    try:
        root = etree.fromstring(data, _safe_parser())
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (exc.lineno, None)
        message = _POSITION_SUFFIX.sub("", exc.msg or str(exc))
        raise CaptureDocumentError(
            f"The body is not well-formed XML: {message} (line {line}, column {column}).",
            details={"line": line, "column": column},
        ) from None
    tree = root.getroottree()
    docinfo = tree.docinfo
    dtd = docinfo.internalDTD
    declares = dtd is not None and (any(True for _ in dtd.iterentities()) or any(True for _ in dtd.elements()))
    if declares or docinfo.system_url or docinfo.public_id:
        raise CaptureDocumentError(_DTD_REFUSED)
    qname = etree.QName(root)
    version = EPCIS_XML_NAMESPACES.get(qname.namespace) or EPCIS_QUERY_NAMESPACES.get(qname.namespace)
    if version is None or qname.localname not in ("EPCISDocument", "EPCISQueryDocument"):
        raise CaptureDocumentError(
            f"The root element is {root.tag}; send an EPCISDocument (or EPCISQueryDocument) in the EPCIS 1.2 "
            "(urn:epcglobal:epcis:xsd:1) or 2.0 (urn:epcglobal:epcis:xsd:2) namespace."
        )
    schema = _xml_schema(version)
    if not schema.validate(tree):
        entries = list(schema.error_log)
        problems = [f"line {e.line}, column {e.column}: {e.message}" for e in entries[:MAX_DOCUMENT_PROBLEMS]]
        raise CaptureDocumentError(
            f"The document does not follow the EPCIS {version} XSD: " + "; ".join(problems),
            details={"problems": problems, "problem_count": len(entries)},
        )
    event_list = next(root.iter("EventList"), None)
    elements = []
    for child in event_list if event_list is not None else ():
        if not isinstance(child.tag, str):
            continue  # a comment or processing instruction
        if child.tag == "extension":  # EPCIS 1.x puts newer event types (TransformationEvent) in an <extension>
            elements.extend(c for c in child if isinstance(c.tag, str))
        else:
            elements.append(child)
    return version, [
        (_xml_event_dict(element), f"event {index + 1} (line {element.sourceline})")
        for index, element in enumerate(elements)
    ]


def _text(element: etree._Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _xml_fields(element: etree._Element) -> list[etree._Element]:
    """The standard (unqualified) fields of an event, wherever its version puts them: directly, or under
    ``baseExtension`` / ``extension`` (EPCIS 1.x)."""
    fields = []
    for child in element:
        if not isinstance(child.tag, str) or etree.QName(child).namespace:
            continue  # a vendor extension element
        if child.tag in ("baseExtension", "extension"):
            fields.extend(_xml_fields(child))
        else:
            fields.append(child)
    return fields


def _xml_event_dict(element: etree._Element) -> dict:
    """An XML event as the JSON event it stands for (the same keys), so both syntaxes share one normalisation."""
    event: dict[str, Any] = {"type": etree.QName(element).localname}
    for child in _xml_fields(element):
        tag = child.tag
        if tag in ("epcList", "childEPCs", "inputEPCList", "outputEPCList"):
            event[tag] = [_text(epc) for epc in child if isinstance(epc.tag, str)]
        elif tag in ("readPoint", "bizLocation"):
            event[tag] = {"id": _text(child.find("id"))}
        elif tag == "bizTransactionList":
            event[tag] = [
                {"type": bt.get("type", ""), "bizTransaction": _text(bt)} for bt in child.iter("bizTransaction")
            ]
        elif tag == "sourceList":
            event[tag] = [{"type": s.get("type", ""), "source": _text(s)} for s in child.iter("source")]
        elif tag == "destinationList":
            event[tag] = [{"type": d.get("type", ""), "destination": _text(d)} for d in child.iter("destination")]
        elif tag == "ilmd":
            event[tag] = {
                (
                    f"cbvmda:{etree.QName(m).localname}" if etree.QName(m).namespace == CBVMDA_NAMESPACE else m.tag
                ): _text(m)
                for m in child
                if isinstance(m.tag, str) and len(m) == 0
            }
        elif tag == "errorDeclaration":
            event[tag] = {
                "declarationTime": _text(child.find("declarationTime")),
                "reason": _text(child.find("reason")),
                "correctiveEventIDs": [_text(c) for c in child.iter("correctiveEventID")],
            }
        elif tag in UNSUPPORTED_CONTENT:
            event[tag] = [True] if len(child) else []
        elif len(child) == 0:
            event[tag] = _text(child)
    return event


# --- one event ------------------------------------------------------------------------------------------------------


def _cbv_term(kind: str, value: Any) -> str:
    """A CBV term as its bare word, whichever of its URI forms was sent; other values unchanged."""
    if not isinstance(value, str):
        return ""
    for prefix in _CBV_PREFIXES[kind]:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value.strip()


def _time(value: Any, name: str, problems: list[str]) -> datetime | None:
    if not isinstance(value, str) or not value:
        problems.append(f"{name} is missing; give it as an ISO 8601 time with its offset, e.g. 2025-03-03T08:00:00Z.")
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        problems.append(f"{name} {value!r} is no ISO 8601 time; write it like 2025-03-03T08:00:00.000+01:00.")
        return None
    if parsed.tzinfo is None:
        problems.append(f"{name} {value!r} has no time zone; add its offset (Z or +01:00).")
        return None
    return parsed


def _pairs(items: Any, value_key: str, kind: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get(value_key), str):
            pairs.append((_cbv_term(kind, item.get("type", "")), item[value_key].strip()))
    return pairs


def _event(index: int, raw: Any, where: str, reader: EpcReader) -> CaptureEvent:
    if not isinstance(raw, dict):
        event = CaptureEvent(index=index, where=where, type=type(raw).__name__)
        event.problems.append("The event is not an object.")
        return event
    event = CaptureEvent(index=index, where=where, type=str(raw.get("type", "")))
    problems = event.problems
    event.action = str(raw.get("action", "") or "")
    event.biz_step = _cbv_term("bizStep", raw.get("bizStep", ""))
    event.disposition = _cbv_term("disposition", raw.get("disposition", ""))
    event.event_time = _time(raw.get("eventTime"), "eventTime", problems)
    event.time_zone_offset = str(raw.get("eventTimeZoneOffset", "") or "")
    event.event_id = str(raw.get("eventID", "") or "").strip()
    if len(event.event_id) > 255:
        problems.append("eventID is longer than 255 characters; use a urn:uuid or an ni:///sha-256 event hash.")
    epc_key = "childEPCs" if event.type == "AggregationEvent" else "epcList"
    epcs = raw.get(epc_key) or []
    event.epcs = [str(e) for e in epcs] if isinstance(epcs, list) else []
    event.parent_id = str(raw.get("parentID", "") or "").strip()
    event.read_point = _location(raw.get("readPoint"))
    event.biz_location = _location(raw.get("bizLocation"))
    event.biz_transactions = _pairs(raw.get("bizTransactionList"), "bizTransaction", "btt")
    event.sources = _pairs(raw.get("sourceList"), "source", "sdt")
    event.destinations = _pairs(raw.get("destinationList"), "destination", "sdt")
    event.ilmd = _ilmd(raw.get("ilmd"))
    event.unsupported = [text for key, text in UNSUPPORTED_CONTENT.items() if raw.get(key)]
    declaration = raw.get("errorDeclaration")
    if isinstance(declaration, dict):
        corrective = declaration.get("correctiveEventIDs") or []
        event.error_declaration = ErrorDeclaration(
            declaration_time=_time(declaration.get("declarationTime"), "errorDeclaration.declarationTime", problems),
            reason=_cbv_term("er", declaration.get("reason", "")),
            corrective_event_ids=tuple(str(c) for c in corrective) if isinstance(corrective, list) else (),
        )
    if event.type in ("ObjectEvent", "AggregationEvent"):
        _read_packs(event, reader)
    else:
        event.packs = [None] * len(event.epcs)
    return event


def _location(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"].strip()
    return ""


def _ilmd(value: Any) -> dict[str, str]:
    ilmd = {}
    for key, item in value.items() if isinstance(value, dict) else ():
        for prefix in _CBVMDA_PREFIXES:
            if key.startswith(prefix) and isinstance(item, str):
                ilmd[key[len(prefix) :]] = item.strip()
    return ilmd


def _read_packs(event: CaptureEvent, reader: EpcReader) -> None:
    bad = []
    for epc in event.epcs:
        pack = reader.read(epc)
        event.packs.append(pack)
        if pack is None:
            bad.append(reader.problem)
    if bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        event.problems.append(f"{len(bad)} of its EPCs cannot be taken: {shown}.")
    if event.parent_id:
        event.parent = reader.read(event.parent_id)
        if event.parent is None:
            event.problems.append(f"parentID: {reader.problem}.")
