import hashlib
import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import timezone
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from audit import services
from audit.exceptions import Conflict, DomainError
from audit.models import AccessEvent, ApiToken
from audit.roles import Role
from tests.factories import make_user

pytestmark = pytest.mark.django_db

ME = "/api/v1/me/"


def token_client(raw_key: str, scheme: str = "Token") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {raw_key}")
    return client


# --- Authentication ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Token", "Bearer", "bearer"])
def test_valid_key_authenticates_with_token_or_bearer_scheme(scheme):
    user = make_user(username="line1-system", roles=[Role.LINE_SYSTEM])
    _, raw_key = services.create_api_token(user=user, name="line 1")

    response = token_client(raw_key, scheme).get(ME)

    assert response.status_code == 200
    assert response.json() == {
        "username": "line1-system",
        "roles": ["Line system"],
        "authenticated_by": "api_token",
        "token_name": "line 1",
        "token_prefix": raw_key[:8],
        "token_expires_at": None,
    }


def test_make_api_client_fixture_authenticates(make_api_client):
    user = make_user()
    client = make_api_client(user)

    assert client.get(ME).json()["token_prefix"] == client.api_token.key_prefix


def test_revoked_key_is_refused_with_401():
    user = make_user()
    admin = make_user(is_staff=True)
    token, raw_key = services.create_api_token(user=user, name="erp")
    services.revoke_api_token(token=token, actor=admin)

    response = token_client(raw_key).get(ME)

    assert response.status_code == 401
    assert "was revoked on" in response.json()["error"]["message"]
    assert response["WWW-Authenticate"] == 'Token realm="api"'


def test_expired_key_is_refused_with_401():
    user = make_user()
    token, raw_key = services.create_api_token(user=user, name="erp", expires_at=timezone.now() + timedelta(days=1))
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = token_client(raw_key).get(ME)

    assert response.status_code == 401
    assert "expired on" in response.json()["error"]["message"]


def test_key_of_inactive_user_is_refused_with_401():
    user = make_user()
    _, raw_key = services.create_api_token(user=user, name="erp")
    user.is_active = False
    user.save()

    response = token_client(raw_key).get(ME)

    assert response.status_code == 401
    assert "deactivated" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Token not-a-real-key", "Unknown API key"),
        ("Token", "No API key after “Token”"),
        ("Token two parts", "must not contain spaces"),
    ],
)
def test_malformed_or_unknown_keys_are_refused_with_401(header, message):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get(ME)

    assert response.status_code == 401
    assert message in response.json()["error"]["message"]


def test_request_without_credentials_gets_401():
    assert APIClient().get(ME).status_code == 401


def test_key_is_stored_only_as_its_sha256():
    user = make_user()
    token, raw_key = services.create_api_token(user=user, name="erp")

    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert raw_key not in json.dumps(row, default=str)
    assert row["key_hash"] == hashlib.sha256(raw_key.encode()).hexdigest()
    assert row["key_prefix"] == raw_key[:8]
    assert len(raw_key) >= 43  # 32 random bytes, URL-safe base64
    events = json.dumps(list(AccessEvent.objects.values()), default=str)
    assert raw_key not in events


def test_last_used_is_written_at_most_once_a_minute():
    user = make_user()
    token, raw_key = services.create_api_token(user=user, name="erp")
    client = token_client(raw_key)

    client.get(ME)
    first_use = ApiToken.objects.get(pk=token.pk).last_used_at
    with CaptureQueriesContext(connection) as queries:
        client.get(ME)
    assert not [q for q in queries if q["sql"].lstrip().upper().startswith(("UPDATE", "INSERT"))]
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first_use

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first_use - timedelta(minutes=2))
    client.get(ME)

    assert ApiToken.objects.get(pk=token.pk).last_used_at > first_use
    assert AccessEvent.objects.filter(kind="token_used", user=user).count() == 2


# --- Sessions on the API ----------------------------------------------------------------------------------------


def test_session_without_second_factor_is_refused_by_the_api(client):
    user = make_user(roles=[Role.AUDITOR])
    client.force_login(user)

    response = client.get(ME)

    assert response.status_code == 401
    assert "has not passed the second factor" in response.json()["error"]["message"]


def test_verified_session_is_accepted_by_the_api(make_verified_client):
    user = make_user()

    response = make_verified_client(user).get(ME)

    assert response.status_code == 200
    assert response.json()["authenticated_by"] == "session"


# --- Access-log endpoint ----------------------------------------------------------------------------------------


def test_access_events_list_needs_view_permission(make_api_client):
    assert make_api_client(make_user(roles=[Role.CMO_USER])).get("/api/v1/access-events/").status_code == 403


def test_access_events_list_filters_and_uses_a_fixed_number_of_queries(make_api_client):
    client = make_api_client(make_user(roles=[Role.AUDITOR]))
    for n in range(5):
        services.record_access(kind=AccessEvent.Kind.EXPORT, username=f"cmo{n}", target=f"allocation {n}", quantity=n)
    services.record_access(kind=AccessEvent.Kind.DOWNLOAD, username="cmo9", target="allocation 9", quantity=9)
    client.get("/api/v1/me/")  # the once-a-minute token write happens here, not in the measured request

    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/access-events/", {"kind": "export"})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5
    assert [row["target"] for row in body["results"]] == [f"allocation {n}" for n in (4, 3, 2, 1, 0)]
    # token lookup, user's groups/permissions (2), the viewer's company (scope), count, page
    assert len(queries) == 6


def test_access_events_filter_with_bad_kind_is_400(make_api_client):
    response = make_api_client(make_user(roles=[Role.AUDITOR])).get("/api/v1/access-events/", {"kind": "nope"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["kind"] == ['"nope" is not a valid choice.']


# --- Service rules and the management command -----------------------------------------------------------------


def test_create_refuses_past_expiry_and_duplicate_active_name():
    user = make_user()
    with pytest.raises(DomainError, match="expiry date is in the past"):
        services.create_api_token(user=user, name="erp", expires_at=timezone.now() - timedelta(days=1))
    token, _ = services.create_api_token(user=user, name="erp")
    with pytest.raises(Conflict, match="already has an active token named “erp”"):
        services.create_api_token(user=user, name="erp")

    services.revoke_api_token(token=token, actor=user)
    replacement, _ = services.create_api_token(user=user, name="erp")

    assert replacement.pk != token.pk


def test_revoking_twice_is_a_conflict():
    user = make_user()
    token, _ = services.create_api_token(user=user, name="erp")
    services.revoke_api_token(token=token, actor=user)

    with pytest.raises(Conflict, match="already revoked"):
        services.revoke_api_token(token=token, actor=user)
    assert list(AccessEvent.objects.order_by("id").values_list("kind", flat=True)) == [
        "token_created",
        "token_revoked",
    ]


def test_create_api_token_command_prints_the_key_once():
    user = make_user(username="line2-system")
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "create_api_token", "--username", "line2-system", "--name", "line 2", "--days", "30", stdout=out, stderr=err
    )

    raw_key = out.getvalue().strip()
    token = ApiToken.objects.get(user=user)
    assert token.key_hash == hashlib.sha256(raw_key.encode()).hexdigest()
    assert token.name == "line 2"
    assert timedelta(days=29, hours=23) < token.expires_at - timezone.now() <= timedelta(days=30)
    assert "Copy the key now" in err.getvalue()
    assert raw_key not in err.getvalue()


def test_create_api_token_command_explains_unknown_user():
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("create_api_token", "--username", "nobody", "--name", "x")


# --- OpenAPI ----------------------------------------------------------------------------------------------------


def test_schema_documents_both_schemes_without_warnings():
    from audit.api import urls as audit_api_urls

    GENERATOR_STATS.reset()
    generator = SchemaGenerator(patterns=[path("api/v1/", include(audit_api_urls))])

    schema = generator.get_schema(request=None, public=True)

    assert not GENERATOR_STATS, (dict(GENERATOR_STATS._warn_cache), dict(GENERATOR_STATS._error_cache))
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiToken"]["scheme"] == "bearer"
    assert schemes["cookieAuth"]["in"] == "cookie"
    assert {"apiToken": []} in schema["paths"]["/api/v1/me/"]["get"]["security"]
