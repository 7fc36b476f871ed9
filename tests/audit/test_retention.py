"""Retention and legal holds: the market rules give every batch a keep-until date; nothing kept can be deleted through
the services, the ORM, the admin or the API (nor, on PostgreSQL, raw SQL); holds block deletion until released; the
purge removes only what is past retention and not on hold, set-based, and records it."""

import datetime as dt

import pytest
from django.apps import apps
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import ForeignKey
from django.urls import reverse
from simple_history.models import HistoricalChanges

from audit import retention
from audit.models import AccessEvent, LegalHold, PurgeRecord
from audit.retention import KeepUntil, MarketRule, RetentionProtected, keep_until_for
from masterdata.models import Product
from serialization.models import (
    Allocation,
    Batch,
    LineReport,
    Pack,
    PackagingOrder,
    PackEvent,
    Reconciliation,
    SerialPool,
)
from serialization.retention import POLICY, batch_keep_until, refresh_keep_until
from tests.factories import get_market, make_market, make_product, make_user
from tests.serialization.test_line_reports import Line

pytestmark = pytest.mark.django_db

D = dt.date
PAST_RELEASE = dt.datetime(2015, 3, 2, 10, 0, tzinfo=dt.UTC)  # EU keeps until 2020-03-02


# --- the rules --------------------------------------------------------------------------------------------------------

EU = MarketRule("EU", 1, 5)
US = MarketRule("US", None, 6)
PK = MarketRule("PK", None, 5)
XX1, XX2 = MarketRule("XX", 1, None), MarketRule("XX", 2, None)
RELEASE = "after release on"


@pytest.mark.parametrize(
    ("expiry", "released", "rules", "expected"),
    [
        # EU: the longer of expiry + 1 year and release + 5 years, either way round.
        (D(2027, 6, 30), D(2025, 1, 15), [EU], KeepUntil(D(2030, 1, 15), "EU: 5 years after release on 2025-01-15")),
        (D(2032, 6, 30), D(2025, 1, 15), [EU], KeepUntil(D(2033, 6, 30), "EU: 1 year after expiry on 2032-06-30")),
        (D(2027, 6, 30), D(2025, 1, 15), [US], KeepUntil(D(2031, 1, 15), "US: 6 years after release on 2025-01-15")),
        (D(2027, 6, 30), D(2025, 1, 15), [PK], KeepUntil(D(2030, 1, 15), "PK: 5 years after release on 2025-01-15")),
        # The latest over the batch's markets decides.
        (D(2027, 6, 30), D(2025, 1, 15), [EU, US, PK], KeepUntil(D(2031, 1, 15), f"US: 6 years {RELEASE} 2025-01-15")),
        # 29 February lands on 28 February in a common year.
        (D(2028, 2, 29), D(2020, 1, 1), [XX1], KeepUntil(D(2029, 2, 28), "XX: 1 year after expiry on 2028-02-29")),
        # Not released yet: a market counting from release cannot say, so the batch is kept.
        (
            D(2027, 6, 30),
            None,
            [EU],
            KeepUntil(None, "it is not released yet and EU keeps records 5 years after release"),
        ),
        # An expiry-only market needs no release.
        (D(2027, 6, 30), None, [XX2], KeepUntil(D(2029, 6, 30), "XX: 2 years after expiry on 2027-06-30")),
        (
            D(2027, 6, 30),
            D(2025, 1, 15),
            [],
            KeepUntil(None, "it is made for no market, so no retention rule applies yet"),
        ),
    ],
)
def test_keep_until_is_the_latest_over_the_markets_rules(expiry, released, rules, expected):
    assert keep_until_for(expiry=expiry, released_on=released, rules=rules) == expected


def test_batch_keep_until_reads_the_printed_expiry_with_day_00_as_end_of_month():
    market = make_market(code="X4", retention_years_after_expiry=4, retention_years_after_release=None)
    line = Line(units=2, ssccs=1)
    batch = line.batch
    Batch.objects.filter(pk=batch.pk).update(expiry="280200")
    batch.refresh_from_db()
    batch.markets.set([market])

    assert batch_keep_until(batch) == KeepUntil(D(2032, 2, 29), "X4: 4 years after expiry on 2028-02-29")


def test_refresh_stores_the_dates_in_bulk_and_follows_a_changed_market_rule(django_assert_max_num_queries):
    lines = [Line(units=2, ssccs=1) for _ in range(3)]
    for line in lines:
        line.batch.markets.set([get_market("EU")])
        Batch.objects.filter(pk=line.batch.pk).update(released_at=PAST_RELEASE, expiry="170300")

    assert refresh_keep_until() == 3
    assert set(Batch.objects.filter(pk__in=[line.batch.pk for line in lines]).values_list("keep_until", flat=True)) == {
        D(2020, 3, 2)
    }
    assert refresh_keep_until() == 0  # nothing changed, nothing written

    get_market("EU").__class__.objects.filter(code="EU").update(retention_years_after_release=10)
    with django_assert_max_num_queries(6):  # markets, links, batches, one bulk UPDATE (+ savepoints)
        assert refresh_keep_until() == 3
    assert Batch.objects.get(pk=lines[0].batch.pk).keep_until == D(2025, 3, 2)


def test_the_stored_dates_are_refreshed_daily_by_a_scheduled_task():
    from django_q.models import Schedule

    from serialization.tasks import refresh_retention_dates

    schedule = Schedule.objects.get(name="serialization: refresh retention dates")
    assert (schedule.func, schedule.schedule_type) == ("serialization.tasks.refresh_retention_dates", Schedule.DAILY)
    line = Line(units=1, ssccs=1)
    line.batch.markets.set([get_market("US")])
    Batch.objects.filter(pk=line.batch.pk).update(released_at=PAST_RELEASE)
    assert refresh_retention_dates() == "1 batch keep-until dates changed"
    assert Batch.objects.get(pk=line.batch.pk).keep_until == D(2021, 3, 2)


# --- a plant with three batches ---------------------------------------------------------------------------------------


class Scene:
    """Three EU batches, each with packs (units in a case), pack events, two line reports, a reconciliation and
    two allocations: ``past`` is past its retention, ``kept`` within it, ``held`` past it but its product on hold."""

    def __init__(self) -> None:
        self.past, self.kept, self.held = (self.produce() for _ in range(3))
        self.release(self.past, expiry="170300", released_at=PAST_RELEASE)
        self.release(self.held, expiry="170300", released_at=PAST_RELEASE)
        self.release(self.kept, expiry="170300", released_at=dt.datetime(2025, 1, 15, tzinfo=dt.UTC))
        self.hold = retention.place_hold(
            target_type="masterdata.product",
            target_id=str(self.held.product.pk),
            reason="Litigation 2025-17: keep everything of this product",
            actor=make_user(username=f"counsel{self.held.batch.pk}"),
        )

    @staticmethod
    def produce() -> Line:
        line = Line(units=6, ssccs=2)
        line.batch.markets.set([get_market("EU")])
        line.commission(units=range(5), containers={0: 2})
        line.aggregate(0, units=range(3))
        Reconciliation.objects.create(batch=line.batch, passed=True, counts={"assigned": 6})
        return line

    @staticmethod
    def release(line: Line, *, expiry: str, released_at: dt.datetime) -> None:
        Batch.objects.filter(pk=line.batch.pk).update(expiry=expiry, released_at=released_at, status="released")
        line.batch.refresh_from_db()


@pytest.fixture
def scene() -> Scene:
    return Scene()


def rows_of(line: Line) -> dict[str, int]:
    batch = line.batch
    return {
        "serialization.packevent": PackEvent.objects.filter(pack__batch=batch).count(),
        "serialization.pack": Pack.objects.filter(batch=batch).count(),
        "serialization.linereport": LineReport.objects.filter(order__batch=batch).count(),
        "serialization.reconciliation": Reconciliation.objects.filter(batch=batch).count(),
        "serialization.allocation.packaging_order": Allocation.objects.filter(packaging_order__batch=batch).count(),
        "serialization.packagingorder": PackagingOrder.objects.filter(batch=batch).count(),
        "serialization.batch_markets": Batch.markets.through.objects.filter(batch=batch).count(),
        "serialization.batch": Batch.objects.filter(pk=batch.pk).count(),
    }


EXPECTED_ROWS = {
    "serialization.packevent": 9,  # 6 commissioned + 3 packed
    "serialization.pack": 6,  # 5 units + 1 case
    "serialization.linereport": 2,  # commissioning + aggregation
    "serialization.reconciliation": 1,
    "serialization.allocation.packaging_order": 2,  # units + SSCCs, unlinked, not deleted
    "serialization.packagingorder": 1,
    "serialization.batch_markets": 1,
    "serialization.batch": 1,
}


def test_purge_removes_only_the_batch_past_retention_and_not_on_hold_with_exact_row_counts(scene):
    assert rows_of(scene.past) == rows_of(scene.kept) == rows_of(scene.held) == EXPECTED_ROWS
    kept_before, held_before = rows_of(scene.kept), rows_of(scene.held)
    allocations = list(Allocation.objects.filter(packaging_order__batch=scene.past.batch).order_by("pk"))
    pools = {pool.pk: (pool.filled, pool.next_index, pool.free) for pool in SerialPool.objects.all()}
    actor = make_user(username="records-officer")

    result = retention.purge_expired(actor=actor, reason="yearly purge")

    counts = {label: n for label, n in result.counts.items() if n}
    assert counts == {
        "serialization.packevent": 9,
        "serialization.pack": 6,
        "serialization.linereport": 2,
        "serialization.reconciliation": 1,
        "serialization.allocation.packaging_order": 2,
        "serialization.packagingorder": 1,
        "serialization.batch_markets": 1,
        "serialization.batch": 1,
    }
    assert rows_of(scene.past) == dict.fromkeys(EXPECTED_ROWS, 0)
    assert rows_of(scene.kept) == kept_before
    assert rows_of(scene.held) == held_before
    # The pools' ledger stays whole: the allocations outlive the batch, only their order link is cleared.
    assert [a.packaging_order_id for a in Allocation.objects.filter(pk__in=[a.pk for a in allocations])] == [None] * 2
    assert {pool.pk: (pool.filled, pool.next_index, pool.free) for pool in SerialPool.objects.all()} == pools

    record = PurgeRecord.objects.get()
    assert result.record == record
    assert (record.performed_by, record.reason, record.kept_until_before) == (actor, "yearly purge", result.day)
    assert record.removed == [
        {
            "type": "serialization.batch",
            "id": scene.past.batch.pk,
            "label": str(scene.past.batch),
            "keep_until": "2020-03-02",
        }
    ]
    assert record.counts == result.counts
    assert record.skipped == [
        {
            "type": "serialization.batch",
            "id": scene.held.batch.pk,
            "label": str(scene.held.batch),
            "why": "on legal hold",
        }
    ]
    assert record.history.get().history_user == actor
    event = AccessEvent.objects.get(kind=AccessEvent.Kind.PURGE)
    assert (event.user, event.target, event.quantity) == (actor, f"purge record {record.pk}", 23)


def test_dry_run_counts_the_same_rows_and_changes_nothing(scene):
    before = [rows_of(scene.past), rows_of(scene.kept), rows_of(scene.held)]

    result = retention.purge_expired(dry_run=True)

    assert [item["id"] for item in result.removed] == [scene.past.batch.pk]
    assert {label: n for label, n in result.counts.items() if n} == EXPECTED_ROWS
    assert [rows_of(scene.past), rows_of(scene.kept), rows_of(scene.held)] == before
    assert result.record is None
    assert not PurgeRecord.objects.exists()
    assert not AccessEvent.objects.filter(kind=AccessEvent.Kind.PURGE).exists()


def test_released_hold_lets_the_next_purge_remove_the_batch(scene):
    retention.release_hold(hold=scene.hold, reason="Case closed", actor=make_user())
    result = retention.purge_expired(actor=make_user(), reason="after the case")

    assert sorted(item["id"] for item in result.removed) == sorted([scene.past.batch.pk, scene.held.batch.pk])
    assert result.counts["serialization.pack"] == 12
    assert rows_of(scene.kept) == EXPECTED_ROWS


def test_purge_command_dry_run_then_real_run(scene, capsys):
    call_command("purge_expired", "--dry-run")
    out = capsys.readouterr().out
    assert f"Would remove 1 record(s) kept until before {retention.database_today()}:" in out
    assert f"serialization.batch {scene.past.batch.pk} {scene.past.batch} (kept until 2020-03-02)" in out
    assert "Dry run: nothing was changed." in out
    assert f"Kept although past retention: serialization.batch {scene.held.batch.pk}" in out
    assert Batch.objects.filter(pk=scene.past.batch.pk).exists()

    with pytest.raises(CommandError, match=r"Name the user who purges \(--actor\)"):
        call_command("purge_expired", "--reason", "yearly")
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("purge_expired", "--actor", "nobody", "--reason", "yearly")
    user = make_user(username="records-officer")
    with pytest.raises(CommandError, match=r"Give the reason for the purge \(--reason\)"):
        call_command("purge_expired", "--actor", user.username)

    call_command("purge_expired", "--actor", user.username, "--reason", "yearly purge")
    out = capsys.readouterr().out
    assert "serialization.pack" in out and "Recorded as purge record" in out
    assert not Batch.objects.filter(pk=scene.past.batch.pk).exists()


# --- the guards ------------------------------------------------------------------------------------------------------


def test_service_guard_names_the_keep_until_date_for_the_batch_and_its_records(scene):
    batch = scene.kept.batch
    with pytest.raises(RetentionProtected) as caught:
        retention.check_deletable(batch)
    assert caught.value.message == (
        f"Batch “{batch}” is kept until 2030-01-15 (EU: 5 years after release on 2025-01-15); it cannot be deleted "
        "before then."
    )
    assert caught.value.status_code == 409
    assert caught.value.details == {"keep_until": D(2030, 1, 15), "legal_hold": None}

    pack = Pack.objects.filter(batch=batch).first()
    assert retention.deletion_refusal(pack).message == (
        f"Pack “{pack}” belongs to batch “{batch}”, which is kept until 2030-01-15 (EU: 5 years after release on "
        "2025-01-15); it cannot be deleted before then."
    )
    assert retention.deletion_refusal(scene.past.batch) is None


def test_orm_deletes_of_kept_records_are_refused_by_the_safety_net(scene):
    before = rows_of(scene.kept)
    event = PackEvent.objects.filter(pack__batch=scene.kept.batch).first()
    # Each in a savepoint, as a caller would: the refused delete rolls back what it had begun.
    with pytest.raises(RetentionProtected, match="kept until 2030-01-15"), transaction.atomic():
        event.delete()
    with pytest.raises(RetentionProtected, match="kept until 2030-01-15"), transaction.atomic():
        Reconciliation.objects.filter(batch=scene.kept.batch).delete()
    assert rows_of(scene.kept) == before


def test_held_product_cannot_be_deleted_through_the_orm_or_the_api(make_api_client):
    product = make_product()
    hold = retention.place_hold(
        target_type="masterdata.product", target_id=str(product.pk), reason="Recall inquiry", actor=make_user()
    )
    with pytest.raises(RetentionProtected, match=f"is under legal hold {hold.pk}"), transaction.atomic():
        product.delete()

    root = make_api_client(make_user(is_superuser=True))
    response = root.delete(reverse("api-v1:product-detail", args=[product.pk]))
    assert response.status_code == 409
    assert response.json()["error"]["message"] == (
        f"Product “{product}” is under legal hold {hold.pk} (placed by {hold.placed_by} on "
        f"{hold.placed_at:%Y-%m-%d}: Recall inquiry). It cannot be deleted until the hold is released."
    )
    assert Product.objects.filter(pk=product.pk).exists()


def test_hold_messages_name_the_hold_on_the_batch_or_its_product(scene):
    batch = scene.held.batch
    hold = scene.hold
    assert retention.deletion_refusal(batch).message == (
        f"Batch “{batch}” is under legal hold {hold.pk} on its product “{batch.product}” (placed by "
        f"{hold.placed_by} on {hold.placed_at:%Y-%m-%d}: Litigation 2025-17: keep everything of this product). It "
        "cannot be deleted until the hold is released."
    )
    direct = retention.place_hold(
        target_type="serialization.batch", target_id=str(scene.past.batch.pk), reason="Inspection", actor=make_user()
    )
    assert retention.deletion_refusal(scene.past.batch).hold == direct.pk
    assert retention.purge_expired(dry_run=True).removed == []


def test_hold_on_one_pack_keeps_its_whole_batch(scene):
    pack = Pack.objects.filter(batch=scene.past.batch).first()
    retention.place_hold(
        target_type="serialization.pack", target_id=str(pack.pk), reason="Sample sent to the lab", actor=make_user()
    )
    assert retention.purge_expired(dry_run=True).removed == []


def test_place_and_release_hold_refuse_bad_input():
    actor = make_user()
    with pytest.raises(retention.DomainError, match=r"“auth\.user” is not one of them") as caught:
        retention.place_hold(target_type="auth.user", target_id=str(actor.pk), reason="x", actor=actor)
    assert caught.value.field == "target_type"
    with pytest.raises(retention.DomainError, match="There is no batch with id 999999") as caught:
        retention.place_hold(target_type="serialization.batch", target_id="999999", reason="x", actor=actor)
    assert caught.value.field == "target_id"
    line = Line(units=1, ssccs=1)
    with pytest.raises(retention.DomainError, match="Say why the record is held"):
        retention.place_hold(target_type="serialization.batch", target_id=str(line.batch.pk), reason=" ", actor=actor)
    hold = retention.place_hold(
        target_type="serialization.batch", target_id=str(line.batch.pk), reason="Audit", actor=actor
    )
    assert (hold.target_label, hold.is_active) == (str(line.batch), True)
    retention.release_hold(hold=hold, reason="Audit finished", actor=actor)
    with pytest.raises(retention.Conflict, match=f"Legal hold {hold.pk} was already released"):
        retention.release_hold(hold=hold, reason="again", actor=actor)
    assert LegalHold.objects.get().release_reason == "Audit finished"
    assert [h.history_type for h in hold.history.order_by("history_id")] == ["+", "~"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the delete triggers exist on PostgreSQL only")
def test_postgresql_refuses_raw_deletes_of_kept_records(scene):
    refresh_keep_until()
    kept, held = scene.kept.batch.pk, scene.held.batch.pk
    statements = [
        "DELETE FROM serialization_packevent WHERE pack_id IN (SELECT id FROM serialization_pack WHERE batch_id = %s)",
        "DELETE FROM serialization_pack WHERE batch_id = %s",
        "DELETE FROM serialization_reconciliation WHERE batch_id = %s",
        "DELETE FROM serialization_packagingorder WHERE batch_id = %s",
    ]
    for statement, batch in [*((statement, kept) for statement in statements), (statements[0], held)]:
        with (
            pytest.raises(IntegrityError, match="within retention or on legal hold"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [batch])
    with (
        pytest.raises(IntegrityError, match=rf"batch\(es\) {held} within"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM serialization_batch WHERE id = %s", [held])
    assert rows_of(scene.kept) == EXPECTED_ROWS


def test_every_foreign_key_into_a_retained_model_is_registered():
    """A model pointing at a batch, order, pack… must be purged with it (or unlinked): else the purge would break it
    or be refused. History rows outlive what they describe, and many-to-many links go with their row."""
    detached = {(record.model, record.detach_field) for record in POLICY.records if record.detach_field}
    retained = {record.model for record in POLICY.deleted_records}
    missing = []
    for model in apps.get_models():
        if model in retained or model._meta.auto_created or issubclass(model, HistoricalChanges):
            continue
        for field in model._meta.concrete_fields:
            pointing_in = isinstance(field, ForeignKey) and field.related_model in retained
            if pointing_in and (model, field.name) not in detached:
                missing.append(f"{model._meta.label}.{field.name}")
    assert missing == []


# --- the admin -------------------------------------------------------------------------------------------------------


@pytest.fixture
def superuser_client(make_verified_client):
    user = make_user(username="root", is_staff=True, is_superuser=True)
    return make_verified_client(user), user


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_admin_delete_refuses_a_kept_batch_with_its_date(scene, superuser_client):
    client, _ = superuser_client
    batch = scene.kept.batch
    response = client.get(reverse("admin:serialization_batch_delete", args=[batch.pk]))
    assert response.status_code == 302
    assert response.url == reverse("admin:serialization_batch_change", args=[batch.pk])
    assert messages_of(response) == [
        f"Batch “{batch}” is kept until 2030-01-15 (EU: 5 years after release on 2025-01-15); it cannot be deleted "
        "before then."
    ]
    response = client.post(reverse("admin:serialization_batch_delete", args=[batch.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert rows_of(scene.kept) == EXPECTED_ROWS


def test_admin_bulk_delete_refuses_when_any_selected_batch_is_kept(scene, superuser_client):
    client, _ = superuser_client
    url = reverse("admin:serialization_batch_changelist")
    response = client.post(
        url,
        {"action": "delete_selected", "_selected_action": [scene.past.batch.pk, scene.held.batch.pk], "post": "yes"},
    )
    assert response.status_code == 302
    texts = messages_of(response)
    assert texts[0].startswith(f"Batch “{scene.held.batch}” is under legal hold {scene.hold.pk} on its product")
    assert texts[-1] == "Nothing was deleted."
    assert rows_of(scene.past) == EXPECTED_ROWS


def test_admin_bulk_delete_of_batches_past_retention_goes_through_the_purge(scene, superuser_client):
    client, user = superuser_client
    url = reverse("admin:serialization_batch_changelist")
    confirm = client.post(url, {"action": "delete_selected", "_selected_action": [scene.past.batch.pk]})
    assert confirm.status_code == 200
    assert "Pack events: 9" in confirm.text

    done = client.post(url, {"action": "delete_selected", "_selected_action": [scene.past.batch.pk], "post": "yes"})
    assert done.status_code == 302
    assert rows_of(scene.past) == dict.fromkeys(EXPECTED_ROWS, 0)
    assert rows_of(scene.kept) == rows_of(scene.held) == EXPECTED_ROWS
    assert PurgeRecord.objects.get().performed_by == user


def test_admin_deletes_a_batch_past_retention_through_the_purge(scene, superuser_client):
    client, user = superuser_client
    url = reverse("admin:serialization_batch_delete", args=[scene.past.batch.pk])
    confirm = client.get(url)
    assert confirm.status_code == 200
    assert "Packs: 6" in confirm.text and "Pack events: 9" in confirm.text  # the purge's dry run, summarised

    done = client.post(url, {"post": "yes"})
    assert done.status_code == 302
    assert rows_of(scene.past) == dict.fromkeys(EXPECTED_ROWS, 0)
    record = PurgeRecord.objects.get()
    assert record.performed_by == user
    assert record.reason.startswith("Deleted in the admin by root past retention")


def test_admin_shows_the_keep_until_date_on_the_list_and_the_batch(scene, superuser_client):
    client, _ = superuser_client
    listing = client.get(reverse("admin:serialization_batch_changelist"))
    assert "2030-01-15" in listing.text and "2020-03-02" in listing.text
    page = client.get(reverse("admin:serialization_batch_change", args=[scene.held.batch.pk]))
    assert "Kept until 2020-03-02 (EU: 5 years after release on 2015-03-02)." in page.text
    assert f"under legal hold {scene.hold.pk} on its product" in page.text


def test_admin_places_and_releases_a_hold_with_reasons(superuser_client):
    client, user = superuser_client
    line = Line(units=1, ssccs=1)
    add = reverse("admin:audit_legalhold_add")
    refused = client.post(add, {"target_type": "serialization.batch", "target_id": "999999", "reason": "Case 9"})
    assert refused.status_code == 200
    assert "There is no batch with id 999999." in refused.text
    assert not LegalHold.objects.exists()

    placed = client.post(
        add, {"target_type": "serialization.batch", "target_id": str(line.batch.pk), "reason": "Case 9"}
    )
    assert placed.status_code == 302
    hold = LegalHold.objects.get()
    assert (hold.target_id, hold.reason, hold.placed_by, hold.is_active) == (str(line.batch.pk), "Case 9", user, True)

    changelist = reverse("admin:audit_legalhold_changelist")
    form_page = client.post(changelist, {"action": "release_holds", "_selected_action": [hold.pk]})
    assert "Release the holds" in form_page.text
    client.post(changelist, {"action": "release_holds", "_selected_action": [hold.pk], "apply": "1", "reason": ""})
    assert LegalHold.objects.get().is_active  # no reason, no release
    client.post(
        changelist, {"action": "release_holds", "_selected_action": [hold.pk], "apply": "1", "reason": "Case closed"}
    )
    hold.refresh_from_db()
    assert (hold.is_active, hold.released_by, hold.release_reason) == (False, user, "Case closed")
    assert client.get(reverse("admin:audit_legalhold_delete", args=[hold.pk])).status_code == 403


# --- the API ---------------------------------------------------------------------------------------------------------


def test_api_shows_keep_until_and_answers_deletes_with_the_reason(scene, make_api_client):
    steward = make_api_client(make_user(roles=["Steward"], is_staff=True))
    url = reverse("api-v1:batch-detail", args=[scene.kept.batch.pk])
    body = steward.get(url).json()
    assert (body["keep_until"], body["keep_until_reason"]) == ("2030-01-15", "EU: 5 years after release on 2025-01-15")

    refused = steward.delete(url)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"].startswith("Deleting a batch needs the 'delete batch' permission")

    root = make_api_client(make_user(is_superuser=True))
    kept = root.delete(url)
    assert kept.status_code == 409
    assert kept.json()["error"] == {
        "code": "retention_protected",
        "message": f"Batch “{scene.kept.batch}” is kept until 2030-01-15 (EU: 5 years after release on 2025-01-15); "
        "it cannot be deleted before then.",
        "details": {"keep_until": "2030-01-15", "legal_hold": None},
    }
    held = root.delete(reverse("api-v1:batch-detail", args=[scene.held.batch.pk]))
    assert held.status_code == 409
    assert held.json()["error"]["details"]["legal_hold"] == scene.hold.pk

    gone = root.delete(reverse("api-v1:batch-detail", args=[scene.past.batch.pk]) + "?reason=Ticket 4711")
    assert gone.status_code == 204
    assert rows_of(scene.past) == dict.fromkeys(EXPECTED_ROWS, 0)
    assert PurgeRecord.objects.get().reason == "Ticket 4711"
    assert rows_of(scene.kept) == EXPECTED_ROWS


def test_qa_places_holds_in_the_admin_and_a_steward_cannot(make_verified_client):
    qa = make_verified_client(make_user(is_staff=True, roles=["QA"]))
    steward = make_verified_client(make_user(is_staff=True, roles=["Steward"]))
    line = Line(units=1, ssccs=1)
    add = reverse("admin:audit_legalhold_add")

    assert steward.get(add).status_code == 403
    placed = qa.post(add, {"target_type": "masterdata.product", "target_id": str(line.product.pk), "reason": "Case 12"})
    assert placed.status_code == 302
    assert LegalHold.objects.get().target_label == str(line.product)
    assert retention.deletion_refusal(line.batch).hold == LegalHold.objects.get().pk
