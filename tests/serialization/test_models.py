"""The serial engine's invariants as the database enforces them: each constraint is tried and must refuse.

Rows are written straight through the ORM here (no service), so a refusal comes from the constraint itself.
"""

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from masterdata.models import NUMERIC
from serialization.models import Allocation, AllocationRange, FreeRange, ListedSerial, Pack, SerialPool
from tests.factories import make_company, make_product

pytestmark = pytest.mark.django_db


def make_pool_row(**overrides) -> SerialPool:
    if "owner" not in overrides:
        product = overrides.pop("product", None) or make_product()
        overrides.setdefault("owner", product.owner)
        overrides.setdefault("product", product)
        overrides.setdefault("product_code", product.product_code)
    fields = {
        "name": "pool",
        "source": SerialPool.Source.GENERATOR,
        "alphabet": NUMERIC,
        "length": 12,
        "filled": 1_000,
        **overrides,
    }
    return SerialPool.objects.create(**fields)


def make_allocation_row(pool: SerialPool, **overrides) -> Allocation:
    fields = {
        "request_id": "r1",
        "purpose": Allocation.Purpose.BATCH,
        "requested_quantity": 10,
        "quantity": 10,
        **overrides,
    }
    return Allocation.objects.create(pool=pool, **fields)


def refused(constraint_name: str):
    """The block must raise IntegrityError; PostgreSQL names the constraint (SQLite names only CHECKs)."""
    return pytest.raises(IntegrityError, match=constraint_name if connection.vendor == "postgresql" else None)


def test_serialization_models_and_migrations_agree():
    call_command("makemigrations", "serialization", "--check", "--dry-run", verbosity=0)


def test_pool_counters_and_properties():
    pool = make_pool_row(filled=100, next_index=60, free=15)

    assert (pool.assigned, pool.available) == (45, 55)
    assert pool.available + pool.assigned == pool.filled
    assert pool.is_generated
    assert pool.code == pool.product_code


@pytest.mark.parametrize(
    "counters",
    [
        {"filled": 10, "next_index": 11},
        {"filled": 10, "next_index": 5, "free": 6},
        {"filled": 10, "next_index": 5, "free": -1},
    ],
    ids=["cursor beyond the filled part", "more free than handed out", "negative free"],
)
def test_pool_counters_must_be_consistent(counters):
    pool = make_pool_row(filled=0)

    with refused("pool_counters_consistent"), transaction.atomic():
        SerialPool.objects.filter(pk=pool.pk).update(**counters)


def test_pool_cannot_be_filled_beyond_its_issue_limit():
    pool = make_pool_row(filled=0, randomised=True, issue_limit=100)
    SerialPool.objects.filter(pk=pool.pk).update(filled=100)

    with refused("pool_within_issue_limit"), transaction.atomic():
        SerialPool.objects.filter(pk=pool.pk).update(filled=F("filled") + 1)


@pytest.mark.parametrize("length", [0, 21])
def test_pool_length_is_1_to_20(length):
    with refused("pool_length_1_to_20"), transaction.atomic():
        make_pool_row(length=length)


def test_pool_identifies_either_a_product_code_or_an_sscc_range():
    company = make_company()
    with refused("pool_identifies_product_or_sscc_range"), transaction.atomic():
        make_pool_row(owner=company, kind=SerialPool.Kind.SGTIN, product_code="")
    with refused("pool_identifies_product_or_sscc_range"), transaction.atomic():
        make_pool_row(owner=company, kind=SerialPool.Kind.SSCC, sscc_prefix="9521111", sscc_extension_digit="")
    with refused("pool_identifies_product_or_sscc_range"), transaction.atomic():
        make_pool_row(owner=company, kind=SerialPool.Kind.SSCC, product_code="09521111000014", sscc_prefix="9521111")
    sscc = make_pool_row(owner=company, kind=SerialPool.Kind.SSCC, sscc_prefix="9521111", sscc_extension_digit="4")
    assert sscc.code == "49521111"


def test_one_generated_pool_per_product_code_but_list_pools_may_share_it():
    product = make_product()
    make_pool_row(product=product)

    with refused("one_generated_pool_per_product_code"), transaction.atomic():
        make_pool_row(product=product)
    make_pool_row(product=product, source=SerialPool.Source.FILE, length=20)
    make_pool_row(product=product, source=SerialPool.Source.TRACELINK, length=20)
    assert SerialPool.objects.filter(product_code=product.product_code).count() == 3


def test_one_generated_sscc_pool_per_prefix_and_extension_digit():
    company = make_company()
    make_pool_row(owner=company, kind=SerialPool.Kind.SSCC, sscc_prefix="9521111", sscc_extension_digit="4")

    with refused("one_generated_sscc_pool_per_prefix_and_extension"), transaction.atomic():
        make_pool_row(owner=company, kind=SerialPool.Kind.SSCC, sscc_prefix="9521111", sscc_extension_digit="4")
    make_pool_row(owner=company, kind=SerialPool.Kind.SSCC, sscc_prefix="9521111", sscc_extension_digit="5")


def test_request_id_is_unique_per_pool():
    pool, other = make_pool_row(), make_pool_row()
    make_allocation_row(pool, request_id="ERP-1")

    with refused("allocation_request_id_unique_per_pool"), transaction.atomic():
        make_allocation_row(pool, request_id="ERP-1")
    make_allocation_row(other, request_id="ERP-1")


@pytest.mark.parametrize(
    "quantities",
    [
        {"requested_quantity": 10, "quantity": 11},
        {"requested_quantity": 10, "quantity": -1},
        {"requested_quantity": 10, "quantity": 10, "released": 11},
        {"requested_quantity": 10, "quantity": 10, "released": -1},
    ],
)
def test_allocation_quantities_must_be_consistent(quantities):
    pool = make_pool_row()

    with refused("allocation_quantities_consistent"), transaction.atomic():
        make_allocation_row(pool, **quantities)


def test_allocation_ranges_never_start_twice_and_are_never_empty():
    pool = make_pool_row()
    allocation = make_allocation_row(pool)
    AllocationRange.objects.create(allocation=allocation, pool=pool, first_index=0, count=10)

    with refused("allocation_range_start_unique"), transaction.atomic():
        AllocationRange.objects.create(allocation=allocation, pool=pool, first_index=0, count=3)
    with refused("allocation_range_not_empty"), transaction.atomic():
        AllocationRange.objects.create(allocation=allocation, pool=pool, first_index=20, count=0)
    with refused("allocation_range_not_empty"), transaction.atomic():
        AllocationRange.objects.create(allocation=allocation, pool=pool, first_index=-1, count=1)


def test_free_ranges_never_start_twice_and_are_never_empty():
    pool = make_pool_row()
    FreeRange.objects.create(pool=pool, first_index=5, count=2)

    with refused("free_range_start_unique"), transaction.atomic():
        FreeRange.objects.create(pool=pool, first_index=5, count=1)
    with refused("free_range_not_empty"), transaction.atomic():
        FreeRange.objects.create(pool=pool, first_index=9, count=0)


def test_a_product_code_and_serial_is_listed_once_across_every_list_pool():
    product = make_product()
    first = make_pool_row(product=product, source=SerialPool.Source.FILE, length=20)
    second = make_pool_row(product=product, source=SerialPool.Source.SAP_ICH, length=20)
    ListedSerial.objects.create(pool=first, ordinal=0, product_code=product.product_code, serial="A1")

    with refused("listed_serial_unique_per_product_code"), transaction.atomic():
        ListedSerial.objects.create(pool=second, ordinal=0, product_code=product.product_code, serial="A1")
    with refused("listed_serial_ordinal_unique"), transaction.atomic():
        ListedSerial.objects.create(pool=first, ordinal=0, product_code=product.product_code, serial="A2")
    ListedSerial.objects.create(pool=second, ordinal=0, product_code=product.product_code, serial="A2")


def test_a_pack_exists_once_per_serial():
    # (pool, index) has no constraint of its own: line reports derive the index from the serial, so this one refuses
    # a repeat of either.
    pool = make_pool_row()
    now = timezone.now()
    Pack.objects.create(pool=pool, index=3, product_code=pool.product_code, serial="000000000003", commissioned_at=now)

    with refused("pack_unique_product_code_serial"), transaction.atomic():
        Pack.objects.create(
            pool=pool, index=4, product_code=pool.product_code, serial="000000000003", commissioned_at=now
        )
