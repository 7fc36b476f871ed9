"""SAP Advanced Track and Trace for Pharmaceuticals (ATTP): the serial numbers ATTP returns for a serial number
request, as its web service or an XML download delivers them.

Public sources: SAP's ATTP application help (serial number management: serialization profiles, range definitions,
ranges, range requests; serials of 1 to 40 characters per GTIN) and, for the shape of a "number range response",
its predecessor SAP Auto-ID Infrastructure's ``AIDNR01`` IDoc ("contains the GTIN and a block of numbers"). ATTP's
own request/response interface is described only in SAP's partner documentation, so this layout reads the shape
those ABAP-generated messages have: the ``GTIN`` of the request, then the serials either as ``SERIAL_NUMBER`` /
``SERNR`` elements or as ABAP table rows ``<item>`` holding ``SERIAL_NUMBER`` (and, for Russia, ``CRYPTO_KEY`` /
``CRYPTO_CODE``, stored as AI 91 / AI 92), or as EPC URNs in ``<EPC>`` / ``<SGTIN>`` elements (ATTP speaks EPCIS);
every value may be a bare serial, an EPC URN or GS1 AI data. ATTP allows serials up to 40 characters — a longer
serial than GS1's 20 is reported, not cut.

Element names are matched by local name, ignoring namespaces, case and underscores; a customer's ATTP
configuration (its own service, or a PI/PO mapping in between) may use other names, which then need adding here.
"""

from collections.abc import Iterator
from typing import BinaryIO

from serialization.importers.base import Row, RowProblem
from serialization.importers.xml_stream import XmlLayout, parse_xml

LAYOUT = XmlLayout.define(
    name="SAP ATTP",
    expected="<SERIAL_NUMBER> (or <item><SERIAL_NUMBER>, <EPC>) elements after the request's <GTIN>",
    serial_tags=("SERIAL_NUMBER", "SERNR", "SERIAL", "EPC", "SGTIN"),
    item_tags=("item", "SERIAL_NUMBER_ITEM"),
    product_tags=("GTIN", "NTIN", "PRODUCT_CODE"),
    parameters=(("CRYPTO_KEY", "91"), ("CRYPTO_CODE", "92"), ("AI91", "91"), ("AI92", "92")),
)


def parse(stream: BinaryIO) -> Iterator[Row | RowProblem]:
    return parse_xml(stream, LAYOUT)
