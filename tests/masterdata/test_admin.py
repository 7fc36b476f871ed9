import pytest
from django.urls import reverse

from masterdata.models import (
    Company,
    CompanyMembership,
    CompanyPrefix,
    Location,
    Market,
    PackagingLevel,
    Product,
    ProductNationalCode,
)
from tests.factories import get_market, make_company, make_gln, make_location, make_membership, make_product, make_user

pytestmark = pytest.mark.django_db

ACME_GTIN = "09521234543213"
MODELS = [Company, CompanyPrefix, CompanyMembership, Location, Market, Product, ProductNationalCode, PackagingLevel]


@pytest.fixture
def steward():
    return make_user(username="steward", roles=("Steward",), is_staff=True)


@pytest.fixture
def web(make_verified_client, steward):
    return make_verified_client(steward)


@pytest.fixture
def acme():
    return make_company(name="Acme Pharma", prefixes=["9521234"])


def url(model, action, *args):
    return reverse(f"admin:masterdata_{model._meta.model_name}_{action}", args=args)


def inline_management(prefix: str, total: int = 0, initial: int = 0) -> dict:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def product_form(owner, **overrides) -> dict:
    return {
        "owner": str(owner.pk),
        "code_schema": "GTIN",
        "product_code": ACME_GTIN,
        "company_prefix_length": "7",
        "is_active": "on",
        "name": "Amoxicillin",
        "common_name": "amoxicillin",
        "dosage_form": "capsule",
        "strength": "500 mg",
        "pack_size": "20",
        "pack_type": "blister",
        "markets": [str(get_market("EU").pk)],
        **inline_management("national_codes"),
        **inline_management("packaging_levels"),
        **overrides,
    }


def test_changelist_and_add_pages_render_for_a_steward(web, acme):
    product = make_product(owner=acme, markets=["EU"])
    product.packaging_levels.create(level=0, quantity=1)
    product.national_codes.create(market=get_market("EU"), ai="710", value="03752864")
    make_location(company=acme)
    make_membership(user=make_user(), company=acme)

    for model in MODELS:
        assert web.get(url(model, "changelist")).status_code == 200, model
        assert web.get(url(model, "add")).status_code == 200, model
    assert web.get(url(Product, "changelist") + "?markets__id__exact=1&code_schema__exact=GTIN").status_code == 200
    assert web.get(url(Product, "change", product.pk)).status_code == 200
    assert web.get(url(Product, "history", product.pk)).status_code == 200
    assert web.get(url(Market, "change", get_market("EU").pk)).status_code == 200
    assert web.get(url(Company, "change", acme.pk)).status_code == 200
    assert web.get(url(Company, "history", acme.pk)).status_code == 200


def test_admin_needs_a_verified_second_factor(client, steward):
    client.force_login(steward)  # password only, no second factor

    response = client.get(url(Product, "changelist"))

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/") or "/accounts/login/" in response["Location"]


def test_steward_edit_creates_a_history_row_with_that_user(web, steward, acme):
    product = make_product(owner=acme, product_code=ACME_GTIN, markets=["EU"])

    response = web.post(url(Product, "change", product.pk), product_form(acme, name="Amoxicillin 500 mg"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    record = Product.objects.get(pk=product.pk).history.latest()
    assert (record.name, record.history_user) == ("Amoxicillin 500 mg", steward)
    assert "Amoxicillin 500 mg" in web.get(url(Product, "history", product.pk)).content.decode()


def test_add_product_with_inlines(web, steward, acme):
    data = product_form(
        acme,
        **inline_management("packaging_levels", total=2),
        **{
            "packaging_levels-0-level": "0",
            "packaging_levels-0-quantity": "1",
            "packaging_levels-1-level": "3",
            "packaging_levels-1-quantity": "40",
            "packaging_levels-1-uses_sscc": "on",
        },
    )

    response = web.post(url(Product, "add"), data)

    assert response.status_code == 302
    product = Product.objects.get(product_code=ACME_GTIN)
    assert list(product.packaging_levels.values_list("level", "quantity", "uses_sscc")) == [
        (0, 1, False),
        (3, 40, True),
    ]
    assert {r.history_user for r in PackagingLevel.history.filter(product_id=product.pk)} == {steward}


def test_bad_gtin_is_a_field_error_and_saves_nothing(web, acme):
    data = product_form(
        acme,
        product_code="09521234543214",
        **inline_management("packaging_levels", total=1),
        **{"packaging_levels-0-level": "0", "packaging_levels-0-quantity": "1"},
    )

    response = web.post(url(Product, "add"), data)

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors == {
        "product_code": ["GTIN 09521234543214 has check digit 4; expected 3 — correct the last digit."]
    }
    assert "expected 3 — correct the last digit." in response.content.decode()
    assert not Product.objects.exists()
    assert not PackagingLevel.objects.exists()


def test_bad_inline_row_is_an_inline_field_error_and_saves_nothing(web, acme):
    data = product_form(
        acme,
        **inline_management("national_codes", total=1),
        **{
            "national_codes-0-market": str(get_market("EU").pk),
            "national_codes-0-ai": "710",
            "national_codes-0-value": "PZN 0375",  # a space is outside GS1 character set 82
        },
    )

    response = web.post(url(Product, "add"), data)

    assert response.status_code == 200
    inline_errors = response.context["inline_admin_formsets"][0].formset.errors
    assert list(inline_errors[0]) == ["value"]
    assert "not in GS1 character set 82" in inline_errors[0]["value"][0]
    assert not Product.objects.exists()


def test_duplicate_product_code_is_a_field_error(web, acme):
    make_product(owner=acme, product_code=ACME_GTIN)

    response = web.post(url(Product, "add"), product_form(acme, product_code="9521234543213"))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "product_code": ["Another product already has this product code; a code identifies one product."]
    }
    assert Product.objects.count() == 1


def test_company_prefix_of_wrong_length_is_an_inline_error_and_saves_nothing(web):
    data = {
        "name": "Contract Pack GmbH",
        "country": "DE",
        "gln": "",
        "is_cmo": "on",
        **inline_management("prefixes", total=1),
        "prefixes-0-prefix": "95298",
    }

    response = web.post(url(Company, "add"), data)

    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.errors
    assert errors[0] == {"prefix": ["'95298' is not a GS1 company prefix: enter 6 to 12 digits (found 5)."]}
    assert not Company.objects.exists()


def test_company_with_prefix_is_added_with_history(web, steward):
    data = {
        "name": "Contract Pack GmbH",
        "country": "DE",
        "gln": "",
        "is_cmo": "on",
        **inline_management("prefixes", total=1),
        "prefixes-0-prefix": "9529876",
    }

    response = web.post(url(Company, "add"), data)

    assert response.status_code == 302
    company = Company.objects.get(name="Contract Pack GmbH")
    assert list(company.prefixes.values_list("prefix", "length")) == [("9529876", 7)]
    assert company.history.get().history_user == steward
    assert CompanyPrefix.history.get(prefix="9529876").history_user == steward


def test_location_change_page_shows_the_derived_sgln(web, acme):
    site = make_location(company=acme, gln=make_gln("9521234", location_reference=1))

    html = web.get(url(Location, "change", site.pk)).content.decode()

    assert "urn:epc:id:sgln:9521234.00001.0" in html
    assert 'name="sgln"' not in html  # read-only: shown, never an input


def test_market_alphabet_with_unsafe_characters_is_a_field_error(web):
    eu = get_market("EU")
    data = {
        "code": "EU",
        "name": eu.name,
        "serial_alphabet": "ABC/%",
        "serial_length": "12",
        "randomisation_required": "on",
        "max_guess_probability": "0.0001",
        "national_number_ai": "",
        "aggregation_required": "",
        "reporting_format": "eu_hub",
        "retention_years_after_expiry": "1",
        "retention_years_after_release": "5",
    }

    response = web.post(url(Market, "change", eu.pk), data)
    ok = web.post(
        url(Market, "change", eu.pk), {**data, "serial_alphabet": "0123456789", "extra_serial_parameters": []}
    )

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["serial_alphabet"]
    assert ok.status_code == 302
    assert get_market("EU").serial_alphabet == "0123456789"


def test_company_member_sees_only_own_products_in_admin(make_verified_client, acme):
    own = make_product(owner=acme)
    foreign = make_product(owner=make_company())
    member = make_user(roles=("Steward",), is_staff=True)
    make_membership(user=member, company=acme)
    web = make_verified_client(member)

    html = web.get(url(Product, "changelist")).content.decode()

    assert own.product_code in html and foreign.product_code not in html
    assert web.get(url(Product, "change", foreign.pk)).status_code == 302  # "does not exist" → back to the list
