"""EU hub (EMVS) upload: the product's master data and the batch's pack data in one JSON document.

What the hub needs, and so what is checked before anything is sent:

- product master data: product code and its scheme (GTIN, NTIN or PPN), name, common name (INN), pharmaceutical
  form, strength, pack type, pack size, the MAH (name and country), the target markets, and each market's national
  code where that market prints one (AI 710–715: Germany's PZN, France's CIP…);
- batch data: lot, expiry *exactly as printed* (YYMMDD, day 00 kept — never turned into a date), and every
  commissioned serial exactly once with its pack state (Active, Destroyed, Sample…). Units rejected on the line
  never reached the market and are not uploaded.

Document (``application/json``)::

    {"format": "eu-hub-upload", "formatVersion": "1.0", "market": "EU",
     "productMasterData": {"productCode", "productCodeScheme", "productName", "commonName", "pharmaForm",
                           "strength", "packType", "packSize", "mah": {"name", "country", "gln"},
                           "targetMarkets": [...], "nationalCodes": [{"market", "ai", "value"}]},
     "batch": {"batchId", "expiryDate", "manufacturingDate", "packCount",
               "packs": [{"serialNumber", "state"}, ...]}}
"""

from typing import IO

from masterdata.models import Market, Product
from serialization import cbv
from serialization.reports.base import (
    ITEMS,
    Problem,
    Problems,
    SerialTally,
    Subject,
    Written,
    check_aggregation,
    check_lot_and_expiry,
    check_market_and_status,
    check_national_codes,
    check_product_code,
    check_required_fields,
    check_serial_syntax,
    check_units,
    eu_state,
    reported_units,
    stream_rows,
    target_markets,
    write_json,
)

KIND = "eu_hub"
CONTENT_TYPE = "application/json"
EXTENSION = "json"
WHAT = "EU hub upload"

# Product master data fields the hub requires, by what the hub calls them.
REQUIRED_PRODUCT_FIELDS = {
    "name": "product name",
    "common_name": "common name (INN)",
    "dosage_form": "pharmaceutical form",
    "strength": "strength",
    "pack_type": "pack type",
    "pack_size": "pack size",
}


def check(subject: Subject) -> list[Problem]:
    found = Problems()
    product, batch, market = subject.product, subject.batch, subject.market
    check_market_and_status(subject, found)
    check_product_code(product, found)
    check_required_fields(product, found, REQUIRED_PRODUCT_FIELDS, market=market)
    owner = product.owner
    if not owner.country:
        found.add(
            "product.owner.country",
            f"MAH {owner.name}: country missing — the EU hub registers the MAH with its country; set it in Companies.",
        )
    check_national_codes(product, target_markets(subject, reporting_format=Market.ReportingFormat.EU_HUB), found)
    check_lot_and_expiry(batch, found)
    units = reported_units(batch)
    if check_units(subject, found, units):
        check_serial_syntax(subject, found, units)
        check_aggregation(subject, found, units)
        _check_states(subject, found, units)
    return found.items


def _check_states(subject: Subject, found: Problems, units) -> None:
    """Every pack has a state the hub knows (a decommissioning reason outside the CBV table has none)."""
    unknown = [
        (serial, reason)
        for serial, status, reason, state in units.exclude(eu_state__in=cbv.EU_STATES)
        .values_list("serial", "status", "reason", "eu_state")
        .iterator(chunk_size=1000)
        if eu_state(status, reason, state) not in cbv.EU_STATES
    ]
    found.add_listed(
        "packs.state",
        (
            f"serial {serial}: no EU hub state for decommissioning reason {reason!r} — use one of "
            f"{', '.join(cbv.DECOMMISSION_REASONS)}"
            for serial, reason in unknown
        ),
        total=len(unknown),
        summary="{more} more packs have no EU hub state",
    )


def write(subject: Subject, out: IO[bytes]) -> Written:
    product, batch = subject.product, subject.batch
    markets = target_markets(subject, reporting_format=Market.ReportingFormat.EU_HUB)
    codes = check_national_codes(product, markets, Problems())
    units = reported_units(batch)
    expected = units.count()
    tally = SerialTally(WHAT)

    def packs():
        for code, serial, status, reason, state in stream_rows(
            units, "product_code", "serial", "status", "reason", "eu_state"
        ):
            tally.see(code, serial)
            yield {"serialNumber": serial, "state": eu_state(status, reason, state)}

    head = {
        "format": "eu-hub-upload",
        "formatVersion": "1.0",
        "market": subject.market.code,
        "productMasterData": _master_data(product, markets, codes),
        "batch": {
            "batchId": batch.lot,
            # As printed: "261200" stays "261200" (end of month), never a computed date.
            "expiryDate": batch.expiry,
            "manufacturingDate": batch.manufactured_on.isoformat() if batch.manufactured_on else None,
            "packCount": expected,
            "packs": ITEMS,
        },
    }
    write_json(out, head, packs())
    return Written(items=tally.count, problems=tally.problems(expected=expected))


def _master_data(product: Product, markets: list[Market], codes) -> dict:
    owner = product.owner
    return {
        "productCode": product.product_code,
        "productCodeScheme": product.code_schema,
        "productName": product.name,
        "commonName": product.common_name,
        "pharmaForm": product.dosage_form,
        "strength": product.strength,
        "packType": product.pack_type,
        "packSize": product.pack_size,
        "mah": {"name": owner.name, "country": owner.country, "gln": owner.gln or None},
        "targetMarkets": [market.code for market in markets],
        "nationalCodes": [
            {"market": code.market.code, "ai": code.ai, "value": code.value}
            for code in sorted(codes, key=lambda c: c.market.code)
        ],
    }
