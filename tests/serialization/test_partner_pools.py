"""A CMO's share of an MAH pool: sharing, the CMO's own allocations from it, materialisation and lookup through the
segments, hand-backs to the MAH — with the conservation law checked on both pools after every step."""

import itertools

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from serialization.exceptions import (
    IdempotencyConflict,
    InvalidAllocationRequest,
    PoolExhausted,
    ReleaseRefused,
)
from serialization.models import Allocation, AllocationRange, FreeRange, ListedSerial, Pack, PartnerSegment, SerialPool
from serialization.services import (
    SerialStatus,
    allocate_serials,
    create_generated_pool,
    create_list_pool,
    index_in_pool,
    lookup_serial,
    partner_pool_counts,
    release_serials,
    return_partner_serials,
    share_allocation,
)
from serialization.services.materialise import indices_of_serials, iter_serial_chunks
from tests.factories import make_company, make_product, make_user
from tests.serialization.test_services import ensure_eu_market

pytestmark = pytest.mark.django_db


# --- helpers ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def user():
    return make_user(username="steward")


def make_cmo(name: str):
    return make_company(name=name, is_cmo=True, is_mah=False, prefixes=[])


def mah_pool(*, fill=10_000, **options) -> SerialPool:
    product = make_product(markets=("EU",))
    return create_generated_pool(owner=product.owner, actor=None, product=product, initial_fill=fill, **options)


def mah_list_pool(serials: list[str]) -> SerialPool:
    product = make_product(markets=("RU",))
    pool = create_list_pool(owner=product.owner, actor=None, product=product, source=SerialPool.Source.FILE)
    ListedSerial.objects.bulk_create(
        ListedSerial(pool=pool, ordinal=i, product_code=pool.product_code, serial=s) for i, s in enumerate(serials)
    )
    SerialPool.objects.filter(pk=pool.pk).update(filled=len(serials))  # what an import does to the counter
    pool.refresh_from_db()
    return pool


_request_numbers = itertools.count(1)


def allocate(pool: SerialPool, quantity: int, *, purpose=Allocation.Purpose.PACKAGING_ORDER, actor=None) -> Allocation:
    return allocate_serials(
        pool=pool, quantity=quantity, actor=actor, request_id=f"req-{next(_request_numbers)}", purpose=purpose
    )


def assign(pool: SerialPool, quantity: int, partner, *, actor=None) -> tuple[Allocation, SerialPool]:
    """What the MAH's assignment workflow does: one allocation for the CMO, shared with it."""
    allocation = allocate(pool, quantity, purpose=Allocation.Purpose.CMO, actor=actor)
    return allocation, share_allocation(allocation=allocation, partner=partner, actor=actor)


def serials_of(allocation: Allocation) -> list[str]:
    allocation.refresh_from_db()
    return [value.decode() for chunk in iter_serial_chunks(allocation) for value in chunk.tolist()]


def segments(pool: SerialPool) -> list[tuple[int, int, int, int]]:
    return list(
        PartnerSegment.objects.filter(pool=pool)
        .order_by("first_index")
        .values_list("first_index", "count", "parent_first_index", "allocation")
    )


def counts(pool: SerialPool) -> dict:
    return partner_pool_counts(partner_pool=pool)


def assert_conserved(*pools: SerialPool) -> None:
    """available + assigned = filled, the counters agree with the range rows, which never overlap and cover every
    index below the cursor once; for a partner pool also: its segments cover [0, filled) exactly once."""
    for pool in pools:
        pool.refresh_from_db()
        held = list(AllocationRange.objects.filter(pool=pool).values_list("first_index", "count"))
        free = list(FreeRange.objects.filter(pool=pool).values_list("first_index", "count"))
        assert pool.available + pool.assigned == pool.filled
        assert pool.available >= 0
        assert pool.assigned == sum(count for _, count in held)
        assert pool.free == sum(count for _, count in free)
        spans = sorted(held + free)
        for (first, count), (next_first, _) in itertools.pairwise(spans):
            assert first + count <= next_first, f"ranges overlap at index {next_first} of {pool}"
        assert sum(count for _, count in spans) == pool.next_index
        assert all(first + count <= pool.next_index for first, count in spans)
        active = sum(a.quantity - a.released for a in Allocation.objects.filter(pool=pool))
        assert active == pool.assigned
        if pool.source == SerialPool.Source.PARTNER:
            position = 0
            for first, count, _, _ in segments(pool):
                assert first == position
                position += count
            assert position == pool.filled
            numbers = counts(pool)
            assert numbers["assigned"] + numbers["available"] + numbers["returned"] == numbers["filled"]


def commission(pool: SerialPool, indices: list[int], serials: list[str]) -> None:
    Pack.objects.bulk_create(
        Pack(pool=pool, index=i, product_code=pool.product_code, serial=s, commissioned_at=timezone.now())
        for i, s in zip(indices, serials, strict=True)
    )


# --- sharing ----------------------------------------------------------------------------------------------------------


def test_sharing_an_allocation_makes_its_serials_available_in_the_cmo_partner_pool(user):
    pool = mah_pool()
    allocate(pool, 40)  # an MAH order before
    cmo = make_cmo("Contract Pack GmbH")

    allocation, partner_pool = assign(pool, 1_000, cmo, actor=user)

    pool.refresh_from_db()
    assert (pool.filled, pool.assigned, pool.available) == (10_000, 1_040, 8_960)
    assert (partner_pool.owner, partner_pool.parent_pool, partner_pool.source, partner_pool.kind) == (
        cmo,
        pool,
        SerialPool.Source.PARTNER,
        SerialPool.Kind.SGTIN,
    )
    assert (partner_pool.product, partner_pool.product_code) == (pool.product, pool.product_code)
    assert (partner_pool.alphabet, partner_pool.length, partner_pool.randomised) == (pool.alphabet, 12, True)
    assert partner_pool.encrypted_key == ""  # the MAH's pool key never leaves the MAH pool
    assert (partner_pool.filled, partner_pool.next_index, partner_pool.free) == (1_000, 0, 0)
    assert counts(partner_pool) == {"filled": 1_000, "assigned": 0, "available": 1_000, "returned": 0}
    assert segments(partner_pool) == [(0, 1_000, 40, allocation.pk)]
    fill = partner_pool.fills.get()
    assert (fill.quantity, fill.filled_after, fill.actor) == (1_000, 1_000, user)
    assert fill.reason == f"shared by {pool.owner.name}: allocation {allocation.request_id}"
    assert partner_pool.history.first().history_user == user
    assert_conserved(pool, partner_pool)


def test_a_million_serials_shared_is_one_segment_row(settings):
    settings.SERIAL_MAX_PER_REQUEST = 1_000_000
    pool = mah_pool(fill=1_500_000, max_per_request=1_000_000)
    allocation = allocate(pool, 1_000_000, purpose=Allocation.Purpose.CMO)

    with CaptureQueriesContext(connection) as queries:
        partner_pool = share_allocation(allocation=allocation, partner=make_cmo("Big CMO"), actor=None)

    table = PartnerSegment._meta.db_table
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(f'INSERT INTO "{table}"')]
    assert len(inserts) == 1
    assert segments(partner_pool) == [(0, 1_000_000, 0, allocation.pk)]
    assert counts(partner_pool) == {"filled": 1_000_000, "assigned": 0, "available": 1_000_000, "returned": 0}
    assert_conserved(pool, partner_pool)


def test_sharing_the_same_allocation_twice_changes_nothing(user):
    pool = mah_pool()
    cmo = make_cmo("CMO A")
    allocation, partner_pool = assign(pool, 1_000, cmo)

    again = share_allocation(allocation=allocation, partner=cmo, actor=user)

    assert again == partner_pool
    assert (again.filled, partner_pool.fills.count(), segments(again)) == (1_000, 1, [(0, 1_000, 0, allocation.pk)])
    with pytest.raises(IdempotencyConflict) as excinfo:
        share_allocation(allocation=allocation, partner=make_cmo("CMO B"), actor=user)
    assert excinfo.value.message == (
        f"Allocation {allocation.request_id!r} was shared with CMO A already; an allocation is shared with one "
        "partner. Allocate anew for this partner."
    )
    assert SerialPool.objects.filter(source=SerialPool.Source.PARTNER).count() == 1
    assert_conserved(pool, partner_pool)


def test_a_second_assignment_to_the_same_cmo_continues_its_index_space():
    pool = mah_pool()
    cmo = make_cmo("CMO A")
    first, partner_pool = assign(pool, 1_000, cmo)
    second, same_pool = assign(pool, 500, cmo)

    assert same_pool == partner_pool
    assert segments(partner_pool) == [(0, 1_000, 0, first.pk), (1_000, 500, 1_000, second.pk)]
    assert counts(partner_pool) == {"filled": 1_500, "assigned": 0, "available": 1_500, "returned": 0}
    assert_conserved(pool, partner_pool)


def test_share_refuses_other_purposes_partner_pools_and_the_owner_itself():
    pool = mah_pool()
    cmo = make_cmo("CMO A")
    order = allocate(pool, 10)
    with pytest.raises(InvalidAllocationRequest) as excinfo:
        share_allocation(allocation=order, partner=cmo, actor=None)
    assert excinfo.value.message == (
        f"Allocation {order.request_id!r} is for packaging order / line; share only allocations made for a CMO "
        "(purpose cmo)."
    )
    _, partner_pool = assign(pool, 100, cmo)
    with pytest.raises(InvalidAllocationRequest, match="Only allocations of an MAH's own unit pool can be shared"):
        share_allocation(
            allocation=allocate(partner_pool, 10, purpose=Allocation.Purpose.CMO), partner=make_cmo("B"), actor=None
        )
    with pytest.raises(InvalidAllocationRequest, match=r"owns .* already; share with another company"):
        share_allocation(allocation=allocate(pool, 5, purpose=Allocation.Purpose.CMO), partner=pool.owner, actor=None)
    emptied = allocate(pool, 5, purpose=Allocation.Purpose.CMO)
    release_serials(allocation=emptied, actor=None, reason="not needed")
    with pytest.raises(InvalidAllocationRequest, match="holds no serials any more"):
        share_allocation(allocation=emptied, partner=make_cmo("C"), actor=None)
    assert SerialPool.objects.filter(source=SerialPool.Source.PARTNER).count() == 1  # the refused ones left no pool
    assert_conserved(pool, partner_pool)


# --- the CMO's allocations, materialisation and lookup ---------------------------------------------------------------


def test_cmo_allocation_gives_exactly_serials_of_the_mah_allocation_and_lookup_shows_the_partner_level(
    django_assert_max_num_queries,
):
    pool = mah_pool()
    cmo = make_cmo("CMO A")
    assignment, partner_pool = assign(pool, 1_000, cmo)
    mah_serials = serials_of(assignment)

    order = allocate(partner_pool, 300)

    cmo_serials = serials_of(order)
    assert cmo_serials == mah_serials[:300]
    assert len(set(cmo_serials)) == 300
    assert counts(partner_pool) == {"filled": 1_000, "assigned": 300, "available": 700, "returned": 0}
    pool.refresh_from_db()
    assert (pool.assigned, pool.available) == (1_000, 9_000)  # the MAH's view: all 1,000 assigned to the CMO
    assert_conserved(pool, partner_pool)

    with django_assert_max_num_queries(6):  # pool, range, pack, segment, partner range (+ a list-pool probe)
        used = lookup_serial(product_code=pool.product_code, serial=cmo_serials[17])
    assert (used.pool, used.index, used.status, used.allocation) == (pool, 17, SerialStatus.ASSIGNED, order)
    assert (used.partner_pool, used.partner_index, used.assignment) == (partner_pool, 17, assignment)
    spare = lookup_serial(product_code=pool.product_code, serial=mah_serials[650])
    assert (spare.status, spare.allocation, spare.partner_pool, spare.partner_index) == (
        SerialStatus.AVAILABLE,
        None,
        partner_pool,
        650,
    )
    other = lookup_serial(product_code=pool.product_code, serial=serials_of(allocate(pool, 1))[0])
    assert (other.index, other.status, other.partner_pool, other.partner_index) == (
        1_000,
        SerialStatus.ASSIGNED,
        None,
        None,
    )


def test_a_cmo_range_crossing_segments_materialises_in_partner_index_order():
    pool = mah_pool()
    first_order = allocate(pool, 100)  # 0..99
    release_serials(allocation=first_order, actor=None, reason="order cancelled", indices=range(20, 30))
    # Released serials are handed out first: the CMO's allocation holds [20, 30) and [100, 140).
    assignment, partner_pool = assign(pool, 50, make_cmo("CMO A"))
    assert segments(partner_pool) == [(0, 10, 20, assignment.pk), (10, 40, 100, assignment.pk)]
    mah_serials = serials_of(assignment)

    allocate(partner_pool, 5)
    crossing = allocate(partner_pool, 10)  # partner [5, 15): parent [25, 30) + [100, 105)

    assert serials_of(crossing) == mah_serials[5:15]
    chunked = [len(c) for c in iter_serial_chunks(crossing, chunk_size=4)]
    assert chunked == [4, 1, 4, 1] and sum(chunked) == 10
    assert indices_of_serials(partner_pool, [mah_serials[12], mah_serials[7]]) == [12, 7]
    assert index_in_pool(pool=pool, product_code=pool.product_code, serial=mah_serials[12]) == 102
    assert index_in_pool(pool=partner_pool, product_code=pool.product_code, serial=mah_serials[12]) == 12
    assert_conserved(pool, partner_pool)


def test_two_cmos_get_disjoint_serials():
    pool = mah_pool()
    a_assignment, a_pool = assign(pool, 400, make_cmo("CMO A"))
    b_assignment, b_pool = assign(pool, 600, make_cmo("CMO B"))

    a_serials = serials_of(allocate(a_pool, 400))
    b_serials = serials_of(allocate(b_pool, 600))

    assert a_pool != b_pool
    assert (a_serials, b_serials) == (serials_of(a_assignment), serials_of(b_assignment))
    assert not set(a_serials) & set(b_serials)
    assert len(set(a_serials + b_serials)) == 1_000
    assert index_in_pool(pool=b_pool, product_code=pool.product_code, serial=a_serials[0]) is None
    assert lookup_serial(product_code=pool.product_code, serial=b_serials[3]).partner_pool == b_pool
    assert_conserved(pool, a_pool, b_pool)


def test_a_list_pool_parent_works_the_same(user):
    listed = [f"RU{i:011d}" for i in range(20)]
    pool = mah_list_pool(listed)
    allocate(pool, 4)  # ordinals 0..3 for an MAH order
    assignment, partner_pool = assign(pool, 10, make_cmo("CMO A"))  # ordinals 4..13

    order = allocate(partner_pool, 6)

    assert serials_of(assignment) == listed[4:14]
    assert serials_of(order) == listed[4:10]
    found = lookup_serial(product_code=pool.product_code, serial="RU00000000007")
    assert (found.pool, found.index, found.status, found.allocation) == (pool, 7, SerialStatus.ASSIGNED, order)
    assert (found.partner_pool, found.partner_index) == (partner_pool, 3)
    assert index_in_pool(pool=partner_pool, product_code=pool.product_code, serial="RU00000000012") == 8
    assert index_in_pool(pool=pool, product_code=pool.product_code, serial="RU00000000012") == 12
    assert index_in_pool(pool=partner_pool, product_code=pool.product_code, serial="RU00000000002") is None

    assert return_partner_serials(partner_pool=partner_pool, actor=user, reason="batch cancelled") == 4
    assert counts(partner_pool) == {"filled": 10, "assigned": 6, "available": 0, "returned": 4}
    assert serials_of(allocate(pool, 4)) == listed[10:14]
    assert_conserved(pool, partner_pool)


def test_index_in_pool_for_generated_pools_and_unknown_serials():
    pool = mah_pool(fill=100)
    serial = serials_of(allocate(pool, 10))[3]
    assert index_in_pool(pool=pool, product_code=pool.product_code, serial=serial) == 3
    assert index_in_pool(pool=pool, product_code="09521234543213", serial=serial) is None
    assert index_in_pool(pool=pool, product_code=pool.product_code, serial="not a serial") is None
    company = make_company()
    sscc_pool = create_generated_pool(
        owner=company, actor=None, sscc_prefix=company.prefixes.get(), extension_digit="3", initial_fill=100
    )
    sscc = serials_of(allocate(sscc_pool, 8))[6]
    assert index_in_pool(pool=sscc_pool, product_code="", serial=sscc) == 6
    wrong_check_digit = sscc[:-1] + str((int(sscc[-1]) + 1) % 10)
    assert index_in_pool(pool=sscc_pool, product_code="", serial=wrong_check_digit) is None


# --- releases and hand-backs ------------------------------------------------------------------------------------------


def test_returning_all_unused_serials_gives_them_back_to_the_mah_and_they_are_handed_out_next(user):
    pool = mah_pool()
    cmo = make_cmo("CMO A")
    assignment, partner_pool = assign(pool, 1_000, cmo)
    mah_serials = serials_of(assignment)
    order = allocate(partner_pool, 300)
    pool.refresh_from_db()
    mah_available = pool.available

    returned = return_partner_serials(partner_pool=partner_pool, actor=user, reason="campaign finished")

    assert returned == 700
    assert counts(partner_pool) == {"filled": 1_000, "assigned": 300, "available": 0, "returned": 700}
    pool.refresh_from_db()
    assert pool.available == mah_available + 700
    assignment.refresh_from_db()
    assert (assignment.released, assignment.active_quantity) == (700, 300)
    release = assignment.releases.get()
    assert (release.quantity, release.reason, release.released_by) == (
        700,
        "returned by the partner: campaign finished",
        user,
    )
    hand_back = Allocation.objects.get(pool=partner_pool, purpose=Allocation.RETURNED)
    assert (hand_back.quantity, hand_back.requested_by, hand_back.reference) == (
        700,
        user,
        f"returned to {pool.owner.name}",
    )
    assert hand_back.history.get().history_change_reason == "campaign finished"
    assert list(hand_back.ranges.values_list("first_index", "count")) == [(300, 700)]
    assert_conserved(pool, partner_pool)
    # The CMO's order keeps its serials; the returned ones are the MAH's again, and issued next.
    assert serials_of(order) == mah_serials[:300]
    next_mah_order = allocate(pool, 700)
    assert serials_of(next_mah_order) == mah_serials[300:]
    found = lookup_serial(product_code=pool.product_code, serial=mah_serials[500])
    assert (found.allocation, found.partner_pool, found.partner_index) == (next_mah_order, None, None)
    assert return_partner_serials(partner_pool=partner_pool, actor=user, reason="again") == 0  # nothing left: a no-op
    with pytest.raises(PoolExhausted):
        allocate(partner_pool, 1)
    assert_conserved(pool, partner_pool)


def test_returning_part_of_the_serials_and_more_than_available(user):
    pool = mah_pool()
    assignment, partner_pool = assign(pool, 1_000, make_cmo("CMO A"))
    mah_serials = serials_of(assignment)
    allocate(partner_pool, 100)

    assert return_partner_serials(partner_pool=partner_pool, actor=user, reason="too many", quantity=200) == 200

    assert counts(partner_pool) == {"filled": 1_000, "assigned": 100, "available": 700, "returned": 200}
    assert_conserved(pool, partner_pool)
    with pytest.raises(PoolExhausted) as excinfo:
        return_partner_serials(partner_pool=partner_pool, actor=user, reason="too many", quantity=701)
    assert excinfo.value.message == (
        f"{partner_pool} has 700 serials available to return; 701 were asked. Return at most 700."
    )
    assert excinfo.value.details == {"available": 700, "requested": 701}
    assert counts(partner_pool) == {"filled": 1_000, "assigned": 100, "available": 700, "returned": 200}
    # The CMO continues after the returned ones.
    assert serials_of(allocate(partner_pool, 10)) == mah_serials[300:310]
    assert_conserved(pool, partner_pool)


def test_return_refuses_without_a_reason_a_bad_quantity_and_pools_that_are_not_partner_pools():
    pool = mah_pool()
    _, partner_pool = assign(pool, 10, make_cmo("CMO A"))
    with pytest.raises(ReleaseRefused, match="Say why the serials are returned"):
        return_partner_serials(partner_pool=partner_pool, actor=None, reason="  ")
    with pytest.raises(InvalidAllocationRequest, match="Return a positive number of serials"):
        return_partner_serials(partner_pool=partner_pool, actor=None, reason="x", quantity=0)
    with pytest.raises(InvalidAllocationRequest, match="is not a partner pool"):
        return_partner_serials(partner_pool=pool, actor=None, reason="x")
    with pytest.raises(InvalidAllocationRequest, match="Purpose 'returned' is unknown"):
        allocate(partner_pool, 1, purpose=Allocation.RETURNED)  # only a hand-back records that purpose
    assert counts(partner_pool) == {"filled": 10, "assigned": 0, "available": 10, "returned": 0}


def test_cmo_closing_its_order_keeps_commissioned_serials_and_return_never_takes_them(user):
    pool = mah_pool()
    assignment, partner_pool = assign(pool, 1_000, make_cmo("CMO A"))
    mah_serials = serials_of(assignment)
    order = allocate(partner_pool, 300)
    commission(partner_pool, [3, 4, 250], [mah_serials[i] for i in (3, 4, 250)])  # packs recorded at the CMO

    release = release_serials(allocation=order, actor=user, reason="order closed")

    assert release.quantity == 297
    assert counts(partner_pool) == {"filled": 1_000, "assigned": 3, "available": 997, "returned": 0}
    assert_conserved(pool, partner_pool)
    # Packs where no pack should be: at an Available partner index, and at the MAH index of another Available one.
    commission(partner_pool, [900], [mah_serials[900]])
    commission(pool, [950], [mah_serials[950]])

    assert return_partner_serials(partner_pool=partner_pool, actor=user, reason="campaign finished") == 995

    assert counts(partner_pool) == {"filled": 1_000, "assigned": 3, "available": 2, "returned": 995}
    free = list(FreeRange.objects.filter(pool=partner_pool).values_list("first_index", "count"))
    assert free == [(900, 1), (950, 1)]
    assignment.refresh_from_db()
    assert assignment.active_quantity == 5  # 3 commissioned at the CMO + the 2 left alone
    assert lookup_serial(product_code=pool.product_code, serial=mah_serials[4]).allocation == order
    assert_conserved(pool, partner_pool)


def test_returned_serials_shared_again_map_to_their_newest_partner_index(user):
    pool = mah_pool(fill=2_000)
    cmo = make_cmo("CMO A")
    first, partner_pool = assign(pool, 1_000, cmo)
    mah_serials = serials_of(first)
    allocate(partner_pool, 300)
    return_partner_serials(partner_pool=partner_pool, actor=user, reason="campaign finished")

    second, same_pool = assign(pool, 700, cmo)  # the MAH hands out the returned 700 first

    assert same_pool == partner_pool
    assert serials_of(second) == mah_serials[300:]
    assert segments(partner_pool) == [(0, 1_000, 0, first.pk), (1_000, 700, 300, second.pk)]
    assert counts(partner_pool) == {"filled": 1_700, "assigned": 300, "available": 700, "returned": 700}
    assert index_in_pool(pool=partner_pool, product_code=pool.product_code, serial=mah_serials[400]) == 1_100
    found = lookup_serial(product_code=pool.product_code, serial=mah_serials[400])
    assert (found.status, found.partner_pool, found.partner_index, found.assignment) == (
        SerialStatus.AVAILABLE,
        partner_pool,
        1_100,
        second,
    )
    assert serials_of(allocate(partner_pool, 700)) == mah_serials[300:]
    assert_conserved(pool, partner_pool)


@pytest.mark.django_db(transaction=True)
def test_partner_pool_services_outside_a_transaction(user):
    """On PostgreSQL this takes the one-statement allocation and the asynchronous commit of the locked sections."""
    ensure_eu_market()
    pool = mah_pool()
    assignment, partner_pool = assign(pool, 1_000, make_cmo("CMO A"), actor=user)
    order = allocate(partner_pool, 250)
    assert serials_of(order) == serials_of(assignment)[:250]
    assert return_partner_serials(partner_pool=partner_pool, actor=user, reason="done", quantity=50) == 50
    assert counts(partner_pool) == {"filled": 1_000, "assigned": 250, "available": 700, "returned": 50}
    assert_conserved(pool, partner_pool)


def test_shared_or_returned_serials_cannot_be_released_around_the_partner_pool():
    """A serial shared with a CMO comes back to the MAH only through the CMO's partner pool: releasing the MAH's
    sharing allocation directly, or the CMO's record of a return, would let both sides hand the serial out."""
    pool = mah_pool()
    shared, partner_pool = assign(pool, 1_000, make_cmo("CMO A"))
    assert return_partner_serials(partner_pool=partner_pool, actor=None, reason="order cancelled", quantity=100) == 100
    returned = Allocation.objects.get(pool=partner_pool, purpose=Allocation.RETURNED)
    pool.refresh_from_db()
    before = (pool.available, pool.assigned, counts(partner_pool))

    with pytest.raises(
        ReleaseRefused, match="was shared with a CMO: return its unused serials through the partnership"
    ):
        release_serials(allocation=shared, actor=None, reason="tidy up")
    with pytest.raises(ReleaseRefused, match="returned to the MAH and are no longer the CMO's"):
        release_serials(allocation=returned, actor=None, reason="tidy up")

    pool.refresh_from_db()
    assert (pool.available, pool.assigned, counts(partner_pool)) == before == (9_100, 900, before[2])
    assert_conserved(pool, partner_pool)
