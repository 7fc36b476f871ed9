"""Reconciliation of a batch (every discrepancy kind, the incident) and its release with an electronic signature;
their API and admin."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.exceptions import PermissionDenied
from audit.models import AccessEvent, Incident
from serialization.models import Batch, FreeRange, Pack, Reconciliation
from serialization.services.batches import (
    ReasonRequired,
    close_packaging_order,
    transition_batch,
    update_batch,
)
from serialization.services.reconciliation import (
    BatchReleaseRefused,
    ReconciliationRefused,
    SignatureRefused,
    reconcile_batch,
    release_batch,
)
from tests.audit.otp import PASSWORD, totp_code, wrong_code
from tests.factories import get_market, make_user
from tests.serialization.test_batches import Plant, commission

pytestmark = pytest.mark.django_db


def produce(plant: Plant, *, units=100, commissioned=90, rejected=5, aggregated=True, complete=True):
    """A batch with one order: ``commissioned`` units packed 10 to a case (when ``aggregated``; one SSCC more than
    needed is left unused), ``rejected`` units decommissioned as line rejects, the rest returned when the order is
    closed; then completed."""
    batch = plant.batch()
    order = plant.order(batch)
    cases_needed = -(-commissioned // 10)
    result = plant.serials(order, units, sscc={2: cases_needed + 1})
    cases = commission(result.ssccs[2], cases_needed, level=2)
    packs = commission(result.units, commissioned)
    if aggregated:
        for i, case in enumerate(cases):
            Pack.objects.filter(pk__in=[p.pk for p in packs[i * 10 : i * 10 + 10]]).update(
                parent=case, status=Pack.Status.PACKED
            )
    commission(result.units, rejected, skip=commissioned, status=Pack.Status.DECOMMISSIONED, reason="line_reject")
    if complete:
        close_packaging_order(order=order, actor=plant.actor, reason="run finished")
        transition_batch(batch=batch, status=Batch.Status.COMPLETED, actor=plant.actor)
    return batch, order, result


def returned_index(plant: Plant) -> int:
    """An index of the unit pool that went back to Available when the order closed."""
    return FreeRange.objects.filter(pool=plant.unit_pool).order_by("first_index").first().first_index


@pytest.fixture
def qa():
    user = make_user(username="qa-signer", roles=("QA",), is_staff=True)
    user.device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)
    return user


def reconciled_batch(plant: Plant) -> Batch:
    batch, _, _ = produce(plant)
    assert reconcile_batch(batch=batch, actor=plant.actor).passed
    batch.refresh_from_db()
    return batch


# --- reconciliation ---------------------------------------------------------------------------------------------------


def test_reconciliation_passes_on_a_clean_aggregated_batch():
    plant = Plant(markets=("SA",))
    batch, _, _ = produce(plant)

    reconciliation = reconcile_batch(batch=batch, actor=plant.actor)

    assert (reconciliation.passed, reconciliation.discrepancies, reconciliation.incident) == (True, [], None)
    assert reconciliation.counts["batch"] == {
        "assigned": 110,
        "commissioned": 99,
        "by_status": {"commissioned": 9, "decommissioned": 5, "packed": 90},
        "decommissioned": {"line_reject": 5},
        "returned": 6,
        "accounted": 110,
        "unaggregated_units": 0,
        "packs_outside_orders": 0,
    }
    (order_counts,) = reconciliation.counts["orders"]
    assert [(p["kind"], p["assigned"], p["commissioned"], p["returned"]) for p in order_counts["pools"]] == [
        ("sgtin", 100, 90, 5),
        ("sscc", 10, 9, 1),
    ]
    assert (reconciliation.counts["aggregation_required"], reconciliation.counts["aggregation_markets"]) == (
        True,
        ["SA"],
    )
    batch.refresh_from_db()
    assert batch.status == Batch.Status.RECONCILED
    assert batch.history.latest().history_change_reason == f"reconciliation {reconciliation.pk} passed"
    assert not Incident.objects.exists()


def test_reconciliation_fails_on_a_count_mismatch_and_raises_one_incident():
    plant = Plant(markets=("US",))
    batch, order, result = produce(plant)
    # A serial released when the order closed, then reported commissioned anyway: one more than was assigned.
    commission(result.units, 1, indices=[returned_index(plant)])

    reconciliation = reconcile_batch(batch=batch, actor=plant.actor)

    assert reconciliation.passed is False
    assert reconciliation.discrepancies == [
        {
            "order": order.number,
            "kind": "count_mismatch",
            "pool": plant.unit_pool.pk,
            "expected": 100,
            "found": 101,
            "detail": f"Order {order.number}: 100 unit serials assigned from {plant.unit_pool.name}, 101 accounted for "
            "(commissioned 91, decommissioned 5 (line_reject 5), returned 5): 1 more than assigned.",
        }
    ]
    incident = Incident.objects.get()
    assert reconciliation.incident == incident
    assert (incident.kind, incident.severity, incident.status) == ("reconciliation", "high", "open")
    assert (incident.subject_type, incident.subject_id) == ("serialization.batch", str(batch.pk))
    assert incident.title == f"Reconciliation of batch {batch.lot} ({plant.product.product_code}) failed"
    assert incident.details["discrepancy_count"] == 1
    batch.refresh_from_db()
    assert batch.status == Batch.Status.COMPLETED

    again = reconcile_batch(batch=batch, actor=plant.actor)
    assert (again.passed, again.incident_id) == (False, incident.pk)
    assert Incident.objects.count() == 1


def test_reconciliation_fails_on_unaggregated_units_where_a_market_requires_aggregation():
    plant = Plant(markets=("US", "SA"))
    batch, order, _ = produce(plant)
    loose = list(Pack.objects.filter(order=order, level=0, parent__isnull=False).order_by("pk")[:12])
    Pack.objects.filter(pk__in=[p.pk for p in loose]).update(parent=None, status=Pack.Status.COMMISSIONED)

    reconciliation = reconcile_batch(batch=batch, actor=plant.actor)

    assert reconciliation.passed is False
    assert reconciliation.discrepancies == [
        {
            "order": order.number,
            "kind": "unaggregated_units",
            "expected": 0,
            "found": 12,
            "examples": [p.serial for p in loose[:10]],
            "detail": f"12 commissioned units of order {order.number} ({plant.product.product_code}) are in no "
            "container, but SA requires aggregation.",
        }
    ]
    assert reconciliation.counts["batch"]["unaggregated_units"] == 12
    assert Incident.objects.count() == 1
    assert Batch.objects.get(pk=batch.pk).status == Batch.Status.COMPLETED


def test_unaggregated_units_are_no_discrepancy_where_no_market_requires_aggregation():
    plant = Plant(markets=("US",))
    batch, _, _ = produce(plant, aggregated=False)

    reconciliation = reconcile_batch(batch=batch, actor=plant.actor)

    assert (reconciliation.passed, reconciliation.counts["batch"]["unaggregated_units"]) == (True, 90)


def test_reconciliation_lists_packs_of_the_batch_reported_under_no_order_of_it():
    plant = Plant(markets=("US",))
    batch, _, _ = produce(plant)
    _, _, other = produce(plant, complete=False)
    stray = commission(other.units, 2, skip=95, batch=batch)  # other order's serials, labelled with this batch

    reconciliation = reconcile_batch(batch=batch, actor=plant.actor)

    assert [(d["kind"], d["order"], d["found"]) for d in reconciliation.discrepancies] == [
        ("packs_outside_orders", None, 2)
    ]
    assert len(stray) == 2


def test_reconciliation_is_refused_unless_the_batch_is_completed():
    plant = Plant()
    batch, _, _ = produce(plant, complete=False)

    with pytest.raises(ReconciliationRefused) as caught:
        reconcile_batch(batch=batch, actor=plant.actor)

    assert caught.value.message == (
        f"Batch {batch.lot} is in production: only a completed batch can be reconciled; close every packaging order "
        "and complete it first."
    )
    assert not Reconciliation.objects.exists()


def test_reconciliation_reads_the_packs_in_a_constant_number_of_queries():
    small_plant, large_plant = Plant(markets=("SA",)), Plant(markets=("SA",), fill=2_000, sscc_fill=500)
    small, _, _ = produce(small_plant, units=20, commissioned=10, rejected=2)
    large, _, _ = produce(large_plant, units=1_000, commissioned=900, rejected=40)

    with CaptureQueriesContext(connection) as few:
        reconcile_batch(batch=small, actor=small_plant.actor)
    with CaptureQueriesContext(connection) as many:
        reconcile_batch(batch=large, actor=large_plant.actor)

    assert len(few) == len(many)


# --- release ----------------------------------------------------------------------------------------------------------


def test_release_is_refused_without_a_passed_reconciliation(qa):
    plant = Plant(markets=("US",))
    batch, _, result = produce(plant)
    commission(result.units, 1, indices=[returned_index(plant)])
    failed = reconcile_batch(batch=batch, actor=plant.actor)

    with pytest.raises(BatchReleaseRefused) as caught:
        release_batch(batch=batch, actor=qa, password=PASSWORD, otp_code=totp_code(qa.device), reason="QA release")

    assert caught.value.message == (
        f"Batch {batch.lot} is completed and has a failed latest reconciliation ({failed.pk}): only a reconciled "
        "batch whose latest reconciliation passed can be released."
    )
    batch.refresh_from_db()
    assert (batch.status, batch.released_at) == (Batch.Status.COMPLETED, None)


def test_release_is_refused_with_a_wrong_password_and_logs_the_failed_attempt(qa):
    batch = reconciled_batch(Plant())

    with pytest.raises(SignatureRefused) as caught:
        release_batch(batch=batch, actor=qa, password="guess", otp_code=totp_code(qa.device), reason="QA release")

    assert (caught.value.message, caught.value.field) == (
        "The password is wrong: sign with your own password.",
        "password",
    )
    batch.refresh_from_db()
    assert (batch.status, batch.released_at, batch.released_by) == (Batch.Status.RECONCILED, None, None)
    event = AccessEvent.objects.get(kind=AccessEvent.Kind.LOGIN_FAILED)
    assert (event.user, event.target) == (qa, f"batch {batch.pk} ({batch.lot})")
    assert event.details == {"purpose": "electronic signature: batch release", "step": "password"}


def test_release_is_refused_with_a_wrong_code_and_logs_the_failed_attempt(qa):
    batch = reconciled_batch(Plant())

    with pytest.raises(SignatureRefused) as caught:
        release_batch(batch=batch, actor=qa, password=PASSWORD, otp_code=wrong_code(qa.device), reason="QA release")

    assert (caught.value.message, caught.value.field) == (
        "The authenticator code is wrong or expired: enter the code your app shows now.",
        "otp_code",
    )
    assert Batch.objects.get(pk=batch.pk).status == Batch.Status.RECONCILED
    event = AccessEvent.objects.get(kind=AccessEvent.Kind.OTP_FAILED)
    assert event.details == {"purpose": "electronic signature: batch release", "step": "second factor", "method": "app"}


def test_release_is_refused_to_a_steward_who_may_edit_batches_but_is_not_qa():
    batch = reconciled_batch(Plant())
    steward = make_user(username="steward-signer", roles=("Steward",), is_staff=True)
    device = TOTPDevice.objects.create(user=steward, name="Authenticator app", confirmed=True)
    assert steward.has_perm("serialization.change_batch")

    with pytest.raises(PermissionDenied) as caught:
        release_batch(batch=batch, actor=steward, password=PASSWORD, otp_code=totp_code(device), reason="Looks fine")

    assert caught.value.status_code == 403
    assert "lacks the 'release batch' permission" in caught.value.message
    assert Batch.objects.get(pk=batch.pk).status == Batch.Status.RECONCILED


def test_release_is_refused_without_a_reason(qa):
    batch = reconciled_batch(Plant())

    with pytest.raises(ReasonRequired) as caught:
        release_batch(batch=batch, actor=qa, password=PASSWORD, otp_code=totp_code(qa.device), reason="  ")

    assert caught.value.message == "Give a reason for releasing the batch; it is kept in the batch history."
    assert Batch.objects.get(pk=batch.pk).status == Batch.Status.RECONCILED
    assert not AccessEvent.objects.filter(kind__in=["otp_verified", "otp_failed", "login_failed"]).exists()


def test_release_with_password_code_and_reason_records_who_when_and_why(qa):
    batch = reconciled_batch(Plant())
    reconciliation = batch.reconciliations.get()

    released = release_batch(
        batch=batch, actor=qa, password=PASSWORD, otp_code=totp_code(qa.device), reason="Batch record reviewed"
    )

    batch.refresh_from_db()
    assert (batch.status, batch.released_by, batch.release_reason) == (
        Batch.Status.RELEASED,
        qa,
        "Batch record reviewed",
    )
    assert batch.released_at is not None and released.released_at == batch.released_at
    row = batch.history.latest()
    assert (row.status, row.history_user, row.history_change_reason) == ("released", qa, "Batch record reviewed")
    event = AccessEvent.objects.get(kind=AccessEvent.Kind.OTP_VERIFIED)
    assert event.details == {
        "purpose": "electronic signature: batch release",
        "method": "app",
        "reconciliation": reconciliation.pk,
        "reason": "Batch record reviewed",
    }
    with pytest.raises(BatchReleaseRefused):
        release_batch(batch=batch, actor=qa, password=PASSWORD, otp_code=totp_code(qa.device), reason="again")


def test_changes_after_release_need_a_reason_and_keep_it_in_history(qa):
    plant = Plant(markets=("US", "EU"))
    batch = reconciled_batch(plant)
    release_batch(batch=batch, actor=qa, password=PASSWORD, otp_code=totp_code(qa.device), reason="released")

    with pytest.raises(ReasonRequired) as caught:
        update_batch(batch=batch, actor=qa, markets=[get_market("US")])
    assert caught.value.message == "Give a reason for changing a released batch; it is kept in the batch history."
    with pytest.raises(ReasonRequired):
        transition_batch(batch=batch, status=Batch.Status.RECALLED, actor=qa)
    assert sorted(Batch.objects.get(pk=batch.pk).markets.values_list("code", flat=True)) == ["EU", "US"]

    update_batch(batch=batch, actor=qa, reason="EU launch postponed", markets=[get_market("US")])

    batch.refresh_from_db()
    assert list(batch.markets.values_list("code", flat=True)) == ["US"]
    row = batch.history.latest()
    assert (row.history_user, row.history_change_reason) == (qa, "EU launch postponed")
    assert [m.market.code for m in row.markets.all()] == ["US"]


# --- API --------------------------------------------------------------------------------------------------------------


def error(response) -> dict:
    return response.json()["error"]


def test_api_reconcile_and_release(make_api_client, qa):
    plant = Plant(markets=("SA",))
    batch, _, _ = produce(plant)
    client = make_api_client(qa)

    reconciled = client.post(f"/api/v1/batches/{batch.pk}/reconcile/")
    assert reconciled.status_code == 201
    assert (reconciled.json()["passed"], reconciled.json()["discrepancies"]) == (True, [])
    listed = client.get("/api/v1/batches/").json()["results"][0]
    assert (listed["status"], listed["latest_reconciliation"]["passed"]) == ("reconciled", True)

    missing = client.post(f"/api/v1/batches/{batch.pk}/release/", {})
    assert missing.status_code == 400
    assert sorted(error(missing)["fields"]) == ["otp_code", "password", "reason"]

    wrong = client.post(
        f"/api/v1/batches/{batch.pk}/release/",
        {"password": PASSWORD, "otp_code": wrong_code(qa.device), "reason": "QA release"},
    )
    assert wrong.status_code == 400
    assert error(wrong)["code"] == "signature_refused"
    assert error(wrong)["fields"] == {
        "otp_code": ["The authenticator code is wrong or expired: enter the code your app shows now."]
    }

    qa.device.refresh_from_db()
    TOTPDevice.objects.filter(pk=qa.device.pk).update(throttling_failure_count=0, throttling_failure_timestamp=None)
    released = client.post(
        f"/api/v1/batches/{batch.pk}/release/",
        {"password": PASSWORD, "otp_code": totp_code(qa.device), "reason": "QA release"},
    )
    assert released.status_code == 200, released.json()
    assert (released.json()["status"], released.json()["released_by"], released.json()["release_reason"]) == (
        "released",
        "qa-signer",
        "QA release",
    )
    history = client.get(f"/api/v1/batches/{batch.pk}/reconciliations/").json()
    assert [r["passed"] for r in history["results"]] == [True]


def test_api_reconcile_refused_is_409_with_the_reason(make_api_client, qa):
    plant = Plant()
    batch = plant.batch(lot="R409")

    response = make_api_client(qa).post(f"/api/v1/batches/{batch.pk}/reconcile/")

    assert response.status_code == 409
    assert error(response)["message"] == (
        "Batch R409 is planned: only a completed batch can be reconciled; produce it, close its orders and complete "
        "it first."
    )


# --- admin ------------------------------------------------------------------------------------------------------------


def test_admin_reconcile_and_release_actions(make_verified_client, qa):
    plant = Plant(markets=("US",))
    batch, _, _ = produce(plant)
    client = make_verified_client(qa)
    url = reverse("admin:serialization_batch_changelist")

    client.post(url, {"action": "reconcile_batches", "_selected_action": [batch.pk]})
    batch.refresh_from_db()
    assert batch.status == Batch.Status.RECONCILED

    form_page = client.post(url, {"action": "release_selected_batch", "_selected_action": [batch.pk]})
    assert form_page.status_code == 200
    assert "Sign and release" in form_page.text
    refused = client.post(
        url,
        {
            "action": "release_selected_batch",
            "_selected_action": [batch.pk],
            "apply": "1",
            "password": "not mine",
            "otp_code": totp_code(qa.device),
            "reason": "QA release",
        },
    )
    assert refused.status_code == 200
    assert refused.context["form"].errors == {"password": ["The password is wrong: sign with your own password."]}
    assert Batch.objects.get(pk=batch.pk).status == Batch.Status.RECONCILED

    done = client.post(
        url,
        {
            "action": "release_selected_batch",
            "_selected_action": [batch.pk],
            "apply": "1",
            "password": PASSWORD,
            "otp_code": totp_code(qa.device),
            "reason": "QA release",
        },
    )
    assert done.status_code == 302
    batch.refresh_from_db()
    assert (batch.status, batch.released_by, batch.release_reason) == (Batch.Status.RELEASED, qa, "QA release")


def test_admin_change_of_a_released_batch_needs_a_reason(make_verified_client, qa):
    plant = Plant(markets=("US",))
    batch = reconciled_batch(plant)
    release_batch(batch=batch, actor=qa, password=PASSWORD, otp_code=totp_code(qa.device), reason="released")
    steward = make_verified_client(make_user(is_staff=True, roles=("Steward",)))
    url = reverse("admin:serialization_batch_change", args=[batch.pk])
    data = {"manufactured_on": "2026-01-15", "site": plant.site.pk, "lines": [plant.line.pk], "markets": []}

    refused = steward.post(url, {**data, "markets": [get_market("US").pk]})
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["change_reason"] == [
        "This batch was released: say why it changes (kept in its history)."
    ]
    assert Batch.objects.get(pk=batch.pk).manufactured_on is None

    saved = steward.post(url, {**data, "markets": [get_market("US").pk], "change_reason": "date from batch record"})
    assert saved.status_code == 302
    batch.refresh_from_db()
    assert str(batch.manufactured_on) == "2026-01-15"
    assert batch.history.latest().history_change_reason == "date from batch record"


def test_admin_reconciliation_page_shows_the_discrepancies(make_verified_client, qa):
    plant = Plant(markets=("US",))
    batch, _, result = produce(plant)
    commission(result.units, 1, indices=[returned_index(plant)])
    reconciliation = reconcile_batch(batch=batch, actor=plant.actor)
    client = make_verified_client(qa)

    page = client.get(reverse("admin:serialization_reconciliation_change", args=[reconciliation.pk]))

    assert page.status_code == 200
    assert "count_mismatch" in page.text
    assert "1 more than assigned." in page.text
    listing = client.get(reverse("admin:serialization_batch_changelist"))
    assert "FAILED" in listing.text
