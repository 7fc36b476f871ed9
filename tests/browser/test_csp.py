"""The content security policy in a real browser (Debian's Chromium through Playwright): the sign-in pages, the admin
(lists, forms, history, object permissions, the API-key page and its script, pack history), Swagger and Redoc, and
the partner portal render and work with the policy on, and Chromium reports no violation of it."""

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from tests.browser.conftest import open_sign_in, sign_in
from tests.browser.test_portal import make_scene
from tests.factories import make_product, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BRAND_BLUE = "rgb(29, 78, 137)"  # --brand in templates/base.html's nonce'd <style>
SCHEMA_TIMEOUT_MS = 60_000  # the docs pages build the whole OpenAPI schema on first load


@pytest.fixture
def violations(page) -> list[str]:
    """What Chromium refused under the policy (console reports) and scripts that failed on the page."""
    seen: list[str] = []

    def on_console(message) -> None:
        if "Content Security Policy" in message.text:
            seen.append(f"{page.url}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: seen.append(f"{page.url}: script error {error}"))
    return seen


def expect_policy(response, *, nonce: bool) -> str:
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "object-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert ("'nonce-" in policy) is nonce, policy
    assert "unsafe-eval" not in policy
    return policy


def test_sign_in_and_admin_pages_work_under_the_policy(page, live_server, violations):
    admin = make_user(username="root", is_staff=True, is_superuser=True)
    TOTPDevice.objects.create(user=admin, name="Phone", confirmed=True)
    product = make_product()

    open_sign_in(page, live_server)
    # The site's own stylesheet is an inline <style> allowed by the nonce: it applies.
    expect(page.locator("header.site")).to_have_css("background-color", BRAND_BLUE)
    sign_in(page, live_server, username="root")

    for url, marker in (
        ("/admin/", "#content-main"),
        ("/admin/audit/accessevent/", "#changelist"),
        ("/admin/masterdata/product/", "#changelist-form"),
        (f"/admin/masterdata/product/{product.pk}/change/", "#product_form"),
        (f"/admin/masterdata/product/{product.pk}/history/", "#change-history"),
        (f"/admin/masterdata/product/{product.pk}/permissions/", "#content-main"),
        ("/admin/serialization/pack/", "#pack-history-search"),
    ):
        response = page.goto(f"{live_server.url}{url}")
        assert response.status == 200, url
        expect_policy(response, nonce=url == "/admin/serialization/pack/")
        expect(page.locator(marker)).to_be_visible()
    # The pack-history page's own inline <style> (nonce) applies: its search fields sit side by side.
    expect(page.locator("#pack-history-search .fields")).to_have_css("display", "flex")

    # The admin's own scripts run: the action bar's "select all" checks every row.
    page.goto(f"{live_server.url}/admin/masterdata/product/")
    page.locator("#action-toggle").check()
    expect(page.locator("input.action-select").first).to_be_checked()

    # The new API key page: its script (a static file, no inline handler) selects the key on focus.
    page.goto(f"{live_server.url}/admin/audit/apitoken/add/")
    page.get_by_label("User").select_option(label="root")
    page.get_by_label("Name").fill("csp check")
    with page.expect_navigation():
        page.get_by_role("button", name="Save", exact=True).click()
    key = page.get_by_label("API key")
    key.focus()
    selected = page.evaluate("() => document.activeElement.value.slice(document.activeElement.selectionStart)")
    assert len(selected) >= 43 and selected == key.input_value()
    expect(key).to_have_css("font-family", "monospace")

    assert violations == []


def test_swagger_and_redoc_render_under_the_policy(page, live_server, violations):
    admin = make_user(username="root", is_staff=True, is_superuser=True)
    TOTPDevice.objects.create(user=admin, name="Phone", confirmed=True)
    sign_in(page, live_server, username="root")

    response = page.goto(f"{live_server.url}/api/v1/docs/")
    expect_policy(response, nonce=True)
    expect(page.locator(".swagger-ui .info .title")).to_contain_text(
        "Serialization back-office API", timeout=SCHEMA_TIMEOUT_MS
    )
    expect(page.locator(".opblock-tag").first).to_be_visible()

    response = page.goto(f"{live_server.url}/api/v1/redoc/")
    policy = expect_policy(response, nonce=True)
    assert "style-src 'self' 'unsafe-inline'" in policy  # this page only: Redoc writes its own <style> elements
    expect(page.get_by_role("heading", level=1).first).to_contain_text(
        "Serialization back-office API", timeout=SCHEMA_TIMEOUT_MS
    )

    # Redoc's "powered by" badge comes from Redocly's CDN: refused on purpose (no third-party origins, and the docs
    # must work offline). Nothing else may be refused.
    assert [v for v in violations if "https://cdn.redoc.ly/redoc/logo-mini.svg" not in v] == []


def test_portal_pages_work_under_the_policy(page, live_server, violations):
    scene = make_scene("carla")
    sign_in(page, live_server, username=scene.user.username, next_url="/portal/")

    for tab in ("Pack history", "Orders", "Batches", "SN/SSCC pool"):
        with page.expect_navigation() as navigation:
            page.get_by_role("link", name=tab, exact=True).click()
        expect_policy(navigation.value, nonce=True)
        expect(page.get_by_role("link", name=tab, exact=True)).to_have_attribute("aria-current", "page")
    # The portal's styles (an inline block with the nonce) apply, and its <details> charts open.
    expect(page.locator("nav.tabs a[aria-current=page]")).to_have_css("color", BRAND_BLUE)
    row = page.locator(f"#product-{scene.amoxicillin.product_code}")
    row.get_by_text("Show chart").click()
    expect(row.get_by_role("img")).to_be_visible()

    # htmx (a static file) runs under the policy: the submissions page refreshes its panel in place.
    page.goto(f"{live_server.url}/portal/submissions/")
    with page.expect_response(lambda response: "/portal/submissions/panel/" in response.url, timeout=30_000) as panel:
        pass
    assert panel.value.status == 200
    expect(page.locator("#outbox-panel")).to_be_visible()

    assert violations == []
