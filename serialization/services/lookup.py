"""Which pool, index, allocation and status is a serial? Answered by decryption and index lookups, not scans.

A serial lives in the pool that generated or imported it (the MAH's). While an MAH allocation that was shared with
a CMO holds it, its status is the CMO's: Available in the CMO's partner pool, or Assigned to the CMO's allocation.
"""

from dataclasses import dataclass

from masterdata import gs1
from serialization.exceptions import UnknownSerial
from serialization.models import Allocation, AllocationRange, ListedSerial, Pack, SerialPool
from serialization.services.materialise import indices_or_missing
from serialization.services.partner_pools import live_segment
from serialization.services.pools import pool_permutation


@dataclass(frozen=True)
class SerialStatus:
    AVAILABLE = "available"
    ASSIGNED = "assigned"

    pool: SerialPool  # where the serial was generated or imported (the MAH's pool for a shared serial)
    index: int
    status: str  # for a serial shared with a partner: its status in the partner pool
    allocation: Allocation | None  # for a serial shared with a partner: the partner's allocation, if any
    pack: Pack | None
    partner_pool: SerialPool | None = None  # the CMO's partner pool holding the serial now, if any
    partner_index: int | None = None
    assignment: Allocation | None = None  # the MAH's allocation that shared the serial with the partner


def _holding_range(pool: SerialPool, index: int) -> AllocationRange | None:
    """The allocation range containing ``index``: the last one starting at or below it (an index seek on the
    (pool, first_index) unique constraint), if it reaches that far."""
    row = (
        AllocationRange.objects.filter(pool=pool, first_index__lte=index)
        .select_related("allocation")
        .order_by("-first_index")
        .first()
    )
    return row if row is not None and index < row.first_index + row.count else None


def _status_at(pool: SerialPool, index: int, pack_code: str, pack_serial: str) -> SerialStatus:
    held = _holding_range(pool, index)
    pack = Pack.objects.filter(product_code=pack_code, serial=pack_serial).first()
    segment = live_segment(allocation=held.allocation, parent_index=index) if _shareable(held) else None
    if segment is not None:
        partner_index = segment.first_index + index - segment.parent_first_index
        partner_held = _holding_range(segment.pool, partner_index)
        return SerialStatus(
            pool,
            index,
            SerialStatus.ASSIGNED if partner_held is not None else SerialStatus.AVAILABLE,
            partner_held.allocation if partner_held is not None else None,
            pack,
            partner_pool=segment.pool,
            partner_index=partner_index,
            assignment=held.allocation,
        )
    if held is not None:
        return SerialStatus(pool, index, SerialStatus.ASSIGNED, held.allocation, pack)
    # Released (a FreeRange) or never handed out but within the filled part: Available.
    return SerialStatus(pool, index, SerialStatus.AVAILABLE, None, pack)


def _shareable(held: AllocationRange | None) -> bool:
    # Only allocations for a CMO are ever shared: other serials cost no extra query.
    return held is not None and held.allocation.purpose == Allocation.Purpose.CMO


def index_in_pool(*, pool: SerialPool, product_code: str, serial: str) -> int | None:
    """The index of ``serial`` of ``product_code`` in ``pool`` — generated, list or partner pool — or None when the
    pool does not hold it. For an SSCC pool give ``product_code=""`` and the 18-digit SSCC as ``serial``. In a
    partner pool, a serial received twice (returned, then shared again) has its newest index."""
    if product_code != pool.product_code:
        return None
    (index,) = indices_or_missing(pool, [serial]).tolist()
    return index if index >= 0 else None


def lookup_serial(*, product_code: str, serial: str) -> SerialStatus:
    """Status of ``serial`` of unit ``product_code`` in whichever pool (generated or listed) holds it."""
    listed = ListedSerial.objects.filter(product_code=product_code, serial=serial).select_related("pool").first()
    if listed is not None:
        return _status_at(listed.pool, listed.ordinal, product_code, serial)
    pool = SerialPool.objects.filter(
        product_code=product_code, kind=SerialPool.Kind.SGTIN, source=SerialPool.Source.GENERATOR
    ).first()
    if pool is not None:
        try:
            index = pool_permutation(pool).index_of(serial)
        except ValueError:
            index = None
        if index is not None and index < pool.filled:
            return _status_at(pool, index, product_code, serial)
    raise UnknownSerial(
        f"Serial {serial!r} of {product_code} is in no pool: it was never generated or imported here. "
        "Check the product code and the serial.",
        field="serial",
    )


def lookup_sscc(*, sscc: str) -> SerialStatus:
    """Status of an SSCC in the generated SSCC pool of its extension digit and company prefix."""
    try:
        sscc = gs1.validate_sscc(sscc)
    except gs1.GS1Error as exc:
        raise UnknownSerial(str(exc), field="sscc") from exc
    candidates = SerialPool.objects.filter(kind=SerialPool.Kind.SSCC, sscc_extension_digit=sscc[0])
    for pool in candidates:
        if sscc[1:].startswith(pool.sscc_prefix):
            reference = sscc[1 + len(pool.sscc_prefix) : 17]
            index = pool_permutation(pool).index_of(reference)
            if index < pool.filled:
                return _status_at(pool, index, "", sscc)
    raise UnknownSerial(f"SSCC {sscc} is in no SSCC pool here. Check the extension digit and prefix.", field="sscc")
