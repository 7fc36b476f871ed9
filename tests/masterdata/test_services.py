from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command
from rest_framework.test import APIClient

from audit.exceptions import NotFound
from masterdata import gs1, selectors, services
from masterdata.exceptions import ObjectInUse
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
from tests.factories import (
    get_market,
    make_company,
    make_gln,
    make_gtin,
    make_location,
    make_market,
    make_membership,
    make_product,
    make_user,
)

pytestmark = pytest.mark.django_db

ACME_GTIN = "09521234543213"
PRODUCT_CODE_TAKEN = "Another product already has this product code; a code identifies one product."


@pytest.fixture
def steward():
    return make_user(username="steward", roles=("Steward",))


@pytest.fixture
def acme():
    return make_company(name="Acme Pharma", prefixes=["9521234"])


def product_data(owner, **overrides):
    return {"owner": owner, "product_code": ACME_GTIN, "company_prefix_length": 7, "name": "Amoxicillin", **overrides}


# --- companies --------------------------------------------------------------------------------------------------------


def test_create_company_with_prefixes_writes_history_rows_naming_the_actor(steward):
    company = services.create_company(
        actor=steward,
        data={"name": "Acme Pharma", "is_mah": True},
        prefixes=["9521234", "0312345"],
        reason="onboarding",
    )

    assert sorted(company.prefixes.values_list("prefix", "length")) == [("0312345", 7), ("9521234", 7)]
    record = company.history.get()
    assert (record.history_type, record.history_user, record.history_change_reason) == ("+", steward, "onboarding")
    assert {r.history_user for r in CompanyPrefix.history.filter(company_id=company.pk)} == {steward}
    assert CompanyPrefix.history.filter(company_id=company.pk).count() == 2


def test_create_company_with_a_bad_prefix_saves_nothing_and_names_the_nested_field(steward):
    with pytest.raises(ValidationError) as caught:
        services.create_company(actor=steward, data={"name": "Acme", "is_mah": True}, prefixes=["9521234", "95212"])

    assert caught.value.message_dict == {
        "prefixes.1.prefix": ["'95212' is not a GS1 company prefix: enter 6 to 12 digits (found 5)."]
    }
    assert not Company.objects.filter(name="Acme").exists()
    assert not CompanyPrefix.objects.exists()


def test_create_company_runs_full_clean(steward):
    with pytest.raises(ValidationError) as caught:
        services.create_company(actor=steward, data={"name": "Nobody", "gln": "1234"})

    assert caught.value.message_dict["__all__"] == ["Tick at least one role: MAH, CMO, 3PL or wholesaler."]
    assert caught.value.message_dict["gln"] == [
        "GLN 1234 has 4 digits — it must have exactly 13; check for missing or extra digits."
    ]


def test_update_company_replaces_its_prefixes(steward, acme):
    services.update_company(company=acme, actor=steward, data={"country": "DE"}, prefixes=["9521234", "9528888"])

    acme.refresh_from_db()
    assert acme.country == "DE"
    assert sorted(acme.prefixes.values_list("prefix", flat=True)) == ["9521234", "9528888"]
    assert acme.history.latest().history_user == steward


def test_update_company_refuses_to_remove_a_prefix_its_products_use(steward, acme):
    make_product(owner=acme, product_code=ACME_GTIN)

    with pytest.raises(ObjectInUse) as caught:
        services.update_company(company=acme, actor=steward, data={}, prefixes=["9528888"])

    assert caught.value.message == (
        "Company prefix 9521234 of Acme Pharma is still used by 1 product(s); keep it in the list."
    )
    assert caught.value.status_code == 409
    assert list(acme.prefixes.values_list("prefix", flat=True)) == ["9521234"]


def test_delete_company_still_referenced_is_refused_with_409(steward, acme):
    make_product(owner=acme)

    with pytest.raises(ObjectInUse) as caught:
        services.delete_company(company=acme, actor=steward)

    assert caught.value.status_code == 409
    assert caught.value.message.startswith(
        "Company Acme Pharma cannot be deleted: it is still referenced by 1 product."
    )
    assert Company.objects.filter(pk=acme.pk).exists()
    assert acme.prefixes.count() == 1  # the prefix delete was rolled back with the refusal


def test_delete_unreferenced_company_deletes_its_prefixes_with_history(steward, acme):
    company_id = acme.pk

    services.delete_company(company=acme, actor=steward)

    assert not Company.objects.filter(pk=company_id).exists()
    assert not CompanyPrefix.objects.filter(prefix="9521234").exists()
    assert Company.history.get(id=company_id, history_type="-").history_user == steward
    assert CompanyPrefix.history.filter(prefix="9521234", history_type="-").get().history_user == steward


def test_assign_membership_moves_a_user_between_companies(steward, acme):
    user = make_user()
    cmo = make_company(name="Contract Pack GmbH", is_mah=False, is_cmo=True)

    services.assign_membership(user=user, company=acme, actor=steward)
    membership = services.assign_membership(user=user, company=cmo, actor=steward)

    assert membership.company == cmo
    assert membership.history.latest().history_user == steward


# --- locations --------------------------------------------------------------------------------------------------------


def test_create_location_validates_and_records_actor(steward, acme):
    gln = make_gln("9521234", location_reference=1)

    site = services.create_location(actor=steward, data={"company": acme, "kind": "site", "name": "Cork", "gln": gln})

    assert site.sgln == "urn:epc:id:sgln:9521234.00001.0"
    assert site.history.get().history_user == steward
    with pytest.raises(ValidationError) as caught:
        services.create_location(actor=steward, data={"company": acme, "kind": "line", "name": "L1", "gln": gln})
    assert caught.value.message_dict == {
        "parent": ["A packaging line belongs to a site: choose its site."],
        "__all__": ["Another location already has this GLN and extension."],
    }


def test_delete_site_with_lines_is_refused(steward, acme):
    site = make_location(company=acme)
    make_location(company=acme, kind="line", parent=site, gln=site.gln, gln_extension="1")

    with pytest.raises(ObjectInUse) as caught:
        services.delete_location(location=site, actor=steward)

    assert "still referenced by 1 location" in caught.value.message
    assert Location.objects.filter(pk=site.pk).exists()


# --- markets ----------------------------------------------------------------------------------------------------------


def test_update_market_records_actor_and_reason(steward):
    eu = get_market("EU")

    services.update_market(market=eu, actor=steward, data={"serial_length": 14}, reason="longer serials")

    record = eu.history.latest()
    assert (record.serial_length, record.history_user, record.history_change_reason) == (14, steward, "longer serials")


def test_update_market_rejects_bad_rules(steward):
    with pytest.raises(ValidationError) as caught:
        services.update_market(market=get_market("EU"), actor=steward, data={"serial_alphabet": "AB?"})

    assert list(caught.value.message_dict) == ["serial_alphabet"]
    assert get_market("EU").serial_alphabet == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def test_delete_market_in_use_by_a_product_is_refused(steward):
    market = make_market()
    make_product(markets=[market])

    with pytest.raises(ObjectInUse) as caught:
        services.delete_market(market=market, actor=steward)

    assert caught.value.message == (
        f"Market {market.code} cannot be deleted: 1 product(s) are sold there. "
        "Remove the market from those products first."
    )
    assert Market.objects.filter(pk=market.pk).exists()


# --- products ---------------------------------------------------------------------------------------------------------


def test_create_product_with_markets_codes_and_levels(steward, acme):
    product = services.create_product(
        actor=steward,
        data=product_data(acme, product_code="9521234543213"),
        markets=[get_market("EU"), get_market("US")],
        national_codes=[{"market": get_market("US"), "ai": "715", "value": "1234567890"}],
        packaging_levels=[
            {"level": 0, "gtin": ACME_GTIN, "quantity": 1},
            {"level": 2, "gtin": make_gtin("9521234", indicator="1", item_reference=54321), "quantity": 20},
            {"level": 3, "quantity": 40, "uses_sscc": True},
        ],
    )

    product = Product.objects.get(pk=product.pk)
    assert product.product_code == ACME_GTIN
    assert sorted(product.markets.values_list("code", flat=True)) == ["EU", "US"]
    assert list(product.national_codes.values_list("ai", "value")) == [("715", "1234567890")]
    assert list(product.packaging_levels.values_list("level", "gtin", "quantity", "uses_sscc")) == [
        (0, ACME_GTIN, 1, False),
        (2, "19521234543210", 20, False),
        (3, "", 40, True),
    ]
    assert {r.history_user for r in product.history.all()} == {steward}
    assert product.history.latest().markets.count() == 2  # the last history row holds the markets too
    assert {r.history_user for r in PackagingLevel.history.filter(product_id=product.pk)} == {steward}
    assert ProductNationalCode.history.get(product_id=product.pk).history_user == steward


def test_create_product_with_wrong_check_digit_saves_nothing(steward, acme):
    with pytest.raises(ValidationError) as caught:
        services.create_product(actor=steward, data=product_data(acme, product_code="09521234543214"))

    assert caught.value.message_dict == {
        "product_code": ["GTIN 09521234543214 has check digit 4; expected 3 — correct the last digit."]
    }
    assert not Product.objects.exists()
    assert not Product.history.exists()


def test_create_product_with_a_bad_nested_row_saves_nothing(steward, acme):
    with pytest.raises(ValidationError) as caught:
        services.create_product(
            actor=steward,
            data=product_data(acme),
            national_codes=[{"market": get_market("EU"), "ai": "710", "value": "bad value"}],
        )

    assert list(caught.value.message_dict) == ["national_codes.0.value"]
    assert "not in GS1 character set 82" in caught.value.message_dict["national_codes.0.value"][0]
    assert not Product.objects.exists()


def test_create_product_with_duplicate_code_names_product_code(steward, acme):
    make_product(owner=acme, product_code=ACME_GTIN)

    with pytest.raises(ValidationError) as caught:
        services.create_product(actor=steward, data=product_data(acme))

    assert caught.value.message_dict == {"product_code": [PRODUCT_CODE_TAKEN]}


def test_update_product_syncs_nested_rows_and_leaves_unchanged_rows_alone(steward, acme):
    product = services.create_product(
        actor=steward,
        data=product_data(acme),
        packaging_levels=[{"level": 0, "quantity": 1}, {"level": 3, "quantity": 40, "uses_sscc": True}],
    )
    unit = product.packaging_levels.get(level=0)

    services.update_product(
        product=product,
        actor=steward,
        data={"name": "Amoxicillin 500 mg"},
        packaging_levels=[{"level": 0, "quantity": 1}, {"level": 2, "quantity": 20, "uses_sscc": True}],
    )

    assert list(product.packaging_levels.values_list("level", flat=True)) == [0, 2]
    assert product.packaging_levels.get(level=0).pk == unit.pk
    assert PackagingLevel.history.filter(id=unit.pk).count() == 1  # not re-saved
    removed = PackagingLevel.history.get(product_id=product.pk, level=3, history_type="-")
    assert removed.history_user == steward
    assert Product.objects.get(pk=product.pk).name == "Amoxicillin 500 mg"


def test_update_product_refuses_a_listed_twice_row(steward, acme):
    product = make_product(owner=acme)

    with pytest.raises(ValidationError) as caught:
        services.update_product(
            product=product,
            actor=steward,
            data={},
            packaging_levels=[{"level": 0, "quantity": 1}, {"level": 0, "quantity": 1}],
        )

    assert caught.value.message_dict == {"packaging_levels.1": ["This packaging level is listed twice."]}


def test_update_product_code_is_frozen_once_other_apps_use_the_product(steward, acme, monkeypatch):
    product = make_product(owner=acme, product_code=ACME_GTIN)
    monkeypatch.setattr(services, "_external_references", lambda instance: ["1 serial pool"])

    with pytest.raises(ObjectInUse) as caught:
        services.update_product(product=product, actor=steward, data={"product_code": make_gtin("9521234")})

    assert caught.value.field == "product_code"
    assert "is already used by 1 serial pool; its product_code can no longer change" in caught.value.message
    assert Product.objects.get(pk=product.pk).product_code == ACME_GTIN
    # Other fields stay editable, and an equal code written shorter is no change.
    services.update_product(product=product, actor=steward, data={"name": "New", "product_code": ACME_GTIN[1:]})


def test_delete_product_removes_nested_rows_each_with_history(steward, acme):
    product = services.create_product(
        actor=steward,
        data=product_data(acme),
        markets=[get_market("US")],
        national_codes=[{"market": get_market("US"), "ai": "715", "value": "1234567890"}],
        packaging_levels=[{"level": 0, "quantity": 1}],
    )

    product_id = product.pk

    services.delete_product(product=product, actor=steward)

    assert not Product.objects.exists()
    assert Product.history.get(id=product_id, history_type="-").history_user == steward
    assert ProductNationalCode.history.get(history_type="-").history_user == steward
    assert PackagingLevel.history.get(history_type="-").history_user == steward


def test_delete_product_referenced_elsewhere_is_refused(steward, acme, monkeypatch):
    product = make_product(owner=acme)
    monkeypatch.setattr(services, "_external_references", lambda instance: ["2 serial pools"])

    with pytest.raises(ObjectInUse) as caught:
        services.delete_product(product=product, actor=steward)

    assert caught.value.message == (
        f"Product {product} cannot be deleted: it is still referenced by 2 serial pools. Mark it inactive instead."
    )
    assert Product.objects.filter(pk=product.pk).exists()


# --- selectors --------------------------------------------------------------------------------------------------------


def test_member_of_a_company_sees_only_its_own_objects(acme):
    cmo = make_company(name="Contract Pack GmbH", is_mah=False, is_cmo=True)
    other_mah = make_company(name="Other MAH")
    own, foreign = make_product(owner=acme), make_product(owner=other_mah)
    site = make_location(company=acme)
    make_location(company=cmo)
    member = make_user()
    make_membership(user=member, company=acme)

    assert list(selectors.list_products(user=member)) == [own]
    assert list(selectors.list_companies(user=member)) == [acme]
    assert list(selectors.list_locations(user=member)) == [site]
    assert selectors.list_markets(user=member).count() == Market.objects.count()
    assert selectors.get_product(user=member, pk=own.pk) == own
    with pytest.raises(NotFound):
        selectors.get_product(user=member, pk=foreign.pk)


def test_operator_staff_without_membership_see_everything(acme):
    make_product(owner=acme)
    make_product(owner=make_company())

    assert selectors.list_products(user=make_user()).count() == 2
    assert selectors.list_products(user=make_user(), filters={"owner": acme.pk}).count() == 1


# --- demo data --------------------------------------------------------------------------------------------------------


def test_load_demo_runs_twice_and_creates_the_expected_rows():
    first, second = StringIO(), StringIO()
    call_command("load_demo", password="first-Demo-pass-1", stdout=first)
    call_command("load_demo", stdout=second)

    assert sorted(Company.objects.values_list("name", flat=True)) == ["Acme Pharma", "Contract Pack GmbH"]
    assert sorted(CompanyPrefix.objects.values_list("prefix", flat=True)) == ["0312345", "9521234", "9529876"]
    assert Location.objects.count() == 7
    assert Location.objects.filter(kind="line").count() == 3
    assert Product.objects.count() == 8
    assert set(Market.objects.filter(products__isnull=False).values_list("code", flat=True)) == {
        "EU", "US", "RU", "SA", "PK",
    }  # fmt: skip
    assert Product.objects.filter(product_code="09521234543213").exists()
    assert Product.objects.get(code_schema="NTIN").product_code == gs1.ntin_from_pzn("03752864")
    assert all(p.packaging_levels.count() == 3 for p in Product.objects.all())
    assert PackagingLevel.objects.filter(level=3, quantity=40, uses_sscc=True).count() == 8
    assert ProductNationalCode.objects.filter(ai="715").count() == 2
    for location in Location.objects.all():
        location.full_clean()
        assert location.sgln.startswith("urn:epc:id:sgln:")
    users = get_user_model().objects.filter(username__in=["steward", "qa", "auditor", "cmo", "line1"])
    assert users.count() == 5
    assert CompanyMembership.objects.get(user__username="cmo").company.name == "Contract Pack GmbH"
    line1 = get_user_model().objects.get(username="line1")
    company = CompanyMembership.objects.get(user=line1).company_id
    assert sorted(line1.groups.values_list("name", flat=True)) == ["Line system", f"company:{company}"]
    assert "first-Demo-pass-1" in first.getvalue() and "first-Demo-pass-1" not in second.getvalue()
    assert "Demo data ready (0 new master-data records)." in second.getvalue()
    assert "/accounts/login/" in second.getvalue()
    # The second run's password and token are the valid ones.
    password = second.getvalue().split("password for every demo user: ")[1].split()[0]
    assert get_user_model().objects.get(username="steward").check_password(password)
    token = second.getvalue().split("API token for line1 (shown once, previous demo token revoked): ")[1].split()[0]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/products/").json()["count"] == 8
