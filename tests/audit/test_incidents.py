"""Incidents: raised automatically, worked forward only (open → investigating → resolved → closed) with an owner,
notes and linked objects; listed, filtered and exported (CSV, recorded) in the admin; listed by the API."""

import csv
import hashlib
import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit import services
from audit.exceptions import Conflict, DomainError
from audit.models import AccessEvent, Incident, IncidentNote
from tests.factories import make_company, make_user

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:audit_incident_changelist")
EXPORT = reverse("admin:audit_incident_export")


def change_url(incident: Incident) -> str:
    return reverse("admin:audit_incident_change", args=[incident.pk])


def raise_one(**overrides) -> Incident:
    fields = {"kind": Incident.Kind.RECONCILIATION, "title": "Batch L1 does not reconcile", "severity": "high"}
    return services.raise_incident(**{**fields, **overrides})


@pytest.fixture
def qa():
    return make_user(username="quinn", roles=["QA"], is_staff=True)


# --- Raising ----------------------------------------------------------------------------------------------------------


def test_raise_incident_keeps_its_old_signature_and_links_the_subject():
    company = make_company()

    incident = services.raise_incident(kind="manual", title="Label misprint", subject=company)

    assert (incident.kind, incident.severity, incident.status, incident.subject_type) == (
        "manual",
        "medium",
        "open",
        "masterdata.company",
    )
    assert list(incident.links.values_list("object_type", "object_id")) == [("masterdata.company", str(company.pk))]


def test_raise_incident_links_several_objects_owner_and_first_note(qa):
    company = make_company()

    incident = raise_one(
        subject=company,
        links=[("serialization.batch", 7), company, ("serialization.batch", "8")],
        owner=qa,
        note="Seen",
    )

    assert list(incident.links.values_list("object_type", "object_id")) == [
        ("masterdata.company", str(company.pk)),
        ("serialization.batch", "7"),
        ("serialization.batch", "8"),
    ]
    assert incident.owner == qa
    assert list(incident.notes.values_list("text", "author")) == [("Seen", None)]


def test_raising_the_same_open_incident_again_adds_new_links_to_it():
    first = raise_one(links=[("serialization.batch", 1)])

    again = raise_one(links=[("serialization.batch", 1), ("serialization.batch", 2)])

    assert again.pk == first.pk
    assert Incident.objects.count() == 1
    assert sorted(first.links.values_list("object_id", flat=True)) == ["1", "2"]


def test_a_link_without_an_id_is_refused():
    with pytest.raises(DomainError) as refused:
        raise_one(links=[("serialization.batch", None)])

    assert refused.value.message == "A linked object needs a model label and an id; got ('serialization.batch', None)."
    assert not Incident.objects.exists()


# --- Working it: forward only -----------------------------------------------------------------------------------------


def test_incident_moves_forward_with_times_history_and_notes(qa):
    incident = raise_one()

    services.transition_incident(incident=incident, status="investigating", actor=qa)
    services.transition_incident(incident=incident, status="resolved", actor=qa, note="Two cases recounted: fine.")
    services.transition_incident(incident=incident, status="closed", actor=qa, note="Reviewed by QA lead.")

    incident.refresh_from_db()
    assert incident.status == "closed"
    assert incident.resolved_at is not None and incident.closed_at >= incident.resolved_at
    assert [(h.status, h.history_user, h.history_change_reason) for h in incident.history.order_by("history_id")] == [
        ("open", None, None),
        ("investigating", qa, "open → investigating"),
        ("resolved", qa, "investigating → resolved"),
        ("closed", qa, "resolved → closed"),
    ]
    assert list(incident.notes.values_list("author__username", "text")) == [
        ("quinn", "Two cases recounted: fine."),
        ("quinn", "Reviewed by QA lead."),
    ]


def test_a_false_alarm_may_skip_forward_straight_to_closed(qa):
    incident = raise_one()

    services.transition_incident(incident=incident, status="closed", actor=qa, note="False alarm: test batch.")

    incident.refresh_from_db()
    assert (incident.status, incident.resolved_at is not None, incident.closed_at is not None) == ("closed", True, True)


def test_an_incident_never_moves_back(qa):
    incident = raise_one()
    services.transition_incident(incident=incident, status="resolved", actor=qa, note="fixed")

    with pytest.raises(Conflict) as refused:
        services.transition_incident(incident=incident, status="investigating", actor=qa)

    assert refused.value.message == (
        f"Incident {incident.pk} is resolved; statuses only move forward (open → investigating → resolved → closed), "
        "so it cannot go back to investigating. Raise a new incident if the problem came back."
    )
    assert Incident.objects.get(pk=incident.pk).status == "resolved"


@pytest.mark.parametrize(
    ("status", "note", "error", "message"),
    [
        ("open", "", Conflict, "Incident {pk} is already open."),
        ("resolved", " ", DomainError, "Add a note saying what was found and done before the incident is resolved: "),
        (
            "fixed",
            "",
            DomainError,
            "Unknown incident status 'fixed'; use one of open, investigating, resolved, closed.",
        ),
    ],
)
def test_transition_refusals_name_the_problem(qa, status, note, error, message):
    incident = raise_one()

    with pytest.raises(error) as refused:
        services.transition_incident(incident=incident, status=status, actor=qa, note=note)

    assert refused.value.message.startswith(message.format(pk=incident.pk))
    assert Incident.objects.get(pk=incident.pk).status == "open"
    assert not IncidentNote.objects.exists()


def test_a_closed_incident_is_final(qa):
    incident = raise_one()
    services.transition_incident(incident=incident, status="closed", actor=qa, note="done")
    closed = (
        f"Incident {incident.pk} is closed and can no longer change. Raise a new incident and link this one if there "
        "is more to do."
    )

    for attempt in (
        lambda: services.add_incident_note(incident=incident, text="one more thing", actor=qa),
        lambda: services.assign_incident(incident=incident, owner=qa, actor=qa),
        lambda: services.set_incident_severity(incident=incident, severity="low", actor=qa),
        lambda: services.link_incident_objects(incident=incident, objects=[("serialization.batch", 1)], actor=qa),
    ):
        with pytest.raises(Conflict) as refused:
            attempt()
        assert refused.value.message == closed


def test_owner_assignment_is_kept_in_history_and_refuses_inactive_users(qa):
    incident = raise_one()
    gone = make_user(is_active=False, is_staff=True)

    services.assign_incident(incident=incident, owner=qa, actor=qa)
    with pytest.raises(DomainError) as refused:
        services.assign_incident(incident=incident, owner=gone, actor=qa)

    assert refused.value.message == f"User {gone.username} is inactive; choose an active owner."
    assert Incident.objects.get(pk=incident.pk).owner == qa
    assert incident.history.latest().history_change_reason == "owner: quinn"


def test_empty_note_is_refused_and_notes_keep_author_and_time(qa):
    incident = raise_one()

    with pytest.raises(DomainError) as refused:
        services.add_incident_note(incident=incident, text="  ", actor=qa)
    note = services.add_incident_note(incident=incident, text="Called the CMO.", actor=qa)

    assert refused.value.message == "The note is empty; write what was found or done."
    assert (note.author, note.text, note.created_at is not None) == (qa, "Called the CMO.", True)


def test_linking_objects_counts_only_new_ones(qa):
    incident = raise_one(links=[("serialization.batch", 1)])

    added = services.link_incident_objects(
        incident=incident, objects=[("serialization.batch", 1), ("serialization.batch", 2)], actor=qa
    )

    assert added == 1


def test_reconciliation_incident_links_the_batch():
    from serialization.services.reconciliation import reconcile_batch
    from tests.serialization.test_batches import Plant, commission
    from tests.serialization.test_reconciliation import produce, returned_index

    plant = Plant(markets=("US",))
    batch, _, result = produce(plant)
    commission(result.units, 1, indices=[returned_index(plant)])

    reconciliation = reconcile_batch(batch=batch, actor=plant.actor)

    assert list(reconciliation.incident.links.values_list("object_type", "object_id")) == [
        ("serialization.batch", str(batch.pk))
    ]


# --- Admin ------------------------------------------------------------------------------------------------------------


def test_admin_lists_and_filters_incidents_by_kind_severity_status_and_owner(make_verified_client, qa):
    mine = raise_one(owner=qa)
    raise_one(title="Chain", kind=Incident.Kind.AUDIT_CHAIN, severity="critical")
    closed = raise_one(title="Old")
    services.transition_incident(incident=closed, status="closed", actor=qa, note="done")
    client = make_verified_client(qa)

    def listed(**params) -> list[str]:
        response = client.get(CHANGELIST, params)
        assert response.status_code == 200
        return [incident.title for incident in response.context["cl"].result_list]

    assert listed(kind__exact="audit_chain") == ["Chain"]
    assert listed(severity__exact="critical") == ["Chain"]
    assert sorted(listed(status__exact="open")) == ["Batch L1 does not reconcile", "Chain"]
    assert listed(owner__id__exact=qa.pk) == [mine.title]


def test_admin_works_an_incident_forward_with_owner_note_and_link(make_verified_client, qa):
    incident = raise_one()
    client = make_verified_client(qa)
    page = client.get(change_url(incident))
    assert [value for value, _ in page.context["adminform"].form.fields["status"].choices] == [
        "open",
        "investigating",
        "resolved",
        "closed",
    ]

    response = client.post(
        change_url(incident),
        {
            "severity": "critical",
            "status": "investigating",
            "owner": qa.pk,
            "note": "Counting the cases again.",
            "link_type": "masterdata.company",
            "link_id": "3",
        },
    )

    assert response.status_code == 302
    incident.refresh_from_db()
    assert (incident.status, incident.severity, incident.owner) == ("investigating", "critical", qa)
    assert list(incident.notes.values_list("text", flat=True)) == ["Counting the cases again."]
    assert ("masterdata.company", "3") in set(incident.links.values_list("object_type", "object_id"))
    shown = client.get(change_url(incident)).content.decode()
    assert "UTC · quinn</strong><br>Counting the cases again.</li>" in shown
    assert reverse("admin:masterdata_company_change", args=["3"]) in shown
    assert [
        value for value, _ in client.get(change_url(incident)).context["adminform"].form.fields["status"].choices
    ] == ["investigating", "resolved", "closed"]


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            {"status": "resolved", "note": ""},
            "note",
            "Add a note saying what was found and done before the incident is resolved: regulators read it.",
        ),
        ({"link_type": "serialization.nothing", "link_id": "1"}, "link_type", None),
        (
            {"link_type": "serialization.batch", "link_id": ""},
            "link_id",
            "Give both the model and the id of the object.",
        ),
    ],
)
def test_admin_refuses_bad_input_on_the_field_and_changes_nothing(make_verified_client, qa, data, field, message):
    incident = raise_one()

    response = make_verified_client(qa).post(change_url(incident), {"severity": "high", "status": "open", **data})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors[field]
    assert errors == [message] if message else errors[0].startswith("No model “serialization.nothing”")
    assert Incident.objects.get(pk=incident.pk).status == "open"
    assert not IncidentNote.objects.exists()


def test_auditor_reads_incidents_but_cannot_change_them(make_verified_client):
    incident = raise_one()
    auditor = make_verified_client(make_user(roles=["Auditor"], is_staff=True))

    page = auditor.get(change_url(incident))
    refused = auditor.post(change_url(incident), {"severity": "low", "status": "closed", "note": "x"})

    assert page.status_code == 200
    assert 'name="note"' not in page.content.decode()
    assert refused.status_code == 403
    assert Incident.objects.get(pk=incident.pk).status == "open"


def test_admin_raises_a_manual_incident(make_verified_client, qa):
    response = make_verified_client(qa).post(
        reverse("admin:audit_incident_add"),
        {"title": "Case labels smudged on line 2", "severity": "low", "owner": qa.pk, "note": "Photos in QA share."},
    )

    assert response.status_code == 302
    incident = Incident.objects.get()
    assert (incident.kind, incident.title, incident.raised_by, incident.owner) == (
        "manual",
        "Case labels smudged on line 2",
        qa,
        qa,
    )
    assert list(incident.notes.values_list("text", flat=True)) == ["Photos in QA share."]


def test_admin_exports_the_filtered_incidents_as_csv_and_records_it(make_verified_client, qa):
    incident = raise_one(links=[("serialization.batch", 9)], note="first look")
    raise_one(title="Chain", kind=Incident.Kind.AUDIT_CHAIN)
    client = make_verified_client(qa)

    response = client.get(EXPORT, {"kind__exact": "reconciliation"})

    body = b"".join(response.streaming_content)
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(r["id"], r["kind"], r["title"], r["linked_objects"], r["status"]) for r in rows] == [
        (str(incident.pk), "reconciliation", "Batch L1 does not reconcile", "serialization.batch 9", "open")
    ]
    assert rows[0]["notes"].endswith("system: first look")
    event = AccessEvent.objects.get(kind=AccessEvent.Kind.EXPORT)
    assert (event.username, event.target, event.quantity) == ("quinn", "incidents", 1)
    assert event.details["sha256"] == hashlib.sha256(body).hexdigest()
    assert event.details["filters"] == {"kind__exact": "reconciliation"}
    assert "Export CSV (these filters)" in client.get(CHANGELIST).content.decode()


def test_admin_export_action_exports_the_selected_incidents(make_verified_client, qa):
    first, _ = raise_one(), raise_one(title="Other")

    response = make_verified_client(qa).post(
        CHANGELIST, {"action": "export_selected", "_selected_action": [first.pk], "index": 0}
    )

    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["title"] for r in rows] == [first.title]


def test_admin_export_with_a_bad_filter_goes_back_to_the_list(make_verified_client, qa):
    response = make_verified_client(qa).get(EXPORT, {"severity__in_the_wrong_way": "x"})

    assert (response.status_code, response["Location"]) == (302, f"{CHANGELIST}?e=1")
    assert not AccessEvent.objects.filter(kind=AccessEvent.Kind.EXPORT).exists()


# --- API --------------------------------------------------------------------------------------------------------------

API = "/api/v1/incidents/"


def test_api_lists_incidents_with_notes_and_links_filtered(make_api_client, qa):
    incident = raise_one(links=[("serialization.batch", 9)], owner=qa, note="first look")
    raise_one(title="Chain", kind=Incident.Kind.AUDIT_CHAIN)

    response = make_api_client(make_user(roles=["Auditor"])).get(API, {"kind": "reconciliation"})

    assert response.status_code == 200
    (item,) = response.json()["results"]
    assert (item["id"], item["owner"], item["status"], item["links"], item["notes"][0]["text"]) == (
        incident.pk,
        "quinn",
        "open",
        [{"object_type": "serialization.batch", "object_id": "9"}],
        "first look",
    )


def test_api_list_costs_the_same_queries_for_one_or_many_incidents(make_api_client):
    client = make_api_client(make_user(roles=["QA"]))
    raise_one(links=[("serialization.batch", 1)], note="n")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(API).status_code == 200
        return len(captured)

    queries()  # the first request also notes the token's use (once a minute)
    one = queries()
    for i in range(5):
        raise_one(title=f"Batch L{i + 2}", links=[("serialization.batch", i)], note="n")

    assert queries() == one


def test_api_refuses_roles_without_incident_access(make_api_client):
    raise_one()

    for role in ("Line system", "CMO user"):
        response = make_api_client(make_user(roles=[role])).get(API)
        assert response.status_code == 403


def test_api_bad_filter_is_400_naming_the_field(make_api_client):
    response = make_api_client(make_user(roles=["QA"])).get(API, {"status": "fixed"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"status": ['"fixed" is not a valid choice.']}
