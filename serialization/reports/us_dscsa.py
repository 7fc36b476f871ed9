"""United States (DSCSA): the EPCIS 1.2 XML document of one shipment, as trading partners exchange it —
commissioning of what was shipped (lot and expiry in the ILMD), its aggregation, and the shipping event.

The document itself comes from the EPCIS writer (``serialization.epcis.writer``) and is validated against the
EPCIS 1.2 XSD before it may be queued. Checked from master data first: a GTIN product code that carries the
product's NDC (national code AI 715 for US; the GTIN-14 of a 10-digit NDC is ``003`` + NDC + check digit), the
company prefix length (the EPC URNs need it), lot, expiry, serials of at most 20 characters, and a shipping report
of this batch that shipped something.
"""

from typing import IO

from masterdata import gs1
from masterdata.models import Product
from serialization.epcis import EpcisError
from serialization.epcis.validation import validate_epcis_document
from serialization.epcis.writer import EpcisScope, write_epcis_document
from serialization.models import LineReport, PackEvent
from serialization.reports.base import (
    Problem,
    Problems,
    Subject,
    Written,
    batch_label,
    check_lot_and_expiry,
    check_market_and_status,
    check_national_codes,
    check_product_code,
    check_serial_syntax,
    check_units,
    product_label,
    reported_units,
    written_document,
)

KIND = "us_dscsa"
CONTENT_TYPE = "application/xml"
EXTENSION = "xml"
WHAT = "DSCSA EPCIS 1.2 shipment document"
EPCIS_VERSION = "1.2"
EPCIS_SYNTAX = "xml"
NEEDS_SHIPMENT = True


def shipped_events(report: LineReport):
    return PackEvent.objects.filter(report=report, action=PackEvent.Action.SHIPPED)


def check(subject: Subject) -> list[Problem]:
    found = Problems()
    product, batch, market = subject.product, subject.batch, subject.market
    check_market_and_status(subject, found)
    check_product_code(product, found, schemas=[Product.CodeSchema.GTIN])
    for code in check_national_codes(product, [market], found):
        _check_ndc_in_gtin(product, code.value, found)
    check_lot_and_expiry(batch, found)
    report = subject.shipping_report
    if report is None:
        found.add(
            "shipping_report",
            f"{market.code} reports a shipment: give the shipping report (its report id) of {batch_label(batch)}.",
        )
    elif report.kind != LineReport.Kind.SHIPPING or report.status != LineReport.Status.APPLIED:
        found.add(
            "shipping_report",
            f"report {report.report_id} is a {report.get_status_display().lower()} {report.get_kind_display().lower()}"
            " report; choose an applied shipping report.",
        )
    elif report.order is None or report.order.batch_id != batch.pk:
        found.add("shipping_report", f"shipping report {report.report_id} did not ship {batch_label(batch)}.")
    elif not shipped_events(report).exists():
        found.add("shipping_report", f"shipping report {report.report_id} shipped nothing.")
    units = reported_units(batch)
    if check_units(subject, found, units):
        check_serial_syntax(subject, found, units)
    return found.items


def _check_ndc_in_gtin(product: Product, ndc: str, found: Problems) -> None:
    try:
        expected = gs1.gtin_from_ndc(ndc)
    except gs1.GS1Error as exc:
        found.add(
            "product.national_codes.US", f"{product_label(product)}: {exc} Correct it in Products → National codes."
        )
        return
    if expected != product.product_code:
        found.add(
            "product.product_code",
            f"{product_label(product)}: the GTIN does not carry the product's NDC {ndc} (its GTIN would be {expected})"
            " — correct the NDC in Products → National codes or the product code.",
        )


def write(subject: Subject, out: IO[bytes]) -> Written:

    report = subject.shipping_report
    try:
        write_epcis_document(
            out, scope=EpcisScope(shipping_report_id=report.pk), version=EPCIS_VERSION, syntax=EPCIS_SYNTAX
        )
    except EpcisError as exc:
        return Written(items=0, problems=[Problem(exc.field or "document", exc.message)])
    errors = validate_epcis_document(written_document(out), version=EPCIS_VERSION, syntax=EPCIS_SYNTAX)
    problems = [Problem("document", f"EPCIS {EPCIS_VERSION} schema: {error}") for error in errors]
    return Written(items=shipped_events(report).count(), problems=problems)
