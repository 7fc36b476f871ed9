"""Russia (MDLP / Chestny Znak): the batch's units introduced into circulation, each with its crypto tail — the
crypto key (AI 91, 4 characters) and crypto code (AI 92, 44 characters) the operator issued with the serial, kept
as the list pool's extra parameters — and the SSCC it is packed in.

Checked before sending: a GTIN product code, lot, expiry, the manufacturing date (the operator asks for it), serials
of the market's length (13), every crypto parameter the market requires present and well-formed (never echoed in a
message: they are the operator's secrets), and aggregation when the market requires it.

Document (``application/json``)::

    {"format": "mdlp-introduction", "formatVersion": "1.0", "market": "RU", "gtin", "productName", "batch",
     "expirationDate", "productionDate", "unitCount",
     "sgtins": [{"sgtin": gtin + serial, "serial", "cryptoKey", "cryptoCode", "parentSscc"}, ...]}
"""

from typing import IO

from django.db.models import JSONField, OuterRef, QuerySet, Subquery

from masterdata import gs1
from masterdata.models import Product
from serialization.models import ListedSerial, Pack
from serialization.reports.base import (
    CHUNK,
    ITEMS,
    LISTED_PER_RULE,
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
    check_units,
    stream_rows,
    write_json,
)

KIND = "ru_mdlp"
CONTENT_TYPE = "application/json"
EXTENSION = "json"
WHAT = "MDLP report"

PARAMETER_TITLES = {"91": "crypto key", "92": "crypto code"}
DOCUMENT_KEYS = {"91": "cryptoKey", "92": "cryptoCode"}


def units_in_circulation(subject: Subject) -> QuerySet[Pack]:
    """Units that enter circulation: commissioned and not decommissioned (those are withdrawn by another report)."""
    return Pack.objects.filter(batch=subject.batch, level=0).exclude(status=Pack.Status.DECOMMISSIONED)


def with_parameters(units: QuerySet[Pack]) -> QuerySet[Pack]:
    """Each unit with its list pool serial's extra parameters (one correlated lookup on the (product code, serial)
    unique index per row, inside the one streamed query) and its parent's SSCC."""
    listed = ListedSerial.objects.filter(product_code=OuterRef("product_code"), serial=OuterRef("serial"))
    return units.annotate(crypto=Subquery(listed.values("parameters")[:1], output_field=JSONField()))


def check(subject: Subject) -> list[Problem]:
    found = Problems()
    product, batch, market = subject.product, subject.batch, subject.market
    check_market_and_status(subject, found)
    check_product_code(product, found, schemas=[Product.CodeSchema.GTIN])
    check_required_fields(product, found, {"name": "product name"}, market=market)
    check_national_codes(product, [market], found)
    check_lot_and_expiry(batch, found)
    if batch.manufactured_on is None:
        found.add(
            "batch.manufactured_on",
            f"{batch_label(batch)}: manufacturing date missing — {market.code} reports carry it; set it on the batch.",
        )
    units = units_in_circulation(subject)
    if check_units(subject, found, units):
        _check_serials_and_crypto(subject, found, units)
        check_aggregation(subject, found, units)
    return found.items


def _check_serials_and_crypto(subject: Subject, found: Problems, units: QuerySet[Pack]) -> None:
    """One streamed pass: serial length and character set, and each required crypto parameter."""
    market = subject.market
    required = [ai for ai in market.extra_serial_parameters if ai in PARAMETER_TITLES]
    wrong_length, missing, malformed = [], [], []
    counts = {"length": 0, "missing": 0, "malformed": 0}
    rows = with_parameters(units).values_list("serial", "crypto").order_by("serial").iterator(chunk_size=CHUNK)
    for serial, params in rows:
        if len(serial) != market.serial_length or any(c not in gs1.CHARSET_82 for c in serial):
            counts["length"] += 1
            if len(wrong_length) < LISTED_PER_RULE:
                wrong_length.append(serial)
        params = params if isinstance(params, dict) else {}
        absent = [ai for ai in required if not params.get(ai)]
        if absent:
            counts["missing"] += 1
            if len(missing) < LISTED_PER_RULE:
                missing.append((serial, absent))
            continue
        for ai in required:
            try:
                gs1.validate_ai_value(ai, params[ai])
            except gs1.GS1Error:
                counts["malformed"] += 1
                if len(malformed) < LISTED_PER_RULE:
                    malformed.append((serial, ai))
                break
    found.add_listed(
        "packs.serial",
        (
            f"serial {serial} is not {market.serial_length} characters of GS1 set 82 — {market.code} serials are "
            "issued by the operator with exactly that length"
            for serial in wrong_length
        ),
        total=counts["length"],
        summary="{more} more serials have the wrong length",
    )
    found.add_listed(
        "packs.crypto",
        (
            f"serial {serial}: {' and '.join(f'{PARAMETER_TITLES[ai]} (AI {ai})' for ai in absent)} missing — the "
            "serial came without it; import the operator's codes with their crypto tail into the list pool"
            for serial, absent in missing
        ),
        total=counts["missing"],
        summary="{more} more serials lack their crypto parameters",
    )
    found.add_listed(
        "packs.crypto",
        (
            f"serial {serial}: {PARAMETER_TITLES[ai]} (AI {ai}) is not "
            f"{'4' if ai == '91' else '44'} characters of GS1 set 82 — import the operator's value again"
            for serial, ai in malformed
        ),
        total=counts["malformed"],
        summary="{more} more serials have a malformed crypto parameter",
    )


def write(subject: Subject, out: IO[bytes]) -> Written:
    product, batch, market = subject.product, subject.batch, subject.market
    units = units_in_circulation(subject)
    expected = units.count()
    tally = SerialTally(WHAT)
    required = [ai for ai in market.extra_serial_parameters if ai in DOCUMENT_KEYS]

    def sgtins():
        rows = stream_rows(with_parameters(units), "product_code", "serial", "crypto", "parent__serial")
        for code, serial, params, parent in rows:
            tally.see(code, serial)
            item = {"sgtin": f"{code}{serial}", "serial": serial}
            for ai in required:
                item[DOCUMENT_KEYS[ai]] = (params or {}).get(ai)
            item["parentSscc"] = parent
            yield item

    head = {
        "format": "mdlp-introduction",
        "formatVersion": "1.0",
        "market": market.code,
        "gtin": product.product_code,
        "productName": product.name,
        "batch": batch.lot,
        "expirationDate": batch.expiry,
        "productionDate": batch.manufactured_on.isoformat() if batch.manufactured_on else None,
        "unitCount": expected,
        "sgtins": ITEMS,
    }
    write_json(out, head, sgtins())
    return Written(items=tally.count, problems=tally.problems(expected=expected))
