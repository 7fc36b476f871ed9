"""What the serial engine keeps, and for how long: its retention policy, registered with ``audit.retention`` from
``SerializationConfig.ready`` — and the pool state every backup must reproduce, registered with ``audit.backup``.

A batch is the anchor. Its keep-until date is the latest over its markets' rules (masterdata.Market
``retention_years_after_expiry`` / ``retention_years_after_release``; EU: max(expiry + 1 y, release + 5 y), US: release
+ 6 y, PK: release + 5 y, others as the steward configured them), counted from the expiry as printed (day 00 = end of
the month) and from the day QA released it. Everything produced for the batch is kept as long: its packaging orders,
packs, pack events, line reports, reconciliations, EPCIS exports and regulatory submissions. Allocations are the
pools' ledger and outlive the batch (a serial is never issued twice), so a purge only unlinks them from the orders
it removes.
"""

from collections import defaultdict

from django.db import transaction
from django.db.models import Sum

from audit import backup, retention
from audit.exceptions import PermissionDenied
from audit.retention import KeepUntil, MarketRule, RetainedRecords, RetentionPolicy, keep_until_for
from masterdata.models import Market
from serialization.models import (
    Allocation,
    AllocationRange,
    Batch,
    EpcisExportJob,
    FreeRange,
    LineReport,
    Pack,
    PackagingOrder,
    PackEvent,
    Reconciliation,
    SerialPool,
    Submission,
)
from serialization.services.batches import expiry_date

_REFRESH_CHUNK = 2000


def market_rule(market: Market) -> MarketRule:
    return MarketRule(market.code, market.retention_years_after_expiry, market.retention_years_after_release)


def _keep_until(expiry: str, released_at, rules: list[MarketRule]) -> KeepUntil:
    try:
        expires_on = expiry_date(expiry)
    except (ValueError, IndexError):
        return KeepUntil(None, f"its expiry {expiry!r} is not a YYMMDD date")
    released_on = released_at.date() if released_at is not None else None  # UTC, like the database's day
    return keep_until_for(expiry=expires_on, released_on=released_on, rules=rules)


def batch_keep_until(batch: Batch) -> KeepUntil:
    """The batch's keep-until date computed now, with the market and term that decide it. Uses prefetched markets
    when the caller prefetched them (lists of batches), so showing it costs no query per batch."""
    return _keep_until(batch.expiry, batch.released_at, [market_rule(m) for m in batch.markets.all()])


def refresh_keep_until(batch_ids: list | None = None) -> int:
    """Recompute the stored ``keep_until`` of every batch (or of ``batch_ids``) from the current market rules; returns
    how many changed.

    Reads stream (batches and their market links in chunks) and only changed rows are written, in bulk updates of
    ``_REFRESH_CHUNK`` rows: a steward changing a market's rule moves thousands of dates in a few statements.
    """
    rules = {market.pk: market_rule(market) for market in Market.objects.all()}
    batches = Batch.objects.all() if batch_ids is None else Batch.objects.filter(pk__in=batch_ids)
    links = Batch.markets.through.objects.all()
    if batch_ids is not None:
        links = links.filter(batch_id__in=batch_ids)
    markets_of: dict[int, list[MarketRule]] = defaultdict(list)
    for batch_id, market_id in links.values_list("batch_id", "market_id").iterator(chunk_size=_REFRESH_CHUNK):
        markets_of[batch_id].append(rules[market_id])
    changed: list[Batch] = []
    with transaction.atomic():
        rows = batches.values_list("pk", "expiry", "released_at", "keep_until")
        for pk, expiry, released_at, stored in rows.iterator(chunk_size=_REFRESH_CHUNK):
            computed = _keep_until(expiry, released_at, markets_of.get(pk, [])).date
            if computed != stored:
                changed.append(Batch(pk=pk, keep_until=computed))
        Batch.objects.bulk_update(changed, ["keep_until"], batch_size=_REFRESH_CHUNK)
    return len(changed)


def delete_batch(*, batch: Batch, actor, reason: str = "") -> retention.PurgeResult:
    """Delete ``batch`` with everything kept with it, if it is past its keep-until date and not on hold (else 409 with
    the date or the hold). Needs the ``delete_batch`` permission, which no role holds (403 names the way instead)."""
    if not actor.has_perm("serialization.delete_batch"):
        raise PermissionDenied(
            "Deleting a batch needs the 'delete batch' permission, which no role grants: batches past their "
            "retention are removed by `manage.py purge_expired`."
        )
    reason = (reason or "").strip() or f"Batch {batch} deleted by {actor} past its retention"
    return retention.delete_past_retention(obj=batch, actor=actor, reason=reason)


POLICY = RetentionPolicy(
    anchor=Batch,
    keep_until_field="keep_until",
    explain=batch_keep_until,
    refresh=refresh_keep_until,
    records=(
        # Children before parents: each DELETE leaves no row pointing at one removed later.
        RetainedRecords(PackEvent, ("pack__batch", "pack__order__batch")),
        RetainedRecords(EpcisExportJob, ("batch", "order__batch", "shipping_report__order__batch")),
        RetainedRecords(Submission, ("batch",)),
        RetainedRecords(Pack, ("batch", "order__batch")),
        RetainedRecords(LineReport, ("order__batch",)),
        RetainedRecords(Reconciliation, ("batch",)),
        RetainedRecords(Allocation, ("packaging_order__batch",), detach_field="packaging_order"),
        RetainedRecords(PackagingOrder, ("batch",)),
        RetainedRecords(Batch, ("pk",)),
    ),
    held_through=("product",),
    holdable=(SerialPool,),
    queryset=lambda: Batch._base_manager.select_related("product"),
)


def pool_state(using: str) -> dict:
    """Every pool's counters beside the sums of its range rows, and the totals: what a restore must reproduce exactly.

    ``assigned = next_index - free`` must equal the serials in allocation ranges and ``free`` those in free ranges
    (ARCHITECTURE.md, invariant 2); ``totals.conserved`` says whether that held for every pool when read.
    """
    allocated = _sum_per_pool(AllocationRange, using)
    freed = _sum_per_pool(FreeRange, using)
    pools: dict[str, dict] = {}
    totals = {"pools": 0, "filled": 0, "assigned": 0, "available": 0, "conserved": True}
    rows = SerialPool.objects.using(using).order_by("pk").values_list("pk", "filled", "next_index", "free")
    for pk, filled, next_index, free in rows.iterator():
        in_ranges, in_free = allocated.get(pk, 0), freed.get(pk, 0)
        pools[str(pk)] = {
            "filled": filled,
            "next": next_index,
            "free": free,
            "ranged": in_ranges,
            "free_ranged": in_free,
        }
        totals["pools"] += 1
        totals["filled"] += filled
        totals["assigned"] += next_index - free
        totals["available"] += filled - (next_index - free)
        totals["conserved"] &= next_index - free == in_ranges and free == in_free
    return {"totals": totals, **pools}


def _sum_per_pool(model, using: str) -> dict[int, int]:
    sums = model.objects.using(using).order_by().values("pool_id").annotate(total=Sum("count"))
    return {row["pool_id"]: row["total"] for row in sums}


def register_retention() -> None:
    """Register the batch policy with audit.retention and the pool state with audit.backup (from
    SerializationConfig.ready)."""
    retention.register(POLICY)
    backup.register_state("pools", pool_state)
