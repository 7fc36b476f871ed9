"""Browser tests: Debian's Chromium driven by Playwright against pytest-django's ``live_server``.

- ``browser`` (session): one headless Chromium at ``/usr/bin/chromium``; every test here is skipped, with the reason,
  where it is absent. Playwright's own browser downloads are never used.
- ``page``: a fresh browser context (own cookies) per test, 1366×800; on teardown a screenshot goes to
  ``test-artifacts/screenshots/<test name>.png``.
- ``screenshot(page, label)``: a full-page screenshot ``<test name>--<label>.png`` of a step worth looking at.
- ``sign_in(page, live_server, username=…)``: the real sign-in pages (password, then the TOTP code, or the
  enrolment of an authenticator when the user has none); returns the backup codes an enrolment showed.

Tests that use ``live_server`` need ``@pytest.mark.django_db(transaction=True)``: the server thread reads the
database through its own connection, so nothing may stay inside the test's uncommitted transaction.
"""

import base64
import os
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.audit.otp import PASSWORD, totp_code

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 800}
TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
def screenshot_dir(pytestconfig) -> Path:
    path = pytestconfig.rootpath / "test-artifacts" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        pytest.skip(f"Browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium); it is absent.")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Browser tests need the playwright package.")

    # Playwright's sync API keeps an asyncio loop registered as running on this thread until it stops, so Django
    # takes every ORM call of the test thread for one made from async code and refuses it. Nothing here is async:
    # the live server answers from its own thread. Set only while Playwright runs.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, request, screenshot_dir) -> Iterator:
    context = browser.new_context(viewport=VIEWPORT, locale="en-GB")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    try:
        page.screenshot(path=str(screenshot_dir / f"{_file_name(request.node.name)}.png"), full_page=True)
    except Exception as error:  # a failed screenshot must not hide the test's own outcome
        warnings.warn(f"No screenshot for {request.node.name}: {error}", stacklevel=1)
    finally:
        context.close()


@pytest.fixture
def screenshot(request, screenshot_dir):
    """``screenshot(page, label)``: save the whole page as ``<test name>--<label>.png`` and return the path."""

    def take(page, label: str) -> Path:
        path = screenshot_dir / f"{_file_name(request.node.name)}--{_file_name(label)}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def _file_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_")


# --- Signing in through the real pages -------------------------------------------------------------------------


def open_sign_in(page, live_server, *, next_url: str | None = None) -> None:
    query = f"?{urlencode({'next': next_url})}" if next_url else ""
    page.goto(f"{live_server.url}/accounts/login/{query}")


def fill_password(page, *, username: str, password: str = PASSWORD):
    """On the sign-in page: enter username and password and continue; returns the response to the form."""
    page.get_by_role("textbox", name="Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Continue").click()
    return navigation.value


def submit_password(page, live_server, *, username: str, password: str = PASSWORD, next_url: str | None = None):
    """Open the sign-in page (with ``?next=``) and send username and password; returns the response to the form."""
    open_sign_in(page, live_server, next_url=next_url)
    return fill_password(page, username=username, password=password)


def submit_code(page, code: str):
    """On the code page (or the enrolment page), enter ``code`` and send it; returns the response to the form."""
    page.get_by_role("textbox", name="Code", exact=True).fill(code)
    with page.expect_navigation() as navigation:
        page.locator("main form button[type=submit]").click()
    return navigation.value


def current_code(device: TOTPDevice) -> str:
    """The code the user's app shows now, or the next one if the current step was already used (no replays)."""
    device.refresh_from_db()
    wait_until_code_accepted(device)
    now = time.time()
    current_t = int((now - device.t0) // device.step) + device.drift
    at = now + max(0, device.last_t + 1 - current_t) * device.step  # within the device's tolerance of one step
    return totp_code(device, at=at)


def wait_until_code_accepted(device: TOTPDevice, *, timeout: float = 10.0) -> None:
    """Wait out django-otp's back-off after a wrong code (1 s, then 2 s, 4 s …), as a user would."""
    deadline = time.monotonic() + timeout
    while True:
        device.refresh_from_db()
        allowed, _ = device.verify_is_allowed()
        if allowed or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def read_secret(page) -> bytes:
    """The base32 key the enrolment page shows for typing in by hand (grouped in fours), as key bytes."""
    grouped = page.locator(".secret").inner_text()
    secret = re.sub(r"\s+", "", grouped).upper()
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def read_backup_codes(page) -> list[str]:
    return [code.strip() for code in page.locator("ol.codes li").all_inner_texts()]


def enrol(page) -> list[str]:
    """On the enrolment page: take the key as an app would, confirm with its current code; return the backup codes."""
    key = read_secret(page)
    submit_code(page, f"{TOTP(key, step=30, digits=6).token():06d}")
    return read_backup_codes(page)


def path_of(page, live_server) -> str:
    """The current URL without the server's address: ``/accounts/login/?next=%2Fadmin%2F``."""
    return page.url.removeprefix(live_server.url)


def complete_second_factor(page, live_server, *, username: str) -> list[str]:
    """After the password step: enter the current app code, or enrol when the user has no authenticator yet.

    Enrolment reads the key off the page as an app would, confirms it, and continues past the backup codes, which
    are returned (``[]`` when there was no enrolment).
    """
    path = path_of(page, live_server).split("?")[0]
    if path == "/accounts/login/verify/":
        device = TOTPDevice.objects.get(user__username=username, confirmed=True)
        submit_code(page, current_code(device))
        return []
    if path == "/accounts/mfa/enrol/":
        codes = enrol(page)
        with page.expect_navigation():
            page.get_by_role("link", name="I have stored them — continue").click()
        return codes
    raise AssertionError(
        f"Expected a code page after the password, got {page.url}:\n{page.locator('main').inner_text()}"
    )


def sign_in(page, live_server, *, username: str, password: str = PASSWORD, next_url: str | None = None) -> list[str]:
    """Sign ``username`` in through the real pages and end on the ``next`` page (the admin index by default).

    Returns the backup codes when this sign-in enrolled the user's first authenticator, else ``[]``.
    """
    submit_password(page, live_server, username=username, password=password, next_url=next_url)
    return complete_second_factor(page, live_server, username=username)
