"""What every market report shares: the problems found before anything is sent, the checks of master data and pack
data that several markets make, and the streaming helpers the document writers use.

A report is checked in two steps, both before a submission is queued:

1. ``check`` reads master data and counts pack data with set-based queries (a handful of queries, whatever the
   batch size) and lists *every* problem, by field, with the fix — wrong master data is what regulators reject
   most often;
2. ``write`` streams the document from the database in serial order and checks on the way what only the document
   shows: each serial exactly once (duplicates are adjacent in sorted order, so this needs no memory per serial),
   and the same number of serials as step 1 counted.
"""

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from django.db.models import Count, Q, QuerySet

from audit.exceptions import DomainError
from masterdata import gs1
from masterdata.models import Market, Product, ProductNationalCode
from serialization import cbv
from serialization.models import Batch, Pack

# Every problem of a rule is counted; this many of them are listed one by one.
LISTED_PER_RULE = 20
# Rows fetched per round trip while a document is streamed.
CHUNK = 5_000
# Production is over in these statuses: pack data is complete and may be reported.
REPORTABLE_STATUSES = (Batch.Status.COMPLETED, Batch.Status.RECONCILED, Batch.Status.RELEASED)


@dataclass(frozen=True)
class Problem:
    """One reason a report cannot be sent: the field it is about and what is wrong, with the fix."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class ReportRefused(DomainError):
    """A report failed its checks; nothing was queued. ``details["problems"]`` lists every problem by field."""

    code = "report_invalid"

    def __init__(self, problems: list[Problem], *, what: str) -> None:
        count = len(problems)
        first = "; ".join(p.message for p in problems[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        super().__init__(
            f"The {what} cannot be sent: {count} problem{'s' if count != 1 else ''} — {first}{more}. Fix them and "
            "build the report again.",
            field="problems",
            details={"problems": [p.as_dict() for p in problems]},
        )
        self.problems = problems


@dataclass(frozen=True)
class Subject:
    """What a report is about: a batch for one market, or (US DSCSA) one shipment of a batch."""

    market: Market
    batch: Batch
    shipping_report: object = None  # serialization.models.LineReport of kind shipping

    @property
    def product(self) -> Product:
        return self.batch.product


@dataclass
class Problems:
    """Problems collected while checking, capped per rule so a million bad serials make a readable list."""

    items: list[Problem] = field(default_factory=list)

    def add(self, field_name: str, message: str) -> None:
        self.items.append(Problem(field_name, message))

    def add_listed(self, field_name: str, messages: Iterable[str], *, total: int, summary: str) -> None:
        """Up to LISTED_PER_RULE ``messages`` of one rule, then ``summary`` (with {more}) for the rest of ``total``."""
        listed = 0
        for message in messages:
            if listed == LISTED_PER_RULE:
                break
            self.add(field_name, message)
            listed += 1
        if total > listed:
            self.add(field_name, summary.format(more=total - listed, total=total))

    def __bool__(self) -> bool:
        return bool(self.items)


@dataclass(frozen=True)
class Written:
    """What a writer produced: how many serials it wrote and what it found on the way."""

    items: int
    problems: list[Problem]


class SerialTally:
    """Counts the serials a writer streams in sorted order and notes any that comes twice (adjacent when sorted)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.duplicates: list[str] = []
        self.duplicate_count = 0
        self._previous: tuple[str, str] | None = None

    def see(self, product_code: str, serial: str) -> None:
        key = (product_code, serial)
        if key == self._previous:
            self.duplicate_count += 1
            if len(self.duplicates) < LISTED_PER_RULE:
                self.duplicates.append(serial)
        self._previous = key
        self.count += 1

    def problems(self, *, expected: int) -> list[Problem]:
        found = Problems()
        found.add_listed(
            "packs.serial",
            (
                f"serial {serial} appears twice in the {self.what}; each serial is reported once"
                for serial in self.duplicates
            ),
            total=self.duplicate_count,
            summary="{more} more serials appear twice in the " + self.what,
        )
        if self.count - self.duplicate_count != expected:
            found.add(
                "packs",
                f"the {self.what} holds {self.count - self.duplicate_count:,} serials but the batch has {expected:,} "
                "to report: packs changed while it was written — build the report again.",
            )
        return found.items


# --- names used in messages ---------------------------------------------------------------------------------------


def product_label(product: Product) -> str:
    return f"product {product.product_code}"


def batch_label(batch: Batch) -> str:
    return f"batch {batch.lot}"


# --- shared checks ------------------------------------------------------------------------------------------------


def check_market_and_status(subject: Subject, found: Problems, *, statuses=REPORTABLE_STATUSES) -> None:
    """The product is registered for the market, the batch is meant for it, and production is over."""
    market, batch, product = subject.market, subject.batch, subject.product
    if not product.markets.filter(pk=market.pk).exists():
        found.add(
            "product.markets",
            f"{product_label(product)} is not registered for market {market.code} — add {market.code} to the "
            "product's markets in Products.",
        )
    if not batch.markets.filter(pk=market.pk).exists():
        found.add(
            "batch.markets",
            f"{batch_label(batch)} is not meant for market {market.code} — add {market.code} to the batch's markets.",
        )
    if batch.status not in statuses:
        allowed = " or ".join(Batch.Status(s).label.lower() for s in statuses)
        found.add(
            "batch.status",
            f"{batch_label(batch)} is {batch.get_status_display().lower()}; {market.code} reports are sent for a "
            f"batch that is {allowed}.",
        )


def check_product_code(product: Product, found: Problems, *, schemas: Iterable[str] | None = None) -> None:
    """The product code is a valid GTIN/NTIN (or PPN) with the company prefix length EPC URNs need."""
    label = product_label(product)
    if schemas is not None and product.code_schema not in schemas:
        allowed = " or ".join(Product.CodeSchema(s).label for s in schemas)
        found.add(
            "product.code_schema",
            f"{label} is identified by {product.get_code_schema_display()}; this market needs {allowed}.",
        )
        return
    try:
        if product.code_schema == Product.CodeSchema.PPN:
            gs1.validate_ppn(product.product_code)
            return
        gs1.validate_ai_value("01", product.product_code)
    except gs1.GS1Error as exc:
        found.add("product.product_code", f"{label}: {exc}")
        return
    if product.company_prefix_length is None:
        found.add(
            "product.company_prefix_length",
            f"{label}: company prefix length missing — set it in Products (it is needed for the EPC identifiers).",
        )


def check_required_fields(product: Product, found: Problems, fields: dict[str, str], *, market: Market) -> None:
    """Each of ``fields`` (model field → what the regulator calls it) is filled in on the product."""
    for name, title in fields.items():
        value = getattr(product, name)
        if value in (None, ""):
            found.add(
                f"product.{name}",
                f"{product_label(product)}: {title} missing — {market.code} needs it; fill it in Products.",
            )


def target_markets(subject: Subject, *, reporting_format: str) -> list[Market]:
    """The market reported to, and the batch's other markets reached through the same upload (the EU hub serves
    every member state: one upload carries each state's national code)."""
    others = subject.batch.markets.filter(reporting_format=reporting_format).exclude(pk=subject.market.pk)
    return [subject.market, *others.order_by("code")]


def check_national_codes(product: Product, markets: Iterable[Market], found: Problems) -> list[ProductNationalCode]:
    """Each market that prints a national number (AI 710–715) has the product's code, valid for its AI."""
    codes = {
        (c.market_id, c.ai): c for c in ProductNationalCode.objects.filter(product=product).select_related("market")
    }
    present = []
    for market in markets:
        ai = market.national_number_ai
        if not ai:
            continue
        code = codes.get((market.pk, ai))
        if code is None:
            found.add(
                f"product.national_codes.{market.code}",
                f"{product_label(product)}: national code for {market.code} (AI {ai}) missing — add it in Products → "
                "National codes.",
            )
            continue
        try:
            gs1.validate_ai_value(ai, code.value)
        except gs1.GS1Error as exc:
            found.add(
                f"product.national_codes.{market.code}",
                f"{product_label(product)}: national code for {market.code}: {exc} Correct it in Products → National "
                "codes.",
            )
            continue
        present.append(code)
    return present


def check_lot_and_expiry(batch: Batch, found: Problems) -> None:
    """Lot (AI 10) and expiry (AI 17, YYMMDD as printed, day 00 = end of month) are valid as stored."""
    try:
        gs1.validate_lot(batch.lot)
    except gs1.GS1Error as exc:
        found.add("batch.lot", f"{batch_label(batch)}: {exc}")
    expiry = batch.expiry or ""
    if len(expiry) != 6 or not expiry.isascii() or not expiry.isdigit():
        found.add(
            "batch.expiry",
            f"{batch_label(batch)}: expiry {expiry or '(empty)'} is not YYMMDD — enter the expiry exactly as printed "
            "on the pack, six digits (day 00 = end of month).",
        )
        return
    try:
        gs1.validate_ai_value("17", expiry)
    except gs1.GS1Error as exc:
        found.add("batch.expiry", f"{batch_label(batch)}: {exc} Enter the expiry exactly as printed on the pack.")


def unit_packs(batch: Batch) -> QuerySet[Pack]:
    """The batch's units (level 0), whatever their status."""
    return Pack.objects.filter(batch=batch, level=0)


def reported_units(batch: Batch) -> QuerySet[Pack]:
    """The units a report carries: every commissioned unit except those rejected on the line, which never left it."""
    return unit_packs(batch).exclude(status=Pack.Status.DECOMMISSIONED, reason="line_reject")


def check_units(subject: Subject, found: Problems, units: QuerySet[Pack]) -> int:
    """There is something to report, every unit is of the batch's product, and each serial is there once; returns
    the number of units to report. Three aggregate queries."""
    batch, product = subject.batch, subject.product
    total = units.count()
    if total == 0:
        found.add(
            "packs",
            f"{batch_label(batch)} has no commissioned units to report — apply its commissioning reports first.",
        )
        return 0
    foreign = units.exclude(product_code=product.product_code)
    foreign_count = foreign.count()
    if foreign_count:
        found.add_listed(
            "packs.product_code",
            (
                f"serial {serial} of {batch_label(batch)} carries product code {code}, not {product.product_code}"
                for code, serial in foreign.order_by("product_code", "serial").values_list("product_code", "serial")[
                    :LISTED_PER_RULE
                ]
            ),
            total=foreign_count,
            summary="{more} more units of " + batch_label(batch) + " carry another product code",
        )
    twice = units.values("serial").annotate(n=Count("pk")).filter(n__gt=1).order_by("serial")
    twice_count = twice.count()
    if twice_count:
        found.add_listed(
            "packs.serial",
            (
                f"serial {row['serial']} appears {row['n']} times in {batch_label(batch)}"
                for row in twice[:LISTED_PER_RULE]
            ),
            total=twice_count,
            summary="{more} more serials appear more than once",
        )
    return total


def check_serial_syntax(subject: Subject, found: Problems, units: QuerySet[Pack], *, max_length: int = 20) -> None:
    """Serials are 1 to ``max_length`` characters of GS1 set 82 (one streamed read of the serial column)."""
    bad: list[str] = []
    count = 0
    for serial in units.values_list("serial", flat=True).iterator(chunk_size=CHUNK):
        if len(serial) > max_length or any(c not in gs1.CHARSET_82 for c in serial):
            count += 1
            if len(bad) < LISTED_PER_RULE:
                bad.append(serial)
    found.add_listed(
        "packs.serial",
        (
            f"serial {serial!r} is not 1 to {max_length} characters of GS1 character set 82 ({subject.market.code})"
            for serial in bad
        ),
        total=count,
        summary="{more} more serials break the " + subject.market.code + " serial format",
    )


def check_aggregation(subject: Subject, found: Problems, units: QuerySet[Pack]) -> None:
    """For a market that requires aggregation: every unit still in the supply chain sits in an SSCC container."""
    market = subject.market
    if not market.aggregation_required:
        return
    loose = units.exclude(status=Pack.Status.DECOMMISSIONED).filter(
        Q(parent__isnull=True) | ~Q(parent__product_code="")
    )
    loose_count = loose.count()
    found.add_listed(
        "packs.parent",
        (
            f"serial {serial} of {batch_label(subject.batch)} is in no SSCC case — {market.code} requires aggregation: "
            "report its packing before reporting the batch"
            for serial in loose.order_by("serial").values_list("serial", flat=True)[:LISTED_PER_RULE]
        ),
        total=loose_count,
        summary="{more} more units are in no SSCC case",
    )


def eu_state(status: str, reason: str, stored_state: str) -> str:
    """A pack's EU hub state: the one recorded by its last line report, or the one its status implies."""
    if stored_state:
        return stored_state
    if status == Pack.Status.DECOMMISSIONED and reason in cbv.DECOMMISSION:
        return cbv.DECOMMISSION[reason].eu_state
    return cbv.EU_ACTIVE if status != Pack.Status.DECOMMISSIONED else ""


ITEMS = object()  # where a JSON document's long list goes (see write_json)
_ITEMS_MARK = "\u0000items\u0000"


def write_json(out: IO[bytes], head: dict, items: Iterable[dict]) -> None:
    """``head`` as JSON with the value ``ITEMS`` (anywhere in it, once) replaced by the list ``items``, written one
    item at a time so a million-unit batch never sits in memory."""
    text = json.dumps(_mark(head), ensure_ascii=False, indent=None, separators=(",", ":"))
    before, after = text.split(json.dumps(_ITEMS_MARK), 1)
    out.write(before.encode() + b"[")
    first = True
    for item in items:
        out.write(
            (b"" if first else b",") + b"\n" + json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
        )
        first = False
    out.write(b"\n]" + after.encode() + b"\n")


def _mark(value):
    if value is ITEMS:
        return _ITEMS_MARK
    if isinstance(value, dict):
        return {key: _mark(item) for key, item in value.items()}
    return value


def written_document(out: IO[bytes]) -> bytes | Path:
    """What a validator should read of the document just written to ``out``: its path when it is a named file (so a
    large document is validated as a stream), else its bytes."""
    out.flush()
    name = getattr(out, "name", None)
    if isinstance(name, str) and os.path.isfile(name):
        return Path(name)
    out.seek(0)
    return out.read()


def stream_rows(queryset: QuerySet, *fields: str) -> Iterator[tuple]:
    """``fields`` of ``queryset`` in product code and serial order, fetched in chunks (a server-side cursor on
    PostgreSQL), never all at once."""
    return queryset.order_by("product_code", "serial").values_list(*fields).iterator(chunk_size=CHUNK)
