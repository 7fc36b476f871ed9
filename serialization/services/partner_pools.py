"""A CMO's share of an MAH pool: the partner pool, its index mapping onto the MAH pool, and hand-backs.

An MAH assigns serials to a CMO by allocating them from its own pool (purpose "cmo") and sharing that allocation.
The CMO's **partner pool** (source PARTNER, ``parent_pool`` = the MAH pool) gets an index space of its own, in
which the ordinary allocation and release services work unchanged: its ``filled`` counts the serials received,
its cursor, free ranges and allocation ranges behave as in any other pool. Its numbers are not stored: each share
appends PartnerSegment rows mapping a run of partner indices onto a run of MAH indices — one row per index range of
the MAH allocation, so a million serials shared is one row. Materialisation and lookup translate through them.

On the MAH side the shared serials stay Assigned to the MAH allocation for as long as the CMO holds them. A parent
index is therefore *live* in a partner pool exactly when the allocation that shared it still holds it; after a
hand-back the same parent index may be issued again (to an MAH order, or shared once more). A partner index keeps
meaning the same parent index for good; a parent index shared more than once maps to its newest partner index.

Lock order, shared with allocation.py: the MAH pool, then the partner pool, then allocation rows.
"""

import hashlib
import uuid
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from django.db.models import F, Q, Sum

from audit.exceptions import DomainError
from masterdata.models import Company
from serialization.exceptions import (
    IdempotencyConflict,
    InvalidAllocationRequest,
    PoolExhausted,
    ReleaseRefused,
)
from serialization.models import (
    Allocation,
    AllocationRange,
    FreeRange,
    Pack,
    PartnerSegment,
    PoolFill,
    SerialPool,
)
from serialization.services.allocation import (
    _locked_section,
    allocation_ranges,
    intersect,
    release_returned_partner_serials,
    runs_of,
    subtract,
)

Interval = tuple[int, int]  # (first_index, count)

_RANGES_PER_QUERY = 200


# --- sharing ----------------------------------------------------------------------------------------------------------


def share_allocation(*, allocation: Allocation, partner: Company, actor) -> SerialPool:
    """Make every serial held by ``allocation`` (an allocation of an MAH unit pool, purpose "cmo") Available in
    ``partner``'s partner pool for the same product code (kind sgtin, source PARTNER, owner = partner, parent_pool =
    the MAH pool, same alphabet/length); creates the partner pool on first use. Appends PartnerSegment rows: the
    partner pool's index space continues at its current ``filled``; each segment maps [first_index, first_index+count)
    of the partner pool to [parent_first_index, …) of the parent pool (one segment per AllocationRange of the
    allocation). Raises the partner pool's filled by the allocation's active quantity. Idempotent per allocation
    (sharing the same allocation twice changes nothing)."""
    parent = SerialPool.objects.get(pk=allocation.pool_id)
    if parent.source == SerialPool.Source.PARTNER or parent.kind != SerialPool.Kind.SGTIN:
        raise InvalidAllocationRequest(
            f"Only allocations of an MAH's own unit pool can be shared; {parent} is a "
            f"{SerialPool.Source(parent.source).label.lower()} pool of {SerialPool.Kind(parent.kind).label.lower()}.",
            field="allocation",
        )
    if allocation.purpose != Allocation.Purpose.CMO:
        raise InvalidAllocationRequest(
            f"Allocation {allocation.request_id!r} is for {allocation.get_purpose_display().lower()}; share only "
            "allocations made for a CMO (purpose cmo).",
            field="allocation",
        )
    if partner.pk == parent.owner_id:
        raise InvalidAllocationRequest(f"{partner} owns {parent} already; share with another company.", field="partner")
    with _locked_section():
        # The MAH pool first: it serialises every share from this pool, so the partner pool is created once.
        SerialPool.objects.select_for_update().get(pk=parent.pk)
        shared = PartnerSegment.objects.filter(allocation_id=allocation.pk).select_related("pool").first()
        if shared is not None:
            if shared.pool.owner_id != partner.pk:
                raise IdempotencyConflict(
                    f"Allocation {allocation.request_id!r} was shared with {shared.pool.owner} already; an "
                    "allocation is shared with one partner. Allocate anew for this partner.",
                    field="allocation",
                    details={"partner_pool": shared.pool_id},
                )
            pool = shared.pool
        else:
            pool = _partner_pool_for(parent=parent, partner=partner, actor=actor)
            _append_segments(pool=pool, allocation=allocation, actor=actor)
    pool.refresh_from_db()
    return pool


def _partner_pool_for(*, parent: SerialPool, partner: Company, actor) -> SerialPool:
    pool = SerialPool.objects.filter(source=SerialPool.Source.PARTNER, owner=partner, parent_pool=parent).first()
    if pool is not None:
        return pool
    product = parent.product
    name = f"{parent.product_code} {product.name if product else ''} from {parent.owner.name}"
    pool = SerialPool(
        owner=partner,
        kind=SerialPool.Kind.SGTIN,
        product=product,
        product_code=parent.product_code,
        name=" ".join(name.split())[:200],
        source=SerialPool.Source.PARTNER,
        parent_pool=parent,
        alphabet=parent.alphabet,
        length=parent.length,
        no_leading_zero=parent.no_leading_zero,
        randomised=parent.randomised,
        max_per_request=parent.max_per_request,
        created_by=actor,
    )
    # The partner pool never holds a key of its own: its serials are materialised from the parent pool.
    pool.full_clean(exclude=["encrypted_key", "created_by"])
    pool._history_user = actor
    pool.save()
    return pool


def _append_segments(*, pool: SerialPool, allocation: Allocation, actor) -> None:
    locked = SerialPool.objects.select_for_update().get(pk=pool.pk)
    held = Allocation.objects.select_for_update().get(pk=allocation.pk)
    ranges = allocation_ranges(held)
    quantity = sum(count for _, count in ranges)
    if quantity == 0:
        raise InvalidAllocationRequest(
            f"Allocation {held.request_id!r} holds no serials any more (all {held.quantity:,} were released); "
            "nothing to share.",
            field="allocation",
        )
    segments, start = [], locked.filled
    for parent_first, count in ranges:
        segments.append(
            PartnerSegment(
                pool=locked, first_index=start, count=count, parent_first_index=parent_first, allocation=held
            )
        )
        start += count
    PartnerSegment.objects.bulk_create(segments)
    SerialPool.objects.filter(pk=locked.pk).update(filled=F("filled") + quantity)
    PoolFill.objects.create(
        pool=locked,
        quantity=quantity,
        filled_after=locked.filled + quantity,
        reason=f"shared by {held.pool.owner.name}: allocation {held.request_id}"[:200],
        actor=actor,
    )


# --- handing serials back ---------------------------------------------------------------------------------------------


def return_partner_serials(*, partner_pool: SerialPool, actor, reason: str, quantity: int | None = None) -> int:
    """Give Available serials of a partner pool back to the MAH (all of them when quantity is None; otherwise that
    many, lowest partner index first, erroring with the available count if short): they stop being Available to
    the CMO and become Available in the MAH pool again (``release_serials`` on the MAH allocation(s) that shared
    them, with their MAH indices). Returns the count (0 when ``quantity`` is None and nothing is Available).

    The partner side records the hand-back as an allocation of purpose "returned" (``Allocation.RETURNED``, a
    purpose no caller of ``allocate_serials`` can ask for) that holds the returned partner indices for good, with
    the reason in its history row. A counter on the pool was the other choice; it would make available = filled −
    assigned − returned in every query that reads pool state (the one-statement allocation, the portal's counts)
    instead of the one law all pools share. With the allocation every pool keeps available + assigned = filled
    over its range rows; the partner pool's ``assigned`` includes the returned serials, which
    ``partner_pool_counts`` reports apart.

    Never returns a serial held by a CMO allocation (only Available partner indices are candidates) nor a
    commissioned one (a pack recorded at the partner index, or at the MAH index, is left where it is).
    """
    reason = (reason or "").strip()
    if not reason:
        raise ReleaseRefused("Say why the serials are returned (the reason is kept in the record).", field="reason")
    if partner_pool.source != SerialPool.Source.PARTNER or partner_pool.parent_pool_id is None:
        raise InvalidAllocationRequest(
            f"{partner_pool} is not a partner pool; only serials shared by an MAH are returned.", field="pool"
        )
    if quantity is not None and (isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1):
        raise InvalidAllocationRequest(
            f"Return a positive number of serials, or all of them (asked {quantity!r}).", field="quantity"
        )
    with _locked_section():
        parent = SerialPool.objects.select_for_update().get(pk=partner_pool.parent_pool_id)
        pool = SerialPool.objects.select_for_update().get(pk=partner_pool.pk)
        free = list(FreeRange.objects.filter(pool=pool).order_by("first_index").values_list("first_index", "count"))
        tail = [(pool.next_index, pool.filled - pool.next_index)] if pool.filled > pool.next_index else []
        candidates = subtract(free + tail, _pack_runs(pool.pk, free + tail))
        segments = Segments.of(pool, candidates)
        parts = list(segments.split(candidates))
        packed_at_parent = _pack_runs(parent.pk, [(parent_first, count) for _, parent_first, count, _ in parts])
        if packed_at_parent:
            candidates = subtract(candidates, _partner_runs(parts, packed_at_parent))
        eligible = sum(count for _, count in candidates)
        if quantity is None:
            quantity = eligible
            if quantity == 0:
                return 0
        elif quantity > eligible:
            raise PoolExhausted(
                f"{pool} has {eligible:,} serials available to return; {quantity:,} were asked. Return at most "
                f"{eligible:,}.",
                field="quantity",
                details={"available": eligible, "requested": quantity},
            )
        taken = _first(candidates, quantity)
        _hold_as_returned(pool=pool, parent=parent, taken=taken, free=free, actor=actor, reason=reason)
        _release_at_parent(parts=list(segments.split(taken)), actor=actor, reason=reason)
    return quantity


def _first(intervals: Sequence[Interval], quantity: int) -> list[Interval]:
    """The lowest ``quantity`` indices of sorted, non-overlapping ``intervals``."""
    taken: list[Interval] = []
    for first, count in intervals:
        if quantity == 0:
            break
        take = min(count, quantity)
        taken.append((first, take))
        quantity -= take
    return taken


def _hold_as_returned(
    *, pool: SerialPool, parent: SerialPool, taken: list[Interval], free: list[Interval], actor, reason: str
) -> None:
    """The partner-side record: an allocation of purpose "returned" holds ``taken`` for good; the cursor and the
    free ranges are rewritten so every index below the cursor stays in exactly one range."""
    quantity = sum(count for _, count in taken)
    reference = f"returned to {parent.owner.name}"[: Allocation._meta.get_field("reference").max_length]
    request_id = f"return-{uuid.uuid4().hex}"
    returned = Allocation(
        pool=pool,
        request_id=request_id,
        purpose=Allocation.RETURNED,
        reference=reference,
        requested_quantity=quantity,
        quantity=quantity,
        fingerprint=hashlib.sha256(f"{pool.pk}|{request_id}|{quantity}|returned".encode()).hexdigest(),
        requested_by=actor,
    )
    returned._history_user = actor
    returned._change_reason = reason[:100]
    returned.save()
    AllocationRange.objects.bulk_create(
        AllocationRange(allocation=returned, pool=pool, first_index=first, count=count) for first, count in taken
    )
    cursor = max(pool.next_index, max(first + count for first, count in taken))
    below_cursor = free + ([(pool.next_index, cursor - pool.next_index)] if cursor > pool.next_index else [])
    still_free = subtract(below_cursor, taken)
    if still_free != free:
        FreeRange.objects.filter(pool=pool).delete()
        FreeRange.objects.bulk_create(FreeRange(pool=pool, first_index=f, count=c) for f, c in still_free)
    SerialPool.objects.filter(pk=pool.pk).update(next_index=cursor, free=sum(c for _, c in still_free))


def _release_at_parent(*, parts: list[tuple[int, int, int, int]], actor, reason: str) -> None:
    """Release the MAH indices behind ``parts`` from the allocations that shared them (in pk order, the order locks
    are taken in). Indices such an allocation no longer holds are back with the MAH already and are skipped."""
    by_allocation: dict[int, list[Interval]] = {}
    for _, parent_first, count, allocation_id in parts:
        by_allocation.setdefault(allocation_id, []).append((parent_first, count))
    for allocation_id in sorted(by_allocation):
        allocation = Allocation.objects.get(pk=allocation_id)
        wanted = intersect(sorted(by_allocation[allocation_id]), allocation_ranges(allocation))
        if not wanted:
            continue
        indices = np.concatenate([np.arange(first, first + count, dtype=np.int64) for first, count in wanted])
        # The history row keeps at most 100 characters of a reason.
        note = f"returned by the partner: {reason}"[:100]
        release_returned_partner_serials(allocation=allocation, actor=actor, reason=note, indices=indices)


def _pack_runs(pool_id: int, ranges: Sequence[Interval]) -> list[Interval]:
    """Runs of indices inside ``ranges`` of pool ``pool_id`` that have a pack (index range scans, a few per query)."""
    runs: list[Interval] = []
    ranges = sorted(ranges)
    # Sorted, non-overlapping ranges queried in order, each query ordered by index: the indices come out sorted and
    # distinct ((pool, index) is unique), so they need no np.unique (which numpy 2.4 runs ~10× slower than a sort).
    for lo in range(0, len(ranges), _RANGES_PER_QUERY):
        condition = Q()
        for first, count in ranges[lo : lo + _RANGES_PER_QUERY]:
            condition |= Q(index__gte=first, index__lt=first + count)
        rows = Pack.objects.filter(condition, pool_id=pool_id).order_by("index").values_list("index", flat=True)
        runs.extend(runs_of(np.fromiter(rows.iterator(chunk_size=50_000), dtype=np.int64)))
    return runs


def _partner_runs(parts: list[tuple[int, int, int, int]], parent_runs: list[Interval]) -> list[Interval]:
    """The partner indices of ``parent_runs`` among the (partner first, parent first, count, allocation) ``parts``."""
    result: list[Interval] = []
    for partner_first, parent_first, count, _ in parts:
        for first, run in intersect([(parent_first, count)], parent_runs):
            result.append((partner_first + first - parent_first, run))
    return sorted(result)


# --- counts -----------------------------------------------------------------------------------------------------------


def partner_pool_counts(*, partner_pool: SerialPool) -> dict:
    """What a CMO holds of an MAH's serials, from pool state: ``filled`` (received), ``assigned`` (held by the CMO's
    own allocations — orders, lines), ``available`` (still to use) and ``returned`` (handed back to the MAH);
    filled = assigned + available + returned."""
    pool = SerialPool.objects.get(pk=partner_pool.pk)
    returned = (
        Allocation.objects.filter(pool=pool, purpose=Allocation.RETURNED).aggregate(
            n=Sum(F("quantity") - F("released"))
        )["n"]
        or 0
    )
    return {
        "filled": pool.filled,
        "assigned": pool.assigned - returned,
        "available": pool.available,
        "returned": returned,
    }


# --- index translation (materialisation and lookup) -------------------------------------------------------------------


@dataclass(frozen=True)
class Segments:
    """The PartnerSegment rows of one partner pool (or the part of them that covers some ranges), by first index."""

    pool: SerialPool
    starts: list[int]
    counts: list[int]
    parent_starts: list[int]
    allocations: list[int]

    @classmethod
    def of(cls, pool: SerialPool, ranges: Sequence[Interval] = ()) -> "Segments":
        """The segments covering ``ranges`` (all of the pool's when none are given): one query."""
        rows = PartnerSegment.objects.filter(pool_id=pool.pk)
        if ranges:
            lo = min(first for first, _ in ranges)
            hi = max(first + count for first, count in ranges)
            rows = rows.annotate(end=F("first_index") + F("count")).filter(first_index__lt=hi, end__gt=lo)
        found = list(
            rows.order_by("first_index").values_list("first_index", "count", "parent_first_index", "allocation")
        )
        columns = list(zip(*found, strict=True)) or [(), (), (), ()]
        return cls(pool, *(list(column) for column in columns))

    def split(self, ranges: Sequence[Interval]) -> Iterator[tuple[int, int, int, int]]:
        """(partner first, parent first, count, sharing allocation) pieces of ``ranges``, in the order given; a range
        crossing segments is cut at their borders. ValueError for an index no segment covers."""
        starts = self.starts
        for first, count in ranges:
            end, position = first + count, first
            i = bisect_right(starts, position) - 1
            while position < end:
                if i < 0 or i >= len(starts) or starts[i] + self.counts[i] <= position:
                    raise ValueError(f"index {position} of partner pool {self.pool.pk} is in no partner segment")
                piece = min(end, starts[i] + self.counts[i]) - position
                yield position, self.parent_starts[i] + position - starts[i], piece, self.allocations[i]
                position += piece
                i += 1


def _parent_of(pool: SerialPool) -> SerialPool:
    if pool.parent_pool_id is None:
        raise DomainError(f"{pool} is a partner pool without a parent pool; its serials cannot be resolved.")
    return pool.parent_pool


def parent_ranges(*, partner_pool: SerialPool, ranges: Sequence[Interval]) -> tuple[SerialPool, list[Interval]]:
    """The parent pool and the parent index ranges behind ``ranges`` of a partner pool, in the order of ``ranges``
    (a range crossing segments becomes several). One query, whatever the ranges' size."""
    parent = _parent_of(partner_pool)
    segments = Segments.of(partner_pool, ranges)
    return parent, [(parent_first, count) for _, parent_first, count, _ in segments.split(ranges)]


def partner_indices(*, partner_pool: SerialPool, parent_indices: np.ndarray) -> np.ndarray:
    """The partner-pool index of each parent index (−1 where the partner pool never received it). A parent index
    shared more than once (returned, then shared again) maps to its newest partner index, the one that can be
    live. Vectorised: one pass over the segments that cover the indices' span, not one per serial."""
    parent_indices = np.asarray(parent_indices, dtype=np.int64)
    result = np.full(parent_indices.shape, -1, dtype=np.int64)
    known = parent_indices[parent_indices >= 0]
    if known.size == 0:
        return result
    lo, hi = int(known.min()), int(known.max())
    rows = (
        PartnerSegment.objects.filter(pool_id=partner_pool.pk, parent_first_index__lte=hi)
        .annotate(end=F("parent_first_index") + F("count"))
        .filter(end__gt=lo)
        .order_by("-first_index")
        .values_list("first_index", "parent_first_index", "count")
    )
    for first, parent_first, count in rows.iterator(chunk_size=2000):
        hit = (result < 0) & (parent_indices >= parent_first) & (parent_indices < parent_first + count)
        result[hit] = first + parent_indices[hit] - parent_first
    return result


def live_segment(*, allocation: Allocation, parent_index: int) -> PartnerSegment | None:
    """The segment through which ``allocation`` (which holds ``parent_index`` now) shared that index, if it did:
    a seek on the (allocation, parent_first_index) unique index."""
    segment = (
        PartnerSegment.objects.filter(allocation_id=allocation.pk, parent_first_index__lte=parent_index)
        .select_related("pool")
        .order_by("-parent_first_index")
        .first()
    )
    if segment is None or parent_index >= segment.parent_first_index + segment.count:
        return None
    return segment
