"""Handing serials out (allocation) and taking unused ones back (release).

Allocation takes the pool row — the row that owns the free space — and holds it as briefly as it can. Its cost
does not depend on how many serials it grants: it moves a cursor and records an index range.

Three paths, one lock order (the pool row, then allocation rows), so concurrent callers queue and never deadlock:

* **One statement** (PostgreSQL, called outside any transaction, nothing released waiting): a single
  ``UPDATE pool SET next_index = next_index + n … RETURNING`` chained by CTEs into the inserts of the Allocation,
  its history row and its range. It commits asynchronously, so the row lock is released without waiting for the
  WAL flush, and the service then waits for durability *outside* the lock with a flush barrier (a tiny
  synchronously committed transaction that writes WAL; WAL is flushed in order, so the barrier's flush covers the
  allocation's commit record). Nothing is returned before the allocation is durable, and a crash before the flush
  loses the allocation together with its cursor move, so no serial can be handed out twice. Fsyncs of concurrent
  callers overlap instead of queueing behind the pool lock — that is what keeps latency low under contention.
* **Cursor first** (any database, e.g. inside a caller's transaction): the same ``UPDATE … RETURNING`` takes the
  lock; then the Allocation (with its history row) and its range are written through the ORM.
* **General** (released ranges wait, the pool is short, or the cursor could not move): ``SELECT … FOR UPDATE`` of
  the pool, released ranges handed out first (lowest index first), then fresh indices; a short pool grants
  nothing (PoolExhausted, with the available count) or, when the caller allows it, a recorded partial fulfilment.

Release and the general path commit the same way as the one statement when they own the transaction
(``_locked_section``): asynchronously, then a flush barrier before returning. Readers may glimpse such a commit a
moment before it is durable; every *write* that builds on it (say, an allocation reusing released serials) commits
after it, so its own barrier flushes both.

A unique (pool, request_id) constraint makes a retried request return the first result even when two copies race:
the second insert fails once the first commits, and the retry answers from the committed row. By the project's
convention no workflow hangs on Allocation signals; the one-statement path is not taken while receivers of
django-simple-history's history-record signals other than the audit chain's are connected, because it writes the
history row (and its audit-chain link) itself.
"""

import contextlib
import functools
import hashlib
import re
import weakref
from collections.abc import Iterator, Sequence

import numpy as np
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, ProgrammingError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from audit.chain import history_receivers_besides_chain, link_insert_sql
from serialization.exceptions import (
    IdempotencyConflict,
    InvalidAllocationRequest,
    PoolBlocked,
    PoolExhausted,
    ReleaseRefused,
    RequestTooLarge,
)
from serialization.models import Allocation, AllocationRange, FreeRange, Pack, PartnerSegment, Release, SerialPool

Interval = tuple[int, int]  # (first_index, count)

_REQUEST_ID_MAX = Allocation._meta.get_field("request_id").max_length
_REFERENCE_MAX = Allocation._meta.get_field("reference").max_length
_PURPOSES = frozenset(Allocation.Purpose.values)
_INSERT_FIELDS = tuple(f for f in Allocation._meta.concrete_fields if not f.primary_key)


def _fingerprint(pool: SerialPool, quantity: int, purpose: str, reference: str, allow_partial: bool) -> str:
    text = f"{pool.pk}|{quantity}|{purpose}|{reference}|{int(allow_partial)}"
    return hashlib.sha256(text.encode()).hexdigest()


def _replay(pool: SerialPool, request_id: str, fingerprint: str) -> Allocation | None:
    existing = Allocation.objects.filter(pool=pool, request_id=request_id).first()
    if existing is None:
        return None
    if existing.fingerprint != fingerprint:
        raise IdempotencyConflict(
            f"Request id {request_id!r} was already used on this pool with other parameters "
            f"({existing.requested_quantity} serials for {existing.purpose} {existing.reference!r}); "
            "send a new request id for a new request.",
            field="request_id",
            details={"allocation": existing.pk},
        )
    return existing


def _check_request(*, pool: SerialPool, quantity: int, request_id: str, purpose: str, reference: str) -> None:
    limit = min(pool.max_per_request, settings.SERIAL_MAX_PER_REQUEST)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1 or quantity > limit:
        raise RequestTooLarge(
            f"Ask for 1 to {limit:,} serials per request from {pool} (asked {quantity!r}); split larger needs "
            "into several requests.",
            field="quantity",
            details={"max_per_request": limit, "requested": quantity},
        )
    if not request_id or len(request_id) > _REQUEST_ID_MAX:
        raise InvalidAllocationRequest(
            f"Give a request id of 1 to {_REQUEST_ID_MAX} characters, so a retried request returns the same serials.",
            field="request_id",
        )
    if purpose not in _PURPOSES:
        raise InvalidAllocationRequest(
            f"Purpose {purpose!r} is unknown; use one of {', '.join(Allocation.Purpose.values)}.", field="purpose"
        )
    if len(reference) > _REFERENCE_MAX:
        raise InvalidAllocationRequest(f"The reference has at most {_REFERENCE_MAX} characters.", field="reference")


def allocate_serials(
    *,
    pool: SerialPool,
    quantity: int,
    actor,
    request_id: str,
    purpose: str,
    reference: str = "",
    allow_partial: bool = False,
) -> Allocation:
    """Grant ``quantity`` Available serials of ``pool`` at once, or raise; idempotent by ``request_id``.

    With ``allow_partial`` a short pool grants what it has (recorded as a partial fulfilment); without it, a short
    pool grants nothing and says how many are available. Released serials are handed out again first.
    """
    _check_request(pool=pool, quantity=quantity, request_id=request_id, purpose=purpose, reference=reference)
    fingerprint = _fingerprint(pool, quantity, purpose, reference, allow_partial)
    request = Allocation(
        pool=pool,
        request_id=request_id,
        purpose=purpose,
        reference=reference,
        requested_quantity=quantity,
        quantity=quantity,
        allow_partial=allow_partial,
        fingerprint=fingerprint,
        requested_by=actor,
    )
    try:
        # ``pool`` may be stale: every path re-checks the counters in the database under the lock.
        if not pool.free and _one_statement_path_available():
            allocation = _allocate_in_one_statement(request, actor)
            if allocation is not None:
                return allocation
        with _locked_section():
            return _allocate_in_transaction(request, actor, cursor_first=not pool.free)
    except (IntegrityError, PoolExhausted):
        # A retry of a request that was granted before — while the pool has emptied since, or racing its first
        # copy into the unique constraint — answers with what the first copy got.
        replay = _replay(pool, request_id, fingerprint)
        if replay is None:
            raise
        return replay


# --- commits that do not wait for the disk under the pool lock -----------------------------------------------------


_BARRIER_SQL = "SELECT pg_logical_emit_message(true, 'serialization.allocation', %s)"


def _wait_until_durable(cursor, note: str) -> None:
    """Flush barrier: a transaction that writes WAL and commits synchronously. WAL is flushed in order, so when it
    returns every earlier commit of this session — the asynchronous one just made — is on disk too."""
    cursor.execute(_BARRIER_SQL, [note])


@contextlib.contextmanager
def _locked_section() -> Iterator[None]:
    """``transaction.atomic()`` for a section that locks the pool row. On PostgreSQL, when this is the outermost
    transaction, it commits asynchronously — releasing the lock without waiting for the WAL flush — and then waits
    for the flush outside the lock, before returning: nothing is reported done before it is durable, and a crash
    in between loses the whole transaction, which nobody was told about. Inside a caller's transaction it is a
    plain savepoint: the caller's commit decides."""
    db = connections[DEFAULT_DB_ALIAS]
    asynchronous = db.vendor == "postgresql" and not db.in_atomic_block
    with transaction.atomic(using=db.alias):
        if asynchronous:
            with db.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
        yield
    if asynchronous:
        with db.cursor() as cursor:
            _wait_until_durable(cursor, "locked section")


# --- the one-statement path (PostgreSQL) ------------------------------------------------------------------------------


@functools.cache
def _history_model():
    return Allocation.history.model  # each access of Allocation.history builds a manager class: look it up once


def _one_statement_path_available() -> bool:
    return (
        connection.vendor == "postgresql"
        and not connection.in_atomic_block  # inside a caller's transaction the lock lasts until its commit anyway
        and getattr(settings, "SIMPLE_HISTORY_ENABLED", True)
        and not history_receivers_besides_chain(_history_model())
        and _one_statement_sql() is not None
    )


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _move_cursor_sql() -> str:
    """UPDATE … RETURNING the first index of ``n`` fresh indices, when nothing released waits and ``n`` fit."""
    meta = SerialPool._meta
    table, cursor = _qn(meta.db_table), _qn(meta.get_field("next_index").column)
    free, filled, pk, blocked = (
        _qn(meta.get_field(name).column) for name in ("free", "filled", "id", "blocked_reason")
    )
    # Only quoted identifiers from the models' _meta are spliced into SQL here; every value is a parameter.
    return (
        f"UPDATE {table} SET {cursor} = {cursor} + %(n)s "  # noqa: S608
        f"WHERE {pk} = %(pool)s AND {free} = 0 AND {filled} - {cursor} >= %(n)s AND {blocked} = '' "
        f"RETURNING {cursor} - %(n)s"
    )


@functools.cache
def _one_statement_sql() -> str | None:
    """Cursor move, Allocation, its history row and its range in one statement, committed asynchronously.

    Built from the models' _meta so it follows field changes; None (path unused) if the history model has a
    field this function does not know how to fill.
    """
    insert_fields = _INSERT_FIELDS
    allocation_columns = {f.column for f in Allocation._meta.concrete_fields}
    history_meta = _history_model()._meta
    history_columns, history_values = [], []
    for field in history_meta.concrete_fields:
        if field.name == "history_id":
            continue
        if field.column in allocation_columns:
            value = f"alloc.{_qn(field.column)}"
        else:
            value = {
                "history_date": "%(now)s",
                "history_change_reason": "NULL",
                "history_type": "'+'",
                "history_user": "%(actor)s",
            }.get(field.name)
            if value is None:
                return None
        history_columns.append(_qn(field.column))
        history_values.append(value)
    # The history row's link in the audit chain, in the same statement (audit.chain seals it after the commit).
    chain_link = link_insert_sql(_history_model(), source="hist", id_column=history_meta.pk.column, now_sql="%(now)s")
    range_meta = AllocationRange._meta
    range_columns = ", ".join(
        _qn(range_meta.get_field(name).column) for name in ("allocation", "pool", "first_index", "count")
    )
    moved = _move_cursor_sql().replace(
        "WHERE ",
        # SET LOCAL for this statement's own transaction: commit without waiting for the WAL flush (see above).
        "WHERE (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL AND ",
        1,
    )
    return (
        f"WITH moved(first_index) AS ({moved}), "  # noqa: S608
        f"alloc AS (INSERT INTO {_qn(Allocation._meta.db_table)} "
        f"({', '.join(_qn(f.column) for f in insert_fields)}) "
        f"SELECT {', '.join(f'%(a_{f.column})s' for f in insert_fields)} FROM moved RETURNING *), "
        f"hist AS (INSERT INTO {_qn(history_meta.db_table)} ({', '.join(history_columns)}) "
        f"SELECT {', '.join(history_values)} FROM alloc RETURNING {_qn(history_meta.pk.column)}), "
        f"link AS ({chain_link}), "
        f"rng AS (INSERT INTO {_qn(range_meta.db_table)} ({range_columns}) "
        f"SELECT alloc.{_qn(Allocation._meta.pk.column)}, %(pool)s, moved.first_index, %(n)s FROM alloc, moved) "
        f"SELECT alloc.{_qn(Allocation._meta.pk.column)} FROM alloc"
    )


_PREPARED_NAME = "serialization_allocate_v1"
_prepared_on: "weakref.WeakSet" = weakref.WeakSet()  # the psycopg connections that hold the prepared statement


@functools.cache
def _prepared_sql() -> tuple[str, tuple[str, ...]]:
    """The PREPARE statement for ``_one_statement_sql`` and its parameter names in $1, $2, … order.

    Prepared once per connection, the statement is parsed and planned once instead of on every allocation.
    """
    sql = _one_statement_sql()
    names = tuple(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))
    types = {
        "n": "bigint",
        "pool": SerialPool._meta.pk.db_type(connection),
        "now": _history_model()._meta.get_field("history_date").db_type(connection),
        "actor": _history_model()._meta.get_field("history_user").db_type(connection),
    }
    for field in Allocation._meta.concrete_fields:
        types[f"a_{field.column}"] = field.db_type(connection)
    for position, name in enumerate(names, 1):
        sql = sql.replace(f"%({name})s", f"${position}")
    return f"PREPARE {_PREPARED_NAME} ({', '.join(types[name] for name in names)}) AS {sql}", names


def _run_one_statement(db, cursor, params: dict) -> tuple | None:
    raw = db.connection
    prepare_sql, names = _prepared_sql()
    if raw not in _prepared_on:
        cursor.execute(prepare_sql)
        _prepared_on.add(raw)
    try:
        cursor.execute(f"EXECUTE {_PREPARED_NAME} ({', '.join(['%s'] * len(names))})", [params[n] for n in names])
    except ProgrammingError as exc:
        # The session lost its prepared statements (DISCARD ALL by a connection pooler): run the plain statement.
        if getattr(exc.__cause__, "sqlstate", None) != "26000":  # invalid_sql_statement_name
            raise
        _prepared_on.discard(raw)
        cursor.execute(_one_statement_sql(), params)
    return cursor.fetchone()


def _allocate_in_one_statement(request: Allocation, actor) -> Allocation | None:
    """The whole allocation in one autocommit statement, then a flush barrier; None if the cursor cannot move."""
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: every attribute of the proxy costs a lookup
    now = timezone.now()
    request.created_at = now
    params = {
        "n": request.requested_quantity,
        "pool": request.pool_id,
        "now": now,
        "actor": actor.pk if actor is not None else None,
    }
    for field in _INSERT_FIELDS:
        params[f"a_{field.column}"] = field.get_db_prep_save(getattr(request, field.attname), db)
    with db.cursor() as cursor:
        row = _run_one_statement(db, cursor, params)
        if row is None:
            return None
        # Outside the lock, and before anyone is told: the allocation's commit reaches the disk.
        _wait_until_durable(cursor, str(row[0]))
    request.pk = row[0]
    request._state.adding = False
    request._state.db = db.alias
    return request


# --- the cursor-first and general paths (any database) -----------------------------------------------------------


def _allocate_in_transaction(request: Allocation, actor, *, cursor_first: bool) -> Allocation:
    quantity = request.requested_quantity
    ranges: list[Interval] = []
    if cursor_first:
        with connection.cursor() as cursor:
            cursor.execute(_move_cursor_sql(), {"n": quantity, "pool": request.pool_id})
            row = cursor.fetchone()
        if row is not None:
            ranges = [(row[0], quantity)]
    if not ranges:
        ranges = _take_under_lock(request)
    request.quantity = sum(count for _, count in ranges)
    request._history_user = actor
    request.save()
    AllocationRange.objects.bulk_create(
        AllocationRange(allocation=request, pool_id=request.pool_id, first_index=first, count=count)
        for first, count in ranges
    )
    return request


def _take_under_lock(request: Allocation) -> list[Interval]:
    """The general path: reuse released ranges (lowest first), then fresh indices; partial or refuse when short."""
    quantity = request.requested_quantity
    # NO KEY: counters are not keys, so an import's KEY SHARE check on the pool row does not make us wait.
    locked = SerialPool.objects.select_for_update(no_key=True).get(pk=request.pool_id)
    if locked.blocked_reason:
        raise PoolBlocked(
            f"{locked} takes no new allocations: {locked.blocked_reason}. Serials already allocated stay usable; "
            "ask the MAH to reopen the partnership for more.",
            field="pool",
        )
    available = locked.available
    if quantity > available and (not request.allow_partial or available == 0):
        raise PoolExhausted(
            f"{locked} has {available:,} serials available; {quantity:,} were asked. "
            + (
                "Fill or import more serials, or ask with allow_partial."
                if available
                else "Fill or import more serials."
            ),
            field="quantity",
            details={"available": available, "requested": quantity},
        )
    grant = min(quantity, available)
    ranges = _take_free_ranges(locked, grant) if locked.free else []
    reused = sum(count for _, count in ranges)
    fresh = grant - reused
    if fresh:
        ranges.append((locked.next_index, fresh))
    SerialPool.objects.filter(pk=locked.pk).update(next_index=F("next_index") + fresh, free=F("free") - reused)
    return ranges


def _take_free_ranges(pool: SerialPool, wanted: int) -> list[Interval]:
    """Consume released ranges, lowest index first, under the pool lock the caller holds (at most three queries)."""
    taken: list[Interval] = []
    last_whole = None
    split: tuple[int, int] | None = None
    rows = FreeRange.objects.filter(pool=pool).order_by("first_index").values_list("pk", "first_index", "count")
    for pk, first, count in rows.iterator(chunk_size=2000):
        take = min(count, wanted)
        taken.append((first, take))
        wanted -= take
        if take == count:
            last_whole = first
        else:
            split = (pk, take)
        if wanted == 0:
            break
    if last_whole is not None:
        FreeRange.objects.filter(pool=pool, first_index__lte=last_whole).delete()
    if split is not None:
        pk, take = split
        FreeRange.objects.filter(pk=pk).update(first_index=F("first_index") + take, count=F("count") - take)
    return taken


def allocation_ranges(allocation: Allocation) -> list[Interval]:
    return list(allocation.ranges.order_by("first_index").values_list("first_index", "count"))


def release_serials(*, allocation: Allocation, actor, reason: str, indices: Sequence[int] | None = None) -> Release:
    """Give unused serials of ``allocation`` back to Available, with who and why.

    Without ``indices`` every serial of the allocation that was not commissioned is released (closing an order);
    with them, exactly those — and if any of them was commissioned, nothing is released. Serials shared with a CMO
    come back only through the CMO's partner pool (``partner_pools.return_partner_serials``), never from here: the
    CMO could otherwise still hand out serials the MAH hands out again.
    """
    return _release(allocation=allocation, actor=actor, reason=reason, indices=indices, partner_return=False)


def release_returned_partner_serials(*, allocation: Allocation, actor, reason: str, indices: Sequence[int]) -> Release:
    """The MAH side of a CMO's return: ``indices`` were already taken out of the CMO's partner pool."""
    return _release(allocation=allocation, actor=actor, reason=reason, indices=indices, partner_return=True)


def _release(
    *, allocation: Allocation, actor, reason: str, indices: Sequence[int] | None, partner_return: bool
) -> Release:
    reason = (reason or "").strip()
    if not reason:
        raise ReleaseRefused("Say why the serials are released (the reason is kept in the record).", field="reason")
    with _locked_section():
        # Pool before allocation: the order allocate_serials takes them in.
        pool = SerialPool.objects.select_for_update().get(pk=allocation.pool_id)
        locked = Allocation.objects.select_for_update().get(pk=allocation.pk)
        if locked.purpose == Allocation.RETURNED:
            raise ReleaseRefused(
                "These serials were returned to the MAH and are no longer the CMO's; there is nothing to release."
            )
        if not partner_return and PartnerSegment.objects.filter(allocation=locked).exists():
            raise ReleaseRefused(
                f"Allocation {locked.request_id!r} was shared with a CMO: return its unused serials through the "
                "partnership (the CMO's partner pool), not by releasing the allocation."
            )
        held = allocation_ranges(locked)
        if indices is None:
            wanted = held
        else:
            wanted = runs_of(np.unique(np.asarray(list(indices), dtype=np.int64)))
            outside = subtract(wanted, held)
            if outside:
                first = outside[0][0]
                raise ReleaseRefused(
                    f"{sum(c for _, c in outside)} of the given serials are not held by this allocation "
                    f"(the first at index {first}); release only serials of allocation {locked.request_id!r}.",
                    field="serials",
                )
        commissioned = intersect(wanted, _commissioned_runs(pool, held))
        if indices is not None and commissioned:
            count = sum(c for _, c in commissioned)
            raise ReleaseRefused(
                f"{count} of the given serials were commissioned and can never be released; remove them and retry.",
                field="serials",
                details={"commissioned": count},
            )
        to_release = subtract(wanted, commissioned)
        quantity = sum(c for _, c in to_release)
        if quantity == 0:
            raise ReleaseRefused("Nothing to release: every serial of this allocation is commissioned or released.")
        remaining = subtract(held, to_release)
        locked.ranges.all().delete()
        AllocationRange.objects.bulk_create(
            AllocationRange(allocation=locked, pool=pool, first_index=f, count=c) for f, c in remaining
        )
        FreeRange.objects.bulk_create(FreeRange(pool=pool, first_index=f, count=c) for f, c in to_release)
        SerialPool.objects.filter(pk=pool.pk).update(free=F("free") + quantity)
        locked.released += quantity
        locked._history_user = actor
        locked._change_reason = reason
        locked.save(update_fields=["released"])
        return Release.objects.create(allocation=locked, quantity=quantity, reason=reason, released_by=actor)


def _commissioned_runs(pool: SerialPool, held: Sequence[Interval]) -> list[Interval]:
    """Runs of commissioned indices inside ``held`` (one index range query per held range; held ranges are few)."""
    runs: list[Interval] = []
    for first, count in held:
        found = (
            Pack.objects.filter(pool=pool, index__gte=first, index__lt=first + count)
            .order_by("index")
            .values_list("index", flat=True)
        )
        runs.extend(runs_of(np.fromiter(found.iterator(chunk_size=50_000), dtype=np.int64)))
    return runs


def runs_of(sorted_indices: np.ndarray) -> list[Interval]:
    """[3,4,5,9] → [(3, 3), (9, 1)]: consecutive indices as (first, count) runs."""
    if sorted_indices.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_indices) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [sorted_indices.size]))
    return [(int(sorted_indices[s]), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def subtract(intervals: Sequence[Interval], removed: Sequence[Interval]) -> list[Interval]:
    """The parts of ``intervals`` not covered by ``removed``; neither list may overlap itself."""
    result: list[Interval] = []
    cut = sorted(removed)
    j = 0
    for first, count in sorted(intervals):
        start, end = first, first + count
        while j < len(cut) and cut[j][0] + cut[j][1] <= start:
            j += 1
        k = j
        while start < end and k < len(cut) and cut[k][0] < end:
            c_start, c_end = cut[k][0], cut[k][0] + cut[k][1]
            if c_start > start:
                result.append((start, c_start - start))
            start = max(start, c_end)
            k += 1
        if start < end:
            result.append((start, end - start))
    return result


def intersect(intervals: Sequence[Interval], other: Sequence[Interval]) -> list[Interval]:
    """The parts of ``intervals`` that ``other`` covers."""
    return subtract(intervals, subtract(intervals, other))
