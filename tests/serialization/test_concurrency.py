"""Allocation and release under real parallel connections (PostgreSQL only).

Eight threads, each with its own database connection, are released at once by a barrier and hammer the services;
afterwards every allocation is materialised and checked: no serial granted twice, every granted serial accounted
for, the conservation law of ``serialization.models`` intact, and callers that found the pool empty got
``PoolExhausted`` — never a crash, a deadlock or a lost update.

SQLite ignores ``SELECT … FOR UPDATE`` and serialises whole transactions, so these tests prove nothing there and
are skipped with the reason.
"""

import itertools
import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import connection, connections

from masterdata.models import UPPER_ALNUM, Market
from serialization.exceptions import PoolExhausted
from serialization.models import Allocation, AllocationRange, FreeRange, Pack, Release, SerialPool
from serialization.services import allocate_serials, create_generated_pool, pool_permutation, release_serials
from tests.factories import make_product, make_user

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 8


@pytest.fixture(autouse=True)
def _needs_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip(
            "Concurrency tests need PostgreSQL: SQLite ignores row locks and serialises writers. "
            "Run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/backoffice"
        )


@pytest.fixture
def user():
    return make_user(username="line-system")


def ensure_markets() -> None:
    """The seeded markets, again: a transactional test before this one may have flushed them."""
    common = {"retention_years_after_release": 5}
    Market.objects.get_or_create(
        code="EU",
        defaults={
            **common,
            "name": "European Union (FMD)",
            "serial_alphabet": UPPER_ALNUM,
            "serial_length": 12,
            "randomisation_required": True,
            "max_guess_probability": Decimal("0.0001"),
            "retention_years_after_expiry": 1,
            "reporting_format": Market.ReportingFormat.EU_HUB,
        },
    )


def make_eu_pool(*, actor, fill: int) -> SerialPool:
    ensure_markets()
    product = make_product(markets=["EU"])
    pool = create_generated_pool(owner=product.owner, actor=actor, product=product, initial_fill=fill)
    assert pool.randomised
    return pool


def run_concurrently(work: Callable[[int], object], threads: int = THREADS) -> list[object]:
    """Run ``work(i)`` for i < threads in parallel threads started together; return their results in order.

    An exception in a thread is returned as its result, so the test can assert there were none.
    """
    barrier = threading.Barrier(threads)
    results: list[object] = [None] * threads

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as exc:  # reported to the test, which fails on it
            results[i] = exc
        finally:
            connections.close_all()  # this thread's own connection

    pool = [threading.Thread(target=target, args=(i,), name=f"client-{i}") for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in pool), "a client thread hung (deadlock?)"
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"client threads crashed: {errors!r}"
    return results


def assert_conserved(pool: SerialPool) -> None:
    pool.refresh_from_db()
    held = list(AllocationRange.objects.filter(pool=pool).values_list("first_index", "count"))
    free = list(FreeRange.objects.filter(pool=pool).values_list("first_index", "count"))
    assert pool.available + pool.assigned == pool.filled
    assert pool.available >= 0
    assert pool.assigned == sum(count for _, count in held)
    assert pool.free == sum(count for _, count in free)
    spans = sorted(held + free)
    for (first, count), (next_first, _) in itertools.pairwise(spans):
        assert first + count <= next_first, f"ranges overlap at index {next_first}"
    assert sum(count for _, count in spans) == pool.next_index
    assert sum(a.quantity - a.released for a in Allocation.objects.filter(pool=pool)) == pool.assigned


def materialise(pool: SerialPool) -> list[str]:
    """Every serial the pool's allocations hold now, range by range."""
    permutation = pool_permutation(pool)
    ranges = AllocationRange.objects.filter(pool=pool).values_list("first_index", "count")
    return [serial for first, count in ranges for serial in permutation.serials(first, count)]


def demand(thread: int, round_: int) -> int:
    """A deterministic spread of request sizes, 10 to 60."""
    return 10 + (thread * 31 + round_ * 17) % 51


def test_concurrent_allocations_from_one_pool_never_grant_a_serial_twice(user):
    rounds = 25
    pool = make_eu_pool(actor=user, fill=6_000)
    total_demand = sum(demand(t, r) for t in range(THREADS) for r in range(rounds))
    assert total_demand > pool.filled  # so some callers must find the pool exhausted

    def client(i: int) -> list[tuple[str, int, int]]:
        outcomes = []
        for r in range(rounds):
            quantity = demand(i, r)
            try:
                allocation = allocate_serials(
                    pool=pool, quantity=quantity, actor=user, request_id=f"c{i}-r{r}", purpose="packaging_order"
                )
            except PoolExhausted as exc:
                assert exc.details["requested"] == quantity
                assert exc.details["available"] < quantity
                outcomes.append(("exhausted", quantity, exc.details["available"]))
            else:
                outcomes.append(("granted", quantity, allocation.quantity))
        return outcomes

    outcomes = [o for per_thread in run_concurrently(client) for o in per_thread]

    granted = [got for kind, _, got in outcomes if kind == "granted"]
    exhausted = [o for o in outcomes if o[0] == "exhausted"]
    assert all(got == asked for kind, asked, got in outcomes if kind == "granted")  # never partial unasked
    assert exhausted, "the pool was never exhausted"
    assert len(granted) + len(exhausted) == THREADS * rounds
    assert Allocation.objects.filter(pool=pool).count() == len(granted)
    serials = materialise(pool)
    assert len(serials) == sum(granted)
    assert len(set(serials)) == len(serials), "a serial was granted twice"
    pool.refresh_from_db()
    assert pool.assigned == sum(granted)
    assert pool.available < max(asked for _, asked, _ in exhausted)
    assert_conserved(pool)


def test_concurrent_allocations_across_two_pools_of_different_product_codes(user):
    rounds = 20
    pools = [make_eu_pool(actor=user, fill=2_400), make_eu_pool(actor=user, fill=2_400)]
    assert pools[0].product_code != pools[1].product_code
    for p in (0, 1):  # each pool is asked for more than it holds
        assert sum(demand(t, r) for t in range(THREADS) for r in range(rounds) if (t + r) % 2 == p) > 2_400

    def client(i: int) -> list[tuple[int, str, int]]:
        outcomes = []
        for r in range(rounds):
            pool = pools[(i + r) % 2]
            try:
                allocation = allocate_serials(
                    pool=pool, quantity=demand(i, r), actor=user, request_id=f"c{i}-r{r}", purpose="system"
                )
            except PoolExhausted:
                outcomes.append((pool.pk, "exhausted", 0))
            else:
                outcomes.append((pool.pk, "granted", allocation.quantity))
        return outcomes

    outcomes = [o for per_thread in run_concurrently(client) for o in per_thread]

    assert any(kind == "exhausted" for _, kind, _ in outcomes)
    pairs = []
    for pool in pools:
        granted = sum(got for pk, kind, got in outcomes if pk == pool.pk and kind == "granted")
        serials = materialise(pool)
        assert len(serials) == len(set(serials)) == granted
        assert_conserved(pool)
        assert pool.assigned == granted
        pairs.extend((pool.product_code, s) for s in serials)
    assert len(pairs) == len(set(pairs))


def test_the_same_request_id_sent_by_eight_threads_at_once_makes_one_allocation(user):
    pool = make_eu_pool(actor=user, fill=10_000)
    # Half the clients hold a copy of the pool that claims released serials are waiting, which sends them down the
    # locked general path while the others take the one-statement path: the two must not deadlock either. A
    # deadlock is a race, so the scene is played three times.
    stale = SerialPool.objects.get(pk=pool.pk)
    stale.free = 1

    for attempt in range(3):

        def client(i: int, attempt=attempt) -> int:
            return allocate_serials(
                pool=stale if i % 2 else pool,
                quantity=123,
                actor=user,
                request_id=f"ERP-same-request-{attempt}",
                purpose="system",
                reference="SO-1",
            ).pk

        ids = run_concurrently(client)

        assert len(set(ids)) == 1
        allocation = Allocation.objects.get(pool=pool, request_id=f"ERP-same-request-{attempt}")
        assert ids[0] == allocation.pk
        assert allocation.quantity == 123
        assert list(allocation.ranges.values_list("first_index", "count")) == [(attempt * 123, 123)]
        assert allocation.history.count() == 1
    pool.refresh_from_db()
    assert (pool.next_index, Allocation.objects.filter(pool=pool).count()) == (3 * 123, 3)
    assert_conserved(pool)


def test_concurrent_release_and_allocation_keep_the_invariants(user):
    pool = make_eu_pool(actor=user, fill=4_000)
    orders = [
        allocate_serials(pool=pool, quantity=200, actor=user, request_id=f"order-{n}", purpose="packaging_order")
        for n in range(4)
    ]
    permutation = pool_permutation(pool)
    commissioned = {order.pk: [order.ranges.get().first_index + k for k in (0, 57, 58, 199)] for order in orders}
    for order in orders:
        Pack.objects.bulk_create(
            Pack(
                pool=pool,
                index=i,
                product_code=pool.product_code,
                serial=permutation.serial_at(i),
                commissioned_at=order.created_at,
            )
            for i in commissioned[order.pk]
        )

    def client(i: int) -> str:
        if i < 4:  # a line returning unused serials of its order in four steps, then closing it
            order = orders[i]
            first = order.ranges.order_by("first_index").first().first_index
            for step in range(3):
                chunk = [first + 1 + step * 50 + k for k in range(50) if first + 1 + step * 50 + k not in (57, 58)]
                chunk = [n for n in chunk if n not in commissioned[order.pk]]
                release_serials(allocation=order, actor=user, reason=f"unused, step {step}", indices=chunk)
            release_serials(allocation=order, actor=user, reason="order closed")
            return "released"
        for r in range(15):  # a client allocating meanwhile; released serials are reused first
            allocate_serials(
                pool=pool,
                quantity=demand(i, r),
                actor=user,
                request_id=f"c{i}-r{r}",
                purpose="batch",
                allow_partial=True,
            )
        return "allocated"

    assert run_concurrently(client) == ["released"] * 4 + ["allocated"] * 4

    assert_conserved(pool)
    serials = materialise(pool)
    assert len(serials) == len(set(serials))
    for order in orders:
        order.refresh_from_db()
        # Only the commissioned serials stay with the closed order.
        held = sorted(i for f, c in order.ranges.values_list("first_index", "count") for i in range(f, f + c))
        assert held == sorted(commissioned[order.pk])
        assert order.released == 200 - 4
        assert sum(Release.objects.filter(allocation=order).values_list("quantity", flat=True)) == 196
    pool.refresh_from_db()
    allocated_meanwhile = sum(Allocation.objects.filter(pool=pool, purpose="batch").values_list("quantity", flat=True))
    assert pool.assigned == 4 * 4 + allocated_meanwhile
