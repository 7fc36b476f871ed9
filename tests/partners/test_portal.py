"""The partner portal with Django's test client: who gets in, what each tab shows (the exact counts from pool state),
what another company's user gets (404), downloads recorded in the access log, serial requests, report uploads with
their line numbers, and a pool tab whose query count does not grow with the number of products.

Orders and batches are scoped by their product's owner (``serialization.services.batches``), so the CMO here holds an
own-label product for its orders; the products it packs for its MAH reach the pool tab through partner pools and
partnerships.
"""

import itertools
import json
import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.models import AccessEvent
from masterdata.models import NUMERIC, PackagingLevel
from masterdata.permissions import grant_company_object_permissions
from partners.charts import donut, percent
from partners.forms import PackHistoryForm
from partners.models import Partnership
from partners.services import create_partnership, revoke_partnership
from serialization.models import Allocation, Batch, LineReport, Pack, PackagingOrder, Reconciliation, SerialPool
from serialization.services import create_generated_pool
from serialization.services.materialise import iter_serial_chunks
from tests.factories import make_company, make_location, make_membership, make_product, make_user

pytestmark = pytest.mark.django_db

_numbers = itertools.count(1)


# --- the scene --------------------------------------------------------------------------------------------------


def make_cmo(name: str):
    # A CMO that also holds marketing authorisations of its own (own-label products, see the module docstring).
    return make_company(name=name, is_cmo=True, is_mah=True)


def make_cmo_user(company, *, username: str | None = None):
    user = make_user(username=username, roles=["CMO user"])
    make_membership(user=user, company=company)
    return user


def make_partner_pool(*, cmo, product, filled: int, assigned: int = 0, free: int = 0) -> SerialPool:
    """A CMO's partner pool of an MAH product, its counters set directly (the portal only reads pool state), shared
    with the CMO's users as an assignment shares it."""
    pool = SerialPool.objects.create(
        owner=cmo,
        kind=SerialPool.Kind.SGTIN,
        product=product,
        product_code=product.product_code,
        name=f"{product.product_code} from {product.owner.name}",
        source=SerialPool.Source.PARTNER,
        alphabet=NUMERIC,
        length=12,
        filled=filled,
        next_index=assigned + free,
        free=free,
    )
    grant_company_object_permissions(company=cmo, obj=pool)
    return pool


def make_partnership(*, mah, cmo, products=()) -> Partnership:
    """Through the service, which grants the CMO's users the right to see it (after their memberships exist)."""
    return create_partnership(mah=mah, cmo=cmo, products=products, actor=make_steward())


def make_steward():
    return make_user(roles=["Steward"], is_staff=True)  # the operator's staff: no company membership


class Scene:
    """An MAH with two products packed by CMO A (one with a partner pool holding serials, one without serials yet),
    CMO A's own-label product with a generated pool, an SSCC pool, a batch and an open packaging order, and a
    user of CMO A."""

    def __init__(self, *, cmo_name: str = "Contract Pack GmbH", username: str | None = None) -> None:
        n = next(_numbers)
        self.mah = make_company(name=f"Medi Pharma {n}")
        self.cmo = make_cmo(f"{cmo_name} {n}")
        self.user = make_cmo_user(self.cmo, username=username)
        self.amoxicillin = make_product(owner=self.mah, name="Amoxicillin 500 mg tablets")
        self.ibuprofen = make_product(owner=self.mah, name="Ibuprofen 400 mg tablets")
        make_partnership(mah=self.mah, cmo=self.cmo, products=[self.amoxicillin, self.ibuprofen])
        self.partner_pool = make_partner_pool(cmo=self.cmo, product=self.amoxicillin, filled=100_000, assigned=25_000)
        self.own = make_product(owner=self.cmo, name="Paracetamol 1 g effervescent")
        PackagingLevel.objects.create(product=self.own, level=2, quantity=10, uses_sscc=True)
        self.unit_pool = create_generated_pool(owner=self.cmo, actor=self.user, product=self.own, initial_fill=5_000)
        self.sscc_pool = create_generated_pool(
            owner=self.cmo,
            actor=self.user,
            sscc_prefix=self.cmo.prefixes.get(),
            extension_digit="3",
            initial_fill=100,
        )
        self.batch = Batch.objects.create(product=self.own, lot=f"L{n:04d}", expiry="271200")
        self.line = make_location(company=self.cmo, kind="line", name="Line 1")
        self.order = PackagingOrder.objects.create(
            number=f"PO-{n:05d}", batch=self.batch, line=self.line, planned_quantity=1_000
        )

    def request_serials(self, client, *, quantity: int, cases: int = 0, request_id: str | None = None):
        return client.post(
            reverse("portal:order-request-serials", args=[self.order.pk]),
            {"quantity": quantity, "cases": cases, "pallets": 0, "request_id": request_id or f"req-{next(_numbers)}"},
        )

    def allocation(self, pool=None) -> Allocation:
        return Allocation.objects.get(packaging_order=self.order, pool=pool or self.unit_pool)


def serials_of(allocation: Allocation) -> list[str]:
    return [s.decode() for chunk in iter_serial_chunks(allocation) for s in chunk.tolist()]


def upload(client, order, name: str, content: str, *, report_id: str | None = None):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(
        reverse("portal:order-upload-report", args=[order.pk]),
        {
            "file": SimpleUploadedFile(name, content.encode(), content_type="text/plain"),
            "report_id": report_id or f"upload-{next(_numbers)}",
        },
    )


def text_of(response) -> str:
    """The page's text with tags dropped and white space collapsed, for assertions about what a reader sees."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", response.content.decode(), flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


@pytest.fixture
def scene():
    return Scene()


@pytest.fixture
def client_a(scene, make_verified_client):
    return make_verified_client(scene.user)


# --- who gets in --------------------------------------------------------------------------------------------------


PAGES = ["portal:pools", "portal:history", "portal:orders", "portal:batches"]


@pytest.mark.parametrize("name", PAGES)
def test_each_tab_answers_200_for_a_verified_cmo_user_with_nav(scene, client_a, name):
    response = client_a.get(reverse(name))

    assert response.status_code == 200
    text = text_of(response)
    assert f"{scene.user.username} · {scene.cmo.name}" in text
    for label in ("SN/SSCC pool", "Pack history", "Orders", "Batches"):
        assert label in text
    content = response.content.decode()
    assert 'action="/accounts/logout/"' in content and ">Sign out</button>" in content
    assert f'href="{reverse(name)}" aria-current="page"' in content


def test_detail_pages_answer_200_and_the_portal_root_opens_the_pool_tab(scene, client_a):
    assert client_a.get(reverse("portal:pool", args=[scene.amoxicillin.product_code])).status_code == 200
    assert client_a.get(reverse("portal:pool", args=[scene.ibuprofen.product_code])).status_code == 200
    assert client_a.get(reverse("portal:order", args=[scene.order.pk])).status_code == 200
    response = client_a.get("/portal/")
    assert response.status_code == 302
    assert response["Location"] == "/portal/pools/"


@pytest.mark.parametrize("url", ["/portal/", "/portal/pools/", "/portal/orders/", "/portal/history/?sscc=1"])
def test_a_session_without_the_second_factor_is_sent_to_sign_in(scene, client, url):
    client.force_login(scene.user)  # password only: not verified

    response = client.get(url)

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert (location.path, parse_qs(location.query)) == ("/accounts/login/", {"next": [url]})


def test_an_anonymous_visitor_is_sent_to_sign_in_and_nothing_is_written(scene, client):
    response = client.post(reverse("portal:order-request-serials", args=[scene.order.pk]), {"quantity": 5})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")
    assert not Allocation.objects.filter(packaging_order=scene.order).exists()


def test_a_verified_user_without_a_company_is_refused(make_verified_client):
    staff = make_user(is_staff=True, is_superuser=True)

    response = make_verified_client(staff).get(reverse("portal:pools"))

    assert response.status_code == 403
    assert "not linked to a company" in text_of(response)


# --- SN/SSCC pool -------------------------------------------------------------------------------------------------


def test_pool_tab_lists_the_company_products_with_counts_from_pool_state(scene, client_a):
    response = client_a.get(reverse("portal:pools"))

    rows = {p["item"].product_code: p for p in response.context["products"]}
    assert list(rows) == [scene.amoxicillin.product_code, scene.ibuprofen.product_code, scene.own.product_code]
    amox, counts = rows[scene.amoxicillin.product_code]["item"], rows[scene.amoxicillin.product_code]["counts"]
    assert (counts.filled, counts.assigned, counts.available) == (100_000, 25_000, 75_000)
    assert amox.source_labels == ["Partner MAH"]
    assert amox.partners == [scene.mah.name]
    own = rows[scene.own.product_code]
    assert own["item"].source_labels == ["Own generator"]
    assert (own["counts"].filled, own["counts"].assigned) == (5_000, 0)
    assert rows[scene.ibuprofen.product_code]["item"].has_serials is False

    text = text_of(response)
    assert (
        f"{scene.amoxicillin.product_code} GTIN-14 Amoxicillin 500 mg tablets for {scene.mah.name} Partner MAH "
        "75,000 25,000"
    ) in text
    ibuprofen = f"{scene.ibuprofen.product_code} GTIN-14 Ibuprofen 400 mg tablets for {scene.mah.name}"
    assert f"{ibuprofen} — No serials assigned yet" in text
    assert "SSCC ranges" in text and f"3 {scene.cmo.prefixes.get().prefix} Own generator 100 0" in text


def test_pool_tab_counts_follow_the_counters_after_releases(scene, client_a):
    SerialPool.objects.filter(pk=scene.partner_pool.pk).update(next_index=40_000, free=15_000)  # 15,000 released
    make_partner_pool(cmo=scene.cmo, product=scene.amoxicillin, filled=1_000, assigned=1_000)  # a second delivery

    response = client_a.get(reverse("portal:pools"))

    amox = next(p for p in response.context["products"] if p["item"].product_code == scene.amoxicillin.product_code)
    assert (amox["counts"].filled, amox["counts"].assigned, amox["counts"].available) == (101_000, 26_000, 75_000)
    assert amox["item"].sources[0].pools == 2


def test_pool_tab_search_filters_by_code_or_part_of_the_name_and_reset_clears_it(scene, client_a):
    by_name = client_a.get(reverse("portal:pools"), {"q": "amoxi"})
    by_code = client_a.get(reverse("portal:pools"), {"q": scene.own.product_code[3:10]})
    nothing = client_a.get(reverse("portal:pools"), {"q": "no such thing"})

    assert [p["item"].product_code for p in by_name.context["products"]] == [scene.amoxicillin.product_code]
    assert [p["item"].product_code for p in by_code.context["products"]] == [scene.own.product_code]
    assert 'value="amoxi"' in by_name.content.decode()
    assert "1 product matching “amoxi”." in text_of(by_name)
    assert nothing.context["products"] == []
    assert "No product matches “no such thing”." in text_of(nothing)
    assert '<a class="button secondary" href="/portal/pools/">Reset filters</a>' in by_name.content.decode()
    reset = client_a.get("/portal/pools/")
    assert len(reset.context["products"]) == 3


def test_pool_tab_draws_an_accessible_donut_per_product(scene, client_a):
    content = client_a.get(reverse("portal:pools")).content.decode()
    code = scene.amoxicillin.product_code

    row = content[content.index(f'id="product-{code}"') :]
    row = row[: row.index("</tr>")]
    assert "<details" in row and "<summary>Show chart</summary>" in row
    summary = "Available 75,000 (75 %), assigned 25,000 (25 %) of 100,000 serials"
    assert f'role="img" aria-label="{code}: {summary}"' in row
    assert f"<title>{code}: {summary}</title>" in row
    assert "<title>Available: 75,000 of 100,000 (75 %)</title>" in row
    assert "<title>Assigned: 25,000 of 100,000 (25 %)</title>" in row
    assert 'class="count-available">75,000</dd>' in row and 'class="count-assigned">25,000</dd>' in row


def test_product_page_lists_each_pool_and_a_product_without_serials_says_so(scene, client_a):
    amox = client_a.get(reverse("portal:pool", args=[scene.amoxicillin.product_code]))
    ibu = client_a.get(reverse("portal:pool", args=[scene.ibuprofen.product_code]))

    assert [row["pool"].pk for row in amox.context["pools"]] == [scene.partner_pool.pk]
    assert "100,000 25,000 75,000" in text_of(amox)
    assert "No serials assigned yet." in text_of(ibu)


def test_products_of_a_revoked_partnership_without_pools_leave_the_pool_tab(scene, client_a):
    revoke_partnership(partnership=Partnership.objects.get(cmo=scene.cmo), actor=make_steward(), reason="ended")

    response = client_a.get(reverse("portal:pools"))

    codes = [p["item"].product_code for p in response.context["products"]]
    assert codes == [scene.amoxicillin.product_code, scene.own.product_code]  # its pool stays on record
    assert client_a.get(reverse("portal:pool", args=[scene.ibuprofen.product_code])).status_code == 404


def test_a_partnership_not_shared_with_the_cmo_users_adds_no_products(scene, client_a):
    other_mah = make_company()
    unshared = make_product(owner=other_mah, name="Unshared 10 mg")
    Partnership.objects.create(mah=other_mah, cmo=scene.cmo).products.set([unshared])  # no object permission granted

    response = client_a.get(reverse("portal:pools"))

    assert unshared.product_code not in [p["item"].product_code for p in response.context["products"]]
    assert client_a.get(reverse("portal:pool", args=[unshared.product_code])).status_code == 404


def test_pool_tab_query_count_does_not_grow_with_the_number_of_products(scene, client_a, django_assert_max_num_queries):
    with CaptureQueriesContext(connection) as three:
        assert client_a.get(reverse("portal:pools")).status_code == 200
    assert len(three.captured_queries) <= 12
    for i in range(27):
        product = make_product(owner=scene.mah, name=f"Extra product {i:02d}")
        make_partner_pool(cmo=scene.cmo, product=product, filled=10**8, assigned=i)
        Partnership.objects.get(cmo=scene.cmo).products.add(product)

    with django_assert_max_num_queries(len(three.captured_queries)):
        response = client_a.get(reverse("portal:pools"))

    assert len(response.context["products"]) == 30


# --- isolation ----------------------------------------------------------------------------------------------------


def test_a_user_of_cmo_b_gets_404_for_everything_of_cmo_a(scene, client_a, make_verified_client):
    scene.request_serials(client_a, quantity=10)
    allocation = scene.allocation()
    b = Scene(cmo_name="Other Packer")
    client_b = make_verified_client(b.user)

    urls = [
        reverse("portal:pool", args=[scene.amoxicillin.product_code]),
        reverse("portal:pool", args=[scene.own.product_code]),
        reverse("portal:pool", args=["00000000000000"]),
        reverse("portal:order", args=[scene.order.pk]),
        reverse("portal:allocation-download", args=[allocation.pk]),
    ]
    for url in urls:
        response = client_b.get(url)
        assert response.status_code == 404, url
        assert "Not found" in text_of(response)
    request_url = reverse("portal:order-request-serials", args=[scene.order.pk])
    assert client_b.post(request_url, {"quantity": 1, "request_id": "b-1"}).status_code == 404
    assert upload(client_b, scene.order, "r.csv", "serial\nX\n").status_code == 404
    assert not AccessEvent.objects.filter(kind=AccessEvent.Kind.DOWNLOAD).exists()
    assert Allocation.objects.filter(packaging_order=scene.order).count() == 1
    pools_b = client_b.get(reverse("portal:pools"))
    assert scene.amoxicillin.product_code not in pools_b.content.decode()
    assert scene.order.number not in client_b.get(reverse("portal:orders")).content.decode()


# --- orders: request, download, upload -----------------------------------------------------------------------------


def test_orders_tab_lists_open_orders_with_the_serials_they_hold(scene, client_a):
    PackagingOrder.objects.create(
        number="PO-CLOSED", batch=scene.batch, line=scene.line, planned_quantity=5, status=PackagingOrder.Status.CLOSED
    )
    scene.request_serials(client_a, quantity=120)

    open_only = client_a.get(reverse("portal:orders"))
    everything = client_a.get(reverse("portal:orders"), {"show": "all"})

    assert [row["order"].number for row in open_only.context["orders"]] == [scene.order.number]
    assert open_only.context["orders"][0]["granted"] == 120
    assert f"{scene.order.number} {scene.own.product_code}" in text_of(open_only)
    assert {row["order"].number for row in everything.context["orders"]} == {scene.order.number, "PO-CLOSED"}


def test_request_serials_grants_once_for_a_form_sent_twice(scene, client_a):
    page = client_a.get(reverse("portal:order", args=[scene.order.pk]))
    request_id = page.context["request_form"].initial["request_id"]
    assert f'name="request_id" value="{request_id}"' in page.content.decode()

    first = scene.request_serials(client_a, quantity=300, cases=2, request_id=request_id)
    second = scene.request_serials(client_a, quantity=300, cases=2, request_id=request_id)

    assert first.status_code == second.status_code == 302
    assert Allocation.objects.filter(packaging_order=scene.order).count() == 2  # units and cases
    assert scene.allocation().quantity == 300
    assert scene.allocation(scene.sscc_pool).quantity == 2
    scene.unit_pool.refresh_from_db()
    assert scene.unit_pool.assigned == 300
    followed = client_a.get(first["Location"])
    assert "This request was already granted" in text_of(followed)
    assert "300 unit serials" in text_of(followed)


def test_request_serials_shows_the_service_refusal_in_the_form(scene, client_a):
    response = scene.request_serials(client_a, quantity=6_000)

    assert response.status_code == 200
    assert "No pool of unit serials" in text_of(response) and "5,000" in text_of(response)
    assert not Allocation.objects.filter(packaging_order=scene.order).exists()


def test_download_streams_the_csv_and_records_the_access_with_its_quantity(scene, client_a):
    scene.request_serials(client_a, quantity=25)
    allocation = scene.allocation()

    response = client_a.get(reverse("portal:allocation-download", args=[allocation.pk]), {"notation": "serial"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="allocation-{allocation.pk}-serial.csv"'
    body = b"".join(response.streaming_content).decode()
    assert body.splitlines()[:1] == [f"# requested_by: {scene.user.username}"]  # the stamp's first line
    assert body.splitlines()[3:] == ["serial", *serials_of(allocation)]
    event = AccessEvent.objects.get(kind=AccessEvent.Kind.DOWNLOAD)
    assert (event.user, event.quantity, event.target) == (scene.user, 25, f"allocation {allocation.pk}")
    assert event.details["format"] == "csv" and event.details["notation"] == "serial"


def test_download_of_element_strings_and_an_unknown_notation(scene, client_a):
    scene.request_serials(client_a, quantity=3)
    allocation = scene.allocation()
    url = reverse("portal:allocation-download", args=[allocation.pk])

    element = client_a.get(url, {"notation": "element_string"})
    unknown = client_a.get(url, {"notation": "bogus"})

    lines = b"".join(element.streaming_content).decode().splitlines()
    assert lines[4:] == [f"(01){scene.own.product_code}(21){s}" for s in serials_of(allocation)]  # stamp, header
    assert unknown.status_code == 302 and unknown["Location"] == reverse("portal:order", args=[scene.order.pk])
    assert AccessEvent.objects.filter(kind=AccessEvent.Kind.DOWNLOAD).count() == 1


def test_upload_of_a_csv_with_a_wrong_serial_shows_its_line_in_the_file(scene, client_a):
    scene.request_serials(client_a, quantity=5)
    serials = serials_of(scene.allocation())
    content = f"product_code,serial\n{scene.own.product_code},{serials[0]}\n\n{scene.own.product_code},NOTOURS123\n"

    response = upload(client_a, scene.order, "line-1.csv", content)

    assert response.status_code == 200
    report = response.context["upload"]["report"]
    assert report.status == LineReport.Status.REJECTED
    assert [(e["file_line"], e["serial"]) for e in response.context["upload"]["errors"]] == [(4, "NOTOURS123")]
    text = text_of(response)
    assert f"Report {report.report_id} rejected: nothing was applied." in text
    assert "Line in file Serial Problem 4 NOTOURS123" in text
    assert not Pack.objects.exists()


def test_upload_of_a_clean_csv_commissions_the_units_and_shows_the_counts(scene, client_a):
    scene.request_serials(client_a, quantity=5)
    serials = serials_of(scene.allocation())

    response = upload(client_a, scene.order, "line-1.csv", "\n".join(serials[:4]) + "\n", report_id="csv-1")
    again = upload(client_a, scene.order, "line-1.csv", "\n".join(serials[:4]) + "\n", report_id="csv-1")

    assert "Report csv-1 applied. 4 lines; units: 4; containers: 0." in text_of(response)
    assert "applied already — this file was uploaded before, nothing changed" in text_of(again)
    assert Pack.objects.filter(order=scene.order).count() == 4
    assert "csv-1 Commissioning 4 Applied" in text_of(client_a.get(reverse("portal:order", args=[scene.order.pk])))


def test_upload_of_a_csv_with_a_case_column_commissions_the_units_into_the_case(scene, client_a):
    scene.request_serials(client_a, quantity=3, cases=1)
    units = serials_of(scene.allocation())
    case = serials_of(scene.allocation(scene.sscc_pool))[0]
    code = scene.own.product_code
    case_report = {"report_id": "case-1", "kind": "commissioning", "lines": [{"sscc": case, "level": 2}]}
    assert upload(client_a, scene.order, "case.json", json.dumps(case_report)).context["upload"]["applied"]
    content = (
        f"product_code,serial,parent_sscc\n{code},{units[0]},{case}\n{code},{units[1]},{case}\n{code},{units[2]},\n"
    )

    response = upload(client_a, scene.order, "units.csv", content, report_id="csv-into-case")

    assert response.context["upload"]["applied"], text_of(response)
    inside = Pack.objects.filter(parent__serial=case).values_list("serial", "status")
    assert sorted(inside) == sorted([(units[0], "packed"), (units[1], "packed")])
    assert Pack.objects.get(serial=units[2]).parent is None
    assert LineReport.objects.get(report_id="csv-into-case").result["counts"] == {
        "units": 3,
        "containers": 0,
        "packed": 2,
    }


def test_upload_of_a_json_report_reports_problems_by_entry(scene, client_a):
    scene.request_serials(client_a, quantity=2)
    serials = serials_of(scene.allocation())
    body = {
        "report_id": "json-1",
        "kind": "commissioning",
        "order": scene.order.number,
        "lines": [{"product_code": scene.own.product_code, "serial": serials[0]}, {"sscc": "123", "level": 2}],
    }

    response = upload(client_a, scene.order, "report.json", json.dumps(body))

    assert response.context["upload"]["report"].status == LineReport.Status.REJECTED
    assert [e["file_line"] for e in response.context["upload"]["errors"]] == [2]
    assert "Entry in lines" in text_of(response)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("r.json", '{"report_id": "x", "kind": "commissioning", "order": "PO-9", "lines": []}', "is for order PO-9"),
        ("r.json", '{"report_id": "x"', "The JSON cannot be read at line 1"),
        ("r.json", '{"report_id": "x", "order": ""}', "The JSON lacks kind, lines"),
        ("r.csv", "a,b,c,d\n", "Line 1 has 4 columns"),
        ("r.csv", "serial\n\n", "The CSV holds no serials"),
        ("r.json", '{"report_id": "x", "kind": "packing", "lines": [{"sscc": "1"}]}', "Unknown report kind 'packing'"),
    ],
)
def test_upload_of_an_unreadable_file_says_what_to_fix(scene, client_a, name, content, message):
    response = upload(client_a, scene.order, name, content)

    assert response.status_code == 200
    assert message in text_of(response)
    assert not LineReport.objects.exists()


# --- pack history ----------------------------------------------------------------------------------------------------


def test_history_shows_the_timeline_and_the_hierarchy_of_a_unit_and_its_case(scene, client_a):
    scene.request_serials(client_a, quantity=3, cases=1)
    units = serials_of(scene.allocation())
    case = serials_of(scene.allocation(scene.sscc_pool))[0]
    code = scene.own.product_code
    commissioning = {
        "report_id": "c-1",
        "kind": "commissioning",
        "lines": [*({"product_code": code, "serial": s} for s in units[:2]), {"sscc": case, "level": 2}],
    }
    packing = {
        "report_id": "a-1",
        "kind": "aggregation",
        "lines": [{"parent_sscc": case, "children": [{"product_code": code, "serial": s} for s in units[:2]]}],
    }
    for body in (commissioning, packing):
        assert upload(client_a, scene.order, "r.json", json.dumps(body)).context["upload"]["applied"]

    unit = client_a.get(reverse("portal:history"), {"product_code": code, "serial": units[0]})
    container = client_a.get(reverse("portal:history"), {"sscc": case})

    text = text_of(unit)
    assert f"(01) {code} (21) {units[0]}" in text
    assert "Commissioned" in text and f"Packed into {case}" in text and "report a-1" in text
    assert f"Case {case} Commissioned" in text
    assert f"lot {scene.batch.lot}, expiry 271200" in text
    below = text_of(container)
    assert "Contents: 2 units" in below
    assert f"Unit {code} {units[0]} Packed" in below and f"Unit {code} {units[1]} Packed" in below


def test_history_of_an_unknown_or_foreign_serial_reads_not_found(scene, client_a, make_verified_client):
    other = Scene(cmo_name="Other Packer")
    client_b = make_verified_client(other.user)
    scene.request_serials(client_a, quantity=1)
    mine = serials_of(scene.allocation())[0]

    unknown = client_a.get(reverse("portal:history"), {"product_code": scene.own.product_code, "serial": "ZZZ"})
    foreign = client_b.get(reverse("portal:history"), {"product_code": scene.own.product_code, "serial": mine})
    sscc = client_a.get(reverse("portal:history"), {"sscc": "000000000000000000"})

    for response in (unknown, foreign, sscc):
        assert response.status_code == 200
        assert "Not found." in text_of(response)
    assert "is in no pool" in text_of(foreign)


def test_history_form_asks_for_a_complete_number():
    assert PackHistoryForm({"product_code": "09521234543213"}).errors == {
        "serial": ["Enter the serial number printed after (21)."]
    }
    assert PackHistoryForm({"sscc": "12"}).errors == {"sscc": ["An SSCC has exactly 18 digits."]}
    both = PackHistoryForm({"product_code": "1", "serial": "2", "sscc": "3" * 18})
    assert both.errors == {"__all__": ["Look up either a product code with a serial number, or an SSCC — not both."]}


# --- batches ----------------------------------------------------------------------------------------------------------


def test_batches_tab_shows_status_and_latest_reconciliation(scene, client_a):
    failed = Batch.objects.create(product=scene.own, lot="FAILED1", expiry="271200", status=Batch.Status.COMPLETED)
    passed = Batch.objects.create(product=scene.own, lot="PASSED1", expiry="271200", status=Batch.Status.RECONCILED)
    Reconciliation.objects.create(batch=passed, passed=False, counts={})
    Reconciliation.objects.create(batch=passed, passed=True, counts={})
    Reconciliation.objects.create(batch=failed, passed=False, counts={})
    mah_batch = Batch.objects.create(product=scene.amoxicillin, lot="MAHONLY", expiry="271200")

    response = client_a.get(reverse("portal:batches"))

    text = text_of(response)
    assert "PASSED1 271200 Reconciled 0 Passed" in text
    assert "FAILED1 271200 Completed 0 Failed" in text
    assert f"{scene.batch.lot} 271200 Planned 1 (1 open) None yet" in text
    assert mah_batch.lot not in text


# --- charts -----------------------------------------------------------------------------------------------------------


def test_percent_never_rounds_to_a_misleading_zero_or_hundred():
    assert percent(0, 0) == "0 %"
    assert percent(1, 10**8) == "< 0.1 %"
    assert percent(10**8 - 1, 10**8) == "> 99.9 %"
    assert percent(1, 3) == "33.3 %"
    assert percent(1, 2) == "50 %"


def test_donut_of_an_empty_pool_and_of_a_tiny_share():
    empty = str(donut(available=0, assigned=0, label="X"))
    tiny = str(donut(available=10**8 - 1, assigned=1, label="Y <&>"))

    assert 'aria-label="X: No serials yet"' in empty and "arc-" not in empty
    assert "Y &lt;&amp;&gt;" in tiny and "<title>Assigned: 1 of 100,000,000 (&lt; 0.1 %)</title>" in tiny
    assert 'class="arc arc-assigned"' in tiny  # drawn at a visible minimum, while the numbers stay exact
