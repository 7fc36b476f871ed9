"""The outbox against a real HTTP receiver started here on 127.0.0.1 (an ephemeral port) that answers 200, 500,
hangs past the timeout, or rejects — and the file drop: attempts, statuses, the stored answer, the back-off schedule,
the dead letter, the incidents, a steward's resubmission, and no credential anywhere but the request header."""

import datetime as dt
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule

from audit.exceptions import Conflict, PermissionDenied
from audit.models import AccessEvent, Incident
from masterdata.models import ProductNationalCode
from serialization.outbox_models import Endpoint, Submission
from serialization.reports import ReportRefused
from serialization.services import outbox
from serialization.services.batches import ReasonRequired
from tests.factories import get_market, make_company, make_membership, make_user
from tests.serialization.test_market_reports import Scene, de_market

pytestmark = pytest.mark.django_db

SECRET = "s3cret-hub-token-value"
ACCEPTED_BODY = '{"status": "accepted", "uploadId": "U-77"}'


class Receiver:
    """An HTTP server in a thread that answers each POST with the next scripted answer: ``(status, body)``, or
    ``("hang", seconds)`` to say nothing for that long. It keeps what it received."""

    def __init__(self) -> None:
        self.answers: list[tuple] = []
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hub/upload"

    def answer(self, *answers: tuple) -> None:
        self.answers.extend(answers)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, text = receiver.answers.pop(0) if receiver.answers else (200, ACCEPTED_BODY)
                if status == "hang":
                    time.sleep(text)
                    return
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep the test output clean
                pass

        return Handler


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _outbox_settings(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.OUTBOX_DROP_ROOT = tmp_path / "drop"
    settings.OUTBOX_MAX_ATTEMPTS = 3
    settings.OUTBOX_RETRY_BASE_SECONDS = 60
    settings.OUTBOX_RETRY_MAX_SECONDS = 3600


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("EU_HUB_TOKEN", SECRET)


def eu_scene() -> tuple[Scene, object]:
    de = de_market()
    scene = Scene(markets=("EU", de))
    ProductNationalCode.objects.create(product=scene.product, market=de, ai="710", value="03752864")
    batch = scene.batch()
    scene.produce(batch, units=20, cases=2)
    return scene, batch


def http_endpoint(url: str, **overrides) -> Endpoint:
    fields = {
        "name": "EU hub",
        "market": get_market("EU"),
        "kind": Endpoint.Kind.HTTP,
        "url": url,
        "auth_kind": Endpoint.AuthKind.BEARER,
        "credential_env": "EU_HUB_TOKEN",
        "timeout_seconds": 2,
        **overrides,
    }
    endpoint = Endpoint(**fields)
    endpoint.full_clean()
    endpoint.save()
    return endpoint


def submit(scene, batch, capture, market="EU") -> Submission:
    with capture(execute=True):
        submission = outbox.create_submission(market=get_market(market), batch=batch, actor=scene.actor)
    submission.refresh_from_db()
    return submission


def retry_now(submission: Submission, capture) -> Submission:
    """Let the clock reach the scheduled try, then run the task the schedule would run."""
    Submission.objects.filter(pk=submission.pk).update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))
    with capture(execute=True):
        outbox.send_submission(submission_id=submission.pk)
    submission.refresh_from_db()
    return submission


def reasons(submission: Submission) -> list[str]:
    return list(submission.history.order_by("history_id").values_list("history_change_reason", flat=True))


def stored_bytes(submission: Submission) -> bytes:
    with default_storage.open(submission.file.name, "rb") as handle:
        return handle.read()


def schedules(submission: Submission) -> list[tuple[str, str, dt.datetime]]:
    rows = Schedule.objects.filter(func="serialization.tasks.send_submission", args=f"({submission.pk},)")
    return list(rows.order_by("next_run").values_list("name", "args", "next_run"))


# --- accepted ---------------------------------------------------------------------------------------------------------


def test_a_200_answer_accepts_the_submission_and_keeps_the_answer(
    receiver, token, django_capture_on_commit_callbacks, caplog
):
    caplog.set_level(logging.DEBUG)
    scene, batch = eu_scene()
    http_endpoint(receiver.url)

    submission = submit(scene, batch, django_capture_on_commit_callbacks)

    assert (submission.status, submission.attempts, submission.response_status) == ("accepted", 1, 200)
    assert (submission.response_body, submission.last_error) == (ACCEPTED_BODY, "")
    assert submission.finished_at is not None and submission.next_attempt_at is None
    assert (submission.kind, submission.items, submission.company) == ("eu_hub", 20, scene.owner)
    ((request,),) = [receiver.requests]
    assert request["path"] == "/hub/upload"
    assert request["body"] == stored_bytes(submission)
    assert json.loads(request["body"])["batch"]["batchId"] == batch.lot
    headers = request["headers"]
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-SHA256"] == submission.sha256
    assert headers["Idempotency-Key"] == f"submission-{submission.pk}-{submission.sha256[:16]}"
    assert reasons(submission) == [
        "built and validated; queued",
        "attempt 1 to EU hub",
        "attempt 1: accepted (HTTP 200)",
    ]
    export = AccessEvent.objects.get(kind="export", target=f"submission {submission.pk}")
    assert (export.user, export.quantity, export.details["sha256"]) == (scene.actor, 20, submission.sha256)
    assert not Incident.objects.exists()
    assert schedules(submission) == []
    # The credential went in the request header and nowhere else: no log line, stored field or history row.
    assert SECRET not in caplog.text
    stored = [
        *Submission.history.values_list("last_error", "response_body"),
        *AccessEvent.objects.values_list("details", flat=True),
    ]
    assert SECRET not in json.dumps(stored, default=str)


def test_a_task_delivered_twice_sends_once(receiver, token, django_capture_on_commit_callbacks):
    scene, batch = eu_scene()
    http_endpoint(receiver.url)
    submission = submit(scene, batch, django_capture_on_commit_callbacks)

    again = outbox.send_submission(submission_id=submission.pk)

    assert (again.status, again.attempts, len(receiver.requests)) == ("accepted", 1, 1)


# --- failed, retried with back-off, dead ------------------------------------------------------------------------------


def test_500_answers_are_retried_with_exponential_backoff_until_dead_with_an_incident(
    receiver, token, django_capture_on_commit_callbacks
):
    receiver.answer((500, '{"error": "database down"}'), (503, "maintenance"), (500, "still down"))
    scene, batch = eu_scene()
    http_endpoint(receiver.url)

    first = submit(scene, batch, django_capture_on_commit_callbacks)

    assert (first.status, first.attempts, first.response_status) == ("failed", 1, 500)
    assert first.response_body == '{"error": "database down"}'
    assert first.last_error == "The receiver answered HTTP 500 Internal Server Error; will try again."
    wait = first.next_attempt_at - first.last_attempt_at
    assert dt.timedelta(seconds=60) <= wait < dt.timedelta(seconds=65)
    assert schedules(first) == [
        (
            f"outbox: submission {first.pk} attempt 2 at {first.next_attempt_at:%Y%m%d%H%M%S}",
            f"({first.pk},)",
            first.next_attempt_at,
        )
    ]
    # The task may run early (a sweeper, a second worker): it does not send before the time has come.
    early = outbox.send_submission(submission_id=first.pk)
    assert (early.status, early.attempts, len(receiver.requests)) == ("failed", 1, 1)

    second = retry_now(first, django_capture_on_commit_callbacks)

    assert (second.status, second.attempts, second.response_status) == ("failed", 2, 503)
    wait = second.next_attempt_at - second.last_attempt_at
    assert dt.timedelta(seconds=120) <= wait < dt.timedelta(seconds=125)  # doubled

    third = retry_now(second, django_capture_on_commit_callbacks)

    assert (third.status, third.attempts, third.response_status, third.next_attempt_at) == ("dead", 3, 500, None)
    assert third.finished_at is not None
    assert len(receiver.requests) == 3
    assert len({r["headers"]["Idempotency-Key"] for r in receiver.requests}) == 1
    incident = Incident.objects.get()
    assert third.incident == incident
    assert (incident.kind, incident.severity, incident.status) == ("submission", "high", "open")
    assert incident.title == f"Submission {third.pk} to EU dead after 3 failed attempts"
    assert (incident.subject_type, incident.subject_id) == ("serialization.submission", str(third.pk))
    assert incident.details["response_status"] == 500
    assert incident.details["error"] == "The receiver answered HTTP 500 Internal Server Error; will try again."
    assert reasons(third)[-1] == "attempt 3: failed; no attempts left, dead"
    assert len(schedules(third)) == 2  # attempts 2 and 3; nothing after the dead letter


def test_a_receiver_that_does_not_answer_in_time_fails_the_attempt(receiver, token, django_capture_on_commit_callbacks):
    receiver.answer(("hang", 3))
    scene, batch = eu_scene()
    endpoint = http_endpoint(receiver.url, timeout_seconds=1)

    submission = submit(scene, batch, django_capture_on_commit_callbacks)

    assert (submission.status, submission.attempts, submission.response_status) == ("failed", 1, None)
    assert (
        submission.last_error == f"No answer from 127.0.0.1:{receiver.server.server_port} within 1 s; will try again."
    )
    assert endpoint.timeout_seconds == 1
    assert len(schedules(submission)) == 1

    accepted = retry_now(submission, django_capture_on_commit_callbacks)  # the receiver answers 200 now

    assert (accepted.status, accepted.attempts, accepted.response_status) == ("accepted", 2, 200)


def test_a_refused_connection_fails_the_attempt(token, django_capture_on_commit_callbacks):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    scene, batch = eu_scene()
    http_endpoint(f"http://127.0.0.1:{port}/upload")

    submission = submit(scene, batch, django_capture_on_commit_callbacks)

    assert (submission.status, submission.attempts) == ("failed", 1)
    assert submission.last_error == (
        f"Connection to 127.0.0.1:{port} refused: the receiver is not listening; will try again."
    )


def test_a_missing_credential_fails_without_sending(receiver, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.delenv("EU_HUB_TOKEN", raising=False)
    scene, batch = eu_scene()
    http_endpoint(receiver.url)

    submission = submit(scene, batch, django_capture_on_commit_callbacks)

    assert (submission.status, receiver.requests) == ("failed", [])
    assert submission.last_error == (
        "The credential of endpoint EU hub is not set: set the environment variable EU_HUB_TOKEN on the workers."
    )


# --- rejected ---------------------------------------------------------------------------------------------------------


def test_a_4xx_answer_rejects_without_retry_and_raises_an_incident(receiver, token, django_capture_on_commit_callbacks):
    answer = '{"errors": [{"field": "productCode", "message": "unknown product"}]}'
    receiver.answer((422, answer))
    scene, batch = eu_scene()
    http_endpoint(receiver.url)

    submission = submit(scene, batch, django_capture_on_commit_callbacks)

    assert (submission.status, submission.attempts, submission.response_status) == ("rejected", 1, 422)
    assert (submission.response_body, submission.next_attempt_at) == (answer, None)
    assert submission.last_error == "The receiver refused the document: HTTP 422 Unprocessable Entity."
    assert schedules(submission) == []
    incident = Incident.objects.get(kind="submission")
    assert incident.title == f"Submission {submission.pk} to EU rejected by the receiver"
    assert incident.details["response_excerpt"] == answer
    assert submission.incident == incident
    assert outbox.send_submission(submission_id=submission.pk).attempts == 1  # never sent again by itself


def test_a_200_answer_whose_body_says_rejected_is_a_rejection(receiver, token, django_capture_on_commit_callbacks):
    receiver.answer((200, '{"status": "REJECTED", "reason": "expiry does not match the pack"}'))
    scene, batch = eu_scene()
    http_endpoint(receiver.url)

    submission = submit(scene, batch, django_capture_on_commit_callbacks)

    assert (submission.status, submission.response_status) == ("rejected", 200)
    assert submission.last_error == "HTTP 200 OK, but the receiver's answer says the document was rejected."
    assert Incident.objects.filter(kind="submission").count() == 1


# --- resubmission -----------------------------------------------------------------------------------------------------


def test_a_steward_resubmits_a_dead_submission_with_a_reason(receiver, token, django_capture_on_commit_callbacks):
    receiver.answer(*[(500, "down")] * 3)
    scene, batch = eu_scene()
    http_endpoint(receiver.url)
    submission = submit(scene, batch, django_capture_on_commit_callbacks)
    submission = retry_now(
        retry_now(submission, django_capture_on_commit_callbacks), django_capture_on_commit_callbacks
    )
    assert submission.status == "dead"

    with pytest.raises(ReasonRequired, match="Give a reason for resubmitting"):
        outbox.resubmit_submission(submission=submission, actor=scene.actor, reason="  ")
    with django_capture_on_commit_callbacks(execute=True):
        outbox.resubmit_submission(submission=submission, actor=scene.actor, reason="hub back after maintenance")
    submission.refresh_from_db()

    assert (submission.status, submission.attempts, submission.response_status) == ("accepted", 1, 200)
    assert len(receiver.requests) == 4
    history = submission.history.order_by("history_id")
    resubmitted = history.get(history_change_reason="resubmitted: hub back after maintenance")
    assert (resubmitted.history_user, resubmitted.status, resubmitted.attempts) == (scene.actor, "pending", 0)
    with pytest.raises(Conflict, match=f"Submission {submission.pk} is accepted"):
        outbox.resubmit_submission(submission=submission, actor=scene.actor, reason="again")


def test_a_rejected_submission_is_rebuilt_from_corrected_master_data(
    receiver, token, django_capture_on_commit_callbacks
):
    receiver.answer((422, '{"error": "strength does not match the registration"}'))
    scene, batch = eu_scene()
    http_endpoint(receiver.url)
    submission = submit(scene, batch, django_capture_on_commit_callbacks)
    old_sha, old_file = submission.sha256, submission.file.name
    scene.product.strength = "500 mg film-coated"
    scene.product.save()

    with django_capture_on_commit_callbacks(execute=True):
        outbox.resubmit_submission(submission=submission, actor=scene.actor, reason="strength corrected", rebuild=True)
    submission.refresh_from_db()

    assert submission.status == "accepted"
    assert submission.sha256 != old_sha and submission.file.name != old_file
    assert json.loads(receiver.requests[-1]["body"])["productMasterData"]["strength"] == "500 mg film-coated"
    assert default_storage.exists(old_file)  # the document first sent stays, as the history says
    assert reasons(submission)[-3:] == [
        "rebuilt and resubmitted: strength corrected",
        "attempt 1 to EU hub",
        "attempt 1: accepted (HTTP 200)",
    ]


# --- before anything is queued ----------------------------------------------------------------------------------------


def test_an_invalid_report_is_refused_before_anything_is_stored_or_sent(
    receiver, token, django_capture_on_commit_callbacks, settings
):
    scene, batch = eu_scene()
    http_endpoint(receiver.url)
    ProductNationalCode.objects.filter(product=scene.product).delete()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ReportRefused) as caught:
        outbox.create_submission(market=get_market("EU"), batch=batch, actor=scene.actor)

    assert caught.value.details["problems"] == [
        {
            "field": "product.national_codes.DE",
            "message": f"product {scene.product.product_code}: national code for DE (AI 710) missing — add it in "
            "Products → National codes.",
        }
    ]
    assert (Submission.objects.count(), receiver.requests, AccessEvent.objects.filter(kind="export").count()) == (
        0,
        [],
        0,
    )
    assert not (settings.MEDIA_ROOT / "submissions").exists() or not any(
        (settings.MEDIA_ROOT / "submissions").iterdir()
    )


def test_a_market_without_an_endpoint_is_refused_with_the_report_problems(django_capture_on_commit_callbacks):
    scene, batch = eu_scene()
    ProductNationalCode.objects.filter(product=scene.product).delete()

    with pytest.raises(ReportRefused) as caught:
        outbox.create_submission(market=get_market("EU"), batch=batch, actor=scene.actor)

    assert [p["field"] for p in caught.value.details["problems"]] == ["endpoint", "product.national_codes.DE"]
    assert caught.value.details["problems"][0]["message"] == (
        "market EU has no active endpoint — add one in the admin (Serialization → Endpoints)."
    )


def test_a_batch_already_submitted_is_not_submitted_twice(receiver, token, django_capture_on_commit_callbacks):
    scene, batch = eu_scene()
    http_endpoint(receiver.url)
    first = submit(scene, batch, django_capture_on_commit_callbacks)

    with pytest.raises(Conflict, match=f"already has submission {first.pk} to EU \\(accepted\\)"):
        outbox.create_submission(market=get_market("EU"), batch=batch, actor=scene.actor)
    assert Submission.objects.count() == 1


def test_only_the_products_mah_submits_its_batch(receiver, token):
    _, batch = eu_scene()
    http_endpoint(receiver.url)
    cmo_user = make_user()
    make_membership(user=cmo_user, company=make_company(is_mah=False, is_cmo=True))

    with pytest.raises(PermissionDenied, match="reported by"):
        outbox.create_submission(market=get_market("EU"), batch=batch, actor=cmo_user)
    assert Submission.objects.count() == 0


# --- file drop --------------------------------------------------------------------------------------------------------


def test_the_file_drop_writes_the_document_into_its_folder(settings, django_capture_on_commit_callbacks):
    folder = settings.OUTBOX_DROP_ROOT / "eu-hub" / "outgoing"
    folder.mkdir(parents=True)
    scene, batch = eu_scene()
    Endpoint.objects.create(name="EU drop", market=get_market("EU"), kind="file_drop", folder="eu-hub/outgoing")

    submission = submit(scene, batch, django_capture_on_commit_callbacks)

    name = submission.file.name.rsplit("/", 1)[-1]
    assert sorted(p.name for p in folder.iterdir()) == [name]  # no .part file left behind
    assert (folder / name).read_bytes() == stored_bytes(submission)
    assert (submission.status, submission.attempts) == ("accepted", 1)
    assert submission.response_body == f"written to eu-hub/outgoing/{name} ({submission.size} bytes)"


def test_a_missing_drop_folder_fails_the_attempt(django_capture_on_commit_callbacks):
    scene, batch = eu_scene()
    Endpoint.objects.create(name="EU drop", market=get_market("EU"), kind="file_drop", folder="not-mounted")

    submission = submit(scene, batch, django_capture_on_commit_callbacks)

    assert (submission.status, submission.attempts) == ("failed", 1)
    assert submission.last_error == (
        "Drop folder not-mounted does not exist under OUTBOX_DROP_ROOT; create it or mount the share."
    )


def test_endpoint_configuration_refuses_secrets_in_the_url_and_folders_outside_the_root():
    endpoint = Endpoint(name="x", market=get_market("EU"), url="https://user:pw@hub.example/upload", auth_kind="none")
    with pytest.raises(Exception) as caught:
        endpoint.full_clean()
    assert "Remove the user name and password from the URL" in str(caught.value)
    drop = Endpoint(name="y", market=get_market("EU"), kind="file_drop", folder="../etc")
    with pytest.raises(Exception) as caught:
        drop.full_clean()
    assert "Give a folder inside OUTBOX_DROP_ROOT, relative and without “..”." in str(caught.value)
    bearer = Endpoint(name="z", market=get_market("EU"), url="https://hub.example/u", auth_kind="bearer")
    with pytest.raises(Exception) as caught:
        bearer.full_clean()
    assert "Name the environment variable that holds the credential" in str(caught.value)


# --- the sweeper ------------------------------------------------------------------------------------------------------


def test_the_sweeper_sends_what_is_due_and_gives_back_abandoned_attempts(
    receiver, token, django_capture_on_commit_callbacks
):
    receiver.answer((500, "down"))
    scene, batch = eu_scene()
    http_endpoint(receiver.url)
    failed = submit(scene, batch, django_capture_on_commit_callbacks)
    assert failed.status == "failed"

    assert outbox.send_due_submissions() == 0  # its next try is a minute away
    Submission.objects.filter(pk=failed.pk).update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))
    assert outbox.send_due_submissions() == 1  # queued, and run at once here (synchronous django-q)
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("accepted", 2)

    # A worker that stopped during an attempt leaves the submission "sending": it is given back and sent again.
    other_batch = scene.batch()
    scene.produce(other_batch, units=10, cases=1)
    stuck = submit(scene, other_batch, django_capture_on_commit_callbacks)
    long_ago = timezone.now() - dt.timedelta(hours=1)
    Submission.objects.filter(pk=stuck.pk).update(status="sending", last_attempt_at=long_ago, finished_at=None)

    assert outbox.send_due_submissions() == 1
    stuck.refresh_from_db()
    assert (stuck.status, stuck.attempts) == ("accepted", 2)
    assert "attempt 1 abandoned by its worker; retry" in reasons(stuck)


def test_retry_delay_doubles_and_stops_at_the_cap(settings):
    settings.OUTBOX_RETRY_BASE_SECONDS = 30
    settings.OUTBOX_RETRY_MAX_SECONDS = 200

    assert [outbox.retry_delay(n).total_seconds() for n in (1, 2, 3, 4, 5)] == [30, 60, 120, 200, 200]


# --- the API for ERP systems ------------------------------------------------------------------------------------------


@pytest.fixture
def erp(make_api_client):
    def make(company):
        user = make_user(roles=("Steward",))
        make_membership(user=user, company=company)
        return make_api_client(user)

    return make


def test_the_api_creates_a_submission_for_a_batch_and_market(receiver, token, erp, django_capture_on_commit_callbacks):
    scene, batch = eu_scene()
    http_endpoint(receiver.url)
    client = erp(scene.owner)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/submissions/", {"batch": batch.pk, "market": "EU"}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    submission = Submission.objects.get()
    assert body["id"] == submission.pk
    assert (body["market"], body["kind"], body["batch_lot"], body["status"]) == ("EU", "eu_hub", batch.lot, "pending")
    assert (body["sha256"], body["items"]) == (submission.sha256, 20)
    submission.refresh_from_db()
    assert submission.status == "accepted"  # sent right after the commit
    detail = client.get(f"/api/v1/submissions/{submission.pk}/").json()
    assert (detail["status"], detail["attempts"], detail["response_status"]) == ("accepted", 1, 200)


def test_the_api_answers_400_with_every_problem_by_field(receiver, token, erp):
    scene, batch = eu_scene()
    http_endpoint(receiver.url)
    ProductNationalCode.objects.filter(product=scene.product).delete()
    Batch = type(batch)
    Batch.objects.filter(pk=batch.pk).update(expiry="2612")

    response = erp(scene.owner).post("/api/v1/submissions/", {"batch": batch.pk, "market": "EU"}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "report_invalid"
    assert error["fields"] == {
        "product.national_codes.DE": [
            f"product {scene.product.product_code}: national code for DE (AI 710) missing — add it in Products → "
            "National codes."
        ],
        "batch.expiry": [
            f"batch {batch.lot}: expiry 2612 is not YYMMDD — enter the expiry exactly as printed on the pack, six "
            "digits (day 00 = end of month)."
        ],
    }
    assert [p["field"] for p in error["details"]["problems"]] == ["product.national_codes.DE", "batch.expiry"]
    assert Submission.objects.count() == 0 and receiver.requests == []


def test_the_api_refuses_unknown_input_with_the_field_to_fix(receiver, token, erp):
    scene, batch = eu_scene()
    client = erp(scene.owner)

    unknown_market = client.post("/api/v1/submissions/", {"batch": batch.pk, "market": "ZZ"}, format="json")
    unknown_batch = client.post("/api/v1/submissions/", {"batch": 10**9, "market": "EU"}, format="json")
    no_shipment = client.post(
        "/api/v1/submissions/", {"batch": batch.pk, "market": "US", "shipping_report": "nope"}, format="json"
    )

    assert unknown_market.status_code == 400 and "market" in unknown_market.json()["error"]["fields"]
    assert unknown_batch.status_code == 400
    assert unknown_batch.json()["error"]["fields"] == {"batch": [f"No batch with id {10**9} is visible to you."]}
    assert no_shipment.json()["error"]["fields"] == {
        "shipping_report": [f"Batch {batch.lot} has no shipping report 'nope'."]
    }


def test_the_api_lists_only_the_callers_companys_submissions_in_constant_queries(
    receiver, token, erp, django_capture_on_commit_callbacks
):
    scene, batch = eu_scene()
    http_endpoint(receiver.url)
    submission = submit(scene, batch, django_capture_on_commit_callbacks)
    mah, cmo = erp(scene.owner), erp(make_company(is_mah=False, is_cmo=True))
    mah.get("/api/v1/submissions/")  # the token's first use is written once a minute; keep it out of the count
    with CaptureQueriesContext(connection) as one:
        mah.get("/api/v1/submissions/?market=EU")
    other_batch = scene.batch()
    scene.produce(other_batch, units=10, cases=1)
    submit(scene, other_batch, django_capture_on_commit_callbacks)

    with CaptureQueriesContext(connection) as two:
        listed = mah.get("/api/v1/submissions/?market=EU")

    assert len(two) == len(one)
    everything = sorted(Submission.objects.values_list("pk", flat=True))
    assert sorted(row["id"] for row in listed.json()["results"]) == everything
    assert mah.get("/api/v1/submissions/?status=rejected").json()["results"] == []
    assert cmo.get("/api/v1/submissions/").json()["results"] == []
    assert cmo.get(f"/api/v1/submissions/{submission.pk}/").status_code == 404


def test_the_migration_schedules_the_sweeper_every_five_minutes():
    sweeper = Schedule.objects.get(name="serialization: send due submissions")

    assert (sweeper.func, sweeper.schedule_type, sweeper.minutes, sweeper.repeats) == (
        "serialization.tasks.send_due_submissions",
        Schedule.MINUTES,
        5,
        -1,
    )


def test_a_dead_submission_is_not_resubmitted_while_a_newer_one_of_the_batch_is_live(
    receiver, token, django_capture_on_commit_callbacks, settings
):
    settings.OUTBOX_MAX_ATTEMPTS = 1
    receiver.answer((500, "down"))
    scene, batch = eu_scene()
    http_endpoint(receiver.url)
    dead = submit(scene, batch, django_capture_on_commit_callbacks)
    assert dead.status == "dead"
    newer = submit(scene, batch, django_capture_on_commit_callbacks)  # a dead one does not block a new submission
    assert newer.status == "accepted"

    with pytest.raises(Conflict, match="has another live submission to EU"):
        outbox.resubmit_submission(submission=dead, actor=scene.actor, reason="try the old one again")
    dead.refresh_from_db()
    assert dead.status == "dead"


def test_an_sa_epcis_submission_is_validated_from_its_file_and_dropped(settings, django_capture_on_commit_callbacks):
    (settings.OUTBOX_DROP_ROOT / "rsd").mkdir(parents=True)
    scene = Scene(markets=("SA",))
    batch = scene.batch()
    scene.produce(batch, units=20, cases=2)
    Endpoint.objects.create(name="RSD drop", market=get_market("SA"), kind="file_drop", folder="rsd")

    submission = submit(scene, batch, django_capture_on_commit_callbacks, market="SA")

    assert (submission.kind, submission.content_type, submission.status, submission.items) == (
        "sa_rsd",
        "application/xml",
        "accepted",
        22,
    )
    dropped = settings.OUTBOX_DROP_ROOT / "rsd" / submission.file.name.rsplit("/", 1)[-1]
    assert dropped.read_bytes() == stored_bytes(submission)
    assert dropped.read_bytes().startswith(b"<?xml")
