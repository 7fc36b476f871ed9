"""The outbox through the steward's admin (dashboard, sending a report, resubmitting and re-routing with a reason,
the recorded document download) and through the portal for MAH users — with a CMO user who sees none of it."""

import datetime as dt
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from django.utils import timezone

from audit.models import AccessEvent
from masterdata.models import ProductNationalCode
from serialization.outbox_models import Endpoint, Submission
from tests.factories import get_market, make_company, make_membership, make_user
from tests.serialization.test_outbox import Receiver, eu_scene, http_endpoint, stored_bytes, submit

pytestmark = pytest.mark.django_db

ACTION_CHECKBOX = "_selected_action"


@pytest.fixture(autouse=True)
def _outbox_settings(settings, tmp_path, monkeypatch):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.OUTBOX_DROP_ROOT = tmp_path / "drop"
    settings.OUTBOX_MAX_ATTEMPTS = 2
    settings.OUTBOX_LATE_AFTER_MINUTES = 60
    monkeypatch.setenv("EU_HUB_TOKEN", "token-for-tests")


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def tiles(response) -> dict[str, int]:
    """The dashboard's counts as shown: {"pending": 1, "late": 0, …}."""
    html = response.content.decode()
    return {
        state: int(number) for state, number in re.findall(r'data-state="(\w+)"><dt>[^<]*</dt><dd>(\d+)</dd>', html)
    }


class Outbox:
    """One MAH's submissions in every state, each for its own batch, sent to the real receiver."""

    def __init__(self, receiver, capture):
        self.scene, first = eu_scene()
        self.endpoint = http_endpoint(receiver.url)
        receiver.answer((200, '{"status": "accepted"}'), (500, "down"), (422, '{"error": "unknown GTIN"}'))
        self.accepted = submit(self.scene, first, capture)
        self.failed = submit(self.scene, self.batch(), capture)
        self.rejected = submit(self.scene, self.batch(), capture)
        # Queued two hours ago and never picked up: pending, and late.
        self.late = self._queued(self.batch(), capture)
        Submission.objects.filter(pk=self.late.pk).update(created_at=timezone.now() - dt.timedelta(hours=2))

    def batch(self):
        batch = self.scene.batch()
        self.scene.produce(batch, units=10, cases=1)
        return batch

    def _queued(self, batch, capture):
        from serialization.services import outbox

        with capture(execute=False):  # the commit hook that would queue the first attempt never runs
            return outbox.create_submission(market=get_market("EU"), batch=batch, actor=self.scene.actor)


@pytest.fixture
def box(receiver, django_capture_on_commit_callbacks):
    return Outbox(receiver, django_capture_on_commit_callbacks)


@pytest.fixture
def steward(box, make_verified_client):
    return make_verified_client(box.scene.actor)


def cmo_admin(make_verified_client):
    user = make_user(is_staff=True, roles=("Steward",))
    make_membership(user=user, company=make_company(is_mah=False, is_cmo=True))
    return make_verified_client(user)


# --- the dashboard ----------------------------------------------------------------------------------------------------


def test_the_admin_dashboard_counts_each_state_and_lists_what_needs_attention(box, steward):
    response = steward.get(reverse("admin:serialization_submission_dashboard"))

    assert response.status_code == 200
    assert tiles(response) == {
        "pending": 1,
        "sending": 0,
        "late": 1,
        "failed": 1,
        "dead": 0,
        "rejected": 1,
        "accepted": 1,
    }
    html = response.content.decode()
    attention = html.split("<h2>Needs attention</h2>", 1)[1].split("<h2>Latest changes</h2>", 1)[0]
    listed = [int(pk) for pk in re.findall(r'data-submission="(\d+)"', attention)]
    assert sorted(listed) == sorted([box.failed.pk, box.rejected.pk, box.late.pk])
    assert "HTTP 422: The receiver refused the document: HTTP 422 Unprocessable Entity." in attention
    # htmx polls the panel; the vendored script is served from this site (the CSP allows nothing else).
    assert 'hx-get="/admin/serialization/submission/dashboard/panel/"' in html
    assert 'hx-trigger="every 5s"' in html
    assert '/static/vendor/htmx-2.0.4.min.js"' in html
    assert '<noscript><meta http-equiv="refresh" content="30"></noscript>' in html


def test_the_dashboard_panel_answers_alone_and_follows_a_submission_being_processed(
    box, steward, django_capture_on_commit_callbacks
):
    from serialization.services import outbox

    panel_url = reverse("admin:serialization_submission_dashboard_panel")
    before = steward.get(panel_url)
    assert before.content.decode().lstrip().startswith('<div id="outbox-panel"')
    assert (tiles(before)["pending"], tiles(before)["accepted"]) == (1, 1)

    with django_capture_on_commit_callbacks(execute=True):
        outbox.send_submission(submission_id=box.late.pk)

    after = steward.get(panel_url)
    assert (tiles(after)["pending"], tiles(after)["late"], tiles(after)["accepted"]) == (0, 0, 2)


def test_the_changelist_links_the_dashboard(box, steward):
    response = steward.get(reverse("admin:serialization_submission_changelist"))

    assert response.status_code == 200
    assert f'href="{reverse("admin:serialization_submission_dashboard")}"' in response.content.decode()


def test_a_cmo_user_sees_no_submission_of_its_mah(box, make_verified_client):
    client = cmo_admin(make_verified_client)

    dashboard = client.get(reverse("admin:serialization_submission_dashboard"))
    changelist = client.get(reverse("admin:serialization_submission_changelist"))
    detail = client.get(reverse("admin:serialization_submission_change", args=[box.accepted.pk]))
    document = client.get(reverse("admin:serialization_submission_document", args=[box.accepted.pk]))

    assert set(tiles(dashboard).values()) == {0}
    assert "No submissions yet." in dashboard.content.decode()
    assert changelist.context["cl"].result_count == 0
    assert detail.status_code == 302 and detail["Location"] == reverse("admin:index")
    assert document.status_code == 404
    assert not AccessEvent.objects.filter(kind="download").exists()


# --- sending a report from the admin ----------------------------------------------------------------------------------


def test_sending_a_report_lists_every_problem_by_field_and_queues_nothing(box, steward):
    batch = box.batch()
    ProductNationalCode.objects.filter(product=box.scene.product).delete()
    before = Submission.objects.count()

    response = steward.post(
        reverse("admin:serialization_submission_add"), {"batch": batch.pk, "market": get_market("EU").pk}
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "<code>product.national_codes.DE</code>" in html
    assert (
        f"product {box.scene.product.product_code}: national code for DE (AI 710) missing — add it in Products → "
        "National codes." in html
    )
    assert Submission.objects.count() == before


def test_sending_a_report_from_the_admin_queues_and_sends_it(box, steward, django_capture_on_commit_callbacks):
    batch = box.batch()

    with django_capture_on_commit_callbacks(execute=True):
        response = steward.post(
            reverse("admin:serialization_submission_add"), {"batch": batch.pk, "market": get_market("EU").pk}
        )

    submission = Submission.objects.get(batch=batch)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:serialization_submission_change", args=[submission.pk])
    assert (submission.status, submission.created_by) == ("accepted", box.scene.actor)
    assert LogEntry.objects.filter(object_id=str(submission.pk), change_message="Built, validated and queued.").exists()


# --- resubmitting, re-routing, downloading ----------------------------------------------------------------------------


def test_resubmitting_from_the_admin_needs_a_reason_and_sends_again(
    box, steward, receiver, django_capture_on_commit_callbacks
):
    url = reverse("admin:serialization_submission_changelist")
    chosen = {"action": "resubmit_as_is", ACTION_CHECKBOX: [box.rejected.pk]}

    page = steward.post(url, chosen)
    assert page.status_code == 200
    assert "Resubmit" in page.content.decode() and f"#{box.rejected.pk}" in page.content.decode()
    empty = steward.post(url, {**chosen, "apply": "1", "reason": ""})
    assert empty.status_code == 200 and "This field is required." in empty.content.decode()
    box.rejected.refresh_from_db()
    assert box.rejected.status == "rejected"

    with django_capture_on_commit_callbacks(execute=True):
        done = steward.post(url, {**chosen, "apply": "1", "reason": "GTIN registered at the hub"})

    assert done.status_code == 302
    box.rejected.refresh_from_db()
    assert (box.rejected.status, box.rejected.attempts) == ("accepted", 1)
    assert box.rejected.history.filter(
        history_change_reason="resubmitted: GTIN registered at the hub", history_user=box.scene.actor
    ).exists()
    assert LogEntry.objects.filter(
        object_id=str(box.rejected.pk), change_message="Resubmitted: GTIN registered at the hub"
    ).exists()


def test_an_accepted_submission_is_not_resubmitted(box, steward):
    url = reverse("admin:serialization_submission_changelist")

    response = steward.post(
        url,
        {"action": "resubmit_as_is", ACTION_CHECKBOX: [box.accepted.pk], "apply": "1", "reason": "again"},
        follow=True,
    )

    messages = [str(m) for m in response.context["messages"]]
    assert messages == [
        f"Submission {box.accepted.pk}: Submission {box.accepted.pk} is accepted; only a rejected, failed or dead "
        "submission can be resubmitted."
    ]


def test_changing_the_endpoint_of_a_submission_needs_a_reason(box, steward):
    backup = Endpoint.objects.create(
        name="EU hub backup", market=get_market("EU"), url="https://backup.hub.example/upload", is_active=False
    )
    url = reverse("admin:serialization_submission_change", args=[box.failed.pk])

    refused = steward.post(url, {"endpoint": backup.pk, "change_reason": ""})
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors == {"change_reason": ["This field is required."]}

    saved = steward.post(url, {"endpoint": backup.pk, "change_reason": "primary hub retired"})

    assert saved.status_code == 302
    box.failed.refresh_from_db()
    assert box.failed.endpoint == backup
    latest = box.failed.history.latest()
    assert (latest.history_change_reason, latest.history_user) == (
        "endpoint → EU hub backup: primary hub retired",
        box.scene.actor,
    )


def test_an_accepted_submission_cannot_be_changed(box, steward):
    response = steward.get(reverse("admin:serialization_submission_change", args=[box.accepted.pk]))

    assert response.status_code == 200
    assert "change_reason" not in response.context["adminform"].form.fields
    assert "endpoint" not in response.context["adminform"].form.fields


def test_downloading_the_document_is_recorded(box, steward):
    response = steward.get(reverse("admin:serialization_submission_document", args=[box.accepted.pk]))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == stored_bytes(box.accepted)
    event = AccessEvent.objects.get(kind="download", target=f"submission {box.accepted.pk}")
    assert (event.user, event.quantity, event.details["sha256"]) == (
        box.scene.actor,
        box.accepted.items,
        box.accepted.sha256,
    )


def test_endpoints_show_whether_their_credential_is_set_but_never_its_value(box, steward):
    response = steward.get(reverse("admin:serialization_endpoint_changelist"))

    html = response.content.decode()
    assert "set here" in html
    assert "token-for-tests" not in html


# --- the portal for MAH users -----------------------------------------------------------------------------------------


def test_the_portal_shows_an_mah_its_submissions_by_state(box, make_verified_client):
    user = make_user(roles=("Steward",))
    make_membership(user=user, company=box.scene.owner)
    client = make_verified_client(user)

    page = client.get(reverse("portal:outbox"))
    panel = client.get(reverse("portal:outbox-panel"))

    assert page.status_code == 200
    assert (
        tiles(page)
        == tiles(panel)
        == {
            "pending": 1,
            "sending": 0,
            "late": 1,
            "failed": 1,
            "dead": 0,
            "rejected": 1,
            "accepted": 1,
        }
    )
    html = page.content.decode()
    assert '<a href="/portal/submissions/" aria-current="page">Submissions</a>' in html
    assert 'hx-get="/portal/submissions/panel/"' in html
    assert f'data-submission="{box.rejected.pk}"' in html
    assert panel.content.decode().lstrip().startswith('<div id="outbox-panel"')


def test_the_portal_shows_a_cmo_none_of_its_mahs_submissions(box, make_verified_client):
    user = make_user(roles=("CMO user",))
    make_membership(user=user, company=make_company(is_mah=False, is_cmo=True))
    client = make_verified_client(user)

    response = client.get(reverse("portal:outbox"))

    assert response.status_code == 200
    assert set(tiles(response).values()) == {0}
    assert "data-submission=" not in response.content.decode()


def test_the_portal_outbox_needs_a_verified_session(box, client):
    client.force_login(box.scene.actor)  # password only

    response = client.get(reverse("portal:outbox-panel"))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")
