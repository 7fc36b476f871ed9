"""The access log: one test per event type, each through the real door, asserting the whole stored row (who, what,
how many serials, from where: IP, user agent, door, API key); and who may read which rows (company scope) in the
admin and the API."""

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from audit import services
from audit.models import AccessEvent, ApiToken
from audit.roles import Role
from serialization.models import ExportJob
from serialization.services import allocate_serials, create_generated_pool
from serialization.services.exports import run_export
from tests.audit.otp import PASSWORD, submit_code, submit_password, totp_code, wrong_code
from tests.factories import make_company, make_membership, make_product, make_user
from tests.partners.test_portal import Scene

pytestmark = pytest.mark.django_db

IP = "203.0.113.9"
AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"
FROM_BROWSER = {"REMOTE_ADDR": IP, "HTTP_USER_AGENT": AGENT}


def row(event: AccessEvent) -> dict:
    """The stored row, field by field (created_at aside)."""
    return {
        "kind": event.kind,
        "user": event.user,
        "username": event.username,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "door": event.door,
        "api_token": event.api_token,
        "target": event.target,
        "quantity": event.quantity,
        "counted_serials": event.counted_serials,
        "details": event.details,
    }


def expected(kind: str, user, **fields) -> dict:
    """A row from the browser above, for ``user``, with nothing else unless ``fields`` say so."""
    return {
        "kind": kind,
        "user": user,
        "username": user.username if user is not None else "",
        "ip": IP,
        "user_agent": AGENT,
        "door": "sign_in",
        "api_token": None,
        "target": "",
        "quantity": None,
        "counted_serials": 0,
        "details": {},
        **fields,
    }


def browser() -> Client:
    return Client(**FROM_BROWSER)


def api_client(user) -> APIClient:
    token, raw_key = services.create_api_token(user=user, name="erp")
    client = APIClient(**FROM_BROWSER)
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw_key}")
    client.api_token = token
    return client


def generated_allocation(*, quantity: int, owner=None):
    product = make_product(owner=owner, markets=("US",))
    pool = create_generated_pool(owner=product.owner, actor=None, product=product, initial_fill=1_000)
    return allocate_serials(pool=pool, quantity=quantity, actor=None, request_id="a1", purpose="batch")


# --- Sign-in events ------------------------------------------------------------------------------------------------


def test_sign_in_records_the_second_factor_then_the_login():
    user = make_user(is_staff=True)
    device = TOTPDevice.objects.create(user=user, name="Phone", confirmed=True)
    client = browser()

    submit_password(client, user, next_url="/admin/")
    submit_code(client, totp_code(device))

    verified, login = AccessEvent.objects.filter(user=user).order_by("id")
    assert row(verified) == expected("otp_verified", user, details={"method": "app"})
    assert row(login) == expected("login", user, details={"second_factor": "app"})


def test_wrong_password_records_a_failed_login_under_the_name_typed():
    user = make_user()

    submit_password(browser(), user, password="not the password")

    assert row(AccessEvent.objects.get()) == expected(
        "login_failed", None, username=user.username, details={"reason": "wrong username or password"}
    )


def test_wrong_code_records_a_failed_second_factor():
    user = make_user()
    device = TOTPDevice.objects.create(user=user, name="Phone", confirmed=True)
    client = browser()
    submit_password(client, user)

    submit_code(client, wrong_code(device))

    assert row(AccessEvent.objects.get()) == expected(
        "otp_failed", user, details={"stage": "sign-in", "method": "app", "reason": "wrong code"}
    )


def test_lockout_records_each_refused_attempt(settings):
    settings.AXES_FAILURE_LIMIT = 2
    user = make_user()
    client = browser()

    submit_password(client, user, password="wrong 1")
    submit_password(client, user, password="wrong 2")

    failed, locked = AccessEvent.objects.order_by("id")
    assert failed.kind == "login_failed"
    assert row(locked) == expected("locked_out", None, username=user.username, details={"failures": 2})


def test_enrolment_records_the_new_authenticator_with_where_it_happened():
    user = make_user()
    client = browser()
    submit_password(client, user)
    client.get(reverse("accounts:enrol"))
    device = TOTPDevice.objects.get(user=user)

    client.post(reverse("accounts:enrol"), {"code": totp_code(device)})

    enrolled = AccessEvent.objects.get(kind="mfa_enrolled")
    assert row(enrolled) == expected(
        "mfa_enrolled", user, details={"device": "Authenticator app", "backups_issued": 10}
    )


def test_sign_out_records_a_logout_from_the_door_it_was_made_at(make_verified_client):
    user = make_user(is_staff=True)
    client = make_verified_client(user)
    client.defaults.update(FROM_BROWSER)

    client.post(reverse("admin:logout"))

    assert row(AccessEvent.objects.get()) == expected("logout", user, door="admin")


# --- API tokens ---------------------------------------------------------------------------------------------------


def test_token_creation_and_revocation_in_the_admin_record_who_and_where(make_verified_client):
    admin = make_user(is_staff=True, is_superuser=True)
    line = make_user(username="line9")
    client = make_verified_client(admin)
    client.defaults.update(FROM_BROWSER)

    client.post(reverse("admin:audit_apitoken_add"), {"user": line.pk, "name": "line 9", "expires_at": ""})
    token = ApiToken.objects.get(user=line)
    client.post(reverse("admin:audit_apitoken_changelist"), {"action": "revoke_tokens", "_selected_action": [token.pk]})

    created, revoked = AccessEvent.objects.order_by("id")
    token_details = {"name": "line 9", "prefix": token.key_prefix, "for_user": "line9"}
    assert row(created) == expected(
        "token_created", admin, door="admin", target=f"api token {token.pk}", details=token_details
    )
    assert row(revoked) == expected(
        "token_revoked", admin, door="admin", target=f"api token {token.pk}", details=token_details
    )


def test_token_use_records_the_key_and_where_it_came_from():
    user = make_user(roles=[Role.LINE_SYSTEM])
    client = api_client(user)
    AccessEvent.objects.all().delete()  # the token_created row of the set-up

    assert client.get("/api/v1/me/").status_code == 200

    token = client.api_token
    assert row(AccessEvent.objects.get()) == expected(
        "token_used",
        user,
        door="api",
        api_token=token,
        target=f"api token {token.pk}",
        details={"name": "erp", "prefix": token.key_prefix},
    )


# --- Serials out --------------------------------------------------------------------------------------------------


def test_api_serial_list_records_who_what_how_many_and_the_key():
    user = make_user(roles=[Role.LINE_SYSTEM])
    client = api_client(user)
    allocation = generated_allocation(quantity=40)

    response = client.get(f"/api/v1/allocations/{allocation.pk}/serials/", {"format": "csv"})

    assert response.status_code == 200
    event = AccessEvent.objects.get(kind="download")
    assert row(event) == expected(
        "download",
        user,
        door="api",
        api_token=client.api_token,
        target=f"allocation {allocation.pk}",
        quantity=40,
        counted_serials=40,
        details={
            "format": "csv",
            "notation": "serial",
            "sha256": response["X-Content-SHA256"],
            "pool": allocation.pool_id,
            "download_id": event.details["download_id"],
        },
    )
    assert len(event.details["download_id"]) == 16


def test_api_export_job_records_the_export_when_it_is_asked_for():
    user = make_user(roles=[Role.LINE_SYSTEM])
    client = api_client(user)
    allocation = generated_allocation(quantity=30)

    response = client.post(f"/api/v1/allocations/{allocation.pk}/exports/", {"format": "json", "notation": "serial"})

    assert response.status_code == 202
    assert row(AccessEvent.objects.get(kind="export")) == expected(
        "export",
        user,
        door="api",
        api_token=client.api_token,
        target=f"allocation {allocation.pk}",
        quantity=30,
        counted_serials=30,
        details={"format": "json", "notation": "serial", "export_job": response.json()["id"]},
    )


def test_portal_csv_download_records_the_portal_door(make_verified_client):
    scene = Scene()
    client = make_verified_client(scene.user)
    client.defaults.update(FROM_BROWSER)
    scene.request_serials(client, quantity=12)
    allocation = scene.allocation()

    response = client.get(reverse("portal:allocation-download", args=[allocation.pk]))

    assert response.status_code == 200
    event = AccessEvent.objects.get(kind="download")
    assert row(event) == expected(
        "download",
        scene.user,
        door="portal",
        target=f"allocation {allocation.pk}",
        quantity=12,
        counted_serials=12,
        details={
            "format": "csv",
            "notation": "serial",
            "sha256": response["X-Content-SHA256"],
            "pool": allocation.pool_id,
            "download_id": event.details["download_id"],
        },
    )


def test_admin_download_of_someone_elses_export_file_counts_its_serials(make_verified_client, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    steward = make_user(roles=[Role.STEWARD], is_staff=True)
    requester = make_user(roles=[Role.LINE_SYSTEM])
    allocation = generated_allocation(quantity=25)
    job = ExportJob.objects.create(allocation=allocation, format="csv", notation="serial", requested_by=requester)
    job = run_export(job_id=job.pk)
    client = make_verified_client(steward)
    client.defaults.update(FROM_BROWSER)

    response = client.get(reverse("admin:serialization_exportjob_download", args=[job.pk]))

    assert response.status_code == 200
    assert row(AccessEvent.objects.get(kind="download")) == expected(
        "download",
        steward,
        door="admin",
        target=f"allocation {allocation.pk}",
        quantity=25,
        counted_serials=25,
        details={"format": "csv", "notation": "serial", "sha256": job.sha256, "export_job": job.pk},
    )


def test_commands_and_workers_record_the_system_door():
    event = services.record_access(kind=AccessEvent.Kind.EXPORT, username="q-worker", target="allocation 7")

    assert (event.door, event.ip, event.user_agent, event.api_token) == ("system", None, "", None)


# --- Who reads which rows --------------------------------------------------------------------------------------------


@pytest.fixture
def two_companies():
    """Events of a user of company A, of company B, of the operator's own staff, and a failed sign-in typed as A's
    user's name (no user on the row)."""
    company_a, company_b = make_company(name="Company A"), make_company(name="Company B")
    alice, bob = make_user(username="alice"), make_user(username="bob")
    make_membership(user=alice, company=company_a)
    make_membership(user=bob, company=company_b)
    operator = make_user(username="operator", is_staff=True)
    AccessEvent.objects.all().delete()
    for user in (alice, bob, operator):
        services.record_access(kind=AccessEvent.Kind.DOWNLOAD, user=user, target=f"download by {user.username}")
    services.record_access(kind=AccessEvent.Kind.LOGIN_FAILED, username="alice", target="typed alice")
    services.record_access(kind=AccessEvent.Kind.LOGIN_FAILED, username="mallory", target="typed mallory")
    return company_a, company_b


ALL_TARGETS = {"download by alice", "download by bob", "download by operator", "typed alice", "typed mallory"}


def admin_targets(client) -> set[str]:
    response = client.get(reverse("admin:audit_accessevent_changelist"))
    assert response.status_code == 200
    return {event.target for event in response.context["cl"].result_list}


def test_admin_shows_a_company_steward_only_the_events_of_their_company(two_companies, make_verified_client):
    company_a, _ = two_companies
    steward_a = make_user(username="steward-a", roles=[Role.STEWARD], is_staff=True)
    make_membership(user=steward_a, company=company_a)
    operator_steward = make_user(roles=[Role.STEWARD], is_staff=True)
    superuser = make_user(is_staff=True, is_superuser=True)

    assert admin_targets(make_verified_client(steward_a)) == {"download by alice", "typed alice"}
    assert admin_targets(make_verified_client(operator_steward)) == ALL_TARGETS
    assert admin_targets(make_verified_client(superuser)) == ALL_TARGETS
    bob_event = AccessEvent.objects.get(target="download by bob")
    url = reverse("admin:audit_accessevent_change", args=[bob_event.pk])
    assert make_verified_client(steward_a).get(url).status_code == 302  # "does not exist": back to the index


def test_api_shows_a_company_auditor_only_the_events_of_their_company(two_companies):
    company_a, _ = two_companies
    auditor_a = make_user(roles=[Role.AUDITOR])
    make_membership(user=auditor_a, company=company_a)
    client = api_client(auditor_a)
    operator_auditor = api_client(make_user(roles=[Role.AUDITOR]))

    seen = client.get("/api/v1/access-events/", {"kind": "download"}).json()["results"]
    failed = client.get("/api/v1/access-events/", {"kind": "login_failed"}).json()["results"]

    assert [event["target"] for event in seen] == ["download by alice"]
    assert [event["target"] for event in failed] == ["typed alice"]
    bob_event = AccessEvent.objects.get(target="download by bob")
    assert client.get(f"/api/v1/access-events/{bob_event.pk}/").status_code == 404
    everything = operator_auditor.get("/api/v1/access-events/", {"created_after": "2000-01-01T00:00:00Z"}).json()
    assert {event["target"] for event in everything["results"]} >= ALL_TARGETS


def test_access_log_needs_its_view_permission(make_verified_client):
    cmo_user = make_user(roles=[Role.CMO_USER])

    assert api_client(cmo_user).get("/api/v1/access-events/").status_code == 403
    assert (
        make_verified_client(make_user(roles=[Role.QA], is_staff=True))
        .get(reverse("admin:audit_accessevent_changelist"))
        .status_code
        == 403
    )


def test_password_is_never_stored_in_the_log():
    user = make_user()

    submit_password(browser(), user, password=PASSWORD + "x")

    assert PASSWORD not in str(list(AccessEvent.objects.values()))
