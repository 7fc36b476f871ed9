import hashlib

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from audit import services
from audit.models import AccessEvent, ApiToken
from audit.roles import Role
from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(make_verified_client):
    return make_verified_client(make_user(username="root", is_staff=True, is_superuser=True))


# --- Access log: read-only --------------------------------------------------------------------------------------


def test_access_log_is_listed_but_cannot_be_added_changed_or_deleted(admin_client):
    event = services.record_access(kind=AccessEvent.Kind.EXPORT, username="cmo1", target="allocation 42", quantity=500)

    changelist = admin_client.get(reverse("admin:audit_accessevent_changelist"))
    assert changelist.status_code == 200
    assert "allocation 42" in changelist.text

    assert admin_client.get(reverse("admin:audit_accessevent_add")).status_code == 403
    assert admin_client.get(reverse("admin:audit_accessevent_delete", args=[event.pk])).status_code == 403
    detail = admin_client.get(reverse("admin:audit_accessevent_change", args=[event.pk]))
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.text
    admin_client.post(reverse("admin:audit_accessevent_change", args=[event.pk]), {"target": "allocation 1"})
    event.refresh_from_db()
    assert event.target == "allocation 42"


def test_steward_sees_the_access_log_but_not_api_tokens(make_verified_client):
    client = make_verified_client(make_user(is_staff=True, roles=[Role.STEWARD]))

    assert client.get(reverse("admin:audit_accessevent_changelist")).status_code == 200
    assert client.get(reverse("admin:audit_apitoken_changelist")).status_code == 403


# --- API tokens -------------------------------------------------------------------------------------------------


def test_adding_a_token_shows_the_key_once_and_stores_only_its_hash(admin_client):
    system = make_user(username="erp-system")

    response = admin_client.post(
        reverse("admin:audit_apitoken_add"), {"user": system.pk, "name": "ERP", "expires_at_0": "", "expires_at_1": ""}
    )

    assert response.status_code == 200
    raw_key = response.context["raw_key"]
    token = ApiToken.objects.get(user=system)
    assert token.key_hash == hashlib.sha256(raw_key.encode()).hexdigest()
    assert raw_key in response.text
    assert token.key_hash not in response.text
    assert "shown only on this page" in response.text
    assert "no-store" in response["Cache-Control"]
    assert token.created_by.username == "root"
    assert LogEntry.objects.get(object_id=str(token.pk)).is_addition()
    event = AccessEvent.objects.get(kind="token_created")
    assert (event.username, event.target) == ("root", f"api token {token.pk}")

    change = admin_client.get(reverse("admin:audit_apitoken_change", args=[token.pk]))
    assert change.status_code == 200
    assert token.key_hash not in change.text
    assert raw_key not in change.text
    assert 'name="_save"' not in change.text
    changelist = admin_client.get(reverse("admin:audit_apitoken_changelist"))
    assert f"{raw_key[:8]}…" in changelist.text
    assert token.key_hash not in changelist.text


def test_add_form_refuses_a_second_active_token_with_the_same_name(admin_client):
    system = make_user()
    services.create_api_token(user=system, name="ERP")

    response = admin_client.post(
        reverse("admin:audit_apitoken_add"), {"user": system.pk, "name": "ERP", "expires_at_0": "", "expires_at_1": ""}
    )

    assert response.status_code == 200
    assert "already has an active token named “ERP”" in response.text
    assert ApiToken.objects.filter(user=system).count() == 1


def test_revoke_action_revokes_selected_tokens(admin_client):
    system = make_user()
    first, _ = services.create_api_token(user=system, name="line 1")
    second, _ = services.create_api_token(user=system, name="line 2")

    response = admin_client.post(
        reverse("admin:audit_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )

    assert "Revoked 2 API tokens." in response.text
    assert ApiToken.objects.filter(revoked_at__isnull=False, revoked_by__username="root").count() == 2


def test_tokens_cannot_be_deleted(admin_client):
    token, _ = services.create_api_token(user=make_user(), name="ERP")

    assert admin_client.get(reverse("admin:audit_apitoken_delete", args=[token.pk])).status_code == 403
    assert ApiToken.objects.filter(pk=token.pk).exists()
