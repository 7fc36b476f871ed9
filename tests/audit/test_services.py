import io

import pytest
from django.core.management import call_command
from django.test import RequestFactory

from audit import services
from audit.exceptions import DomainError
from audit.models import AccessEvent, Incident
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def test_record_access_takes_user_ip_and_agent_from_the_request():
    user = make_user(username="cmo-anna")
    request = RequestFactory().get("/", REMOTE_ADDR="10.1.2.3", HTTP_USER_AGENT="Firefox")
    request.user = user

    event = services.record_access(
        kind=AccessEvent.Kind.DOWNLOAD, request=request, target="allocation 42", quantity=10_000, details={"fmt": "csv"}
    )

    event.refresh_from_db()
    assert (event.kind, event.user, event.username, event.ip, event.user_agent) == (
        "download",
        user,
        "cmo-anna",
        "10.1.2.3",
        "Firefox",
    )
    assert (event.target, event.quantity, event.details) == ("allocation 42", 10_000, {"fmt": "csv"})


def test_record_access_drops_values_of_secret_looking_keys():
    event = services.record_access(
        kind=AccessEvent.Kind.EXPORT,
        username="x",
        details={
            "password": "p",
            "api_token": "t",
            "pool_key": "k",
            "code": "123456",
            "nested": {"secret": "s", "rows": 3},
            "product_code": "09506000134352",
        },
    )

    assert event.details == {
        "password": "[removed]",
        "api_token": "[removed]",
        "pool_key": "[removed]",
        "code": "[removed]",
        "nested": {"secret": "[removed]", "rows": 3},
        "product_code": "09506000134352",
    }


def test_record_access_refuses_an_unknown_kind():
    with pytest.raises(DomainError, match="Unknown access event kind 'viewed'"):
        services.record_access(kind="viewed")


def test_models_and_migrations_agree():
    out = io.StringIO()
    call_command("makemigrations", "audit", "--check", "--dry-run", stdout=out)


def test_django_q_tasks_run_synchronously_in_tests():
    from django_q.tasks import async_task, result

    task_id = async_task("audit.services.record_access", kind="export", username="q-worker", target="allocation 7")

    event = AccessEvent.objects.get(username="q-worker")
    assert event.target == "allocation 7"
    assert result(task_id) == event


def test_raise_incident_opens_once_per_subject_until_resolved():
    subject = make_user(username="subject")
    first = services.raise_incident(kind="serial_supply", title="Pool low", subject=subject, details={"available": 3})
    again = services.raise_incident(kind="serial_supply", title="Pool low", subject=subject, details={"available": 2})
    assert again.pk == first.pk
    assert (first.subject_type, first.subject_id, first.details) == ("auth.user", str(subject.pk), {"available": 3})

    Incident.objects.filter(pk=first.pk).update(status=Incident.Status.RESOLVED)
    third = services.raise_incident(kind="serial_supply", title="Pool low", subject=subject)
    assert third.pk != first.pk
    assert Incident.objects.filter(kind="serial_supply").count() == 2
    assert third.history.count() == 1
