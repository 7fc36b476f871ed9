"""Saudi Arabia (SFDA RSD): the batch's EPCIS document with its SSCC aggregation — commissioning (lot and expiry in
the ILMD), the packing of units into SSCC cases and pallets, and decommissioning with reasons. RSD takes EPCIS 1.2
XML; the document comes from the EPCIS writer (``serialization.epcis.writer``) and is validated against the XSD.

Checked from master data and pack data first: a GTIN product code with its company prefix length, lot, expiry,
serials of at most 20 characters drawn from a randomised pool (SFDA requires randomised serials), and every unit
still in the supply chain packed in an SSCC container (the market requires aggregation).
"""

from typing import IO

from django.db.models import QuerySet

from masterdata.models import Product
from serialization.epcis import EpcisError
from serialization.epcis.validation import validate_epcis_document
from serialization.epcis.writer import EpcisScope, write_epcis_document
from serialization.models import Pack
from serialization.reports.base import (
    LISTED_PER_RULE,
    Problem,
    Problems,
    Subject,
    Written,
    check_aggregation,
    check_lot_and_expiry,
    check_market_and_status,
    check_national_codes,
    check_product_code,
    check_serial_syntax,
    check_units,
    reported_units,
    written_document,
)

KIND = "sa_rsd"
CONTENT_TYPE = "application/xml"
EXTENSION = "xml"
WHAT = "RSD EPCIS document"
EPCIS_VERSION = "1.2"
EPCIS_SYNTAX = "xml"


def check(subject: Subject) -> list[Problem]:
    found = Problems()
    product, batch, market = subject.product, subject.batch, subject.market
    check_market_and_status(subject, found)
    check_product_code(product, found, schemas=[Product.CodeSchema.GTIN])
    check_national_codes(product, [market], found)
    check_lot_and_expiry(batch, found)
    units = reported_units(batch)
    if check_units(subject, found, units):
        check_serial_syntax(subject, found, units)
        _check_randomised(subject, found, units)
        check_aggregation(subject, found, units)
    return found.items


def _check_randomised(subject: Subject, found: Problems, units: QuerySet[Pack]) -> None:
    """Serials come from randomised pools when the market requires it (one grouped query over the pools used)."""
    market = subject.market
    if not market.randomisation_required:
        return
    sequential = units.filter(pool__randomised=False)
    pools = list(sequential.order_by().values_list("pool__name").distinct()[:LISTED_PER_RULE])
    count = sequential.count()
    if count:
        names = ", ".join(name for (name,) in pools)
        found.add(
            "packs.serial",
            f"{count:,} serials of batch {subject.batch.lot} come from sequential pools ({names}); {market.code} "
            "requires randomised serials — pack the batch with serials from a randomised pool.",
        )


def write(subject: Subject, out: IO[bytes]) -> Written:

    try:
        write_epcis_document(
            out, scope=EpcisScope(batch_id=subject.batch.pk), version=EPCIS_VERSION, syntax=EPCIS_SYNTAX
        )
    except EpcisError as exc:
        return Written(items=0, problems=[Problem(exc.field or "document", exc.message)])
    errors = validate_epcis_document(written_document(out), version=EPCIS_VERSION, syntax=EPCIS_SYNTAX)
    problems = [Problem("document", f"EPCIS {EPCIS_VERSION} schema: {error}") for error in errors]
    return Written(items=Pack.objects.filter(batch=subject.batch).count(), problems=problems)
