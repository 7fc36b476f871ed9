"""TraceLink serial number lists, as TraceLink's Serial Number Exchange (SNX) hands them to a site or line system.

Public sources this layout follows (TraceLink OPUS documentation and one open-source integration):

- "How Integration Works" (Serialized Operations Manager SOAP API): the example ``serialNumbersRequestResponse`` →
  ``SNResponse`` with ``ReceivingSystem``/``SendingSystem``, ``EncodingType`` (SGTIN), ``IDType``,
  ``ObjectKey`` (``<Name>GTIN</Name><Value>…</Value>``) and the numbers as repeated ``<SerialNo>`` elements in
  a ``SerialNumberList`` (``RandomizedNumberList`` for randomised ranges);
- "SNFormat" enumerators: each ``SerialNo`` is either AI data without parentheses (``01<GTIN>21<serial>``), an EPC
  pure-identity URI (``urn:epc:id:sgtin:…``) or an EPC tag URI (``urn:epc:tag:sgtin-198:…``) — all three are
  decoded, and the GTIN they carry must be the pool's;
- "Serial Number Manager Response Guidelines (Verify Brand, and Verify Brand for Russia Crypto Codes)": the
  ``CodeRequestReport`` with ``AssociatedProducts/AssociatedProduct`` (``Type`` GTIN/NTIN, ``Value`` a class-level
  URN such as ``urn:epc:id:sgtin:0369999.039801``) and ``UIDs/UID`` — either the URN as text, or, for Russia,
  ``<UID><URN>…</URN><CryptoKey>…</CryptoKey><CryptoCode>…</CryptoCode></UID>`` (stored as AI 91 / AI 92);
- SerialLab's open-source ``gs123`` tests, which carry a real-world ``RandomizedNumberList`` of AI-format
  ``SerialNo`` values in the same SOAP envelope.

TraceLink maps are configured per customer ("map versions"): element names are matched by local name, ignoring
namespaces, case and underscores, and a customer's configuration may still need a name added here.
"""

from collections.abc import Iterator
from typing import BinaryIO

from serialization.importers.base import Row, RowProblem
from serialization.importers.xml_stream import XmlLayout, parse_xml

LAYOUT = XmlLayout.define(
    name="TraceLink",
    expected="<SerialNo> elements of an SNResponse (or <UID> elements of a CodeRequestReport)",
    serial_tags=("SerialNo", "URN"),
    item_tags=("UID",),
    product_tags=("GTIN", "NTIN"),
    keyed_product_tags=("ObjectKey", "AssociatedProduct"),
    parameters=(("CryptoKey", "91"), ("CryptoCode", "92")),
)


def parse(stream: BinaryIO) -> Iterator[Row | RowProblem]:
    return parse_xml(stream, LAYOUT)
