"""SAP Information Collaboration Hub for Life Sciences (ICH): the serial number response an MAH's ICH sends a CMO.

Public source: SAP's "Message Specification for Invited Partners — SAP Information Collaboration Hub for Life
Sciences" (also published as "Definition of Interface for Serial Number Management, Message Specification for
Invited CMO Partners"). Its document history describes the asynchronous serial number response
(``Async_Serial_Number_Response`` XSD, v3.1), the correction of the list's repeated element to ``SerialNumber``
(v3.3), message splitting (v3.4) and responses that carry crypto codes for Russia (v3.9, v3.11). The XSD itself is
distributed to invited partners, not published, so this layout reads the shape the specification describes — a
response naming the ``GTIN`` (or ``NTIN``) and listing ``SerialNumber`` elements, each either the serial as text or
a group holding the serial with its ``CryptoKey`` (AI 91) and ``CryptoCode`` (AI 92) — inside any envelope
(StandardBusinessDocumentHeader, SOAP, PI/PO). Serials may also come as EPC URNs or GS1 AI data.

Element names are matched by local name, ignoring namespaces, case and underscores; a customer's ICH configuration
may use other names, which then need adding here.
"""

from collections.abc import Iterator
from typing import BinaryIO

from serialization.importers.base import Row, RowProblem
from serialization.importers.xml_stream import XmlLayout, parse_xml

LAYOUT = XmlLayout.define(
    name="SAP ICH",
    expected="<SerialNumber> elements of a serial number response that names the <GTIN>",
    serial_tags=("SerialNumber", "EPC"),
    product_tags=("GTIN", "NTIN", "ProductCode"),
    parameters=(("CryptoKey", "91"), ("CryptoCode", "92"), ("AI91", "91"), ("AI92", "92")),
)


def parse(stream: BinaryIO) -> Iterator[Row | RowProblem]:
    return parse_xml(stream, LAYOUT)
