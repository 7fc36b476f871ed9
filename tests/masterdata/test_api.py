import pytest
from django.contrib.auth.models import Permission

from masterdata.models import Company, Market, Product
from tests.factories import (
    get_market,
    make_company,
    make_gln,
    make_gtin,
    make_location,
    make_membership,
    make_product,
    make_user,
)

pytestmark = pytest.mark.django_db

ACME_GTIN = "09521234543213"
PRODUCT_CODE_TAKEN = "Another product already has this product code; a code identifies one product."
PRODUCTS = "/api/v1/products/"
COMPANIES = "/api/v1/companies/"
LOCATIONS = "/api/v1/locations/"
MARKETS = "/api/v1/markets/"


@pytest.fixture
def steward():
    return make_user(username="steward", roles=("Steward",))


@pytest.fixture
def api(make_api_client, steward):
    return make_api_client(steward)


@pytest.fixture
def acme():
    return make_company(name="Acme Pharma", prefixes=["9521234"])


def product_payload(owner, **overrides):
    return {
        "owner": owner.pk,
        "product_code": ACME_GTIN,
        "company_prefix_length": 7,
        "name": "Amoxicillin",
        "strength": "500 mg",
        "markets": ["EU", "US"],
        "national_codes": [{"market": "US", "ai": "715", "value": "1234567890"}],
        "packaging_levels": [
            {"level": 0, "quantity": 1},
            {"level": 2, "gtin": make_gtin("9521234", indicator="1", item_reference=54321), "quantity": 20},
            {"level": 3, "quantity": 40, "uses_sscc": True},
        ],
        **overrides,
    }


# --- products ---------------------------------------------------------------------------------------------------------


def test_create_product_with_nested_rows(api, acme, steward):
    response = api.post(PRODUCTS, product_payload(acme), format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["product_code"], body["owner"], body["markets"]) == (ACME_GTIN, acme.pk, ["EU", "US"])
    assert [(c["market"], c["ai"], c["value"]) for c in body["national_codes"]] == [("US", "715", "1234567890")]
    assert [(lv["level"], lv["gtin"], lv["quantity"], lv["uses_sscc"]) for lv in body["packaging_levels"]] == [
        (0, "", 1, False),
        (2, "19521234543210", 20, False),
        (3, "", 40, True),
    ]
    assert Product.objects.get(pk=body["id"]).history.latest().history_user == steward


def test_product_list_detail_and_update(api, acme, steward):
    product = make_product(owner=acme, product_code=ACME_GTIN, markets=["EU"])

    listed = api.get(PRODUCTS).json()
    detail = api.get(f"{PRODUCTS}{product.pk}/").json()
    patched = api.patch(f"{PRODUCTS}{product.pk}/", {"name": "Amoxicillin 500 mg"}, format="json")

    assert listed["count"] == 1 and listed["results"][0]["product_code"] == ACME_GTIN
    assert detail["markets"] == ["EU"]
    assert patched.status_code == 200
    assert patched.json()["name"] == "Amoxicillin 500 mg"
    assert patched.json()["markets"] == ["EU"]  # nested collections left out of a PATCH stay as they are
    record = Product.objects.get(pk=product.pk).history.latest()
    assert (record.name, record.history_user) == ("Amoxicillin 500 mg", steward)


def test_put_replaces_nested_collections(api, acme):
    created = api.post(PRODUCTS, product_payload(acme), format="json").json()

    payload = product_payload(acme, markets=["EU"], national_codes=[], packaging_levels=[{"level": 0, "quantity": 1}])
    response = api.put(f"{PRODUCTS}{created['id']}/", payload, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["markets"], body["national_codes"], [lv["level"] for lv in body["packaging_levels"]]) == (
        ["EU"],
        [],
        [0],
    )


def test_put_without_nested_collections_leaves_them_unchanged(api, acme):
    created = api.post(PRODUCTS, product_payload(acme), format="json").json()
    payload = {
        k: v for k, v in product_payload(acme).items() if k not in ("markets", "national_codes", "packaging_levels")
    }

    response = api.put(f"{PRODUCTS}{created['id']}/", {**payload, "name": "Renamed"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["markets"], len(body["national_codes"]), len(body["packaging_levels"])) == (
        "Renamed",
        ["EU", "US"],
        1,
        3,
    )


def test_wrong_check_digit_is_400_naming_product_code(api, acme):
    response = api.post(PRODUCTS, product_payload(acme, product_code="09521234543214"), format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"] == {
        "product_code": ["GTIN 09521234543214 has check digit 4; expected 3 — correct the last digit."]
    }
    assert error["message"].startswith("product_code: GTIN 09521234543214 has check digit 4; expected 3")
    assert not Product.objects.exists()


def test_gtin_outside_prefixes_is_400_naming_the_prefixes(api, acme):
    outside = make_gtin("9529999")

    response = api.post(PRODUCTS, product_payload(acme, product_code=outside), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["product_code"] == [
        f"GTIN {outside} is outside the company prefixes of Acme Pharma (9521234); "
        "use a GTIN from one of them or register the prefix on the company."
    ]


def test_duplicate_product_code_is_400_with_message(api, acme):
    make_product(owner=acme, product_code=ACME_GTIN)

    exact = api.post(PRODUCTS, product_payload(acme), format="json")
    shorter = api.post(PRODUCTS, product_payload(acme, product_code=ACME_GTIN[1:]), format="json")

    assert exact.status_code == shorter.status_code == 400
    assert exact.json()["error"]["fields"] == {"product_code": [PRODUCT_CODE_TAKEN]}
    assert shorter.json()["error"]["fields"] == {"product_code": [PRODUCT_CODE_TAKEN]}


def test_nested_error_names_the_nested_field(api, acme):
    payload = product_payload(acme, national_codes=[{"market": "US", "ai": "715", "value": "12 34"}])
    unknown_market = product_payload(acme, national_codes=[{"market": "XX", "ai": "715", "value": "1"}])

    response = api.post(PRODUCTS, payload, format="json")
    unknown = api.post(PRODUCTS, unknown_market, format="json")

    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert list(fields) == ["national_codes.0.value"]
    assert "not in GS1 character set 82" in fields["national_codes.0.value"][0]
    assert unknown.status_code == 400
    assert unknown.json()["error"]["fields"] == {"national_codes.0.market": ["Object with code=XX does not exist."]}
    assert not Product.objects.exists()


def test_user_without_view_permission_gets_403(make_api_client, acme):
    make_product(owner=acme)
    client = make_api_client(make_user())

    for url in (PRODUCTS, COMPANIES, LOCATIONS, MARKETS):
        assert client.get(url).status_code == 403


def test_auditor_can_read_but_not_write(make_api_client, acme):
    client = make_api_client(make_user(roles=("Auditor",)))

    assert client.get(PRODUCTS).status_code == 200
    assert client.post(PRODUCTS, product_payload(acme), format="json").status_code == 403


def test_company_member_cannot_see_another_companys_product(make_api_client, acme):
    cmo = make_company(name="Contract Pack GmbH", is_mah=False, is_cmo=True)
    foreign = make_product(owner=acme)
    member = make_user(roles=("QA",))
    make_membership(user=member, company=cmo)
    client = make_api_client(member)

    assert client.get(f"{PRODUCTS}{foreign.pk}/").status_code == 404
    assert client.get(PRODUCTS).json()["count"] == 0
    assert [c["name"] for c in client.get(COMPANIES).json()["results"]] == ["Contract Pack GmbH"]
    assert client.get(f"{COMPANIES}{acme.pk}/").status_code == 404


def test_company_member_cannot_create_products_for_another_company(make_api_client, acme):
    other = make_company(name="Other MAH")
    member = make_user(roles=("Steward",))
    make_membership(user=member, company=other)

    response = make_api_client(member).post(PRODUCTS, product_payload(acme), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["owner"] == [f'Invalid pk "{acme.pk}" - object does not exist.']


def test_product_filters(api, acme):
    eu = make_product(owner=acme, markets=["EU"])
    us = make_product(owner=acme, markets=["US"])
    other = make_product(owner=make_company(), markets=["EU"])

    def ids(query):
        return sorted(p["id"] for p in api.get(PRODUCTS + query).json()["results"])

    assert ids("?market=EU") == sorted([eu.pk, other.pk])
    assert ids(f"?owner={acme.pk}") == sorted([eu.pk, us.pk])
    assert ids(f"?owner={acme.pk}&market=US") == [us.pk]
    assert ids(f"?product_code={other.product_code}") == [other.pk]
    assert ids("?code_schema=NTIN") == []


def test_product_list_query_count_does_not_grow_with_rows(api, acme, django_assert_max_num_queries):
    def add_products(count):
        for _ in range(count):
            product = make_product(owner=acme, markets=["EU", "US"])
            product.national_codes.create(market=get_market("US"), ai="715", value="1234567890")
            product.packaging_levels.create(level=0, quantity=1)

    add_products(2)
    # token lookup + its use log (5), membership and permissions (3), count + products, markets, codes, levels (5)
    with django_assert_max_num_queries(13) as few:
        assert api.get(PRODUCTS).status_code == 200
    add_products(8)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert api.get(PRODUCTS).json()["count"] == 10


@pytest.mark.parametrize("url", [COMPANIES, MARKETS])
def test_company_and_market_lists_have_a_constant_query_count(api, url, django_assert_max_num_queries):
    make_company()
    with django_assert_max_num_queries(11) as few:
        assert api.get(url).status_code == 200
    for number in range(6):
        make_company(prefixes=[f"95{number}1111", f"95{number}2222"])
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert api.get(url).status_code == 200


def test_delete_of_a_referenced_object_is_409_not_500(make_api_client, acme):
    make_product(owner=acme)
    admin_client = make_api_client(make_user(is_superuser=True))

    response = admin_client.delete(f"{COMPANIES}{acme.pk}/")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "in_use"
    assert response.json()["error"]["message"].startswith(
        "Company Acme Pharma cannot be deleted: it is still referenced by 1 product."
    )
    assert Company.objects.filter(pk=acme.pk).exists()


def test_steward_may_not_delete(api, acme):
    product = make_product(owner=acme)

    assert api.delete(f"{PRODUCTS}{product.pk}/").status_code == 403
    assert Product.objects.filter(pk=product.pk).exists()


# --- companies, locations, markets ------------------------------------------------------------------------------------


def test_create_and_update_company_with_nested_prefixes(api, steward):
    created = api.post(
        COMPANIES, {"name": "Acme Pharma", "is_mah": True, "prefixes": [{"prefix": "9521234"}]}, format="json"
    )
    assert created.status_code == 201, created.json()
    company_id = created.json()["id"]

    updated = api.patch(
        f"{COMPANIES}{company_id}/", {"prefixes": [{"prefix": "9521234"}, {"prefix": "0312345"}]}, format="json"
    )
    bad = api.patch(f"{COMPANIES}{company_id}/", {"prefixes": [{"prefix": "95212"}]}, format="json")

    assert updated.status_code == 200
    assert sorted((p["prefix"], p["length"]) for p in updated.json()["prefixes"]) == [("0312345", 7), ("9521234", 7)]
    assert updated.json()["roles"] == ["MAH"]
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"] == {
        "prefixes.0.prefix": ["'95212' is not a GS1 company prefix: enter 6 to 12 digits (found 5)."]
    }
    assert Company.objects.get(pk=company_id).history.latest().history_user == steward


def test_company_without_role_is_400_non_field(api):
    response = api.post(COMPANIES, {"name": "Nobody"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "non_field_errors": ["Tick at least one role: MAH, CMO, 3PL or wholesaler."]
    }


def test_location_sgln_is_read_only_and_derived(api, acme):
    gln = make_gln("9521234", location_reference=1)

    created = api.post(
        LOCATIONS,
        {"company": acme.pk, "kind": "site", "name": "Cork", "gln": gln, "sgln": "urn:epc:id:sgln:1.2.3"},
        format="json",
    )
    line = api.post(
        LOCATIONS,
        {"company": acme.pk, "kind": "line", "name": "Line 1", "gln": gln, "gln_extension": "1", "parent": 999999},
        format="json",
    )

    assert created.status_code == 201, created.json()
    assert created.json()["sgln"] == "urn:epc:id:sgln:9521234.00001.0"
    assert line.status_code == 400
    assert list(line.json()["error"]["fields"]) == ["parent"]


def test_location_filters_and_query_count(api, acme, django_assert_max_num_queries):
    site = make_location(company=acme)
    make_location(company=acme, kind="line", parent=site, gln=site.gln, gln_extension="1")
    make_location(company=make_company())

    # token (5), membership and permissions (3), the company filter's choice (1), count + locations + prefixes (3)
    with django_assert_max_num_queries(12) as few:
        body = api.get(f"{LOCATIONS}?company={acme.pk}").json()
    for _ in range(5):
        make_location(company=acme, kind="warehouse")
    with django_assert_max_num_queries(len(few.captured_queries)):
        more = api.get(f"{LOCATIONS}?company={acme.pk}").json()

    assert (body["count"], more["count"]) == (2, 7)
    assert all(item["sgln"].startswith("urn:epc:id:sgln:9521234.") for item in more["results"])
    assert [item["kind"] for item in api.get(f"{LOCATIONS}?kind=line").json()["results"]] == ["line"]


def test_markets_are_listed_and_editable_by_stewards(api, steward):
    listed = api.get(MARKETS).json()
    eu = Market.objects.get(code="EU")

    response = api.patch(f"{MARKETS}{eu.pk}/", {"extra_serial_parameters": ["93"]}, format="json")
    ok = api.patch(f"{MARKETS}{eu.pk}/", {"serial_length": 20}, format="json")

    assert [m["code"] for m in listed["results"]] == ["EU", "PK", "RU", "SA", "US"]
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["extra_serial_parameters.0"]
    assert ok.status_code == 200 and ok.json()["serial_length"] == 20
    assert eu.history.latest().history_user == steward


def test_member_sees_markets_but_not_other_locations(make_api_client, acme):
    other_site = make_location(company=make_company())
    member = make_user(roles=("QA",))
    make_membership(user=member, company=acme)
    client = make_api_client(member)

    assert client.get(MARKETS).json()["count"] == 5
    assert client.get(f"{LOCATIONS}{other_site.pk}/").status_code == 404


# --- schema and docs --------------------------------------------------------------------------------------------------


def test_openapi_schema_documents_the_masterdata_endpoints(client):
    response = client.get("/api/v1/schema/")

    assert response.status_code == 200
    text = response.content.decode()
    for path in ("/api/v1/products/", "/api/v1/products/{id}/", "/api/v1/companies/", "/api/v1/locations/"):
        assert f"{path}:" in text


def test_docs_page_uses_bundled_assets_not_a_cdn(client):
    response = client.get("/api/v1/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist" in html
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com"):
        assert cdn not in html


def test_permission_fixture_sanity(steward):
    # The Steward role may add/change/view master data but never delete (audit.roles).
    codenames = set(Permission.objects.filter(group__user=steward).values_list("codename", flat=True))
    assert {"add_product", "change_product", "view_product"} <= codenames
    assert "delete_product" not in codenames
