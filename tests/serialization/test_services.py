"""The serial engine's services: pools, fill, allocation, release, lookup and pool keys.

Every test asserts exact outcomes — the serials, the counts, the error text — and the conservation law of
``serialization.models`` after each operation that moves serials (``assert_conserved``).
"""

import base64
import itertools
import random
from decimal import Decimal

import numpy as np
import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from masterdata import gs1
from masterdata.models import NUMERIC, UPPER_ALNUM, Market
from serialization import keys
from serialization.exceptions import (
    IdempotencyConflict,
    InvalidAllocationRequest,
    InvalidPoolDefinition,
    IssueLimitExceeded,
    PoolBlocked,
    PoolExhausted,
    ReleaseRefused,
    RequestTooLarge,
    UnknownSerial,
)
from serialization.ff1 import SerialFormat, SerialPermutation
from serialization.models import Allocation, AllocationRange, FreeRange, ListedSerial, Pack, Release, SerialPool
from serialization.services import (
    SerialStatus,
    allocate_serials,
    block_pool,
    create_generated_pool,
    create_list_pool,
    fill_pool,
    lookup_serial,
    lookup_sscc,
    pool_permutation,
    release_serials,
)
from serialization.services.allocation import _prepared_sql, intersect, runs_of, subtract
from serialization.services.pools import MAX_POOL_SIZE, issue_limit_for
from tests.factories import make_company, make_product, make_user

pytestmark = pytest.mark.django_db

EU_BOUND = Decimal("0.0001")


# --- helpers ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def user():
    return make_user(username="steward")


def make_pool(*, actor=None, markets=("EU",), fill=1_000, **options) -> SerialPool:
    product = make_product(markets=markets)
    return create_generated_pool(owner=product.owner, actor=actor, product=product, initial_fill=fill, **options)


_request_numbers = iter(range(1, 10**9))


def allocate(pool: SerialPool, quantity: int, *, actor=None, request_id=None, **options) -> Allocation:
    return allocate_serials(
        pool=pool,
        quantity=quantity,
        actor=actor,
        request_id=request_id or f"req-{next(_request_numbers)}",
        purpose=options.pop("purpose", Allocation.Purpose.PACKAGING_ORDER),
        **options,
    )


def ranges_of(allocation: Allocation) -> list[tuple[int, int]]:
    return list(allocation.ranges.order_by("first_index").values_list("first_index", "count"))


def free_ranges(pool: SerialPool) -> list[tuple[int, int]]:
    return list(FreeRange.objects.filter(pool=pool).order_by("first_index").values_list("first_index", "count"))


def serials_of(allocation: Allocation) -> list[str]:
    """What the allocation grants, materialised range by range in index order."""
    permutation = pool_permutation(allocation.pool)
    return [serial for first, count in ranges_of(allocation) for serial in permutation.serials(first, count)]


def assert_conserved(pool: SerialPool) -> None:
    """available + assigned = filled, and the counters agree with the range rows, which never overlap."""
    pool.refresh_from_db()
    held = list(AllocationRange.objects.filter(pool=pool).values_list("first_index", "count"))
    free = list(FreeRange.objects.filter(pool=pool).values_list("first_index", "count"))
    assert pool.available + pool.assigned == pool.filled
    assert pool.available >= 0
    assert pool.assigned >= 0
    assert pool.assigned == sum(count for _, count in held)
    assert pool.free == sum(count for _, count in free)
    spans = sorted(held + free)
    for (first, count), (next_first, _) in itertools.pairwise(spans):
        assert first + count <= next_first, f"ranges overlap at index {next_first}"
    # Every index below the cursor is in exactly one range (they do not overlap and their sizes add up).
    assert sum(count for _, count in spans) == pool.next_index
    assert all(first + count <= pool.next_index for first, count in spans)
    active = sum(a.quantity - a.released for a in Allocation.objects.filter(pool=pool))
    assert active == pool.assigned


# --- pools ------------------------------------------------------------------------------------------------------------


def test_create_generated_pool_takes_randomised_format_and_issue_limit_from_eu_market(user):
    product = make_product(markets=["EU", "US"])

    pool = create_generated_pool(owner=product.owner, actor=user, product=product)

    assert pool.kind == SerialPool.Kind.SGTIN
    assert pool.product_code == product.product_code
    assert pool.source == SerialPool.Source.GENERATOR
    assert pool.randomised is True
    assert (pool.alphabet, pool.length) == (UPPER_ALNUM, 12)  # the EU market's defaults win over US
    assert pool.issue_limit == 36**12 // 10_000 == 473_838_133_832_161
    assert (pool.filled, pool.next_index, pool.free) == (0, 0, 0)
    assert pool.history.first().history_user == user


def test_create_generated_pool_refuses_sequential_serials_for_an_eu_product(user):
    product = make_product(markets=["US", "EU"])

    with pytest.raises(InvalidPoolDefinition) as excinfo:
        create_generated_pool(owner=product.owner, actor=user, product=product, randomised=False)

    assert excinfo.value.message == (
        f"Market EU requires randomised serials for {product.product_code}; create a randomised pool."
    )
    assert excinfo.value.field == "randomised"
    assert excinfo.value.status_code == 400
    assert not SerialPool.objects.exists()


def test_issue_limit_is_floor_of_domain_times_the_market_bound():
    assert issue_limit_for(10**12, EU_BOUND) == 100_000_000
    assert issue_limit_for(10**12 + 9_999, EU_BOUND) == 100_000_000
    assert issue_limit_for(36**12, EU_BOUND) == 473_838_133_832_161
    assert issue_limit_for(36**12, Decimal("0.0001000000")) == 473_838_133_832_161  # as the DecimalField returns it
    assert issue_limit_for(10**12, None) is None
    # Exact even beyond Decimal's 28 digits (36^20 * 1e-4 rounded up by one there), then capped to the counters.
    assert issue_limit_for(36**20, EU_BOUND) == MAX_POOL_SIZE
    assert issue_limit_for(36**20 + 1, Decimal(1)) == MAX_POOL_SIZE


def test_create_generated_pool_with_a_format_beyond_64_bits_caps_the_issue_limit(user):
    product = make_product(markets=["EU"])

    pool = create_generated_pool(owner=product.owner, actor=user, product=product, length=20)

    assert (pool.alphabet, pool.length) == (UPPER_ALNUM, 20)
    assert pool.issue_limit == 2**63 - 1


def test_numeric_eu_pool_issue_limit_is_enforced_by_fill_with_the_exact_error(user):
    pool = make_pool(actor=user, alphabet=NUMERIC, length=12, fill=99_999_990)
    assert pool.issue_limit == 100_000_000

    with pytest.raises(IssueLimitExceeded) as excinfo:
        fill_pool(pool=pool, quantity=11, actor=user)

    assert excinfo.value.message == (
        f"{pool} can hold at most 100,000,000 serials (the market's guess bound allows); it has 99,999,990, so at "
        "most 10 more can be filled. Fill fewer, or create a pool with a longer format."
    )
    assert excinfo.value.details == {"limit": 100_000_000, "filled": 99_999_990, "max_fill": 10}
    assert excinfo.value.status_code == 400
    pool.refresh_from_db()
    assert pool.filled == 99_999_990

    fill_pool(pool=pool, quantity=10, actor=user, reason="top up")
    assert pool.filled == 100_000_000
    assert list(pool.fills.values_list("quantity", "filled_after", "reason")) == [
        (10, 100_000_000, "top up"),
        (99_999_990, 99_999_990, "initial fill"),
    ]
    with pytest.raises(IssueLimitExceeded, match="so at most 0 more can be filled"):
        fill_pool(pool=pool, quantity=1, actor=user)


def test_fill_pool_refuses_list_pools_and_non_positive_quantities(user):
    product = make_product(markets=["US"])
    listed = create_list_pool(owner=product.owner, actor=user, product=product, source=SerialPool.Source.FILE)
    generated = create_generated_pool(owner=product.owner, actor=user, product=product)

    with pytest.raises(InvalidPoolDefinition, match="Only generated pools are filled"):
        fill_pool(pool=listed, quantity=5, actor=user)
    with pytest.raises(InvalidPoolDefinition, match=r"Fill with a positive number of serials\."):
        fill_pool(pool=generated, quantity=0, actor=user)


def test_sscc_pool_numbers_the_digits_left_by_the_prefix_and_lookup_finds_an_allocated_sscc(user):
    company = make_company(prefixes=["9524321"])
    prefix = company.prefixes.get()

    pool = create_generated_pool(owner=company, actor=user, sscc_prefix=prefix, extension_digit="3", initial_fill=50)

    assert (pool.kind, pool.code, pool.alphabet, pool.length, pool.randomised) == (
        SerialPool.Kind.SSCC,
        "39524321",
        NUMERIC,
        16 - 7,
        False,
    )
    allocate(pool, 5)  # indices 0..4
    allocation = allocate(pool, 3, purpose=Allocation.Purpose.PRINT)  # indices 5..7
    assert serials_of(allocation) == ["000000005", "000000006", "000000007"]

    sscc = gs1.sscc_from_parts("3", "9524321", "000000006")
    assert sscc == "395243210000000065"
    found = lookup_sscc(sscc=sscc)
    assert (found.pool, found.index, found.allocation, found.status) == (pool, 6, allocation, SerialStatus.ASSIGNED)
    # Within the filled part but never handed out: Available.
    spare = lookup_sscc(sscc=gs1.sscc_from_parts("3", "9524321", "000000040"))
    assert (spare.index, spare.status, spare.allocation) == (40, SerialStatus.AVAILABLE, None)
    with pytest.raises(UnknownSerial, match="is in no SSCC pool here"):
        lookup_sscc(sscc=gs1.sscc_from_parts("3", "9524321", "000000050"))  # beyond the filled part
    with pytest.raises(UnknownSerial, match="SSCC"):
        lookup_sscc(sscc="395243210000000066")  # wrong check digit


def test_randomised_sscc_pool_with_a_long_prefix_and_its_lookup(user):
    company = make_company(prefixes=["9521234567"])
    prefix = company.prefixes.get()

    pool = create_generated_pool(
        owner=company, actor=user, sscc_prefix=prefix, extension_digit=0, randomised=True, initial_fill=1_000
    )

    assert (pool.length, pool.randomised, pool.issue_limit) == (6, True, None)
    allocation = allocate(pool, 20)
    references = serials_of(allocation)
    assert references != sorted(references)
    found = lookup_sscc(sscc=gs1.sscc_from_parts("0", "9521234567", references[7]))
    assert (found.pool, found.index, found.allocation) == (pool, 7, allocation)


def test_sscc_pool_refuses_a_randomised_format_below_a_million_and_a_second_pool(user):
    company = make_company(prefixes=["952123456789"])  # 12 digits leave 4 for the serial reference
    prefix = company.prefixes.get()

    with pytest.raises(InvalidPoolDefinition, match=r"alphabet\^length >= 1,000,000"):
        create_generated_pool(owner=company, actor=user, sscc_prefix=prefix, extension_digit="1", randomised=True)
    pool = create_generated_pool(owner=company, actor=user, sscc_prefix=prefix, extension_digit="1")
    assert pool.length == 4
    with pytest.raises(InvalidPoolDefinition) as excinfo:
        create_generated_pool(owner=company, actor=user, sscc_prefix=prefix, extension_digit="1")
    assert excinfo.value.message == (
        f"Company prefix 952123456789 with extension digit 1 already has an SSCC pool ({pool}); fill that pool instead."
    )
    create_generated_pool(owner=company, actor=user, sscc_prefix=prefix, extension_digit="2")  # another digit is fine


def test_sequential_pool_gives_zero_padded_indices_in_order(user):
    pool = make_pool(actor=user, markets=["US"], randomised=False, fill=100)

    first = allocate(pool, 3)
    second = allocate(pool, 2)

    assert (pool.alphabet, pool.length, pool.randomised, pool.encrypted_key) == (NUMERIC, 12, False, "")
    assert serials_of(first) == ["000000000000", "000000000001", "000000000002"]
    assert serials_of(second) == ["000000000003", "000000000004"]
    assert_conserved(pool)


def test_second_generated_pool_for_a_product_code_is_refused_with_a_clear_error(user):
    product = make_product(markets=["EU"])
    pool = create_generated_pool(owner=product.owner, actor=user, product=product)

    with pytest.raises(InvalidPoolDefinition) as excinfo:
        create_generated_pool(owner=product.owner, actor=user, product=product)

    assert excinfo.value.message == (
        f"{product.product_code} already has a generated pool ({pool}); a second generator would issue the same "
        "serials again. Fill the existing pool instead."
    )
    assert (excinfo.value.field, excinfo.value.status_code) == ("product", 400)
    assert SerialPool.objects.count() == 1


def test_generated_pool_refused_when_a_list_pool_holds_serials_in_its_format(user):
    product = make_product(markets=["EU"])
    listed = create_list_pool(owner=product.owner, actor=user, product=product, source=SerialPool.Source.SAP_ATTP)
    ListedSerial.objects.bulk_create(
        ListedSerial(pool=listed, ordinal=i, product_code=product.product_code, serial=serial)
        for i, serial in enumerate(["abc", "LONGER0000000", "AB12CD34EF56"])
    )

    with pytest.raises(InvalidPoolDefinition) as excinfo:
        create_generated_pool(owner=product.owner, actor=user, product=product)

    assert excinfo.value.message == (
        f"Imported serial 'AB12CD34EF56' of {product.product_code} lies in this format's range, so the generator "
        "could issue it again; choose another length or alphabet for the generated pool."
    )
    assert not SerialPool.objects.filter(source=SerialPool.Source.GENERATOR).exists()
    # A format none of the listed serials belongs to (14 characters) is accepted.
    pool = create_generated_pool(owner=product.owner, actor=user, product=product, length=14)
    assert pool.length == 14


def test_no_leading_zero_format_ignores_listed_serials_starting_with_zero(user):
    product = make_product(markets=["US"])
    listed = create_list_pool(owner=product.owner, actor=user, product=product, source=SerialPool.Source.FILE)
    ListedSerial.objects.create(pool=listed, ordinal=0, product_code=product.product_code, serial="012345678901")

    pool = create_generated_pool(owner=product.owner, actor=user, product=product, no_leading_zero=True)

    assert (pool.length, pool.no_leading_zero) == (12, True)


# --- allocation -------------------------------------------------------------------------------------------------------


def test_allocate_grants_the_exact_count_and_moves_the_cursor(user):
    pool = make_pool(actor=user, fill=1_000)

    first = allocate(pool, 250, actor=user, reference="PO-1")
    second = allocate(pool, 100, actor=user)

    assert (first.quantity, first.requested_quantity, first.released) == (250, 250, 0)
    assert (first.requested_by, first.reference, first.purpose) == (user, "PO-1", "packaging_order")
    assert ranges_of(first) == [(0, 250)]
    assert ranges_of(second) == [(250, 100)]
    pool.refresh_from_db()
    assert (pool.filled, pool.next_index, pool.free, pool.assigned, pool.available) == (1_000, 350, 0, 350, 650)
    assert len(serials_of(first)) == 250
    assert first.history.get().history_type == "+"
    assert first.history.get().history_user == user
    assert_conserved(pool)


def test_allocate_is_idempotent_by_request_id(user):
    pool = make_pool(actor=user, fill=1_000)
    first = allocate(pool, 40, request_id="ERP-4711", reference="PO-9")

    again = allocate(pool, 40, request_id="ERP-4711", reference="PO-9")

    assert again.pk == first.pk
    assert serials_of(again) == serials_of(first)
    assert Allocation.objects.filter(pool=pool).count() == 1
    pool.refresh_from_db()
    assert pool.next_index == 40
    assert_conserved(pool)


def test_allocate_refuses_the_same_request_id_with_other_parameters(user):
    pool = make_pool(actor=user, fill=1_000)
    first = allocate(pool, 40, request_id="ERP-4711", reference="PO-9")

    with pytest.raises(IdempotencyConflict) as excinfo:
        allocate(pool, 41, request_id="ERP-4711", reference="PO-9")

    assert excinfo.value.message == (
        "Request id 'ERP-4711' was already used on this pool with other parameters (40 serials for packaging_order "
        "'PO-9'); send a new request id for a new request."
    )
    assert (excinfo.value.status_code, excinfo.value.code, excinfo.value.field) == (
        409,
        "idempotency_conflict",
        "request_id",
    )
    assert excinfo.value.details == {"allocation": first.pk}
    with pytest.raises(IdempotencyConflict):
        allocate(pool, 40, request_id="ERP-4711", reference="PO-10")
    pool.refresh_from_db()
    assert (pool.next_index, Allocation.objects.count()) == (40, 1)


def test_the_same_request_id_on_another_pool_is_a_new_request(user):
    pool_a = make_pool(actor=user, fill=100)
    pool_b = make_pool(actor=user, fill=100)

    a = allocate(pool_a, 10, request_id="R-1")
    b = allocate(pool_b, 10, request_id="R-1")

    assert a.pk != b.pk
    assert (ranges_of(a), ranges_of(b)) == ([(0, 10)], [(0, 10)])


def test_allocate_raises_when_pool_exhausted_and_changes_nothing(user):
    pool = make_pool(actor=user, fill=100)
    allocate(pool, 60)
    pool.refresh_from_db()

    with pytest.raises(PoolExhausted) as excinfo:
        allocate(pool, 50, request_id="too-many")

    assert excinfo.value.message == (
        f"{pool} has 40 serials available; 50 were asked. Fill or import more serials, or ask with allow_partial."
    )
    assert excinfo.value.details == {"available": 40, "requested": 50}
    assert (excinfo.value.status_code, excinfo.value.code, excinfo.value.field) == (409, "pool_exhausted", "quantity")
    assert not Allocation.objects.filter(request_id="too-many").exists()
    assert not Allocation.history.filter(request_id="too-many").exists()
    pool.refresh_from_db()
    assert (pool.next_index, pool.free, pool.available) == (60, 0, 40)
    assert_conserved(pool)


def test_allocate_from_an_empty_pool_says_there_is_nothing_even_with_allow_partial(user):
    pool = make_pool(actor=user, fill=0)

    with pytest.raises(PoolExhausted) as excinfo:
        allocate(pool, 1, allow_partial=True)

    assert excinfo.value.message == f"{pool} has 0 serials available; 1 were asked. Fill or import more serials."
    assert excinfo.value.details == {"available": 0, "requested": 1}


def test_allocate_partial_fulfilment_only_with_allow_partial(user):
    pool = make_pool(actor=user, fill=100)
    allocate(pool, 60)
    with pytest.raises(PoolExhausted):
        allocate(pool, 50)

    partial = allocate(pool, 50, allow_partial=True, request_id="partial")

    assert (partial.requested_quantity, partial.quantity, partial.allow_partial) == (50, 40, True)
    assert ranges_of(partial) == [(60, 40)]
    partial.refresh_from_db()
    assert partial.quantity == 40
    assert partial.history.get().quantity == 40  # the trail records what was granted
    # Retrying the partial request answers with the same partial allocation.
    assert allocate(pool, 50, allow_partial=True, request_id="partial").pk == partial.pk
    pool.refresh_from_db()
    assert pool.available == 0
    assert_conserved(pool)


def test_allocate_over_max_per_request_is_refused(user, settings):
    pool = make_pool(actor=user, fill=10_000, max_per_request=1_000)

    with pytest.raises(RequestTooLarge) as excinfo:
        allocate(pool, 1_001)

    assert excinfo.value.message == (
        f"Ask for 1 to 1,000 serials per request from {pool} (asked 1001); split larger needs into several requests."
    )
    assert (excinfo.value.status_code, excinfo.value.field) == (400, "quantity")
    assert excinfo.value.details == {"max_per_request": 1_000, "requested": 1_001}
    with pytest.raises(RequestTooLarge):
        allocate(pool, 0)
    assert allocate(pool, 1_000).quantity == 1_000
    settings.SERIAL_MAX_PER_REQUEST = 500  # the installation-wide cap applies too
    with pytest.raises(RequestTooLarge, match="Ask for 1 to 500 serials"):
        allocate(pool, 501)
    pool.refresh_from_db()
    assert pool.next_index == 1_000


def test_allocate_refuses_missing_request_id_and_unknown_purpose(user):
    pool = make_pool(actor=user, fill=100)

    with pytest.raises(InvalidAllocationRequest) as missing:
        allocate_serials(pool=pool, quantity=1, actor=user, request_id="", purpose="batch")
    with pytest.raises(InvalidAllocationRequest) as unknown:
        allocate(pool, 1, purpose="gift")

    assert missing.value.field == "request_id"
    assert unknown.value.message == "Purpose 'gift' is unknown; use one of packaging_order, batch, cmo, system, print."
    assert not Allocation.objects.exists()


def test_released_ranges_are_handed_out_again_first_lowest_index_first(user):
    pool = make_pool(actor=user, fill=1_000)
    a = allocate(pool, 100)  # 0..99
    allocate(pool, 100)  # 100..199
    release_serials(allocation=a, actor=user, reason="line stopped", indices=[*range(50, 60), *range(10, 20)])
    assert_conserved(pool)
    assert free_ranges(pool) == [(10, 10), (50, 10)]

    pool.refresh_from_db()
    reuse = allocate(pool, 15)
    assert ranges_of(reuse) == [(10, 10), (50, 5)]
    assert free_ranges(pool) == [(55, 5)]
    assert_conserved(pool)

    mixed = allocate(pool, 20)  # a stale pool object (free > 0 then) still sees the truth under the lock
    assert ranges_of(mixed) == [(55, 5), (200, 15)]
    assert free_ranges(pool) == []
    pool.refresh_from_db()
    assert (pool.next_index, pool.free, pool.assigned) == (215, 0, 215)
    assert_conserved(pool)
    # The reissued serials are the very serials released (same index → same serial).
    permutation = pool_permutation(pool)
    assert serials_of(reuse) == permutation.serials(10, 10) + permutation.serials(50, 5)


def test_stale_pool_object_without_free_ranges_still_reuses_released_serials(user):
    pool = make_pool(actor=user, fill=100)
    stale = SerialPool.objects.get(pk=pool.pk)  # free == 0 in this copy
    a = allocate(pool, 10)
    release_serials(allocation=a, actor=user, reason="cancelled")

    again = allocate(stale, 4)

    assert ranges_of(again) == [(0, 4)]
    assert_conserved(pool)


def test_conservation_law_holds_after_every_operation(user):
    rng = random.Random(20240601)
    pool = make_pool(actor=user, fill=2_000)
    live: list[Allocation] = []
    for step in range(60):
        action = rng.random()
        if action < 0.5 or not live:
            try:
                live.append(allocate(pool, rng.randint(1, 120), allow_partial=rng.random() < 0.3))
            except PoolExhausted as exc:
                assert exc.details["available"] < exc.details["requested"]
        elif action < 0.8:
            allocation = rng.choice(live)
            held = [i for first, count in ranges_of(allocation) for i in range(first, first + count)]
            if held:
                chosen = rng.sample(held, rng.randint(1, len(held)))
                release_serials(allocation=allocation, actor=user, reason=f"step {step}", indices=chosen)
        elif action < 0.9:
            fill_pool(pool=pool, quantity=rng.randint(1, 200), actor=user)
        else:
            allocation = rng.choice(live)
            try:
                release_serials(allocation=allocation, actor=user, reason="close")
            except ReleaseRefused as exc:
                assert exc.message.startswith("Nothing to release")
        assert_conserved(pool)
        pool.refresh_from_db()
    # No serial is held twice across the live allocations.
    held_serials = [s for allocation in Allocation.objects.filter(pool=pool) for s in serials_of(allocation)]
    assert len(held_serials) == len(set(held_serials)) == pool.assigned


def test_consecutive_randomised_allocations_give_distinct_unordered_serials(user):
    pool = make_pool(actor=user, fill=100_000)

    allocations = [allocate(pool, 2_000) for _ in range(5)]

    serials = [s for a in allocations for s in serials_of(a)]
    assert len(serials) == len(set(serials)) == 10_000
    assert all(len(s) == 12 and set(s) <= set(UPPER_ALNUM) for s in serials)
    assert serials != sorted(serials)
    # Materialising a range equals materialising index by index.
    permutation = pool_permutation(pool)
    assert serials[:50] == [permutation.serial_at(i) for i in range(50)]


# --- release ----------------------------------------------------------------------------------------------------------


def commission(pool: SerialPool, indices: list[int]) -> None:
    permutation = pool_permutation(pool)
    Pack.objects.bulk_create(
        Pack(
            pool=pool,
            index=i,
            product_code=pool.product_code,
            serial=permutation.serial_at(i),
            commissioned_at=timezone.now(),
        )
        for i in indices
    )


def test_release_of_all_unused_serials_keeps_commissioned_ones_assigned(user):
    pool = make_pool(actor=user, fill=100)
    allocate(pool, 5)  # 0..4, another order
    allocation = allocate(pool, 10)  # 5..14
    commission(pool, [7, 8, 12])

    release = release_serials(allocation=allocation, actor=user, reason="order closed")

    assert (release.quantity, release.reason, release.released_by) == (7, "order closed", user)
    allocation.refresh_from_db()
    assert (allocation.quantity, allocation.released, allocation.active_quantity) == (10, 7, 3)
    assert ranges_of(allocation) == [(7, 2), (12, 1)]
    assert free_ranges(pool) == [(5, 2), (9, 3), (13, 2)]
    pool.refresh_from_db()
    assert (pool.free, pool.assigned, pool.available) == (7, 8, 92)
    assert_conserved(pool)
    permutation = pool_permutation(pool)
    commissioned = lookup_serial(product_code=pool.product_code, serial=permutation.serial_at(8))
    assert (commissioned.status, commissioned.allocation, commissioned.pack.index) == ("assigned", allocation, 8)
    with pytest.raises(ReleaseRefused, match="Nothing to release"):
        release_serials(allocation=allocation, actor=user, reason="again")


def test_release_of_explicit_indices(user):
    pool = make_pool(actor=user, fill=100)
    allocation = allocate(pool, 10)  # 0..9

    release = release_serials(allocation=allocation, actor=user, reason="damaged labels", indices=[8, 5, 6, 6])

    assert release.quantity == 3
    assert ranges_of(allocation) == [(0, 5), (7, 1), (9, 1)]
    assert free_ranges(pool) == [(5, 2), (8, 1)]
    assert_conserved(pool)


def test_release_refuses_a_commissioned_index_and_changes_nothing(user):
    pool = make_pool(actor=user, fill=100)
    allocation = allocate(pool, 10)
    commission(pool, [3])

    with pytest.raises(ReleaseRefused) as excinfo:
        release_serials(allocation=allocation, actor=user, reason="mistake", indices=[2, 3, 4])

    assert excinfo.value.message == (
        "1 of the given serials were commissioned and can never be released; remove them and retry."
    )
    assert (excinfo.value.status_code, excinfo.value.details) == (409, {"commissioned": 1})
    assert ranges_of(allocation) == [(0, 10)]
    assert free_ranges(pool) == []
    assert not Release.objects.exists()
    allocation.refresh_from_db()
    assert allocation.released == 0
    assert_conserved(pool)


def test_release_refuses_indices_the_allocation_does_not_hold(user):
    pool = make_pool(actor=user, fill=100)
    allocate(pool, 10)  # 0..9
    allocation = allocate(pool, 10, request_id="order-2")  # 10..19

    with pytest.raises(ReleaseRefused) as excinfo:
        release_serials(allocation=allocation, actor=user, reason="x", indices=[12, 3, 25, 26])

    assert excinfo.value.message == (
        "3 of the given serials are not held by this allocation (the first at index 3); release only serials of "
        "allocation 'order-2'."
    )
    assert_conserved(pool)


def test_release_requires_a_reason(user):
    pool = make_pool(actor=user, fill=100)
    allocation = allocate(pool, 10)

    with pytest.raises(ReleaseRefused) as excinfo:
        release_serials(allocation=allocation, actor=user, reason="   ")

    assert (excinfo.value.message, excinfo.value.field) == (
        "Say why the serials are released (the reason is kept in the record).",
        "reason",
    )
    assert ranges_of(allocation) == [(0, 10)]


def test_release_leaves_a_release_row_and_a_history_row_with_who_and_why(user):
    pool = make_pool(actor=user, fill=100)
    requester = make_user(username="erp")
    allocation = allocate(pool, 10, actor=requester)

    release_serials(allocation=allocation, actor=user, reason="  batch cancelled by QA  ", indices=[0, 1])

    release = Release.objects.get()
    assert (release.allocation, release.quantity, release.reason, release.released_by) == (
        allocation,
        2,
        "batch cancelled by QA",
        user,
    )
    latest, created = allocation.history.order_by("-history_id")
    assert (latest.history_type, latest.released, latest.history_change_reason, latest.history_user) == (
        "~",
        2,
        "batch cancelled by QA",
        user,
    )
    assert (created.history_type, created.released, created.history_user) == ("+", 0, requester)


# --- lookup -----------------------------------------------------------------------------------------------------------


def test_lookup_of_a_generated_serial_gives_pool_index_allocation_and_status(user, django_assert_max_num_queries):
    pool = make_pool(actor=user, fill=500)
    for _ in range(30):  # many ranges before the one looked up: the lookup must not scan them
        allocate(pool, 7)
    allocation = allocate(pool, 20)
    serial = serials_of(allocation)[5]

    # Listed serial? (miss) · the product code's generated pool · the range at or below the index · its pack.
    with django_assert_max_num_queries(4):
        found = lookup_serial(product_code=pool.product_code, serial=serial)

    assert (found.pool, found.index, found.status, found.allocation, found.pack) == (
        pool,
        215,
        SerialStatus.ASSIGNED,
        allocation,
        None,
    )
    with django_assert_max_num_queries(4):
        spare = lookup_serial(product_code=pool.product_code, serial=pool_permutation(pool).serial_at(400))
    assert (spare.index, spare.status, spare.allocation) == (400, SerialStatus.AVAILABLE, None)


def test_lookup_of_a_listed_serial(user, django_assert_max_num_queries):
    product = make_product(markets=["RU"])
    pool = create_list_pool(owner=product.owner, actor=user, product=product, source=SerialPool.Source.TRACELINK)
    serials = [f"RU{n:011d}" for n in range(50)]
    ListedSerial.objects.bulk_create(
        ListedSerial(pool=pool, ordinal=i, product_code=product.product_code, serial=s, parameters={"91": "ab12"})
        for i, s in enumerate(serials)
    )
    SerialPool.objects.filter(pk=pool.pk).update(filled=len(serials))  # what an import does
    pool.refresh_from_db()
    allocate(pool, 10)
    allocation = allocate(pool, 10)  # ordinals 10..19

    with django_assert_max_num_queries(3):
        found = lookup_serial(product_code=product.product_code, serial="RU00000000013")
    with django_assert_max_num_queries(3):
        spare = lookup_serial(product_code=product.product_code, serial="RU00000000042")

    assert (found.pool, found.index, found.status, found.allocation) == (pool, 13, "assigned", allocation)
    assert (spare.pool, spare.index, spare.status, spare.allocation) == (pool, 42, "available", None)
    assert_conserved(pool)


def test_lookup_of_a_released_serial_says_available(user):
    pool = make_pool(actor=user, fill=100)
    allocation = allocate(pool, 10)
    serial = serials_of(allocation)[4]

    release_serials(allocation=allocation, actor=user, reason="not printed", indices=[4])

    found = lookup_serial(product_code=pool.product_code, serial=serial)
    assert (found.index, found.status, found.allocation) == (4, SerialStatus.AVAILABLE, None)
    reissued = allocate(pool, 1)
    assert serials_of(reissued) == [serial]
    assert lookup_serial(product_code=pool.product_code, serial=serial).allocation == reissued


def test_lookup_of_an_unknown_serial_is_404_with_a_message(user):
    pool = make_pool(actor=user, fill=100)
    beyond_filled = pool_permutation(pool).serial_at(100)

    for serial in ["NOT-IN-POOL", "abcdefghijkl", beyond_filled]:
        with pytest.raises(UnknownSerial) as excinfo:
            lookup_serial(product_code=pool.product_code, serial=serial)
        assert excinfo.value.message == (
            f"Serial {serial!r} of {pool.product_code} is in no pool: it was never generated or imported here. "
            "Check the product code and the serial."
        )
        assert (excinfo.value.status_code, excinfo.value.code) == (404, "unknown_serial")
    with pytest.raises(UnknownSerial):
        lookup_serial(product_code="09521234543213", serial="000000000001")


# --- keys -------------------------------------------------------------------------------------------------------------


def test_pool_key_is_stored_only_wrapped(user):
    pool = make_pool(actor=user, fill=10)

    raw = keys.unwrap_pool_key(pool.encrypted_key)

    assert len(raw) == 32
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {SerialPool._meta.db_table} WHERE id = %s", [pool.pk])  # noqa: S608
        row = cursor.fetchone()
        cursor.execute(f"SELECT * FROM {SerialPool.history.model._meta.db_table}")  # noqa: S608
        history_rows = cursor.fetchall()
    spellings = [raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]
    for value in [*row, *(v for h in history_rows for v in h)]:
        if isinstance(value, bytes | memoryview):
            assert raw not in bytes(value)
        elif isinstance(value, str):
            assert not any(spelling in value for spelling in spellings)
            assert raw.decode("latin-1") not in value
    assert pool.encrypted_key.startswith("gAAAAA")  # a Fernet token


def test_unwrapped_pool_key_gives_the_same_serials_and_survives_master_key_rotation(user, settings):
    pool = make_pool(actor=user, fill=100)
    allocation = allocate(pool, 25)
    expected = serials_of(allocation)

    fmt = SerialFormat(alphabet=pool.alphabet, length=pool.length)
    assert SerialPermutation(fmt, keys.unwrap_pool_key(pool.encrypted_key)).serials(0, 25) == expected

    settings.SERIAL_MASTER_KEYS = [Fernet.generate_key().decode(), *settings.SERIAL_MASTER_KEYS]
    rewrapped = keys.rewrap_pool_key(pool.encrypted_key)
    assert rewrapped != pool.encrypted_key
    SerialPool.objects.filter(pk=pool.pk).update(encrypted_key=rewrapped)
    settings.SERIAL_MASTER_KEYS = settings.SERIAL_MASTER_KEYS[:1]  # the old master key retired
    pool.refresh_from_db()
    assert serials_of(allocation) == expected

    settings.SERIAL_MASTER_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(ImproperlyConfigured, match="cannot be unwrapped"):
        pool_permutation(pool)


def test_two_pools_get_different_keys_and_different_serials(user):
    a = make_pool(actor=user, fill=100)
    b = make_pool(actor=user, fill=100)

    assert keys.unwrap_pool_key(a.encrypted_key) != keys.unwrap_pool_key(b.encrypted_key)
    assert pool_permutation(a).serials(0, 20) != pool_permutation(b).serials(0, 20)


# --- interval arithmetic ----------------------------------------------------------------------------------------------


def test_runs_subtract_and_intersect():
    assert runs_of(np.array([3, 4, 5, 9, 11, 12])) == [(3, 3), (9, 1), (11, 2)]
    assert runs_of(np.array([], dtype=np.int64)) == []
    assert subtract([(0, 10), (20, 5)], [(2, 3), (8, 14)]) == [(0, 2), (5, 3), (22, 3)]
    assert subtract([(0, 10)], []) == [(0, 10)]
    assert subtract([(0, 10)], [(0, 10)]) == []
    assert intersect([(0, 10), (20, 5)], [(2, 3), (8, 14)]) == [(2, 3), (8, 2), (20, 2)]


def test_subtract_matches_set_arithmetic_on_random_intervals():
    rng = random.Random(7)
    for _ in range(300):
        a = sorted(rng.sample(range(200), rng.randint(0, 120)))
        b = sorted(rng.sample(range(200), rng.randint(0, 120)))
        runs_a, runs_b = runs_of(np.array(a, dtype=np.int64)), runs_of(np.array(b, dtype=np.int64))
        expand = lambda runs: [i for f, c in runs for i in range(f, f + c)]  # noqa: E731
        assert expand(subtract(runs_a, runs_b)) == sorted(set(a) - set(b))
        assert expand(intersect(runs_a, runs_b)) == sorted(set(a) & set(b))


# --- allocation outside a transaction: the one-statement path on PostgreSQL ------------------------------------------
# The tests above run inside the test's transaction, where allocate_serials takes the cursor-first or the general
# path. A real request calls it outside any transaction; on PostgreSQL that is one statement plus a flush barrier.


def ensure_eu_market() -> None:
    """The seeded EU market, again: a transactional test before this one may have flushed it."""
    Market.objects.get_or_create(
        code="EU",
        defaults={
            "name": "European Union (FMD)",
            "serial_alphabet": UPPER_ALNUM,
            "serial_length": 12,
            "randomisation_required": True,
            "max_guess_probability": EU_BOUND,
            "retention_years_after_expiry": 1,
            "retention_years_after_release": 5,
            "reporting_format": Market.ReportingFormat.EU_HUB,
        },
    )


@pytest.mark.django_db(transaction=True)
def test_allocation_outside_a_transaction_records_the_same_rows_in_two_queries():
    ensure_eu_market()
    steward = make_user(username="erp-system")
    pool = make_pool(actor=steward, fill=10_000)
    allocate(pool, 100)

    with CaptureQueriesContext(connection) as queries:
        allocation = allocate(pool, 250, actor=steward, request_id="ERP-1", reference="PO-7")

    if connection.vendor == "postgresql":
        # The statement prepared on this connection by the first allocation, then the flush barrier.
        assert len(queries) == 2
        assert queries[0]["sql"].startswith("EXECUTE serialization_allocate")
        assert "set_config('synchronous_commit', 'off', true)" in _prepared_sql()[0]
        assert "pg_logical_emit_message" in queries[1]["sql"]
    stored = Allocation.objects.get(pk=allocation.pk)
    for field in ("pool_id", "request_id", "purpose", "reference", "requested_quantity", "quantity", "released"):
        assert getattr(stored, field) == getattr(allocation, field)
    assert (stored.quantity, stored.requested_by, stored.fingerprint) == (250, steward, allocation.fingerprint)
    assert stored.created_at == allocation.created_at
    assert ranges_of(stored) == [(100, 250)]
    history = stored.history.get()
    assert (history.history_type, history.history_user, history.quantity, history.request_id) == (
        "+",
        steward,
        250,
        "ERP-1",
    )
    assert history.history_change_reason is None
    assert history.created_at == stored.created_at
    assert serials_of(stored) == pool_permutation(pool).serials(100, 250)
    # Retried: the same allocation; with other parameters: 409; the cursor moved once.
    assert allocate(pool, 250, request_id="ERP-1", reference="PO-7").pk == allocation.pk
    with pytest.raises(IdempotencyConflict):
        allocate(pool, 251, request_id="ERP-1", reference="PO-7")
    assert_conserved(pool)
    assert pool.next_index == 350


@pytest.mark.django_db(transaction=True)
def test_a_blocked_pool_refuses_allocation_on_every_path_and_moves_nothing():
    ensure_eu_market()
    steward = make_user(username="mah-steward")
    pool = make_pool(actor=steward, fill=1_000)
    allocate(pool, 100)  # prepares the one-statement path on PostgreSQL
    block_pool(pool=pool, actor=steward, reason="partnership with Acme revoked")

    with pytest.raises(PoolBlocked, match="takes no new allocations: partnership with Acme revoked"):
        allocate(pool, 10)  # outside a transaction: the one statement's WHERE refuses, the locked path says why
    with pytest.raises(PoolBlocked), transaction.atomic():
        allocate(pool, 10)  # inside one: the locked path
    pool.refresh_from_db()
    assert (pool.next_index, pool.assigned, pool.available) == (100, 100, 900)
    assert_conserved(pool)


@pytest.mark.django_db(transaction=True)
def test_allocation_outside_a_transaction_falls_back_to_the_general_path():
    ensure_eu_market()
    steward = make_user(username="qa")
    pool = make_pool(actor=steward, fill=300)
    first = allocate(pool, 100)  # 0..99
    release_serials(allocation=first, actor=steward, reason="reprint", indices=range(20, 30))
    pool.refresh_from_db()

    stale = SerialPool.objects.get(pk=pool.pk)
    stale.free = 0  # a copy that misses the release: the one statement refuses to move the cursor past it
    reuse = allocate(stale, 15)
    assert ranges_of(reuse) == [(20, 10), (100, 5)]
    with pytest.raises(PoolExhausted) as excinfo:
        allocate(pool, 500)
    assert excinfo.value.details == {"available": 195, "requested": 500}
    partial = allocate(pool, 500, allow_partial=True)
    assert (partial.quantity, ranges_of(partial)) == (195, [(105, 195)])
    assert partial.history.get().quantity == 195
    assert_conserved(pool)


@pytest.mark.django_db(transaction=True)
def test_allocation_survives_a_session_that_lost_its_prepared_statement():
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are used on PostgreSQL only")
    ensure_eu_market()
    pool = make_pool(actor=make_user(), fill=1_000)
    allocate(pool, 10)  # prepares the statement on this connection
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what a connection pooler's DISCARD ALL does

    after = allocate(pool, 20)
    again = allocate(pool, 30)  # prepared anew

    assert (ranges_of(after), ranges_of(again)) == ([(10, 20)], [(30, 30)])
    assert_conserved(pool)
