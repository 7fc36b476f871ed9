"""The partner portal in a real browser (Debian's Chromium through Playwright): sign-in with TOTP, the pool tab's
search, reset and donut, a serial request, a CSV download and its content, a report upload with an error, the pack
history, the batches, and CMO B's 404 for CMO A's product. Screenshots of the main pages land in
test-artifacts/screenshots/."""

import re

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from audit.models import AccessEvent
from serialization.models import Allocation, LineReport, Reconciliation
from serialization.services.line_reports import apply_line_report
from tests.browser.conftest import path_of, sign_in
from tests.partners.test_portal import Scene, serials_of

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def make_scene(username: str, **kwargs) -> Scene:
    scene = Scene(username=username, **kwargs)
    TOTPDevice.objects.create(user=scene.user, name="Phone", confirmed=True)
    return scene


def open_portal(page, live_server, scene: Scene) -> None:
    sign_in(page, live_server, username=scene.user.username, next_url="/portal/")
    assert path_of(page, live_server) == "/portal/pools/"


def product_row(page, product_code: str):
    return page.locator(f"#product-{product_code}")


def test_cmo_signs_in_with_totp_and_searches_resets_and_expands_the_pool_tab(page, live_server, screenshot):
    scene = make_scene("carla")

    open_portal(page, live_server, scene)

    expect(page.get_by_role("heading", level=1)).to_have_text("SN/SSCC pool")
    expect(page.locator("header.site nav")).to_contain_text(f"carla · {scene.cmo.name}")
    expect(page.get_by_role("link", name="SN/SSCC pool")).to_have_attribute("aria-current", "page")
    rows = page.locator("#products tbody tr")
    expect(rows).to_have_count(3)
    expect(product_row(page, scene.ibuprofen.product_code)).to_contain_text("No serials assigned yet")

    page.get_by_label("Search").fill("amoxi")
    with page.expect_navigation():
        page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Amoxicillin 500 mg tablets")
    expect(page.locator("#search-summary")).to_have_text("1 product matching “amoxi”.")

    with page.expect_navigation():
        page.get_by_role("link", name="Reset filters").click()
    assert path_of(page, live_server) == "/portal/pools/"
    expect(rows).to_have_count(3)
    expect(page.get_by_label("Search")).to_have_value("")

    row = product_row(page, scene.amoxicillin.product_code)
    chart = row.get_by_role("img")
    expect(chart).to_be_hidden()
    row.get_by_text("Show chart").click()
    expect(chart).to_be_visible()
    summary = "Available 75,000 (75 %), assigned 25,000 (25 %) of 100,000 serials"
    expect(chart).to_have_attribute("aria-label", f"{scene.amoxicillin.product_code}: {summary}")
    expect(row.locator("svg.donut circle.arc-available title")).to_have_text("Available: 75,000 of 100,000 (75 %)")
    expect(row.locator("svg.donut circle.arc-assigned title")).to_have_text("Assigned: 25,000 of 100,000 (25 %)")
    expect(row.locator(".count-available")).to_have_text("75,000")
    expect(row.locator(".count-assigned")).to_have_text("25,000")
    box = chart.bounding_box()
    assert (round(box["width"]), round(box["height"])) == (128, 128)
    screenshot(page, "pool-tab-expanded")

    with page.expect_navigation():
        page.get_by_role("link", name=scene.amoxicillin.product_code).click()
    expect(page.locator("#pools tbody tr")).to_have_count(1)
    expect(page.locator("#pools")).to_contain_text("Partner MAH")
    screenshot(page, "product")


def test_cmo_requests_serials_downloads_the_csv_and_sees_an_upload_error(page, live_server, screenshot, tmp_path):
    scene = make_scene("otto")
    open_portal(page, live_server, scene)

    with page.expect_navigation():
        page.get_by_role("link", name="Orders").click()
    expect(page.locator("#orders tbody tr")).to_have_count(1)
    screenshot(page, "orders")
    with page.expect_navigation():
        page.get_by_role("link", name=scene.order.number).click()
    expect(page.locator("#allocations")).to_have_count(0)
    page.get_by_label("Unit serials").fill("20")
    with page.expect_navigation():
        page.get_by_role("button", name="Request").click()
    expect(page.locator(".messages")).to_contain_text("Granted 20 unit serials")
    allocation = Allocation.objects.get(packaging_order=scene.order)
    serials = serials_of(allocation)

    with page.expect_download() as info:
        page.locator("#allocations").get_by_role("link", name="serials").click()
    download = info.value
    assert download.suggested_filename == f"allocation-{allocation.pk}-serial.csv"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.read_text().splitlines()[3:] == ["serial", *serials]  # after the stamp (who, when, which download)
    event = AccessEvent.objects.get(kind=AccessEvent.Kind.DOWNLOAD)
    assert (event.user, event.quantity) == (scene.user, 20)

    report = "product_code,serial\n" + "".join(f"{scene.own.product_code},{s}\n" for s in serials[:3])
    report += f"{scene.own.product_code},WRONG00000001\n"
    page.get_by_label("Report file").set_input_files(
        files=[{"name": "line-1.csv", "mimeType": "text/csv", "buffer": report.encode()}]
    )
    with page.expect_navigation():
        page.get_by_role("button", name="Upload and apply").click()

    expect(page.locator("#upload-result")).to_contain_text("rejected: nothing was applied")
    errors = page.locator("#upload-errors tbody tr")
    expect(errors).to_have_count(1)
    expect(errors.first.locator("td").nth(0)).to_have_text("5")
    expect(errors.first.locator("td").nth(1)).to_have_text("WRONG00000001")
    assert LineReport.objects.get().status == LineReport.Status.REJECTED
    page.locator("#upload-heading").scroll_into_view_if_needed()
    screenshot(page, "order-upload-error")


def test_pack_history_and_batches_pages(page, live_server, screenshot):
    scene = make_scene("hanna")
    Reconciliation.objects.create(batch=scene.batch, passed=False, counts={})
    from serialization.services.batches import request_order_serials

    granted = request_order_serials(
        order=scene.order, quantity=4, actor=scene.user, request_id="b-1", sscc_quantities={2: 1}
    )
    units, case = serials_of(granted.units), serials_of(granted.ssccs[2])[0]
    code = scene.own.product_code
    for kind, lines in (
        ("commissioning", [*({"product_code": code, "serial": s} for s in units[:3]), {"sscc": case, "level": 2}]),
        ("aggregation", [{"parent_sscc": case, "children": [{"product_code": code, "serial": s} for s in units[:3]]}]),
    ):
        applied = apply_line_report(report_id=f"r-{kind}", kind=kind, order=scene.order, lines=lines, actor=scene.user)
        assert applied.status == LineReport.Status.APPLIED, applied.result
    open_portal(page, live_server, scene)

    with page.expect_navigation():
        page.get_by_role("link", name="Pack history").click()
    expect(page.locator(".empty")).to_contain_text("Enter a number above.")
    page.get_by_label("Product code").fill(code)
    page.get_by_label("Serial number").fill(units[0])
    with page.expect_navigation():
        page.get_by_role("button", name="Look up").click()
    expect(page.locator("#history-subject")).to_have_text(f"(01) {code} (21) {units[0]}")
    expect(page.locator("#timeline li")).to_have_count(2)
    expect(page.locator("#timeline")).to_contain_text(f"Packed into {case}")
    expect(page.locator("#above")).to_contain_text(case)
    screenshot(page, "history-unit")

    with page.expect_navigation():
        page.locator("#above").get_by_role("link", name=case).click()
    expect(page.locator("#hierarchy")).to_contain_text("Contents: 3 units")
    expect(page.locator("#below tbody tr")).to_have_count(3)
    screenshot(page, "history-case")

    page.goto(f"{live_server.url}/portal/history/?product_code={code}&serial=NOPE")
    expect(page.locator("#not-found")).to_contain_text("Not found.")

    with page.expect_navigation():
        page.get_by_role("link", name="Batches").click()
    row = page.locator("#batches tbody tr").first
    expect(row).to_contain_text(scene.batch.lot)
    expect(row).to_contain_text("In production")
    expect(row.locator(".reconciliation")).to_contain_text("Failed")
    screenshot(page, "batches")


def test_cmo_b_cannot_reach_cmo_a_product_or_order_by_url(page, live_server, screenshot):
    scene_a = make_scene("anna")
    scene_b = make_scene("bert", cmo_name="Other Packer")
    open_portal(page, live_server, scene_b)

    for url in (
        f"/portal/pools/{scene_a.amoxicillin.product_code}/",
        f"/portal/pools/{scene_a.own.product_code}/",
        f"/portal/orders/{scene_a.order.pk}/",
    ):
        response = page.goto(f"{live_server.url}{url}")
        assert response.status == 404, url
        expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
        expect(page.locator("#not-found")).to_contain_text(re.compile(r"No (product|packaging order) .* is visible"))
    screenshot(page, "not-found")

    response = page.goto(f"{live_server.url}/portal/pools/{scene_b.amoxicillin.product_code}/")
    assert response.status == 200
    expect(page.locator("#pools")).to_contain_text("Partner MAH")
