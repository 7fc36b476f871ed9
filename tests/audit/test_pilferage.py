"""Pilferage controls: the hourly serial limit per account (block, incident, 403 on every door, lifting by a steward,
two parallel exports on PostgreSQL), the rate limits per account and per API client (429 with Retry-After), and the
stamp every exported file carries (requester, time, export id) with its SHA-256 in the access log."""

import hashlib
import io
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.storage import default_storage
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from audit import pilferage, services
from audit.exceptions import Conflict, DomainError, PermissionDenied
from audit.models import AccessEvent, ExportBlock, Incident
from audit.roles import Role
from serialization.importers import csv_file
from serialization.models import ExportJob, ListedSerial, SerialPool
from serialization.services import allocate_serials, create_generated_pool, create_list_pool, pool_permutation
from serialization.services.exports import create_export, run_export
from serialization.services.imports import import_serials
from tests.factories import make_product, make_user
from tests.partners.test_portal import Scene

pytestmark = pytest.mark.django_db

LIMIT = 100
CONTACT = "the security desk (security@example.com, +44 20 7946 0000)"


@pytest.fixture(autouse=True)
def _small_limit(settings):
    settings.SERIAL_EXPORT_LIMIT_PER_HOUR = LIMIT
    settings.SECURITY_CONTACT = CONTACT


def api_client(user, name: str = "erp") -> APIClient:
    token, raw_key = services.create_api_token(user=user, name=name)
    client = APIClient(REMOTE_ADDR="198.51.100.4")
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw_key}")
    client.api_token = token
    return client


def make_pool(*, fill: int = 1_000, owner=None, markets=("US",)) -> SerialPool:
    product = make_product(owner=owner, markets=markets)
    return create_generated_pool(owner=product.owner, actor=None, product=product, initial_fill=fill)


_request_ids = iter(range(1, 10**9))


def allocation_of(quantity: int, pool: SerialPool | None = None):
    pool = pool or make_pool()
    return allocate_serials(
        pool=pool, quantity=quantity, actor=None, request_id=f"r{next(_request_ids)}", purpose="batch"
    )


def serial_list(client, allocation):
    return client.get(f"/api/v1/allocations/{allocation.pk}/serials/", {"format": "csv"})


def blocked_message(user) -> str:
    block = ExportBlock.objects.get(user=user, lifted_at__isnull=True)
    return (
        f"Serial downloads and exports are blocked for account “{user.username}” since "
        f"{block.created_at:%Y-%m-%d %H:%M} UTC: {block.reason} Contact {CONTACT} to have the block reviewed and "
        "lifted."
    )


# --- The anomaly rule ---------------------------------------------------------------------------------------------


def test_crossing_the_hourly_limit_refuses_blocks_the_account_and_raises_a_high_incident():
    user = make_user(username="line7", roles=[Role.LINE_SYSTEM])
    client = api_client(user)
    first, second = allocation_of(60), allocation_of(60)

    assert serial_list(client, first).status_code == 200
    refused = serial_list(client, second)

    assert refused.status_code == 403
    block = ExportBlock.objects.get()
    assert (block.user, block.api_token, block.serials_in_hour, block.limit, block.lifted_at) == (
        user,
        client.api_token,
        120,
        LIMIT,
        None,
    )
    assert block.reason == (
        "it asked for 60 serials with 60 already taken within the hour, more than the limit of 100 serials an hour."
    )
    assert refused.json()["error"] == {
        "code": "export_blocked",
        "message": blocked_message(user),
        "details": {"export_block": block.pk},
    }
    incident = Incident.objects.get()
    assert (incident.kind, incident.severity, incident.status, incident.title) == (
        "security",
        "high",
        "open",
        "Serial export limit exceeded by line7",
    )
    assert (incident.subject_type, incident.subject_id) == ("audit.exportblock", str(block.pk))
    assert incident.details == {
        "user": "line7",
        "serials_in_hour": 120,
        "asked_for": 60,
        "limit": LIMIT,
        "export_block": block.pk,
        "api_client": {"id": client.api_token.pk, "name": "erp"},
        "ip": "198.51.100.4",
    }
    assert block.incident == incident
    # The refused request handed nothing out and logged no download.
    assert list(AccessEvent.objects.filter(kind="download").values_list("target", "counted_serials")) == [
        (f"allocation {first.pk}", 60)
    ]


def test_a_blocked_account_is_refused_on_every_door_while_others_go_on(make_verified_client, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    scene = Scene()
    cmo = scene.user
    cmo.groups.add(*make_user(roles=[Role.LINE_SYSTEM]).groups.all())  # so it may use the API's export too
    pool = make_pool(owner=scene.cmo)
    allocation = allocation_of(10, pool)
    job = ExportJob.objects.create(allocation=allocation, format="csv", notation="serial", requested_by=None)
    job = run_export(job_id=job.pk)
    pilferage.block_account(user=cmo, serials_in_hour=150, asked_for=90)
    api, web = api_client(cmo), make_verified_client(cmo)
    message = blocked_message(cmo)

    doors = {
        "API serial list": serial_list(api, allocation),
        "API export": api.post(f"/api/v1/allocations/{allocation.pk}/exports/", {"format": "csv"}),
        "API export download": api.get(f"/api/v1/exports/{job.pk}/download/"),
        "portal CSV": web.get(reverse("portal:allocation-download", args=[allocation.pk])),
    }

    assert {door: response.status_code for door, response in doors.items()} == dict.fromkeys(doors, 403)
    for door in ("API serial list", "API export", "API export download"):
        assert doors[door].json()["error"]["message"] == message, door
    assert message in doors["portal CSV"].content.decode().replace("&quot;", '"').replace("&#x27;", "'")
    assert not AccessEvent.objects.filter(kind__in=["download", "export"]).exists()
    assert ExportJob.objects.count() == 1

    # The admin door: a steward of the same company is not blocked; a blocked staff account is.
    steward = make_user(roles=[Role.STEWARD], is_staff=True)
    download_url = reverse("admin:serialization_exportjob_download", args=[job.pk])
    assert make_verified_client(steward).get(download_url).status_code == 200
    pilferage.block_account(user=steward, serials_in_hour=101, asked_for=101)
    refused = make_verified_client(steward).get(download_url)
    assert refused.status_code == 403
    assert refused.context["message"] == blocked_message(steward)
    # Another account still gets serials.
    assert serial_list(api_client(make_user(roles=[Role.LINE_SYSTEM]), "other"), allocation).status_code == 200


def test_an_export_job_counts_when_asked_for_and_its_own_download_does_not_count_again(
    django_capture_on_commit_callbacks, tmp_path, settings
):
    settings.MEDIA_ROOT = tmp_path
    user = make_user(roles=[Role.LINE_SYSTEM])
    client = api_client(user)
    allocation = allocation_of(70)

    with django_capture_on_commit_callbacks(execute=True):
        created = client.post(f"/api/v1/allocations/{allocation.pk}/exports/", {"format": "csv"})
    job_id = created.json()["id"]
    downloads = [client.get(f"/api/v1/exports/{job_id}/download/") for _ in range(2)]
    colleague = api_client(make_user(roles=[Role.LINE_SYSTEM]), "colleague")
    colleague_download = colleague.get(f"/api/v1/exports/{job_id}/download/")
    too_much = client.post(f"/api/v1/allocations/{allocation.pk}/exports/", {"format": "csv"})

    assert [r.status_code for r in (created, *downloads, colleague_download, too_much)] == [202, 200, 200, 200, 403]
    counted = AccessEvent.objects.order_by("id").filter(kind__in=["export", "download"])
    assert list(counted.values_list("kind", "user", "quantity", "counted_serials")) == [
        ("export", user.pk, 70, 70),
        ("download", user.pk, 70, 0),
        ("download", user.pk, 70, 0),
        ("download", colleague.api_token.user_id, 70, 70),
    ]
    assert ExportBlock.objects.get().serials_in_hour == 140


def test_only_the_last_hour_counts():
    user = make_user(roles=[Role.LINE_SYSTEM])
    client = api_client(user)
    assert serial_list(client, allocation_of(90)).status_code == 200
    AccessEvent.objects.filter(kind="download").update(created_at=timezone.now() - timedelta(minutes=61))

    assert serial_list(client, allocation_of(90)).status_code == 200
    assert serial_list(client, allocation_of(20)).status_code == 403
    assert pilferage.taken_in_window(user=user) == 90


def test_exactly_the_limit_is_allowed():
    client = api_client(make_user(roles=[Role.LINE_SYSTEM]))

    assert serial_list(client, allocation_of(LIMIT)).status_code == 200
    assert serial_list(client, allocation_of(1)).status_code == 403


def test_a_steward_lifts_a_block_in_the_admin_with_a_reason_and_a_fresh_hour_starts(make_verified_client):
    user = make_user(username="erp-system", roles=[Role.LINE_SYSTEM])
    client = api_client(user)
    assert serial_list(client, allocation_of(80)).status_code == 200
    assert serial_list(client, allocation_of(80)).status_code == 403
    block = ExportBlock.objects.get()
    steward = make_user(username="sam", roles=[Role.STEWARD], is_staff=True)
    admin = make_verified_client(steward)
    changelist = reverse("admin:audit_exportblock_changelist")
    action = {"action": "lift_blocks", "_selected_action": [block.pk]}

    listed = admin.get(changelist)
    asked = admin.post(changelist, action)
    without_reason = admin.post(changelist, {**action, "apply": "1", "reason": "  "})
    lifted = admin.post(changelist, {**action, "apply": "1", "reason": "ERP re-sent a whole year by mistake"})

    assert listed.status_code == 200 and "erp-system" in listed.text and "Active" in listed.text
    assert asked.status_code == 200
    assert asked.templates[0].name == "admin/audit/exportblock/lift.html"
    assert "This field is required." in without_reason.text
    assert lifted.status_code == 302
    block.refresh_from_db()
    assert (block.lifted_by, block.lift_reason) == (steward, "ERP re-sent a whole year by mistake")
    assert block.lifted_at is not None
    last = block.history.order_by("history_id").last()
    assert (last.history_user, last.history_change_reason) == (steward, "Lifted: ERP re-sent a whole year by mistake")
    # The 80 serials of the last hour no longer count: the account gets up to the limit again.
    assert serial_list(client, allocation_of(LIMIT)).status_code == 200
    assert serial_list(client, allocation_of(1)).status_code == 403
    assert ExportBlock.objects.filter(user=user).count() == 2


def test_lifting_needs_the_permission_a_reason_and_an_active_block():
    user = make_user(roles=[Role.LINE_SYSTEM])
    block = pilferage.block_account(user=user, serials_in_hour=150, asked_for=50)
    qa = make_user(roles=[Role.QA], is_staff=True)
    steward = make_user(roles=[Role.STEWARD], is_staff=True)

    with pytest.raises(PermissionDenied, match="Can lift an export block"):
        pilferage.lift_export_block(block=block, actor=qa, reason="looks fine")
    with pytest.raises(DomainError, match="Give the reason for lifting the block"):
        pilferage.lift_export_block(block=block, actor=steward, reason="")
    pilferage.lift_export_block(block=block, actor=steward, reason="checked with the plant")
    with pytest.raises(Conflict, match=r"already lifted on .* by"):
        pilferage.lift_export_block(block=block, actor=steward, reason="again")


def test_qa_sees_no_lift_action_and_company_stewards_see_only_their_company_blocks(make_verified_client):
    scene = Scene()
    blocked_cmo_user = scene.user
    pilferage.block_account(user=blocked_cmo_user, serials_in_hour=150, asked_for=50)
    pilferage.block_account(user=make_user(username="elsewhere"), serials_in_hour=150, asked_for=50)
    other_company_steward = make_user(roles=[Role.STEWARD], is_staff=True)
    from tests.factories import make_company, make_membership

    make_membership(user=other_company_steward, company=make_company())
    changelist = reverse("admin:audit_exportblock_changelist")

    qa_page = make_verified_client(make_user(roles=[Role.QA], is_staff=True)).get(changelist)
    scoped = make_verified_client(other_company_steward).get(changelist)

    assert qa_page.status_code == 403  # QA may not even see blocks
    assert scoped.status_code == 200
    assert list(scoped.context["cl"].result_list) == []


def test_two_blocks_for_one_account_are_never_active_at_once():
    user = make_user()
    first = pilferage.block_account(user=user, serials_in_hour=150, asked_for=50)
    again = pilferage.block_account(user=user, serials_in_hour=170, asked_for=70)

    assert again == first
    assert ExportBlock.objects.count() == Incident.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_parallel_exports_cannot_both_slip_past_the_limit(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): SQLite ignores row locks and serialises writers")
    user = make_user()
    # No market: a transactional test may run after another one emptied the seeded markets.
    allocations = [allocation_of(60, make_pool(markets=())), allocation_of(60, make_pool(markets=()))]
    real_taken = pilferage.taken_in_window
    barrier = threading.Barrier(2)

    def slow_taken(*, user):
        # Both requests sum the hour at nearly the same moment, then linger: without the account lock both would
        # see 0 and pass.
        total = real_taken(user=user)
        threading.Event().wait(0.5)
        return total

    monkeypatch.setattr(pilferage, "taken_in_window", slow_taken)
    outcomes, failures = [], []

    def export(allocation):
        try:
            barrier.wait()
            create_export(allocation=allocation, format="csv", notation="serial", actor=user)
            outcomes.append("exported")
        except pilferage.ExportBlocked:
            outcomes.append("refused")
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=export, args=(allocation,)) for allocation in allocations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert sorted(outcomes) == ["exported", "refused"]
    assert ExportJob.objects.count() == 1
    assert pilferage.taken_in_window(user=user) == 60
    assert ExportBlock.objects.get().serials_in_hour == 120


# --- Rate limits ----------------------------------------------------------------------------------------------------


@pytest.fixture
def rates(settings):
    def set_rates(**rates):
        defaults = {"allocation": "1000/minute", "allocation_client": "1000/minute"}
        defaults |= {"export": "1000/hour", "export_client": "1000/hour"}
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": defaults | rates}

    return set_rates


def allocate_over_api(client, pool, n: int):
    body = {"quantity": 1, "request_id": f"q{n}", "purpose": "batch"}
    return client.post(f"/api/v1/pools/{pool.pk}/allocations/", body)


def test_the_n_plus_first_allocation_of_an_account_gets_429_while_another_account_goes_on(rates):
    rates(allocation="3/minute")
    pool = make_pool()
    alice = api_client(make_user(username="alice", roles=[Role.LINE_SYSTEM]))
    bob = api_client(make_user(username="bob", roles=[Role.LINE_SYSTEM]))

    answers = [allocate_over_api(alice, pool, n).status_code for n in range(3)]
    refused = allocate_over_api(alice, pool, 3)
    other = allocate_over_api(bob, pool, 4)

    assert answers == [201, 201, 201]
    assert refused.status_code == 429
    wait = int(refused["Retry-After"])
    assert 55 <= wait <= 60
    assert refused.json()["error"] == {
        "code": "throttled",
        "message": "Too many serial allocation requests from account “alice”: the limit is 3 per minute. "
        f"Expected available in {wait} seconds.",
    }
    assert other.status_code == 201
    assert pool.allocations.count() == 4  # the refused request allocated nothing


def test_each_api_client_has_its_own_limit_within_the_accounts(rates):
    rates(export="10/hour", export_client="2/hour")
    user = make_user(roles=[Role.LINE_SYSTEM])
    first_key, second_key = api_client(user, "line 1"), api_client(user, "line 2")
    allocation = allocation_of(5)

    answers = [serial_list(first_key, allocation).status_code for _ in range(3)]
    other_key = serial_list(second_key, allocation)

    assert answers == [200, 200, 429]
    assert other_key.status_code == 200
    refused = serial_list(first_key, allocation)
    assert refused.json()["error"]["message"].startswith(
        f"Too many serial download and export requests from API client “line 1” ({first_key.api_token.key_prefix}…): "
        "the limit is 2 per hour."
    )
    assert int(refused["Retry-After"]) > 3500


def test_the_account_limit_spans_its_keys_and_its_browser_session(rates, make_verified_client, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    rates(export="2/hour")
    scene = Scene()
    scene.request_serials(make_verified_client(scene.user), quantity=5)
    allocation = scene.allocation()
    key, browser = api_client(scene.user), make_verified_client(scene.user)
    scene.user.groups.add(*make_user(roles=[Role.LINE_SYSTEM]).groups.all())
    url = reverse("portal:allocation-download", args=[allocation.pk])

    assert serial_list(key, allocation).status_code == 200
    assert browser.get(url).status_code == 200
    refused = browser.get(url)

    assert refused.status_code == 429
    assert refused["Retry-After"].isdigit()
    assert "Too many serial download and export requests from account" in refused.content.decode()


def test_admin_export_downloads_count_against_the_same_limit(rates, make_verified_client, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    rates(export="1/hour")
    job = ExportJob.objects.create(allocation=allocation_of(5), format="txt", notation="serial")
    job = run_export(job_id=job.pk)
    admin = make_verified_client(make_user(username="stew", roles=[Role.STEWARD], is_staff=True))
    url = reverse("admin:serialization_exportjob_download", args=[job.pk])

    first, second = admin.get(url), admin.get(url)

    assert (first.status_code, second.status_code) == (200, 429)
    assert int(second["Retry-After"]) > 3500
    assert second.context["message"].startswith(
        "Too many serial download and export requests from account “stew”: the limit is 1 per hour."
    )
    assert AccessEvent.objects.filter(kind="download").count() == 1


def test_portal_serial_requests_are_rate_limited(rates, make_verified_client):
    rates(allocation="1/minute")
    scene = Scene()
    browser = make_verified_client(scene.user)

    first = scene.request_serials(browser, quantity=5)
    second = scene.request_serials(browser, quantity=5)

    assert first.status_code == 302
    assert second.status_code == 429
    assert "the limit is 1 per minute" in second.content.decode()
    assert scene.order.allocations.count() == 1


def test_requests_without_credentials_are_refused_before_any_counting(rates):
    rates(export="1/hour")
    allocation = allocation_of(5)

    answers = [APIClient().get(f"/api/v1/allocations/{allocation.pk}/serials/").status_code for _ in range(3)]

    assert answers == [401, 401, 401]


# --- What an exported file says about itself -------------------------------------------------------------------------


def test_export_file_names_requester_time_and_export_and_its_checksum_is_logged(
    django_capture_on_commit_callbacks, tmp_path, settings
):
    settings.MEDIA_ROOT = tmp_path
    user = make_user(username="erp", roles=[Role.LINE_SYSTEM])
    client = api_client(user)
    pool = make_pool()
    allocation = allocation_of(50, pool)

    with django_capture_on_commit_callbacks(execute=True):
        job_id = client.post(f"/api/v1/allocations/{allocation.pk}/exports/", {"format": "csv"}).json()["id"]
    job = ExportJob.objects.get(pk=job_id)
    with default_storage.open(job.file.name, "rb") as handle:
        stored = handle.read()
    downloaded = b"".join(client.get(f"/api/v1/exports/{job_id}/download/").streaming_content)

    assert downloaded == stored
    lines = stored.decode().splitlines()
    assert lines[:4] == [
        "# requested_by: erp",
        f"# requested_at: {job.created_at:%Y-%m-%dT%H:%M:%SZ}",
        f"# export_id: {job.pk}",
        "serial",
    ]
    assert lines[4:] == pool_permutation(pool).serials(0, 50)
    sha256 = hashlib.sha256(stored).hexdigest()
    assert job.sha256 == sha256
    download = AccessEvent.objects.get(kind="download")
    assert (download.user, download.details["sha256"], download.details["export_job"]) == (user, sha256, job.pk)


def test_streamed_json_carries_the_stamp_under_an_export_key():
    user = make_user(username="line3", roles=[Role.LINE_SYSTEM])
    client = api_client(user)
    pool = make_pool()
    allocation = allocation_of(5, pool)

    response = client.get(f"/api/v1/allocations/{allocation.pk}/serials/", {"format": "json"})

    body = b"".join(response.streaming_content)
    event = AccessEvent.objects.get(kind="download")
    document = json.loads(body)
    stamped_at = datetime.strptime(document["export"].pop("requested_at"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(0) <= event.created_at - stamped_at < timedelta(seconds=2)  # stamped just before the record
    assert document["export"] == {"requested_by": "line3", "download_id": event.details["download_id"]}
    assert document["serials"] == pool_permutation(pool).serials(0, 5)
    assert hashlib.sha256(body).hexdigest() == event.details["sha256"] == response["X-Content-SHA256"]


@pytest.mark.parametrize("layout", ["csv", "json"])
def test_an_exported_file_imports_back_into_a_list_pool(layout, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    user = make_user(roles=[Role.LINE_SYSTEM])
    source = make_pool()
    allocation = allocation_of(30, source)
    job = create_export(allocation=allocation, format=layout, notation="serial", actor=user)
    job = run_export(job_id=job.pk)
    with default_storage.open(job.file.name, "rb") as handle:
        exported = handle.read()
    product = make_product(markets=("US",))
    target = create_list_pool(owner=product.owner, actor=user, product=product, source=SerialPool.Source.FILE)

    result = import_serials(pool=target, layout=layout, stream=io.BytesIO(exported), actor=user)

    assert (result.status, result.imported, result.errors) == ("done", 30, [])
    imported = list(ListedSerial.objects.filter(pool=target).order_by("ordinal").values_list("serial", flat=True))
    assert imported == pool_permutation(source).serials(0, 30)


def test_csv_importer_skips_the_stamp_and_keeps_the_files_line_numbers():
    plain = b"# requested_by: erp\n# export_id: 7\nserial\nP1\nP2\n"
    quoted = b'# requested_by: erp\n# export_id: 7\nserial\nP1\n"P 2"\n'

    (column,) = csv_file.parse(io.BytesIO(plain))
    rows = list(csv_file.parse(io.BytesIO(quoted)))

    assert (column.first_line, column.serials) == (4, ["P1", "P2"])
    assert rows == [(4, None, "P1", None), (5, None, "P 2", None)]
