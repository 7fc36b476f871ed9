import json
import re
import time

import django_otp
import pytest
from axes.models import AccessAttempt
from django.contrib.auth import SESSION_KEY
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AccessEvent
from audit.views import PENDING_MAX_AGE_SECONDS, PENDING_SESSION_KEY
from tests.audit.otp import PASSWORD, submit_code, submit_password, totp_code, wrong_code
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def make_totp_device(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="Phone", confirmed=True)


def make_backup_codes(user, codes=("abcd2345", "efgh6723")) -> StaticDevice:
    device = StaticDevice.objects.create(user=user, name="Backup codes", confirmed=True)
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return device


def kinds(**filters) -> list[str]:
    return list(AccessEvent.objects.filter(**filters).order_by("id").values_list("kind", flat=True))


# --- Password + TOTP ----------------------------------------------------------------------------------------------


def test_login_with_password_then_totp_code_opens_admin(client):
    user = make_user(is_staff=True)
    device = make_totp_device(user)

    page = client.get(reverse("accounts:login"), {"next": "/admin/"})
    assert page.status_code == 200
    assert "Step 1 of 2" in page.text

    response = submit_password(client, user, next_url="/admin/")
    assert response.status_code == 302
    assert response.url == reverse("accounts:verify")
    assert SESSION_KEY not in client.session  # not signed in between the two steps

    page = client.get(reverse("accounts:verify"))
    assert page.status_code == 200
    assert "Enter your code" in page.text

    response = submit_code(client, totp_code(device))
    assert response.status_code == 302
    assert response.url == "/admin/"
    assert client.session[SESSION_KEY] == str(user.pk)
    assert client.session[django_otp.DEVICE_ID_SESSION_KEY] == device.persistent_id
    assert PENDING_SESSION_KEY not in client.session
    assert client.get("/admin/").status_code == 200
    assert kinds(user=user) == ["otp_verified", "login"]
    assert AccessEvent.objects.get(kind="login").details == {"second_factor": "app"}


def test_wrong_totp_code_is_refused_and_nobody_is_signed_in(client):
    user = make_user()
    device = make_totp_device(user)
    submit_password(client, user)

    response = submit_code(client, wrong_code(device))

    assert response.status_code == 200
    assert "That code is not right" in response.text
    assert SESSION_KEY not in client.session
    assert kinds() == ["otp_failed"]
    assert AccessEvent.objects.get().details == {"stage": "sign-in", "method": "app", "reason": "wrong code"}


def test_right_code_straight_after_a_wrong_one_is_throttled_with_a_wait_message(client):
    user = make_user()
    device = make_totp_device(user)
    submit_password(client, user)
    submit_code(client, wrong_code(device))

    response = submit_code(client, totp_code(device))

    assert response.status_code == 200
    assert re.search(r"Too many wrong codes\. Wait \d+ seconds?, then try again", response.text)
    assert SESSION_KEY not in client.session


def test_backup_code_signs_in_once_and_not_twice(client):
    user = make_user()
    make_totp_device(user)
    make_backup_codes(user, codes=["abcd2345", "efgh6723"])

    submit_password(client, user)
    response = submit_code(client, "ABCD-2345")  # as printed: case and separators do not matter
    assert response.status_code == 302
    assert client.session[SESSION_KEY] == str(user.pk)
    assert list(StaticToken.objects.values_list("token", flat=True)) == ["efgh6723"]
    assert AccessEvent.objects.get(kind="otp_verified").details == {"method": "backup", "backups_left": 1}

    client.post(reverse("accounts:logout"))
    submit_password(client, user)
    response = submit_code(client, "abcd2345")
    assert response.status_code == 200
    assert "That code is not right" in response.text
    assert SESSION_KEY not in client.session


def test_next_pointing_to_another_site_is_ignored(client):
    user = make_user(is_staff=True)
    device = make_totp_device(user)
    submit_password(client, user, next_url="https://evil.example/steal")

    response = submit_code(client, totp_code(device))

    assert response.url == "/admin/"


# --- Enrolment ----------------------------------------------------------------------------------------------------


def test_user_without_device_enrols_with_qr_code_and_gets_ten_backup_codes(client):
    user = make_user(is_staff=True)

    response = submit_password(client, user, next_url="/admin/")
    assert response.url == reverse("accounts:enrol")

    page = client.get(reverse("accounts:enrol"))
    assert page.status_code == 200
    assert "<svg" in page.text and "<path" in page.text
    device = TOTPDevice.objects.get(user=user)
    assert device.confirmed is False
    assert page.context["secret"].replace(" ", "") in page.text.replace(" ", "")
    assert client.get(reverse("accounts:enrol")).context["secret"] == page.context["secret"]  # reload: same QR
    assert SESSION_KEY not in client.session

    response = client.post(reverse("accounts:enrol"), {"code": totp_code(device)})

    assert response.status_code == 200
    codes = response.context["codes"]
    assert len(codes) == 10
    assert sorted(StaticToken.objects.filter(device__user=user).values_list("token", flat=True)) == sorted(codes)
    assert all(code in response.text for code in codes)
    assert "I have stored them" in response.text
    assert 'href="/admin/"' in response.text
    device.refresh_from_db()
    assert device.confirmed is True
    assert client.session[django_otp.DEVICE_ID_SESSION_KEY] == device.persistent_id
    assert client.get("/admin/").status_code == 200
    assert kinds(user=user) == ["mfa_enrolled", "login"]


def test_enrolment_with_wrong_code_leaves_device_unconfirmed(client):
    user = make_user()
    submit_password(client, user)
    client.get(reverse("accounts:enrol"))
    device = TOTPDevice.objects.get(user=user)

    response = client.post(reverse("accounts:enrol"), {"code": wrong_code(device)})

    assert response.status_code == 200
    assert "That code is not right" in response.text
    device.refresh_from_db()
    assert device.confirmed is False
    assert not StaticDevice.objects.filter(user=user).exists()
    assert SESSION_KEY not in client.session


def test_enrolment_is_refused_to_a_user_who_already_has_a_device(client):
    user = make_user()
    make_totp_device(user)
    submit_password(client, user)

    response = client.get(reverse("accounts:enrol"))

    assert response.status_code == 302
    assert response.url == reverse("accounts:verify")
    assert TOTPDevice.objects.filter(user=user).count() == 1


# --- Nothing is reachable half-signed-in ------------------------------------------------------------------------


def test_half_signed_in_user_cannot_reach_admin_or_api(client):
    user = make_user(is_staff=True, is_superuser=True)
    make_totp_device(user)
    submit_password(client, user)

    response = client.get("/admin/", follow=True)

    assert response.redirect_chain[-1][0].startswith(reverse("accounts:login"))
    assert response.context["form"].__class__.__name__ == "PasswordStepForm"
    assert client.get("/api/v1/me/").status_code == 401


def test_admin_refuses_a_password_only_session(client):
    user = make_user(is_staff=True, is_superuser=True)
    make_totp_device(user)
    client.force_login(user)

    response = client.get("/admin/", follow=True)

    assert response.status_code == 200
    assert response.redirect_chain[0][0].startswith("/admin/login/")
    assert response.redirect_chain[-1][0] == f"{reverse('accounts:login')}?next=%2Fadmin%2F"
    assert "Sign in" in response.text


def test_verified_user_reaches_admin(make_verified_client):
    user = make_user(is_staff=True, is_superuser=True)

    assert make_verified_client(user).get("/admin/").status_code == 200


def test_code_page_without_password_step_sends_back_to_login(client):
    response = client.get(reverse("accounts:verify"), follow=True)

    assert response.redirect_chain == [(reverse("accounts:login"), 302)]
    assert "Your sign-in has expired or was not started" in response.text


def test_pending_sign_in_expires(client):
    user = make_user()
    device = make_totp_device(user)
    submit_password(client, user)
    session = client.session
    session[PENDING_SESSION_KEY] = {
        **session[PENDING_SESSION_KEY],
        "started": int(time.time()) - PENDING_MAX_AGE_SECONDS - 1,
    }
    session.save()

    response = submit_code(client, totp_code(device))

    assert response.status_code == 302
    assert response.url == reverse("accounts:login")
    assert SESSION_KEY not in client.session


def test_password_change_between_steps_ends_the_pending_sign_in(client):
    user = make_user()
    device = make_totp_device(user)
    submit_password(client, user)
    user.set_password("another long passphrase")
    user.save()

    response = submit_code(client, totp_code(device))

    assert response.url == reverse("accounts:login")
    assert SESSION_KEY not in client.session


# --- Lockout ------------------------------------------------------------------------------------------------------


def test_five_wrong_passwords_lock_the_account_even_for_the_right_password(client):
    user = make_user()
    make_totp_device(user)
    for attempt in range(1, 5):
        response = submit_password(client, user, password=f"wrong {attempt}")
        assert response.status_code == 200
        assert "Wrong username or password" in response.text

    fifth = submit_password(client, user, password="wrong 5")
    sixth = submit_password(client, user, password=PASSWORD)

    for response in (fifth, sixth):
        assert response.status_code == 429
        assert "locked after 5 failed sign-in attempts" in response.text
        assert "Try again in 60 minutes" in response.text
        assert "contact an administrator" in response.text
    assert PENDING_SESSION_KEY not in client.session
    assert SESSION_KEY not in client.session
    assert kinds(username=user.username) == ["login_failed"] * 4 + ["locked_out"] * 2


def test_wrong_codes_count_towards_the_lockout(client, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # so each code is checked, not throttled
    user = make_user()
    device = make_totp_device(user)
    submit_password(client, user)
    for _ in range(4):
        assert submit_code(client, wrong_code(device)).status_code == 200

    response = submit_code(client, wrong_code(device))

    assert response.status_code == 429
    assert "locked after 5 failed sign-in attempts" in response.text
    assert submit_password(client, user).status_code == 429


def test_successful_sign_in_resets_failed_attempts(client):
    user = make_user()
    device = make_totp_device(user)
    for _ in range(4):
        submit_password(client, user, password="wrong")
    submit_password(client, user)
    submit_code(client, totp_code(device))
    client.post(reverse("accounts:logout"))

    for _ in range(4):
        assert submit_password(client, user, password="wrong").status_code == 200


# --- Access log ---------------------------------------------------------------------------------------------------


def test_failed_and_successful_sign_ins_are_logged_without_secrets(client):
    user = make_user()
    device = make_totp_device(user)
    make_backup_codes(user, codes=["abcd2345"])
    submit_password(client, user, password="not the password")
    submit_password(client, make_user(username="ghost-check"), password="also wrong")
    submit_password(client, user)
    bad_code = wrong_code(device)
    submit_code(client, bad_code)
    device.throttle_reset()
    good_code = totp_code(device)
    submit_code(client, good_code)
    client.post(reverse("accounts:logout"), HTTP_USER_AGENT="pytest-browser")

    events = list(AccessEvent.objects.order_by("id"))
    assert [(e.kind, e.username) for e in events] == [
        ("login_failed", user.username),
        ("login_failed", "ghost-check"),
        ("otp_failed", user.username),
        ("otp_verified", user.username),
        ("login", user.username),
        ("logout", user.username),
    ]
    assert events[0].user is None
    assert events[0].ip == "127.0.0.1"
    assert events[-1].user_agent == "pytest-browser"
    dump = json.dumps([{f.name: str(getattr(e, f.name)) for f in AccessEvent._meta.fields} for e in events])
    for secret in ("not the password", "also wrong", PASSWORD, bad_code, good_code, "abcd2345"):
        assert secret not in dump


def test_wrong_code_is_masked_in_django_axes_attempt_record(client):
    user = make_user()
    device = make_totp_device(user)
    submit_password(client, user, password="wrong password")
    submit_password(client, user)
    bad_code = wrong_code(device)

    submit_code(client, bad_code)

    post_data = AccessAttempt.objects.get(username=user.username).post_data
    assert "code=********" in post_data
    assert bad_code not in post_data
    assert "wrong password" not in post_data


def test_unknown_username_is_logged_as_typed(client):
    client.post(reverse("accounts:login"), {"username": "nobody-here", "password": "whatever it is"})

    event = AccessEvent.objects.get()
    assert (event.kind, event.username, event.user) == ("login_failed", "nobody-here", None)


# --- Sign-out and password change ---------------------------------------------------------------------------------


def test_logout_needs_post_and_ends_the_session(make_verified_client):
    user = make_user(is_staff=True)
    client = make_verified_client(user)

    page = client.get(reverse("accounts:logout"))
    assert page.status_code == 200
    assert SESSION_KEY in client.session

    response = client.post(reverse("accounts:logout"), follow=True)
    assert response.redirect_chain == [(reverse("accounts:login"), 302)]
    assert "You have been signed out" in response.text
    assert SESSION_KEY not in client.session
    assert kinds() == ["logout"]


def test_admin_log_out_is_the_same_recorded_sign_out(make_verified_client):
    client = make_verified_client(make_user(is_staff=True))

    response = client.post(reverse("admin:logout"))

    assert response.url == reverse("accounts:login")
    assert SESSION_KEY not in client.session
    assert kinds() == ["logout"]


def test_password_change_needs_a_verified_session(client, make_verified_client):
    user = make_user()
    client.force_login(user)
    assert client.get(reverse("accounts:password_change")).url.startswith(reverse("accounts:login"))

    verified = make_verified_client(user)
    response = verified.post(
        reverse("accounts:password_change"),
        {
            "old_password": PASSWORD,
            "new_password1": "a brand new passphrase",
            "new_password2": "a brand new passphrase",
        },
    )
    assert response.url == reverse("accounts:password_change_done")
    user.refresh_from_db()
    assert user.check_password("a brand new passphrase")
