"""Batches and packaging orders: creation, the status machine, serials for an order, closing an order; their API
and admin. Packs are written directly with bulk_create (the line-report service is tested elsewhere)."""

import itertools

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from masterdata import gs1
from masterdata.models import CompanyPrefix, PackagingLevel
from serialization.exceptions import IdempotencyConflict, InvalidAllocationRequest, PoolExhausted
from serialization.models import Allocation, Batch, ListedSerial, Pack, PackagingOrder, SerialPool
from serialization.services import create_generated_pool, create_list_pool
from serialization.services.batches import (
    InvalidTransition,
    OrderClosed,
    ReasonRequired,
    close_packaging_order,
    create_batch,
    create_packaging_order,
    request_order_serials,
    transition_batch,
)
from tests.factories import make_company, make_location, make_membership, make_product, make_user

pytestmark = pytest.mark.django_db

# --- helpers (test_reconciliation imports them) -----------------------------------------------------------------------

_numbers = itertools.count(1)


class Plant:
    """A product with unit/case/pallet levels (cases and pallets by SSCC), its generated unit pool, its owner's SSCC
    pool, and a site with one packaging line."""

    def __init__(self, *, markets=("US",), fill=1_000, sscc_fill=100, unit_pool=True):
        self.actor = make_user(username=f"planner{next(_numbers)}")
        self.owner = make_company()
        self.product = make_product(owner=self.owner, markets=markets)
        PackagingLevel.objects.bulk_create(
            [
                PackagingLevel(product=self.product, level=0, quantity=1),
                PackagingLevel(product=self.product, level=2, quantity=10, uses_sscc=True),
                PackagingLevel(product=self.product, level=3, quantity=5, uses_sscc=True),
            ]
        )
        self.unit_pool = (
            create_generated_pool(owner=self.owner, actor=self.actor, product=self.product, initial_fill=fill)
            if unit_pool
            else None
        )
        prefix = CompanyPrefix.objects.filter(company=self.owner).first()
        self.sscc_pool = create_generated_pool(
            owner=self.owner, actor=self.actor, sscc_prefix=prefix, extension_digit="3", initial_fill=sscc_fill
        )
        self.site = make_location(company=self.owner, kind="site")
        self.line = make_location(company=self.owner, kind="line", parent=self.site)

    def batch(self, **overrides) -> Batch:
        fields = {"lot": f"L{next(_numbers)}", "expiry": "271231", "site": self.site, "lines": [self.line]}
        return create_batch(product=self.product, actor=self.actor, **{**fields, **overrides})

    def order(self, batch: Batch, planned_quantity=100) -> PackagingOrder:
        return create_packaging_order(
            batch=batch,
            line=self.line,
            number=f"PO-{next(_numbers)}",
            planned_quantity=planned_quantity,
            actor=self.actor,
        )

    def serials(self, order, quantity, *, sscc=None, request_id=None):
        return request_order_serials(
            order=order,
            quantity=quantity,
            actor=self.actor,
            request_id=request_id or f"req-{next(_numbers)}",
            sscc_quantities=sscc,
        )


def indices_of(allocation: Allocation) -> list[int]:
    return [
        i for first, count in allocation.ranges.values_list("first_index", "count") for i in range(first, first + count)
    ]


def commission(
    allocation: Allocation,
    count: int,
    *,
    skip=0,
    level=0,
    status=Pack.Status.COMMISSIONED,
    reason="",
    parent=None,
    batch=None,
    indices=None,
) -> list[Pack]:
    """Packs for ``count`` serials of ``allocation`` (after the first ``skip``, or exactly ``indices``), as a line
    report would write them."""
    order = allocation.packaging_order
    pool = allocation.pool
    now = timezone.now()
    packs = []
    for index in indices if indices is not None else indices_of(allocation)[skip : skip + count]:
        if pool.kind == SerialPool.Kind.SSCC:
            code, serial = "", gs1.sscc_from_parts(pool.sscc_extension_digit, pool.sscc_prefix, index)
        else:
            code, serial = pool.product_code, f"S{index:011d}"
        packs.append(
            Pack(
                pool=pool,
                index=index,
                product_code=code,
                serial=serial,
                batch=batch or order.batch,
                order=order,
                level=level,
                parent=parent,
                status=status,
                reason=reason,
                commissioned_at=now,
            )
        )
    return Pack.objects.bulk_create(packs)


def field_errors(exc: ValidationError) -> dict:
    return exc.message_dict


# --- batches ----------------------------------------------------------------------------------------------------------


def test_create_batch_keeps_the_expiry_as_given_and_defaults_markets_to_the_products():
    plant = Plant(markets=("US", "EU"))

    batch = plant.batch(lot="A-1/23", expiry="261200")

    batch.refresh_from_db()
    assert (batch.lot, batch.expiry, batch.status) == ("A-1/23", "261200", Batch.Status.PLANNED)
    assert sorted(batch.markets.values_list("code", flat=True)) == ["EU", "US"]
    assert list(batch.lines.all()) == [plant.line]
    assert batch.created_by == plant.actor
    assert batch.history.earliest().history_user == plant.actor


def test_create_batch_refuses_a_lot_outside_set_82_as_a_field_error():
    plant = Plant()

    with pytest.raises(ValidationError) as caught:
        plant.batch(lot="AB C")

    assert field_errors(caught.value) == {
        "lot": [
            "AI (10) lot 'AB C' has ' ' (U+0020) at position 3, which is not in GS1 character set 82 — use only "
            "A–Z, a–z, 0–9 and !\"%&'()*+,-./:;<=>?_."
        ]
    }
    assert not Batch.objects.exists()


def test_create_batch_refuses_a_lot_of_21_characters_and_a_bad_expiry_together():
    plant = Plant()

    with pytest.raises(ValidationError) as caught:
        plant.batch(lot="X" * 21, expiry="261300")

    errors = field_errors(caught.value)
    assert sorted(errors) == ["expiry", "lot"]
    assert errors["lot"] == [f"AI (10) lot '{'X' * 21}' has 21 characters — it must have 1 to 20."]
    assert errors["expiry"][0].startswith("AI (17) expiry date 261300 has month 13")


def test_create_batch_refuses_a_market_the_product_is_not_registered_for():
    from tests.factories import get_market

    plant = Plant(markets=("US",))

    with pytest.raises(ValidationError) as caught:
        plant.batch(markets=[get_market("SA")])

    assert field_errors(caught.value) == {
        "markets": [
            f"{plant.product.product_code} is not registered for SA; add the market to the product first or leave "
            "it out."
        ]
    }


def test_create_batch_refuses_the_same_lot_twice_for_a_product():
    plant = Plant()
    plant.batch(lot="DUP1")

    with pytest.raises(ValidationError) as caught:
        plant.batch(lot="DUP1")

    assert field_errors(caught.value) == {"lot": [f"{plant.product.product_code} already has a batch with lot DUP1."]}


# --- the status machine -----------------------------------------------------------------------------------------------


def test_status_machine_moves_only_along_the_allowed_path():
    plant = Plant()
    batch = plant.batch(lot="SM1")

    with pytest.raises(InvalidTransition) as caught:
        transition_batch(batch=batch, status=Batch.Status.COMPLETED, actor=plant.actor)
    assert caught.value.message == ("Batch SM1 is planned: it cannot go to completed; it can go to in production only.")
    with pytest.raises(InvalidTransition) as caught:
        transition_batch(batch=batch, status=Batch.Status.RECALLED, actor=plant.actor, reason="x")
    assert caught.value.message == "Batch SM1 is planned: it cannot go to recalled; it can go to in production only."

    order = plant.order(batch)
    transition_batch(batch=batch, status=Batch.Status.IN_PRODUCTION, actor=plant.actor)
    with pytest.raises(InvalidTransition) as caught:
        transition_batch(batch=batch, status=Batch.Status.COMPLETED, actor=plant.actor)
    assert caught.value.message == f"Close every packaging order of batch SM1 first; still open: {order.number}."

    close_packaging_order(order=order, actor=plant.actor, reason="run finished")
    transition_batch(batch=batch, status=Batch.Status.COMPLETED, actor=plant.actor)
    with pytest.raises(InvalidTransition) as caught:
        transition_batch(batch=batch, status=Batch.Status.RECONCILED, actor=plant.actor)
    assert caught.value.message == "A batch becomes reconciled only by a passed reconciliation: reconcile it."
    with pytest.raises(InvalidTransition) as caught:
        transition_batch(batch=batch, status=Batch.Status.IN_PRODUCTION, actor=plant.actor)
    assert caught.value.message == (
        "Batch SM1 is completed: it cannot go to in production; it can go to reconciled or recalled only."
    )
    with pytest.raises(ReasonRequired) as caught:
        transition_batch(batch=batch, status=Batch.Status.RECALLED, actor=plant.actor)
    assert caught.value.message == "Give a reason for moving the batch to recalled; it is kept in the batch history."

    transition_batch(batch=batch, status=Batch.Status.RECALLED, actor=plant.actor, reason="stability failure")
    with pytest.raises(InvalidTransition) as caught:
        transition_batch(batch=batch, status=Batch.Status.RELEASED, actor=plant.actor, reason="x")
    assert caught.value.message == ("Batch SM1 is recalled: it cannot go to released; it is final: nothing follows it.")

    batch.refresh_from_db()
    assert batch.status == Batch.Status.RECALLED
    assert [(h.status, h.history_change_reason) for h in batch.history.order_by("history_id")][-3:] == [
        ("in_production", None),
        ("completed", None),
        ("recalled", "stability failure"),
    ]


def test_completing_a_batch_without_orders_is_refused():
    plant = Plant()
    batch = plant.batch(lot="EMPTY")
    transition_batch(batch=batch, status=Batch.Status.IN_PRODUCTION, actor=plant.actor)

    with pytest.raises(InvalidTransition) as caught:
        transition_batch(batch=batch, status=Batch.Status.COMPLETED, actor=plant.actor)

    assert caught.value.message == "Batch EMPTY has no packaging order; nothing was produced."


# --- packaging orders and their serials -------------------------------------------------------------------------------


def test_order_serial_request_creates_allocations_linked_to_the_order_and_starts_the_batch():
    plant = Plant(fill=1_000, sscc_fill=100)
    batch = plant.batch()
    order = plant.order(batch)

    result = plant.serials(order, 250, sscc={"2": 25, "3": 5}, request_id="erp-1")

    assert result.replayed is False
    assert (result.units.pool, result.units.quantity) == (plant.unit_pool, 250)
    assert {level: (a.pool, a.quantity) for level, a in result.ssccs.items()} == {
        2: (plant.sscc_pool, 25),
        3: (plant.sscc_pool, 5),
    }
    rows = Allocation.objects.filter(packaging_order=order).order_by("request_id")
    assert [(a.request_id, a.purpose, a.reference, a.quantity) for a in rows] == [
        ("erp-1", "packaging_order", order.number, 250),
        ("erp-1:L2", "packaging_order", order.number, 25),
        ("erp-1:L3", "packaging_order", order.number, 5),
    ]
    plant.unit_pool.refresh_from_db()
    plant.sscc_pool.refresh_from_db()
    assert (plant.unit_pool.available, plant.sscc_pool.available) == (750, 70)
    batch.refresh_from_db()
    assert batch.status == Batch.Status.IN_PRODUCTION
    assert batch.history.latest().history_change_reason == f"order {order.number} started"


def test_order_serial_request_is_idempotent_by_request_id():
    plant = Plant(fill=1_000)
    order = plant.order(plant.batch())
    first = plant.serials(order, 100, sscc={2: 10}, request_id="erp-7")

    again = plant.serials(order, 100, sscc={2: 10}, request_id="erp-7")

    assert again.replayed is True
    assert (again.units.pk, again.ssccs[2].pk) == (first.units.pk, first.ssccs[2].pk)
    assert Allocation.objects.filter(packaging_order=order).count() == 2
    plant.unit_pool.refresh_from_db()
    assert plant.unit_pool.available == 900
    with pytest.raises(IdempotencyConflict) as caught:
        plant.serials(order, 101, sscc={2: 10}, request_id="erp-7")
    assert caught.value.message == (
        f"Request id 'erp-7' was already used on order {order.number} for 100 unit serials and SSCCs {{2: 10}}; "
        "send a new request id for a new request."
    )


def test_order_serials_come_from_the_oldest_list_pool_when_the_product_has_no_generated_pool():
    plant = Plant(unit_pool=False)
    pools = []
    for size in (5, 50):
        pool = create_list_pool(
            owner=plant.owner, actor=plant.actor, product=plant.product, source=SerialPool.Source.FILE
        )
        ListedSerial.objects.bulk_create(
            ListedSerial(pool=pool, ordinal=i, product_code=pool.product_code, serial=f"P{pool.pk}N{i}")
            for i in range(size)
        )
        SerialPool.objects.filter(pk=pool.pk).update(filled=size)
        pools.append(pool)
    order = plant.order(plant.batch())

    small = plant.serials(order, 5)
    large = plant.serials(order, 20)

    assert (small.units.pool_id, large.units.pool_id) == (pools[0].pk, pools[1].pk)
    with pytest.raises(PoolExhausted) as caught:
        plant.serials(order, 40)
    assert caught.value.message == (
        f"No pool of unit serials of {plant.product.product_code} has 40 available ({pools[0].name}: 0; "
        f"{pools[1].name}: 30). Fill a pool or ask for fewer."
    )


def test_order_serial_request_without_any_pool_says_so():
    plant = Plant(unit_pool=False)
    order = plant.order(plant.batch())

    with pytest.raises(PoolExhausted) as caught:
        plant.serials(order, 1)

    assert caught.value.message == (
        f"There is no pool of unit serials of {plant.product.product_code}: create a generated pool or import a "
        "serial list first."
    )
    assert caught.value.field == "quantity"


def test_order_serial_request_refuses_a_level_not_identified_by_sscc_and_grants_nothing():
    plant = Plant()
    order = plant.order(plant.batch())

    with pytest.raises(InvalidAllocationRequest) as caught:
        plant.serials(order, 10, sscc={"1": 2})

    assert caught.value.message == (
        f"Level '1' of {plant.product.product_code} is not identified by SSCC; use 2 (case), 3 (pallet)."
    )
    assert not Allocation.objects.exists()


def test_order_serial_request_is_all_or_nothing_when_the_sscc_pool_is_short():
    plant = Plant(fill=1_000, sscc_fill=10)
    order = plant.order(plant.batch())

    with pytest.raises(PoolExhausted):
        plant.serials(order, 100, sscc={2: 11})

    assert not Allocation.objects.exists()
    plant.unit_pool.refresh_from_db()
    assert plant.unit_pool.available == 1_000
    assert Batch.objects.get(pk=order.batch_id).status == Batch.Status.PLANNED


def test_closing_an_order_releases_exactly_its_unused_serials():
    plant = Plant(fill=1_000, sscc_fill=100)
    order = plant.order(plant.batch())
    result = plant.serials(order, 100, sscc={2: 10})
    commission(result.units, 60)
    commission(result.units, 5, skip=60, status=Pack.Status.DECOMMISSIONED, reason="line_reject")
    commission(result.ssccs[2], 4, level=2)
    before_ssccs = SerialPool.objects.get(pk=plant.sscc_pool.pk).available
    plant.unit_pool.refresh_from_db()
    assert plant.unit_pool.available == 900

    closed = close_packaging_order(order=order, actor=plant.actor, reason="run finished")

    assert closed.released == 35 + 6
    plant.unit_pool.refresh_from_db()
    sscc_pool = SerialPool.objects.get(pk=plant.sscc_pool.pk)
    assert plant.unit_pool.available == 900 + 35
    assert plant.unit_pool.assigned == 65  # commissioned and decommissioned serials stay assigned
    assert sscc_pool.available == before_ssccs + 6
    units = Allocation.objects.get(pk=result.units.pk)
    assert (units.quantity, units.released, units.active_quantity) == (100, 35, 65)
    assert list(units.releases.values_list("quantity", "reason")) == [(35, "run finished")]
    order.refresh_from_db()
    assert (order.status, order.closed_by) == (PackagingOrder.Status.CLOSED, plant.actor)
    assert order.history.latest().history_change_reason == "run finished"


def test_closing_an_order_twice_is_refused():
    plant = Plant()
    order = plant.order(plant.batch())
    close_packaging_order(order=order, actor=plant.actor, reason="done")
    order.refresh_from_db()

    with pytest.raises(OrderClosed) as caught:
        close_packaging_order(order=order, actor=plant.actor, reason="again")

    assert caught.value.message == (
        f"Packaging order {order.number} was already closed on {order.closed_at:%Y-%m-%d %H:%M} by {plant.actor}."
    )
    with pytest.raises(OrderClosed):
        plant.serials(order, 1)


def test_closing_needs_a_reason():
    plant = Plant()
    order = plant.order(plant.batch())

    with pytest.raises(ReasonRequired) as caught:
        close_packaging_order(order=order, actor=plant.actor, reason="  ")

    assert caught.value.message == "Give a reason for closing the order; it is kept in the batch history."


def test_an_order_must_run_on_one_of_the_batchs_lines():
    plant = Plant()
    batch = plant.batch()
    other_line = make_location(company=plant.owner, kind="line", parent=plant.site)

    with pytest.raises(ValidationError) as caught:
        create_packaging_order(batch=batch, line=other_line, number="PO-X", planned_quantity=10, actor=plant.actor)

    assert field_errors(caught.value) == {
        "line": [
            f"Batch {batch.lot} is made on {plant.line.name}, not on {other_line.name}; "
            "add the line to the batch first."
        ]
    }


# --- API --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def steward(make_api_client):
    return make_api_client(make_user(roles=("Steward",)))


def error(response) -> dict:
    return response.json()["error"]


def test_api_creates_a_batch_and_keeps_the_expiry_as_given(steward):
    plant = Plant(markets=("US",))

    response = steward.post(
        "/api/v1/batches/",
        {
            "product": plant.product.pk,
            "lot": "API-1",
            "expiry": "261200",
            "site": plant.site.pk,
            "lines": [plant.line.pk],
        },
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert {k: body[k] for k in ("lot", "expiry", "status", "markets", "lines", "latest_reconciliation", "orders")} == {
        "lot": "API-1",
        "expiry": "261200",
        "status": "planned",
        "markets": ["US"],
        "lines": [plant.line.pk],
        "latest_reconciliation": None,
        "orders": [],
    }


def test_api_reports_a_bad_lot_on_the_lot_field(steward):
    plant = Plant()

    response = steward.post("/api/v1/batches/", {"product": plant.product.pk, "lot": "A B", "expiry": "261200"})

    assert response.status_code == 400
    assert list(error(response)["fields"]) == ["lot"]
    assert error(response)["fields"]["lot"][0].startswith("AI (10) lot 'A B' has ' ' (U+0020) at position 2")


def test_api_batch_list_shows_the_latest_reconciliation_in_constant_queries(steward, django_assert_max_num_queries):
    from serialization.models import Reconciliation

    plant = Plant()
    batches = [plant.batch() for _ in range(2)]
    Reconciliation.objects.create(batch=batches[0], passed=False)
    latest = Reconciliation.objects.create(batch=batches[0], passed=True)
    steward.get("/api/v1/batches/")  # the token's first use writes its "used" record once

    with django_assert_max_num_queries(9):
        first = steward.get("/api/v1/batches/")
    for _ in range(3):
        plant.order(plant.batch())
    with django_assert_max_num_queries(9):
        second = steward.get("/api/v1/batches/")

    assert (first.json()["count"], second.json()["count"]) == (2, 5)
    rows = {row["id"]: row for row in first.json()["results"]}
    assert rows[batches[0].pk]["latest_reconciliation"]["id"] == latest.pk
    assert rows[batches[0].pk]["latest_reconciliation"]["passed"] is True
    assert rows[batches[1].pk]["latest_reconciliation"] is None


def test_api_scopes_batches_and_orders_to_the_users_company(make_api_client):
    mine, theirs = Plant(), Plant()
    own, other = mine.batch(), theirs.batch()
    other_order = theirs.order(other)
    user = make_user(roles=("Steward",))
    make_membership(user=user, company=mine.owner)
    client = make_api_client(user)

    assert [row["id"] for row in client.get("/api/v1/batches/").json()["results"]] == [own.pk]
    response = client.get(f"/api/v1/batches/{other.pk}/")
    assert response.status_code == 404
    assert error(response)["message"] == f"No batch with id {other.pk} is visible to you."
    assert client.post(f"/api/v1/orders/{other_order.pk}/close/", {"reason": "x"}).status_code == 404
    assert client.post(f"/api/v1/batches/{other.pk}/transition/", {"status": "in_production"}).status_code == 404


def test_api_order_flow_create_request_serials_replay_and_close(steward):
    plant = Plant(fill=1_000, sscc_fill=100)
    batch = plant.batch()

    created = steward.post(
        "/api/v1/orders/", {"batch": batch.pk, "line": plant.line.pk, "number": "PO-API-1", "planned_quantity": 100}
    )
    assert created.status_code == 201, created.json()
    order_id = created.json()["id"]

    request = {"quantity": 100, "request_id": "erp-42", "sscc": {"2": 10, "3": 2}}
    first = steward.post(f"/api/v1/orders/{order_id}/serials/", request)
    again = steward.post(f"/api/v1/orders/{order_id}/serials/", request)

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["replayed"] is False and again.json()["replayed"] is True
    assert first.json()["units"]["quantity"] == 100
    assert {level: a["quantity"] for level, a in first.json()["ssccs"].items()} == {"2": 10, "3": 2}
    assert first.json()["units"]["id"] == again.json()["units"]["id"]

    order = steward.get(f"/api/v1/orders/{order_id}/").json()
    assert [a["request_id"] for a in order["allocations"]] == ["erp-42", "erp-42:L2", "erp-42:L3"]
    assert steward.get(f"/api/v1/batches/{batch.pk}/").json()["status"] == "in_production"

    closed = steward.post(f"/api/v1/orders/{order_id}/close/", {"reason": "run finished"})
    assert closed.status_code == 200
    assert closed.json()["released"] == 112
    assert closed.json()["order"]["status"] == "closed"
    twice = steward.post(f"/api/v1/orders/{order_id}/close/", {"reason": "run finished"})
    assert twice.status_code == 409
    assert error(twice)["code"] == "order_closed"


def test_api_transition_errors_name_the_current_and_allowed_statuses(steward):
    plant = Plant()
    batch = plant.batch(lot="TR1")

    response = steward.post(f"/api/v1/batches/{batch.pk}/transition/", {"status": "completed"})

    assert response.status_code == 409
    assert error(response) == {
        "code": "invalid_transition",
        "message": "Batch TR1 is planned: it cannot go to completed; it can go to in production only.",
        "fields": {"status": ["Batch TR1 is planned: it cannot go to completed; it can go to in production only."]},
        "details": {"status": "planned", "allowed": ["in_production"]},
    }
    ok = steward.post(f"/api/v1/batches/{batch.pk}/transition/", {"status": "in_production"})
    assert (ok.status_code, ok.json()["status"]) == (200, "in_production")


def test_api_qa_may_not_create_batches(make_api_client):
    plant = Plant()
    client = make_api_client(make_user(roles=("QA",)))

    response = client.post("/api/v1/batches/", {"product": plant.product.pk, "lot": "X", "expiry": "261200"})

    assert response.status_code == 403


# --- admin ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def admin_steward(make_verified_client):
    return make_verified_client(make_user(is_staff=True, roles=("Steward",)))


def test_admin_batch_changelist_and_order_close_action(admin_steward):
    plant = Plant(fill=1_000)
    batch = plant.batch(lot="ADM1")
    order = plant.order(batch)
    result = plant.serials(order, 50)
    commission(result.units, 20)

    listing = admin_steward.get(reverse("admin:serialization_batch_changelist"))
    assert listing.status_code == 200
    assert "ADM1" in listing.text

    url = reverse("admin:serialization_packagingorder_changelist")
    form_page = admin_steward.post(url, {"action": "close_orders", "_selected_action": [order.pk]})
    assert form_page.status_code == 200
    assert "Close the orders" in form_page.text
    done = admin_steward.post(
        url, {"action": "close_orders", "_selected_action": [order.pk], "apply": "1", "reason": "run finished"}
    )
    assert done.status_code == 302
    order.refresh_from_db()
    assert order.status == PackagingOrder.Status.CLOSED
    assert Allocation.objects.get(pk=result.units.pk).released == 30
    page = admin_steward.get(reverse("admin:serialization_packagingorder_change", args=[order.pk]))
    assert page.status_code == 200
    assert result.units.request_id in page.text  # the allocations inline


def test_admin_adds_a_batch_through_the_service(admin_steward):
    plant = Plant(markets=("US",))

    response = admin_steward.post(
        reverse("admin:serialization_batch_add"),
        {
            "product": plant.product.pk,
            "lot": "ADM-NEW",
            "expiry": "261200",
            "site": plant.site.pk,
            "lines": [plant.line.pk],
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    batch = Batch.objects.get(lot="ADM-NEW")
    assert (batch.expiry, batch.created_by.username) == ("261200", response.wsgi_request.user.username)
    assert list(batch.markets.values_list("code", flat=True)) == ["US"]
