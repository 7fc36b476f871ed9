"""Demo master data: an MAH with its sites and products across the five markets, and a CMO that packs for it.

All codes come from GS1's demonstration prefix range 952 (never issued to a real company) or are built from the
example national numbers in DOMAIN.md, and every check digit is computed, not typed. ``load_demo_masterdata`` is
idempotent: rows are found by their natural key and created through the services only when missing.
"""

from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser

from masterdata import gs1, services
from masterdata.models import Company, Location, Market, Product

ACME_PREFIX = "9521234"
# GS1 US company prefix of the (fictional) NDC labeler code 12345: "0" + "3" + labeler; NDC-based GTINs live in it.
ACME_US_PREFIX = "0312345"
CMO_PREFIX = "9529876"
# IFA-coded NTINs (4150 + PZN) have no company prefix of the MAH. The EPC URN still needs a split; this demo uses
# 7 digits ("4150" + the first 3 PZN digits). Confirm the value with GS1 Germany before reporting real NTINs.
NTIN_PREFIX_LENGTH = 7


def gln(prefix: str, location_reference: int) -> str:
    body = prefix + str(location_reference).zfill(12 - len(prefix))
    return body + gs1.check_digit(body)


def gtin(prefix: str, item_reference: int, indicator: str = "0") -> str:
    body = indicator + prefix + str(item_reference).zfill(12 - len(prefix))
    return body + gs1.check_digit(body)


def case_gtin(unit_gtin: str) -> str:
    """The GTIN of a case of ``unit_gtin``: same prefix and item reference, indicator digit 1."""
    body = "1" + unit_gtin[1:13]
    return body + gs1.check_digit(body)


@dataclass(frozen=True)
class DemoProduct:
    name: str
    common_name: str
    dosage_form: str
    strength: str
    pack_size: int
    pack_type: str
    markets: tuple[str, ...]
    product_code: str
    code_schema: str = Product.CodeSchema.GTIN
    prefix_length: int = len(ACME_PREFIX)
    national_codes: tuple[tuple[str, str, str], ...] = field(default=())  # (market, AI, value)


PRODUCTS = [
    DemoProduct(
        name="Amoxicillin 500 mg hard capsules",
        common_name="amoxicillin",
        dosage_form="hard capsule",
        strength="500 mg",
        pack_size=20,
        pack_type="blister",
        markets=("EU", "SA"),
        product_code="09521234543213",  # the GTIN of DOMAIN.md's examples
    ),
    DemoProduct(
        name="Ibuprofen 400 mg film-coated tablets",
        common_name="ibuprofen",
        dosage_form="film-coated tablet",
        strength="400 mg",
        pack_size=50,
        pack_type="blister",
        markets=("EU",),
        product_code=gs1.ntin_from_pzn("03752864"),
        code_schema=Product.CodeSchema.NTIN,
        prefix_length=NTIN_PREFIX_LENGTH,
        national_codes=(("EU", "710", "03752864"),),
    ),
    DemoProduct(
        name="Metformin 850 mg tablets",
        common_name="metformin hydrochloride",
        dosage_form="tablet",
        strength="850 mg",
        pack_size=60,
        pack_type="bottle",
        markets=("US",),
        product_code=gs1.gtin_from_ndc("12345-678-90"),
        prefix_length=len(ACME_US_PREFIX),
        national_codes=(("US", "715", "1234567890"),),
    ),
    DemoProduct(
        name="Atorvastatin 20 mg film-coated tablets",
        common_name="atorvastatin calcium",
        dosage_form="film-coated tablet",
        strength="20 mg",
        pack_size=30,
        pack_type="bottle",
        markets=("US",),
        product_code=gs1.gtin_from_ndc("12345-0123-4"),
        prefix_length=len(ACME_US_PREFIX),
        national_codes=(("US", "715", "1234501234"),),
    ),
    DemoProduct(
        name="Paracetamol 500 mg tablets",
        common_name="paracetamol",
        dosage_form="tablet",
        strength="500 mg",
        pack_size=20,
        pack_type="blister",
        markets=("RU",),
        product_code=gtin(ACME_PREFIX, 54322),
    ),
    DemoProduct(
        name="Omeprazole 20 mg gastro-resistant capsules",
        common_name="omeprazole",
        dosage_form="gastro-resistant capsule",
        strength="20 mg",
        pack_size=28,
        pack_type="blister",
        markets=("SA",),
        product_code=gtin(ACME_PREFIX, 54323),
    ),
    DemoProduct(
        name="Azithromycin 250 mg film-coated tablets",
        common_name="azithromycin",
        dosage_form="film-coated tablet",
        strength="250 mg",
        pack_size=6,
        pack_type="blister",
        markets=("PK",),
        product_code=gtin(ACME_PREFIX, 54324),
    ),
    DemoProduct(
        name="Insulin glargine 100 units/ml pre-filled pen",
        common_name="insulin glargine",
        dosage_form="solution for injection",
        strength="100 units/ml",
        pack_size=5,
        pack_type="pre-filled pen",
        markets=("EU", "SA"),
        product_code=gtin(ACME_PREFIX, 54325),
    ),
]

UNITS_PER_CASE = 20
CASES_PER_PALLET = 40


@dataclass
class DemoSummary:
    companies: list[Company]
    locations: list[Location]
    products: list[Product]
    created: int = 0


def load_demo_masterdata(*, actor: AbstractBaseUser | None) -> DemoSummary:
    """Create (or find) the demo companies, locations and products; returns them and how many rows were new."""
    summary = DemoSummary(companies=[], locations=[], products=[])
    reason = "demo data (manage.py load_demo)"

    acme = _company(
        summary,
        "Acme Pharma",
        [ACME_PREFIX, ACME_US_PREFIX],
        actor=actor,
        reason=reason,
        is_mah=True,
        country="IE",
        gln=gln(ACME_PREFIX, 0),
    )
    cmo = _company(
        summary,
        "Contract Pack GmbH",
        [CMO_PREFIX],
        actor=actor,
        reason=reason,
        is_cmo=True,
        country="DE",
        gln=gln(CMO_PREFIX, 0),
    )

    cork = _location(summary, acme, "Cork plant", "site", gln(ACME_PREFIX, 1), actor=actor, reason=reason)
    for number in (1, 2):
        # Lines are sub-locations of their site: the site's GLN with an SGLN extension of their own.
        _location(
            summary,
            acme,
            f"Cork line {number}",
            "line",
            cork.gln,
            actor=actor,
            reason=reason,
            parent=cork,
            gln_extension=str(number),
        )
    _location(summary, acme, "Dublin distribution centre", "warehouse", gln(ACME_PREFIX, 2), actor=actor, reason=reason)
    hamburg = _location(summary, cmo, "Hamburg packaging site", "site", gln(CMO_PREFIX, 1), actor=actor, reason=reason)
    _location(
        summary,
        cmo,
        "Hamburg line A",
        "line",
        hamburg.gln,
        actor=actor,
        reason=reason,
        parent=hamburg,
        gln_extension="A",
    )
    _location(summary, cmo, "Hamburg warehouse", "warehouse", gln(CMO_PREFIX, 2), actor=actor, reason=reason)

    markets = {market.code: market for market in Market.objects.all()}
    missing = {code for item in PRODUCTS for code in item.markets} - set(markets)
    if missing:
        raise LookupError(f"Markets {', '.join(sorted(missing))} are missing; run `manage.py migrate` first.")
    for item in PRODUCTS:
        _product(summary, acme, item, markets, actor=actor, reason=reason)
    return summary


def _company(summary, name, prefixes, *, actor, reason, **fields) -> Company:
    company = Company.objects.filter(name=name).first()
    if company is None:
        company = services.create_company(actor=actor, data={"name": name, **fields}, prefixes=prefixes, reason=reason)
        summary.created += 1
    summary.companies.append(company)
    return company


def _location(summary, company, name, kind, location_gln, *, actor, reason, **fields) -> Location:
    location = Location.objects.filter(company=company, name=name).first()
    if location is None:
        data = {"company": company, "name": name, "kind": kind, "gln": location_gln, "country": company.country}
        location = services.create_location(actor=actor, data={**data, **fields}, reason=reason)
        summary.created += 1
    summary.locations.append(location)
    return location


def _product(summary, owner: Company, item: DemoProduct, markets: dict[str, Market], *, actor, reason) -> Product:
    product = Product.objects.filter(product_code=item.product_code).first()
    if product is None:
        levels = [{"level": 0, "quantity": 1}]
        if item.code_schema == Product.CodeSchema.GTIN:
            levels.append({"level": 2, "gtin": case_gtin(item.product_code), "quantity": UNITS_PER_CASE})
        else:  # an NTIN has no indicator-digit variants: its cases carry an SSCC
            levels.append({"level": 2, "quantity": UNITS_PER_CASE, "uses_sscc": True})
        levels.append({"level": 3, "quantity": CASES_PER_PALLET, "uses_sscc": True})
        product = services.create_product(
            actor=actor,
            data={
                "owner": owner,
                "code_schema": item.code_schema,
                "product_code": item.product_code,
                "company_prefix_length": item.prefix_length,
                "name": item.name,
                "common_name": item.common_name,
                "dosage_form": item.dosage_form,
                "strength": item.strength,
                "pack_size": item.pack_size,
                "pack_type": item.pack_type,
            },
            markets=[markets[code] for code in item.markets],
            national_codes=[{"market": markets[m], "ai": ai, "value": value} for m, ai, value in item.national_codes],
            packaging_levels=levels,
            reason=reason,
        )
        summary.created += 1
    summary.products.append(product)
    return product
