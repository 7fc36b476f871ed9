"""The outbox dashboards in a real browser (Debian's Chromium through Playwright): an MAH user's portal page and the
steward's admin page show a queued submission as pending, and — with no reload — as accepted once a worker has sent
it to the HTTP receiver started by the test. Screenshots land in test-artifacts/screenshots/."""

import importlib

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from masterdata.models import Market, ProductNationalCode
from serialization.outbox_models import Endpoint
from serialization.services import outbox
from tests.browser.conftest import path_of, sign_in
from tests.factories import get_market, make_membership
from tests.serialization.test_market_reports import Scene, de_market
from tests.serialization.test_outbox import Receiver

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The panel polls every 5 seconds; give it two rounds.
POLL_WAIT_MS = 12_000


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def tile(page, state: str):
    return page.locator(f'#outbox-panel [data-state="{state}"] dd')


def seed_markets() -> None:
    """Put back the markets the migrations seed: an earlier transactional test's flush removed them."""
    defaults = importlib.import_module("masterdata.migrations.0002_market_defaults")
    for values in defaults.MARKETS:
        Market.objects.get_or_create(code=values["code"], defaults={k: v for k, v in values.items() if k != "code"})


def queued_submission(monkeypatch, receiver, tmp_path, settings):
    """A steward of an MAH, and one EU submission of its batch waiting in the outbox (no worker picked it up)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    seed_markets()
    de = de_market()
    scene = Scene(markets=("EU", de))
    ProductNationalCode.objects.create(product=scene.product, market=de, ai="710", value="03752864")
    batch = scene.batch()
    scene.produce(batch, units=10, cases=1)
    Endpoint.objects.create(name="EU hub", market=get_market("EU"), url=receiver.url)
    make_membership(user=scene.actor, company=scene.owner)
    TOTPDevice.objects.create(user=scene.actor, name="Phone", confirmed=True)
    with monkeypatch.context() as patched:
        patched.setattr(outbox, "_queue", lambda submission_id: None)  # the worker is not running yet
        submission = outbox.create_submission(market=get_market("EU"), batch=batch, actor=scene.actor)
    return scene, submission


def test_the_portal_dashboard_updates_in_place_when_a_submission_is_accepted(
    page, live_server, screenshot, receiver, monkeypatch, tmp_path, settings
):
    scene, submission = queued_submission(monkeypatch, receiver, tmp_path, settings)

    sign_in(page, live_server, username=scene.actor.username, next_url="/portal/submissions/")
    assert path_of(page, live_server) == "/portal/submissions/"
    expect(page.get_by_role("heading", level=1)).to_have_text("Submissions")
    expect(tile(page, "pending")).to_have_text("1")
    expect(tile(page, "accepted")).to_have_text("0")
    expect(page.locator(f'#outbox-panel tr[data-submission="{submission.pk}"]').first).to_contain_text("Pending")
    screenshot(page, "pending")
    page.evaluate("window.outboxMarker = 'same page'")  # gone if the page reloads

    outbox.send_submission(submission_id=submission.pk)  # what the worker does

    expect(tile(page, "accepted")).to_have_text("1", timeout=POLL_WAIT_MS)
    expect(tile(page, "pending")).to_have_text("0")
    expect(page.locator(f'#outbox-panel tr[data-submission="{submission.pk}"]').first).to_contain_text("Accepted")
    assert page.evaluate("window.outboxMarker") == "same page"
    assert len(receiver.requests) == 1
    screenshot(page, "accepted")


def test_the_admin_dashboard_updates_in_place_when_a_submission_is_accepted(
    page, live_server, screenshot, receiver, monkeypatch, tmp_path, settings
):
    scene, submission = queued_submission(monkeypatch, receiver, tmp_path, settings)
    url = "/admin/serialization/submission/dashboard/"

    sign_in(page, live_server, username=scene.actor.username, next_url=url)
    assert path_of(page, live_server) == url
    expect(tile(page, "pending")).to_have_text("1")
    expect(tile(page, "accepted")).to_have_text("0")

    outbox.send_submission(submission_id=submission.pk)

    expect(tile(page, "accepted")).to_have_text("1", timeout=POLL_WAIT_MS)
    expect(tile(page, "pending")).to_have_text("0")
    link = page.locator(f'#outbox-panel tr[data-submission="{submission.pk}"] a').first
    expect(link).to_have_attribute("href", f"/admin/serialization/submission/{submission.pk}/change/")
    screenshot(page, "admin-accepted")
