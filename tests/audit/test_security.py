"""Security hardening: response headers and the content security policy on every door, password validators, the
sign-in lockout by address, and API tokens tied to a company and a set of permissions, with expiry and revocation.
(The lockout per account and the MFA flow are in test_mfa.py, the tokens' storage in test_tokens.py, the role lists in
test_roles.py, the browser under the policy in tests/browser/test_csp.py.)"""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from audit import services
from audit.models import ApiToken
from audit.roles import Role
from serialization.services import create_generated_pool
from tests.audit.otp import PASSWORD, submit_password
from tests.factories import make_company, make_membership, make_product, make_user

pytestmark = pytest.mark.django_db


def token_client(user, **token_fields) -> tuple[APIClient, ApiToken]:
    token, raw_key = services.create_api_token(user=user, name="system", **token_fields)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client, token


ALLOCATE_ONE = {"quantity": 1, "request_id": "one", "purpose": "batch"}


def make_pool(owner):
    product = make_product(owner=owner, markets=("US",))
    return create_generated_pool(owner=owner, actor=None, product=product, initial_fill=100)


# --- Headers and the content security policy ------------------------------------------------------------------


def csp_directives(response) -> dict[str, list[str]]:
    return {
        name: values
        for name, *values in (part.split() for part in response["Content-Security-Policy"].split(";") if part.strip())
    }


def test_every_door_answers_with_the_security_headers(client, make_verified_client):
    staff = make_user(is_staff=True, roles=[Role.STEWARD])
    api, _ = token_client(make_user(roles=[Role.LINE_SYSTEM]))
    responses = {
        "sign-in page": client.get(reverse("accounts:login")),
        "admin": make_verified_client(staff).get("/admin/"),
        "portal (no company)": make_verified_client(make_user()).get("/portal/pools/"),
        "api": api.get("/api/v1/pools/"),
        "api docs": make_verified_client(staff).get("/api/v1/docs/"),
    }

    for door, response in responses.items():
        assert response.status_code in (200, 403), door
        assert response["X-Frame-Options"] == "DENY", door
        assert response["X-Content-Type-Options"] == "nosniff", door
        assert response["Referrer-Policy"] == "same-origin", door
        # drf-spectacular opens the Swagger page's opener policy for Swagger UI's OAuth2 pop-up; everything else is
        # isolated from other sites' windows.
        coop = "unsafe-none" if door == "api docs" else "same-origin"
        assert response["Cross-Origin-Opener-Policy"] == coop, door
        directives = csp_directives(response)
        assert directives["default-src"] == ["'self'"], door
        assert directives["object-src"] == ["'none'"], door
        assert directives["frame-ancestors"] == ["'none'"], door
        assert directives["base-uri"] == ["'self'"], door
        assert directives["form-action"] == ["'self'"], door
        assert "'unsafe-inline'" not in directives["script-src"], door
        assert "'unsafe-eval'" not in directives["script-src"], door


def test_inline_styles_and_scripts_carry_the_nonce_of_their_response(client, make_verified_client):
    sign_in_page = client.get(reverse("accounts:login"))
    docs = make_verified_client(make_user(is_staff=True)).get("/api/v1/docs/")

    for response in (sign_in_page, docs):
        html = response.content.decode()
        (nonce,) = set(re.findall(r"'nonce-([^']+)'", response["Content-Security-Policy"]))
        inline = [attrs for attrs in re.findall(r"<(?:script|style)\b([^>]*)>", html) if "src=" not in attrs]
        assert inline, "the page has inline blocks"
        assert all(f'nonce="{nonce}"' in attrs for attrs in inline), inline
        assert re.search(r"<[^>]+\son[a-z]+\s*=", html) is None  # no inline event handlers
    assert csp_directives(docs)["script-src"] == ["'self'", f"'nonce-{nonce}'"]


def test_redoc_alone_may_use_inline_styles(make_verified_client):
    browser = make_verified_client(make_user(is_staff=True))

    redoc = csp_directives(browser.get("/api/v1/redoc/"))
    docs = csp_directives(browser.get("/api/v1/docs/"))

    assert redoc["style-src"] == ["'self'", "'unsafe-inline'"]
    assert redoc["worker-src"] == ["'self'", "blob:"]
    assert "'unsafe-inline'" not in docs["style-src"] and "worker-src" not in docs
    assert redoc["script-src"][0] == "'self'" and redoc["script-src"][1].startswith("'nonce-")


# --- Passwords and lockout ------------------------------------------------------------------------------------------

STRONG = "plum tractor 92 sunrise"


def test_a_weak_password_is_refused_with_the_validators_messages(make_verified_client):
    user = make_user(username="maria.gonzalez")
    client = make_verified_client(user)

    response = client.post(
        reverse("accounts:password_change"),
        {"old_password": PASSWORD, "new_password1": "12345678", "new_password2": "12345678"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["new_password2"] == [
        "This password is too short. It must contain at least 12 characters.",
        "This password is too common.",
        "This password is entirely numeric.",
    ]
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_password_like_the_username_is_refused():
    user = make_user(username="maria.gonzalez")

    with pytest.raises(ValidationError) as caught:
        validate_password("maria.gonzalez1", user=user)

    assert caught.value.messages == ["The password is too similar to the username."]
    validate_password(STRONG, user=user)  # a long passphrase passes


def test_a_strong_password_change_goes_through(make_verified_client):
    user = make_user()
    client = make_verified_client(user)

    response = client.post(
        reverse("accounts:password_change"),
        {"old_password": PASSWORD, "new_password1": STRONG, "new_password2": STRONG},
    )

    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password(STRONG)


def test_failures_from_one_address_lock_that_address_for_every_account(client):
    victims = [make_user() for _ in range(5)]  # one wrong password each: no account reaches its own limit
    answers = [submit_password(client, victim, password="guess").status_code for victim in victims]

    someone_else = make_user()
    refused = submit_password(client, someone_else)  # the right password, from the same address
    elsewhere = submit_password(type(client)(REMOTE_ADDR="198.51.100.77"), someone_else)

    assert answers == [200, 200, 200, 200, 429]
    assert refused.status_code == 429
    assert "locked after 5 failed sign-in attempts" in refused.text
    assert elsewhere.status_code == 302  # the account itself is not locked, the address is


# --- API tokens: company, permissions, expiry, revocation ------------------------------------------------------------


def test_a_token_acts_with_its_accounts_company_and_sees_nothing_of_another():
    company_a, company_b = make_company(name="Acme"), make_company(name="Other")
    line_a = make_user(roles=[Role.LINE_SYSTEM])
    make_membership(user=line_a, company=company_a)
    pool_a, pool_b = make_pool(company_a), make_pool(company_b)
    client, _ = token_client(line_a)

    listed = client.get("/api/v1/pools/").json()["results"]
    other = client.get(f"/api/v1/pools/{pool_b.pk}/")
    allocate_other = client.post(f"/api/v1/pools/{pool_b.pk}/allocations/", ALLOCATE_ONE)

    assert [row["id"] for row in listed] == [pool_a.pk]
    assert other.status_code == 404
    assert allocate_other.status_code == 404
    assert pool_b.allocations.count() == 0


def test_a_token_without_the_permission_gets_403():
    company = make_company()
    auditor = make_user(roles=[Role.AUDITOR])  # reads everything of its company, changes nothing
    make_membership(user=auditor, company=company)
    pool = make_pool(company)
    client, _ = token_client(auditor)

    allocate = client.post(f"/api/v1/pools/{pool.pk}/allocations/", ALLOCATE_ONE)
    fill = client.post(f"/api/v1/pools/{pool.pk}/fill/", {"quantity": 10, "reason": "more"})

    assert allocate.status_code == 403
    assert allocate.json()["error"] == {
        "code": "permission_denied",
        "message": "You do not have permission to perform this action.",
    }
    assert fill.status_code == 403
    assert client.get(f"/api/v1/pools/{pool.pk}/").status_code == 200  # what the role may do, it does
    assert pool.allocations.count() == 0


def test_expired_and_revoked_tokens_get_401_on_every_endpoint():
    line = make_user(roles=[Role.LINE_SYSTEM])
    expired, expired_token = token_client(line, expires_at=timezone.now() + timedelta(hours=1))
    ApiToken.objects.filter(pk=expired_token.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    revoked, revoked_token = token_client(make_user(roles=[Role.LINE_SYSTEM]))
    services.revoke_api_token(token=revoked_token, actor=make_user(is_staff=True))
    pool = make_pool(make_company())

    for client, reason in ((expired, "expired on"), (revoked, "was revoked on")):
        for response in (
            client.get("/api/v1/pools/"),
            client.post(f"/api/v1/pools/{pool.pk}/allocations/", ALLOCATE_ONE),
        ):
            assert response.status_code == 401
            assert reason in response.json()["error"]["message"]
            assert response["WWW-Authenticate"] == 'Token realm="api"'
    assert pool.allocations.count() == 0
