"""The audit trail in the admin: who may open it, its filters, old → new values, pages, and the recorded CSV."""

import csv
import hashlib
import io
import itertools
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import AccessEvent
from masterdata.models import Company
from masterdata.services import update_company
from serialization.models import Batch
from tests.audit.otp import PASSWORD, totp_code
from tests.factories import get_market, make_company, make_user

pytestmark = pytest.mark.django_db

TRAIL = reverse("admin:audit_audittrail_changelist")
EXPORT = reverse("admin:audit_audittrail_export")


@pytest.fixture
def auditor(make_verified_client):
    user = make_user(username="inspector", roles=["Auditor"], is_staff=True)
    return make_verified_client(user)


_names = itertools.count(1)


def renamed_company(*, by, reason: str = "rebranding", old: str = "", new: str = "") -> Company:
    """A company renamed from ``old`` to ``new`` by ``by`` (unique names when not given)."""
    n = next(_names)
    company = make_company(name=old or f"Acme Pharma {n}")
    update_company(company=company, actor=by, data={"name": new or f"Acme Health {n}"}, reason=reason)
    return company


def rows_of(response) -> list[dict]:
    return [
        {
            "who": entry.username,
            "model": entry.model_name,
            "object": entry.object_id,
            "action": entry.action,
            "reason": entry.reason,
            "changes": [(c.field, c.old, c.new) for c in entry.changes],
        }
        for entry in response.context["entries"]
    ]


# --- Who may open it -------------------------------------------------------------------------------------------------


def test_auditor_opens_the_trail_from_the_admin_index(auditor):
    index = auditor.get(reverse("admin:index"))

    assert TRAIL in index.content.decode()
    response = auditor.get(TRAIL)
    assert response.status_code == 200
    assert response.context["title"] == "Audit trail"


def test_staff_without_the_auditor_role_cannot_open_the_trail(make_verified_client):
    steward = make_verified_client(make_user(roles=["Steward"], is_staff=True))

    assert steward.get(TRAIL).status_code == 403
    assert steward.get(EXPORT).status_code == 403
    assert not AccessEvent.objects.filter(kind=AccessEvent.Kind.EXPORT).exists()


def test_trail_shows_only_models_whose_history_the_user_may_view(make_verified_client):
    user = make_user(is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_audittrail", "view_historicalcompany"]))
    renamed_company(by=user)
    make_user()  # no history

    response = make_verified_client(user).get(TRAIL)

    assert [label for label, _ in response.context["form"].fields["model"].choices] == [
        "",
        "masterdata.historicalcompany",
    ]
    assert {row["model"] for row in rows_of(response)} == {"company"}


# --- Old → new, filters ----------------------------------------------------------------------------------------------


def test_trail_shows_old_and_new_values_side_by_side_with_who_and_why(auditor):
    steward = make_user(username="stella")
    company = renamed_company(by=steward, old="Acme Pharma", new="Acme Health")

    response = auditor.get(TRAIL, {"model": "masterdata.historicalcompany", "object_id": company.pk})

    assert rows_of(response)[0] == {
        "who": "stella",
        "model": "company",
        "object": str(company.pk),
        "action": "Changed",
        "reason": "rebranding",
        "changes": [("name", "Acme Pharma", "Acme Health")],
    }
    assert rows_of(response)[1]["action"] == "Created"
    assert ("name", "", "Acme Pharma") in rows_of(response)[1]["changes"]
    html = response.content.decode()
    assert '<td class="old">Acme Pharma</td><td class="new">Acme Health</td>' in html
    assert reverse("admin:masterdata_company_change", args=[company.pk]) in html


def test_trail_filters_by_user(auditor):
    stella, other = make_user(username="stella"), make_user(username="olaf")
    renamed_company(by=stella)
    renamed_company(by=other, reason="merger")

    response = auditor.get(TRAIL, {"user": "olaf"})

    assert [(r["who"], r["reason"]) for r in rows_of(response)] == [("olaf", "merger")]


def test_trail_filters_by_date_range_with_both_days_included(auditor):
    company = renamed_company(by=make_user())
    history = company.history.model
    history.objects.filter(id=company.pk, history_type="+").update(history_date=timezone.now() - timedelta(days=10))
    today = timezone.localdate()

    recent = auditor.get(TRAIL, {"object_id": company.pk, "date_from": today, "date_to": today})
    older = auditor.get(TRAIL, {"object_id": company.pk, "date_to": today - timedelta(days=10)})

    assert [r["action"] for r in rows_of(recent) if r["model"] == "company"] == ["Changed"]
    assert [r["action"] for r in rows_of(older) if r["model"] == "company"] == ["Created"]


def test_many_to_many_changes_show_the_related_ids_before_and_after(auditor):
    from tests.factories import make_product

    product = make_product(markets=["US"])
    product.markets.add(get_market("EU"))

    response = auditor.get(TRAIL, {"model": "masterdata.historicalproduct", "object_id": product.pk})

    us, eu = get_market("US").pk, get_market("EU").pk
    assert ("markets", f"[{us}]", str(sorted([us, eu]))) in rows_of(response)[0]["changes"]


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        (
            {"model": "masterdata.historicalcompany", "object_id": "ACME"},
            "object_id",
            "“ACME” is not an id a company can have.",
        ),
        (
            {"date_from": "2026-03-02", "date_to": "2026-03-01"},
            "date_to",
            "The end date is before the start date; swap them.",
        ),
        ({"date_from": "yesterday"}, "date_from", "Enter a valid date."),
        (
            {"model": "serialization.historicalpack"},
            "model",
            "Select a valid choice. serialization.historicalpack is not one of the available choices.",
        ),
    ],
)
def test_bad_filters_answer_400_with_the_problem_on_the_field(auditor, params, field, message):
    response = auditor.get(TRAIL, params)

    assert response.status_code == 400
    assert response.context["form"].errors[field] == [message]
    assert response.context["entries"] == []


def test_a_page_costs_the_same_number_of_queries_for_ten_or_fifty_entries(auditor):
    user = make_user()

    def page_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert auditor.get(TRAIL, {"model": "masterdata.historicalcompany"}).status_code == 200
        return len(queries)

    for _ in range(5):
        renamed_company(by=user)
    few = page_queries()
    for _ in range(20):
        renamed_company(by=user)
    many = page_queries()

    assert many == few


def test_trail_is_paginated_newest_first(auditor):
    user = make_user()
    for i in range(26):
        update_company(company=make_company(), actor=user, data={"name": f"Company {i:02d}"}, reason=f"r{i}")

    first = auditor.get(TRAIL, {"model": "masterdata.historicalcompany"})
    second = auditor.get(TRAIL, {"model": "masterdata.historicalcompany", "page": 2})

    assert (first.context["page"].has_next, second.context["page"].has_next) == (True, False)
    assert len(first.context["entries"]) == 50 and len(second.context["entries"]) == 2
    assert "Changes 51–52" in second.content.decode()
    assert 'page=1">‹ newer</a>' in second.content.decode()
    assert rows_of(first)[0]["reason"] == "r25"
    assert [(r["action"], r["reason"]) for r in rows_of(second)] == [("Changed", "r0"), ("Created", "")]


# --- Released batches: edits need a reason, and the trail shows it ----------------------------------------------------


def test_admin_edit_of_a_released_batch_needs_a_reason_that_the_trail_shows(make_verified_client, auditor):
    from serialization.services.reconciliation import release_batch
    from tests.serialization.test_batches import Plant
    from tests.serialization.test_reconciliation import reconciled_batch

    qa = make_user(username="qa-signer", roles=("QA",), is_staff=True)
    qa_device = qa.totpdevice_set.create(name="Authenticator app", confirmed=True)
    plant = Plant(markets=("US",))
    batch = reconciled_batch(plant)
    release_batch(batch=batch, actor=qa, password=PASSWORD, otp_code=totp_code(qa_device), reason="released")
    steward = make_verified_client(make_user(username="stella", is_staff=True, roles=("Steward",)))
    url = reverse("admin:serialization_batch_change", args=[batch.pk])
    data = {"manufactured_on": "2026-01-15", "site": plant.site.pk, "lines": [plant.line.pk]}
    data["markets"] = [get_market("US").pk]

    refused = steward.post(url, data)
    saved = steward.post(url, {**data, "change_reason": "date from batch record"})

    assert refused.status_code == 200 and "change_reason" in refused.context["adminform"].form.errors
    assert saved.status_code == 302
    assert Batch.objects.get(pk=batch.pk).history.latest().history_change_reason == "date from batch record"
    trail = rows_of(auditor.get(TRAIL, {"model": "serialization.historicalbatch", "object_id": batch.pk}))
    assert trail[0]["who"] == "stella"
    assert trail[0]["reason"] == "date from batch record"
    assert ("manufactured on", "", "2026-01-15") in trail[0]["changes"]
    assert trail[1]["reason"] == "released"
    assert ("release reason", "", "released") in trail[1]["changes"]


# --- CSV export -------------------------------------------------------------------------------------------------------


def test_csv_export_streams_the_filtered_trail_and_records_rows_and_checksum(auditor):
    company = renamed_company(by=make_user(username="stella"), old="Acme Pharma", new="Acme Health")

    response = auditor.get(EXPORT, {"model": "masterdata.historicalcompany", "object_id": company.pk})

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-trail-')
    body = b"".join(response.streaming_content)
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    changed = [r for r in rows if r["action"] == "Changed"]
    assert [(r["user"], r["model"], r["object_id"], r["reason"], r["field"], r["old"], r["new"]) for r in changed] == [
        ("stella", "masterdata.company", str(company.pk), "rebranding", "name", "Acme Pharma", "Acme Health")
    ]
    event = AccessEvent.objects.get(kind=AccessEvent.Kind.EXPORT)
    assert (event.username, event.target, event.quantity) == ("inspector", "audit trail", len(rows))
    assert event.details["sha256"] == hashlib.sha256(body).hexdigest()
    assert event.details["complete"] is True
    assert event.details["filters"] == {"model": "masterdata.historicalcompany", "object_id": str(company.pk)}


def test_csv_export_with_bad_filters_shows_the_form_instead_and_records_nothing(auditor):
    response = auditor.get(EXPORT, {"date_from": "2026-03-02", "date_to": "2026-03-01"})

    assert response.status_code == 400
    assert response.context["form"].errors["date_to"] == ["The end date is before the start date; swap them."]
    assert not AccessEvent.objects.filter(kind=AccessEvent.Kind.EXPORT).exists()
