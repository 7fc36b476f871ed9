from decimal import Decimal
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, transaction

from masterdata import gs1
from masterdata.models import Company, CompanyPrefix, Location, Market, PackagingLevel, Product, ProductNationalCode
from tests.factories import (
    get_market,
    make_company,
    make_gln,
    make_gtin,
    make_location,
    make_market,
    make_prefix,
    make_product,
)

pytestmark = pytest.mark.django_db

ACME_GTIN = "09521234543213"  # DOMAIN.md: a valid GTIN in prefix 9521234
PRODUCT_CODE_TAKEN = "Another product already has this product code; a code identifies one product."


def errors_of(instance) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        instance.full_clean()
    return caught.value.message_dict


# --- company prefixes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "found"), [("95212", 5), ("9521234567890", 13), ("95212AB", 7)])
def test_company_prefix_outside_6_to_12_digits_is_a_prefix_field_error(prefix, found):
    company = make_company(prefixes=[])

    errors = errors_of(CompanyPrefix(company=company, prefix=prefix))

    assert f"{prefix!r} is not a GS1 company prefix: enter 6 to 12 digits (found {found})." in errors["prefix"]
    assert "__all__" not in errors  # the length constraint is skipped once the prefix itself failed


@pytest.mark.parametrize("prefix", ["952123", "952123456789"])
def test_company_prefix_stores_its_length(prefix):
    company = make_company(prefixes=[])
    row = CompanyPrefix(company=company, prefix=prefix)

    row.full_clean()
    row.save()

    assert CompanyPrefix.objects.get(pk=row.pk).length == len(prefix)


def test_company_prefix_length_is_enforced_by_the_database():
    company = make_company(prefixes=[])

    with pytest.raises(IntegrityError), transaction.atomic():
        CompanyPrefix.objects.create(company=company, prefix="95212", length=5)
    with pytest.raises(IntegrityError), transaction.atomic():
        CompanyPrefix.objects.create(company=company, prefix="9521234", length=8)  # length must match the prefix


def test_company_prefix_may_not_nest_in_another():
    make_prefix(company=make_company(name="Acme", prefixes=[]), prefix="9521234")
    other = make_company(name="Other", prefixes=[])

    assert errors_of(CompanyPrefix(company=other, prefix="95212345"))["prefix"] == [
        "95212345 overlaps prefix 9521234 of Acme; company prefixes cannot nest."
    ]
    assert errors_of(CompanyPrefix(company=other, prefix="952123"))["prefix"] == [
        "952123 overlaps prefix 9521234 of Acme; company prefixes cannot nest."
    ]


def test_duplicate_company_prefix_is_a_unique_error():
    make_company(prefixes=["9521234"])

    errors = errors_of(CompanyPrefix(company=make_company(prefixes=[]), prefix="9521234"))

    assert errors["prefix"] == ["Company prefix with this Prefix already exists."]


def test_company_needs_a_role():
    errors = errors_of(Company(name="Nobody"))

    assert errors["__all__"] == ["Tick at least one role: MAH, CMO, 3PL or wholesaler."]


# --- products ---------------------------------------------------------------------------------------------------------


def test_product_with_valid_gtin_in_owner_prefix_is_valid_and_normalised():
    owner = make_company(prefixes=["9521234"])
    product = Product(owner=owner, product_code="9521234543213", company_prefix_length=7, name="Amoxicillin")

    product.full_clean()

    assert product.product_code == ACME_GTIN


def test_product_wrong_check_digit_names_the_expected_digit():
    owner = make_company(prefixes=["9521234"])

    errors = errors_of(Product(owner=owner, product_code="09521234543214", company_prefix_length=7, name="X"))

    assert errors["product_code"] == ["GTIN 09521234543214 has check digit 4; expected 3 — correct the last digit."]


def test_product_gtin_outside_owner_prefixes_names_the_prefixes():
    owner = make_company(name="Acme Pharma", prefixes=["9521234", "0312345"])
    outside = make_gtin("9529999")

    errors = errors_of(Product(owner=owner, product_code=outside, company_prefix_length=7, name="X"))

    assert errors["product_code"] == [
        f"GTIN {outside} is outside the company prefixes of Acme Pharma (0312345, 9521234); "
        "use a GTIN from one of them or register the prefix on the company."
    ]


def test_product_prefix_length_must_match_the_registered_prefix():
    owner = make_company(prefixes=["9521234"])

    errors = errors_of(Product(owner=owner, product_code=ACME_GTIN, company_prefix_length=8, name="X"))

    assert errors["company_prefix_length"] == [
        f"GTIN {ACME_GTIN} lies in company prefix 9521234, which has 7 digits; set the company prefix length to 7."
    ]


@pytest.mark.parametrize("length", [5, 13])
def test_product_prefix_length_outside_6_to_12_is_refused_by_field_and_database(length):
    product = make_product()
    product.company_prefix_length = length

    assert "company_prefix_length" in errors_of(product)
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.filter(pk=product.pk).update(company_prefix_length=length)


def test_duplicate_product_code_is_a_product_code_error_even_when_written_shorter():
    owner = make_company(prefixes=["9521234"])
    make_product(owner=owner, product_code=ACME_GTIN)

    errors = errors_of(Product(owner=owner, product_code="9521234543213", company_prefix_length=7, name="Copy"))

    assert errors["product_code"] == [PRODUCT_CODE_TAKEN]


def test_product_owner_must_be_an_mah():
    cmo = make_company(is_mah=False, is_cmo=True, prefixes=["9521234"])

    errors = errors_of(Product(owner=cmo, product_code=ACME_GTIN, company_prefix_length=7, name="X"))

    assert errors["owner"] == [f"{cmo} is not an MAH: products are owned by their marketing authorisation holder."]


def test_ntin_built_from_a_pzn_is_valid_outside_the_owner_prefixes():
    owner = make_company(prefixes=["9521234"])
    product = Product(
        owner=owner,
        code_schema=Product.CodeSchema.NTIN,
        product_code=gs1.ntin_from_pzn("03752864"),
        company_prefix_length=7,
        name="Ibuprofen",
    )

    product.full_clean()

    assert product.product_code == "04150037528643"


def test_ppn_product_needs_no_prefix_length():
    product = Product(
        owner=make_company(),
        code_schema=Product.CodeSchema.PPN,
        product_code="110375286414",
        company_prefix_length=7,
        name="X",
    )

    product.full_clean()

    assert product.company_prefix_length is None


# --- national codes and packaging levels ------------------------------------------------------------------------------


def test_national_code_value_outside_set_82_is_a_value_error():
    product = make_product(markets=["EU"])

    errors = errors_of(ProductNationalCode(product=product, market=get_market("EU"), ai="710", value="0375°2864"))

    assert len(errors["value"]) == 1
    assert "not in GS1 character set 82" in errors["value"][0]


def test_national_code_ai_must_be_the_market_one():
    product = make_product(markets=["US"])

    errors = errors_of(ProductNationalCode(product=product, market=get_market("US"), ai="710", value="03752864"))

    assert errors["ai"] == ["Market US prints its national number under AI (715); choose that AI instead of (710)."]


def test_packaging_level_gtin_wrong_check_digit_names_expected_digit():
    product = make_product()
    bad = make_gtin(product.product_code[1:8], indicator="1")[:-1] + "0"
    if gs1.is_valid_check_digit(bad):
        bad = bad[:-1] + "1"

    errors = errors_of(PackagingLevel(product=product, level=PackagingLevel.Level.CASE, gtin=bad, quantity=20))

    assert errors["gtin"][0].startswith(f"GTIN {bad} has check digit")
    assert "expected" in errors["gtin"][0]


def test_packaging_level_rules():
    product = make_product()

    assert errors_of(PackagingLevel(product=product, level=0, quantity=2))["quantity"] == [
        "The unit level holds exactly 1 unit."
    ]
    assert errors_of(PackagingLevel(product=product, level=2, quantity=20))["gtin"] == [
        "Give this level a GTIN or mark it as identified by SSCC."
    ]
    assert errors_of(PackagingLevel(product=product, level=2, quantity=20, gtin=product.product_code))["gtin"] == [
        "Only the unit level carries the product code; give this level its own GTIN or use SSCC."
    ]
    PackagingLevel(product=product, level=3, quantity=40, uses_sscc=True).full_clean()


# --- locations --------------------------------------------------------------------------------------------------------


def test_location_sgln_is_derived_from_gln_prefix_and_extension():
    company = make_company(prefixes=["9521234"])
    gln = make_gln("9521234", location_reference=1)
    site = make_location(company=company, gln=gln)
    line = make_location(company=company, kind="line", parent=site, gln=gln, gln_extension="L1")

    assert site.sgln == "urn:epc:id:sgln:9521234.00001.0"
    assert line.sgln == "urn:epc:id:sgln:9521234.00001.L1"


def test_location_gln_outside_company_prefixes_is_a_gln_error():
    company = make_company(name="Acme", prefixes=["9521234"])
    gln = make_gln("9529999")

    errors = errors_of(Location(company=company, kind="site", name="Elsewhere", gln=gln))

    assert errors["gln"] == [
        f"GLN {gln} does not start with a company prefix of Acme (9521234); "
        "register the prefix on the company first or correct the GLN."
    ]


def test_location_gln_check_digit_and_line_parent_are_checked():
    company = make_company(prefixes=["9521234"])
    gln = make_gln("9521234")
    wrong = gln[:-1] + str((int(gln[-1]) + 1) % 10)

    errors = errors_of(Location(company=company, kind="line", name="Line 9", gln=wrong, gln_extension="a b"))

    assert errors["gln"] == [f"GLN {wrong} has check digit {wrong[-1]}; expected {gln[-1]} — correct the last digit."]
    assert errors["parent"] == ["A packaging line belongs to a site: choose its site."]
    assert errors["gln_extension"] == ["The GLN extension is 1 to 20 characters of GS1 set 82 (use 0 for none)."]


# --- markets ----------------------------------------------------------------------------------------------------------


def test_market_defaults_are_installed_by_migration():
    markets = {market.code: market for market in Market.objects.all()}

    assert set(markets) >= {"EU", "US", "RU", "SA", "PK"}
    eu, us, ru, sa, pk = (markets[code] for code in ("EU", "US", "RU", "SA", "PK"))
    assert (eu.randomisation_required, eu.max_guess_probability, eu.reporting_format) == (
        True,
        Decimal("0.0001"),
        "eu_hub",
    )
    assert (eu.retention_years_after_expiry, eu.retention_years_after_release) == (1, 5)
    assert eu.serial_length <= 20 and len(eu.serial_alphabet) ** eu.serial_length * Decimal("0.0001") >= 10**8
    assert (us.randomisation_required, us.national_number_ai, us.reporting_format) == (False, "715", "epcis_1_2")
    assert us.retention_years_after_release == 6
    assert (ru.serial_length, ru.extra_serial_parameters, ru.reporting_format) == (13, ["91", "92"], "mdlp")
    assert (sa.randomisation_required, sa.aggregation_required, sa.reporting_format) == (True, True, "rsd")
    assert (pk.reporting_format, pk.retention_years_after_release) == ("drap", 5)
    for market in markets.values():
        market.full_clean()  # the defaults satisfy their own rules


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("serial_alphabet", "0123456789€", "'€' are not in GS1 character set 82; use only set-82 characters."),
        ("serial_alphabet", "ABC/%", "'%/' must be avoided in generated serials"),
        ("serial_alphabet", "AAB", "Each character may appear only once in a serial alphabet; remove the repeats."),
        ("serial_length", 21, "Ensure this value is less than or equal to 20."),
        ("max_guess_probability", Decimal("1.5"), "Ensure this value is less than or equal to 1."),
        ("extra_serial_parameters", ["93"], 'Give a JSON list of AIs from "91", "92", e.g. ["91", "92"].'),
    ],
)
def test_market_rules_are_field_errors(field, value, message):
    market = make_market()
    setattr(market, field, value)

    errors = errors_of(market)

    assert any(text.startswith(message) for text in errors[field]), errors


def test_market_needs_a_retention_rule():
    market = make_market()
    market.retention_years_after_release = None

    assert errors_of(market)["__all__"] == ["Give a retention period after expiry, after release, or both."]


# --- migrations -------------------------------------------------------------------------------------------------------


def test_masterdata_models_and_migrations_agree():
    out = StringIO()

    call_command("makemigrations", "masterdata", "--check", "--dry-run", stdout=out, stderr=StringIO())

    assert "No changes detected" in out.getvalue()
