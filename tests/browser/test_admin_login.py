"""The admin's sign-in in a real browser: password, TOTP enrolment or code, backup codes, ``next``, lockout."""

import re
from urllib.parse import quote

import pytest
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from tests.audit.otp import PASSWORD, wrong_code
from tests.browser.conftest import (
    complete_second_factor,
    current_code,
    fill_password,
    path_of,
    read_backup_codes,
    read_secret,
    sign_in,
    submit_code,
    submit_password,
)
from tests.factories import make_product, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WRONG_CODE_MESSAGE = (
    "That code is not right. Enter the current 6-digit code from your app, or one of your backup codes."
)


def make_steward(**extra):
    return make_user(roles=["Steward"], is_staff=True, **extra)


def make_device(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="Phone", confirmed=True)


def expect_admin_index(page, live_server) -> None:
    assert path_of(page, live_server) == "/admin/"
    expect(page.locator("#site-name")).to_have_text("Serialization back-office")
    expect(page.locator("#content-main")).to_contain_text("Master data")
    expect(page.locator("#content-main").get_by_role("link", name="Products", exact=True)).to_be_visible()


def sign_out_from_admin(page, live_server) -> None:
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    assert path_of(page, live_server) == "/accounts/login/"
    expect(page.locator(".messages")).to_have_text("You have been signed out.")


def expect_admin_refused(page, live_server) -> None:
    page.goto(f"{live_server.url}/admin/")
    assert path_of(page, live_server) == "/accounts/login/?next=%2Fadmin%2F"
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")


def test_steward_without_device_enrols_with_qr_code_and_reaches_admin(page, live_server, screenshot):
    user = make_steward(username="stella")

    submit_password(page, live_server, username="stella")

    assert path_of(page, live_server) == "/accounts/mfa/enrol/"
    expect(page.get_by_role("heading", level=1)).to_have_text("Set up your authenticator app")
    qr = page.locator(".qr svg")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert (round(box["width"]), round(box["height"])) == (220, 220)
    assert qr.locator("path").count() >= 1
    expect(page.locator(".secret")).to_have_text(re.compile(r"^([A-Z2-7]{4} )+[A-Z2-7]{1,4}$"))
    assert read_secret(page) == TOTPDevice.objects.get(user=user, confirmed=False).bin_key
    screenshot(page, "enrolment")

    app = TOTP(read_secret(page), step=30, digits=6)  # what an authenticator app makes of the typed-in key
    submit_code(page, f"{app.token():06d}")

    expect(page.get_by_role("heading", level=1)).to_have_text("Your authenticator is set up")
    codes = read_backup_codes(page)
    assert len(codes) == 10
    assert sorted(codes) == sorted(StaticToken.objects.filter(device__user=user).values_list("token", flat=True))
    expect(page.locator(".notice.warning")).to_contain_text("These 10 backup codes are shown only now.")
    screenshot(page, "backup-codes")

    with page.expect_navigation():
        page.get_by_role("link", name="I have stored them — continue").click()

    expect_admin_index(page, live_server)
    expect(page.locator("#user-tools")).to_contain_text("stella")
    screenshot(page, "admin-index")
    assert TOTPDevice.objects.get(user=user).confirmed is True


def test_wrong_code_is_refused_and_the_right_code_then_opens_admin(page, live_server, screenshot):
    user = make_steward(username="victor")
    device = make_device(user)

    submit_password(page, live_server, username="victor")
    assert path_of(page, live_server) == "/accounts/login/verify/"
    expect(page.get_by_role("heading", level=1)).to_have_text("Enter your code")

    submit_code(page, wrong_code(device))

    assert path_of(page, live_server) == "/accounts/login/verify/"
    expect(page.locator(".errorlist")).to_have_text(WRONG_CODE_MESSAGE)
    screenshot(page, "wrong-code")
    expect_admin_refused(page, live_server)

    page.goto(f"{live_server.url}/accounts/login/verify/")  # the password step is still pending
    submit_code(page, current_code(device))  # waits out the 1-second back-off after the wrong code

    expect_admin_index(page, live_server)


def test_backup_code_signs_in_once_and_is_refused_the_second_time(page, live_server):
    user = make_steward(username="bea")
    codes = sign_in(page, live_server, username="bea")
    assert len(codes) == 10
    expect_admin_index(page, live_server)
    sign_out_from_admin(page, live_server)

    submit_password(page, live_server, username="bea")
    submit_code(page, codes[0].upper())

    expect_admin_index(page, live_server)
    remaining = set(StaticToken.objects.filter(device__user=user).values_list("token", flat=True))
    assert remaining == set(codes[1:])
    sign_out_from_admin(page, live_server)

    submit_password(page, live_server, username="bea")
    submit_code(page, codes[0])

    assert path_of(page, live_server) == "/accounts/login/verify/"
    expect(page.locator(".errorlist")).to_have_text(WRONG_CODE_MESSAGE)
    expect_admin_refused(page, live_server)


def test_signed_out_visit_to_product_list_signs_in_and_returns_there(page, live_server):
    user = make_steward(username="nora")
    make_device(user)
    product = make_product(name="Amoxicillin 500 mg tablets")

    page.goto(f"{live_server.url}/admin/masterdata/product/")

    assert path_of(page, live_server) == f"/accounts/login/?next={quote('/admin/masterdata/product/', safe='')}"
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")

    fill_password(page, username="nora")
    assert path_of(page, live_server) == "/accounts/login/verify/"
    complete_second_factor(page, live_server, username="nora")

    assert path_of(page, live_server) == "/admin/masterdata/product/"
    expect(page.get_by_role("heading", level=1)).to_have_text("Select product to change")
    expect(page.locator("#result_list")).to_contain_text(product.product_code)
    expect(page.locator("#result_list")).to_contain_text("Amoxicillin 500 mg tablets")


def test_five_wrong_passwords_lock_out_even_the_right_password(page, live_server, screenshot):
    user = make_steward(username="lou")
    make_device(user)

    for attempt in range(1, 5):
        response = submit_password(page, live_server, username="lou", password=f"wrong password {attempt}")
        assert response.status == 200
        expect(page.locator(".notice.error")).to_have_text("Wrong username or password. Both are case-sensitive.")
    submit_password(page, live_server, username="lou", password="wrong password 5")

    response = submit_password(page, live_server, username="lou", password=PASSWORD)

    assert response.status == 429
    assert path_of(page, live_server) == "/accounts/login/"
    expect(page.get_by_role("heading", level=1)).to_have_text("Account locked")
    expect(page.locator(".notice.error")).to_contain_text("The account lou is locked after 5 failed sign-in attempts.")
    expect(page.locator(".notice.error")).to_contain_text("Try again in 60 minutes")
    screenshot(page, "locked-out")
    expect_admin_refused(page, live_server)
