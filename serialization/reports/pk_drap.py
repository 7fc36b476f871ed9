"""Pakistan (DRAP portal): batch production data — the product, where and when the batch was made, how many units
were commissioned and what became of them, and every serial with its status. DRAP keeps it at least five years.

Checked before sending: a GTIN product code with name, generic name, dosage form, strength and pack size; lot and
expiry; the manufacturing date and the manufacturing site with its GLN; at least one commissioned unit.

Document (``application/json``)::

    {"format": "drap-batch-production", "formatVersion": "1.0", "market": "PK",
     "product": {"gtin", "name", "genericName", "dosageForm", "strength", "packSize"},
     "manufacturer": {"name", "site", "siteGln"},
     "batch": {"batchNo", "manufacturingDate", "expiryDate"},
     "production": {"commissioned", "inCirculation", "decommissioned": {"reason": n}},
     "serials": [{"serial", "status"}, ...]}
"""

from typing import IO

from django.db.models import Count

from masterdata.models import Product
from serialization.models import Pack
from serialization.reports.base import (
    ITEMS,
    Problem,
    Problems,
    SerialTally,
    Subject,
    Written,
    batch_label,
    check_aggregation,
    check_lot_and_expiry,
    check_market_and_status,
    check_national_codes,
    check_product_code,
    check_required_fields,
    check_serial_syntax,
    check_units,
    stream_rows,
    unit_packs,
    write_json,
)

KIND = "pk_drap"
CONTENT_TYPE = "application/json"
EXTENSION = "json"
WHAT = "DRAP batch production report"

REQUIRED_PRODUCT_FIELDS = {
    "name": "product (brand) name",
    "common_name": "generic name",
    "dosage_form": "dosage form",
    "strength": "strength",
    "pack_size": "pack size",
}


def check(subject: Subject) -> list[Problem]:
    found = Problems()
    product, batch, market = subject.product, subject.batch, subject.market
    check_market_and_status(subject, found)
    check_product_code(product, found, schemas=[Product.CodeSchema.GTIN])
    check_required_fields(product, found, REQUIRED_PRODUCT_FIELDS, market=market)
    check_national_codes(product, [market], found)
    check_lot_and_expiry(batch, found)
    if batch.manufactured_on is None:
        found.add(
            "batch.manufactured_on",
            f"{batch_label(batch)}: manufacturing date missing — DRAP batch production data starts with it; set it on "
            "the batch.",
        )
    if batch.site is None:
        found.add(
            "batch.site",
            f"{batch_label(batch)}: manufacturing site missing — set the site the batch was made at on the batch.",
        )
    units = unit_packs(batch)
    if check_units(subject, found, units):
        check_serial_syntax(subject, found, units)
        check_aggregation(subject, found, units)
    return found.items


def production_counts(subject: Subject) -> dict:
    """Units by what became of them: one aggregate query."""
    rows = unit_packs(subject.batch).order_by().values("status", "reason").annotate(n=Count("pk"))
    decommissioned: dict[str, int] = {}
    commissioned = in_circulation = 0
    for row in rows:
        commissioned += row["n"]
        if row["status"] == Pack.Status.DECOMMISSIONED:
            decommissioned[row["reason"] or "unspecified"] = (
                decommissioned.get(row["reason"] or "unspecified", 0) + row["n"]
            )
        else:
            in_circulation += row["n"]
    return {
        "commissioned": commissioned,
        "inCirculation": in_circulation,
        "decommissioned": dict(sorted(decommissioned.items())),
    }


def write(subject: Subject, out: IO[bytes]) -> Written:
    product, batch = subject.product, subject.batch
    counts = production_counts(subject)
    tally = SerialTally(WHAT)

    def serials():
        for code, serial, status in stream_rows(unit_packs(batch), "product_code", "serial", "status"):
            tally.see(code, serial)
            yield {"serial": serial, "status": status}

    site = batch.site
    head = {
        "format": "drap-batch-production",
        "formatVersion": "1.0",
        "market": subject.market.code,
        "product": {
            "gtin": product.product_code,
            "name": product.name,
            "genericName": product.common_name,
            "dosageForm": product.dosage_form,
            "strength": product.strength,
            "packSize": product.pack_size,
        },
        "manufacturer": {
            "name": product.owner.name,
            "site": site.name if site else None,
            "siteGln": site.gln if site else None,
        },
        "batch": {
            "batchNo": batch.lot,
            "manufacturingDate": batch.manufactured_on.isoformat() if batch.manufactured_on else None,
            "expiryDate": batch.expiry,
        },
        "production": counts,
        "serials": ITEMS,
    }
    write_json(out, head, serials())
    return Written(items=tally.count, problems=tally.problems(expected=counts["commissioned"]))
