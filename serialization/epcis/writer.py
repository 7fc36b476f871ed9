"""EPCIS documents written as their events are read: 2.0 JSON-LD, 2.0 XML and 1.2 XML.

Nothing is held per EPC: each event's header is written, then its EPCs in blocks of ``EPC_BLOCK`` as the rows
arrive from ``events.EventSource``, then the rest of the event; output is buffered up to ``FLUSH_BYTES`` and handed
to ``out``. The JSON is written as text the same way (``json.dumps`` only ever sees one event's header), so a
million-unit batch takes the same memory as a hundred-unit one.

Vocabulary: every bizStep and disposition is checked against the CBV lists of ``serialization.cbv`` before it is
written. JSON-LD uses the bare CBV terms (``commissioning``), as its schema lists them; both XML versions use the URN
forms (``urn:epcglobal:cbv:bizstep:commissioning``), as the official 1.2 and 2.0 XML examples do — EPCIS 2.0 XML
accepts them, and 1.2 partners (US DSCSA) know no other form. Lot and expiry go into ilmd as
``cbvmda:lotNumber`` / ``cbvmda:itemExpirationDate``: at the event root in 2.0, under ``extension`` in 1.2.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import IO
from xml.sax.saxutils import escape, quoteattr

from serialization import cbv
from serialization.epcis import EpcisError, check_format
from serialization.epcis.events import AGGREGATION_EVENT, EpcisEvent, EpcisScope, EventHeader, EventSource

__all__ = ["EpcisScope", "write_epcis_document"]

JSONLD_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
XML_NAMESPACES = {"1.2": "urn:epcglobal:epcis:xsd:1", "2.0": "urn:epcglobal:epcis:xsd:2"}
CBVMDA_NAMESPACE = "urn:epcglobal:cbv:mda"
EPC_BLOCK = 1_000
FLUSH_BYTES = 1 << 16
# progress() is called about this often (in EPCs), and once at the end.
PROGRESS_EVERY = 10_000


def write_epcis_document(
    out: IO[bytes],
    *,
    scope: EpcisScope,
    version: str = "2.0",
    syntax: str = "json",
    progress: Callable[[int], None] | None = None,
    visible_to=None,
    source: EventSource | None = None,
    creation_date: datetime | None = None,
) -> int:
    """Streams the document into out; returns the number of events. version "2.0" with syntax "json" or "xml";
    "1.2" only "xml".

    ``progress(epcs_written)`` is called every ``PROGRESS_EVERY`` EPCs and once at the end. ``visible_to`` narrows
    the scope to the reports of orders that user may see. ``source`` is an ``EventSource`` made beforehand (a job
    reads its ``total_epcs`` first); by default one is made here. Refuses (``EpcisError``, a 400 naming the field)
    an unknown version/syntax pair, a scope naming nothing or several things, or a shipment that is not an applied
    shipping report.
    """
    check_format(version=version, syntax=syntax)
    if source is None:
        source = EventSource(scope, visible_to=visible_to)
    document = _JsonDocument(out) if syntax == "json" else _XmlDocument(out, version=version)
    return document.write(source.events(), progress=progress, creation_date=creation_date or datetime.now(UTC))


def format_time(value: datetime) -> str:
    """UTC with milliseconds and ``Z``: what both schemas' date-time patterns accept."""
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def _check_vocabulary(header: EventHeader) -> None:
    if not cbv.is_biz_step(header.biz_step):
        raise EpcisError(f"{header.biz_step!r} is not a CBV business step; the document was not written.")
    if header.disposition is not None and not cbv.is_disposition(header.disposition):
        raise EpcisError(f"{header.disposition!r} is not a CBV disposition; the document was not written.")


class _Document:
    """Buffered text output, and the loop over events and their EPCs shared by both syntaxes."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._parts: list[str] = []
        self._size = 0

    def _put(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._parts:
            self._out.write("".join(self._parts).encode())
            self._parts, self._size = [], 0

    def write(self, events: Iterable[EpcisEvent], *, progress, creation_date: datetime) -> int:
        self._start(creation_date)
        count = written = 0
        next_progress = PROGRESS_EVERY
        for event in events:
            _check_vocabulary(event.header)
            self._event_start(event.header, first=count == 0)
            epcs = iter(event.epcs)
            first_block = True
            while block := list(itertools.islice(epcs, EPC_BLOCK)):
                self._put(self._epc_block(block, first=first_block))
                first_block = False
                written += len(block)
                if progress is not None and written >= next_progress:
                    progress(written)
                    next_progress = written + PROGRESS_EVERY
            self._event_end(event.header)
            count += 1
        self._end()
        self._flush()
        if progress is not None:
            progress(written)
        return count

    def _start(self, creation_date: datetime) -> None:
        raise NotImplementedError

    def _event_start(self, header: EventHeader, *, first: bool) -> None:
        raise NotImplementedError

    def _epc_block(self, epcs: list[str], *, first: bool) -> str:
        raise NotImplementedError

    def _event_end(self, header: EventHeader) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError


class _JsonDocument(_Document):
    """EPCIS 2.0 JSON-LD: each event's header through ``json.dumps``, its EPC list spliced in as it is read."""

    def _start(self, creation_date: datetime) -> None:
        head = {
            "@context": [JSONLD_CONTEXT],
            "type": "EPCISDocument",
            "schemaVersion": "2.0",
            "creationDate": format_time(creation_date),
        }
        self._put(json.dumps(head)[:-1] + ', "epcisBody": {"eventList": [')

    def _event_start(self, header: EventHeader, *, first: bool) -> None:
        event = {
            "type": header.event_type,
            "eventTime": format_time(header.event_time),
            "eventTimeZoneOffset": "+00:00",
            "eventID": header.event_id,
        }
        if header.parent_epc is not None:
            event["parentID"] = header.parent_epc
        event["action"] = header.action
        event["bizStep"] = header.biz_step
        if header.disposition is not None:
            event["disposition"] = header.disposition
        if header.read_point:
            event["readPoint"] = {"id": header.read_point}
        if header.biz_location:
            event["bizLocation"] = {"id": header.biz_location}
        if header.lot is not None:
            event["ilmd"] = {"cbvmda:lotNumber": header.lot, "cbvmda:itemExpirationDate": header.expiry.isoformat()}
        key = "childEPCs" if header.event_type == AGGREGATION_EVENT else "epcList"
        self._put(("\n" if first else ",\n") + json.dumps(event)[:-1] + f', "{key}": [')

    def _epc_block(self, epcs: list[str], *, first: bool) -> str:
        return ("\n" if first else ",\n") + ",\n".join(map(encode_basestring_ascii, epcs))

    def _event_end(self, header: EventHeader) -> None:
        self._put("]}")

    def _end(self) -> None:
        self._put("\n]}}\n")


class _XmlDocument(_Document):
    """EPCIS 2.0 or 1.2 XML. EPCs are written without XML escaping: an EPC URN percent-escapes ``& < > "`` (TDS), so
    it never holds a character XML would need escaped."""

    def __init__(self, out: IO[bytes], *, version: str) -> None:
        super().__init__(out)
        self._version = version

    def _start(self, creation_date: datetime) -> None:
        self._put(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<epcis:EPCISDocument xmlns:epcis="{XML_NAMESPACES[self._version]}" '
            f'xmlns:cbvmda="{CBVMDA_NAMESPACE}" schemaVersion="{self._version}" '
            f"creationDate={quoteattr(format_time(creation_date))}>\n<EPCISBody>\n<EventList>\n"
        )

    def _event_start(self, header: EventHeader, *, first: bool) -> None:
        parts = [
            f"<{header.event_type}>",
            f"<eventTime>{format_time(header.event_time)}</eventTime>",
            "<eventTimeZoneOffset>+00:00</eventTimeZoneOffset>",
        ]
        event_id = f"<eventID>{escape(header.event_id)}</eventID>"
        parts.append(event_id if self._version == "2.0" else f"<baseExtension>{event_id}</baseExtension>")
        if header.event_type == AGGREGATION_EVENT:
            parts.append(f"<parentID>{escape(header.parent_epc)}</parentID>\n<childEPCs>")
        else:
            parts.append("\n<epcList>")
        self._put("".join(parts))

    def _epc_block(self, epcs: list[str], *, first: bool) -> str:
        return "".join([f"\n<epc>{epc}</epc>" for epc in epcs])

    def _event_end(self, header: EventHeader) -> None:
        parts = ["\n</childEPCs>" if header.event_type == AGGREGATION_EVENT else "\n</epcList>"]
        parts.append(f"<action>{header.action}</action>")
        parts.append(f"<bizStep>{cbv.biz_step_urn(header.biz_step)}</bizStep>")
        if header.disposition is not None:
            parts.append(f"<disposition>{cbv.disposition_urn(header.disposition)}</disposition>")
        if header.read_point:
            parts.append(f"<readPoint><id>{escape(header.read_point)}</id></readPoint>")
        if header.biz_location:
            parts.append(f"<bizLocation><id>{escape(header.biz_location)}</id></bizLocation>")
        if header.lot is not None:
            ilmd = (
                f"<ilmd><cbvmda:lotNumber>{escape(header.lot)}</cbvmda:lotNumber>"
                f"<cbvmda:itemExpirationDate>{header.expiry.isoformat()}</cbvmda:itemExpirationDate></ilmd>"
            )
            parts.append(ilmd if self._version == "2.0" else f"<extension>{ilmd}</extension>")
        parts.append(f"</{header.event_type}>\n")
        self._put("".join(parts))

    def _end(self) -> None:
        self._put("</EventList>\n</EPCISBody>\n</epcis:EPCISDocument>\n")
