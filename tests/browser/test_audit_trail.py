"""The audit trail in a real browser: an auditor signs in (password + code), filters, reads an old → new change and
downloads the CSV, which the access log records."""

import csv
import hashlib

import pytest
from playwright.sync_api import expect

from audit.models import AccessEvent
from masterdata.services import update_company
from tests.browser.conftest import path_of, sign_in
from tests.factories import make_company, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_auditor_filters_the_trail_sees_old_and_new_values_and_downloads_the_csv(
    page, live_server, screenshot, tmp_path
):
    make_user(username="inspector", roles=["Auditor"], is_staff=True)
    steward = make_user(username="stella", roles=["Steward"], is_staff=True)
    company = make_company(name="Acme Pharma")
    update_company(company=company, actor=steward, data={"name": "Acme Health"}, reason="rebranding")
    make_company(name="Other Ltd")  # filtered out below

    sign_in(page, live_server, username="inspector")
    with page.expect_navigation():
        page.get_by_role("link", name="Audit trail").click()
    assert path_of(page, live_server) == "/admin/audit/audittrail/"
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit trail")

    page.get_by_label("Model").select_option(label="Master data › company")
    page.get_by_label("Object id").fill(str(company.pk))
    page.get_by_label("User").fill("stella")
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()

    entries = page.locator("#trail-entries tr.entry")
    expect(entries).to_have_count(1)
    entry = entries.first
    expect(entry).to_contain_text("stella")
    expect(entry).to_contain_text("Changed")
    expect(entry).to_contain_text("rebranding")
    change = entry.locator("tr.change").filter(has_text="Name")
    expect(change.locator("td.old")).to_have_text("Acme Pharma")
    expect(change.locator("td.new")).to_have_text("Acme Health")
    expect(page.locator("#trail-count")).to_have_text("Changes 1–1")
    screenshot(page, "filtered-trail")

    with page.expect_download() as info:
        page.get_by_role("link", name="Download CSV").click()
    download = info.value
    assert download.suggested_filename.startswith("audit-trail-") and download.suggested_filename.endswith(".csv")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    rows = list(csv.DictReader(saved.open(newline="")))
    assert [(r["user"], r["action"], r["reason"], r["field"], r["old"], r["new"]) for r in rows] == [
        ("stella", "Changed", "rebranding", "name", "Acme Pharma", "Acme Health")
    ]
    event = AccessEvent.objects.get(kind=AccessEvent.Kind.EXPORT)
    assert (event.username, event.target, event.quantity) == ("inspector", "audit trail", 1)
    assert event.details["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
