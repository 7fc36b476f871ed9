"""Reads of the serial engine, scoped to what the user may see and prefetched for constant query counts.

Scope rule (invariant 5): a user with a masterdata CompanyMembership sees only the pools its company owns — and
everything hanging off them (allocations, exports, imports); users without a membership (the operator's staff) and
superusers see everything. Pools shared to a CMO by its MAH join the scope when partner assignments exist. Model
permissions (view_*) are checked by the caller; these functions only narrow the rows. Out of scope is reported
exactly like "does not exist" (404).
"""

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, models
from django.db.models import Count, F, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum
from django.db.models.expressions import RawSQL
from django.utils import timezone

from audit.exceptions import DomainError
from masterdata.models import Location, Market
from masterdata.permissions import granted_pks, granted_pks_sql
from masterdata.selectors import apply_filters, get_user_company_id, get_visible, scope_to_company
from serialization.exceptions import UnknownSerial
from serialization.models import (
    Allocation,
    AllocationRange,
    Batch,
    CaptureJob,
    ExportJob,
    ImportJob,
    LineReport,
    Pack,
    PackagingOrder,
    PackEvent,
    PoolFill,
    Reconciliation,
    Release,
    SerialPool,
)
from serialization.services.lookup import SerialStatus, lookup_serial, lookup_sscc


def scope_pools(queryset: QuerySet[SerialPool], *, user) -> QuerySet[SerialPool]:
    """``queryset`` narrowed to the pools ``user`` may see (for the admin, which brings its own queryset): the
    company's own pools, and its partner pools (a CMO's share of an MAH pool) only while the company group holds the
    object permission the assignment granted."""
    company_id = get_user_company_id(user=user) if user is not None and user.is_authenticated else None
    if company_id is None:
        return scope_to_company(queryset, user=user, company_field="owner_id")
    own = Q(owner_id=company_id) & ~Q(source=SerialPool.Source.PARTNER)
    shared = Q(owner_id=company_id, source=SerialPool.Source.PARTNER, pk__in=granted_pks(SerialPool, user=user))
    return queryset.filter(own | shared)


def scope_allocations(queryset: QuerySet[Allocation], *, user) -> QuerySet[Allocation]:
    return scope_to_company(queryset, user=user, company_field="pool__owner_id")


# --- pools ------------------------------------------------------------------------------------------------------

POOL_FILTERS = {
    "owner": "owner_id",
    "kind": "kind",
    "source": "source",
    "product": "product_id",
    "product_code": "product_code",
    "randomised": "randomised",
}


def list_pools(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[SerialPool]:
    queryset = SerialPool.objects.select_related("owner").order_by("product_code", "sscc_prefix", "pk")
    return apply_filters(scope_pools(queryset, user=user), filters, POOL_FILTERS)


def get_pool(*, user, pk: Any) -> SerialPool:
    return get_visible(list_pools(user=user), pk, "serial pool")


def count_pools_by_source(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet:
    """Filled / assigned / available serials per product code (or SSCC range) and source, one row per pair."""
    queryset = apply_filters(scope_pools(SerialPool.objects.all(), user=user), filters, POOL_FILTERS)
    return (
        queryset.values("kind", "product_code", "sscc_prefix", "sscc_extension_digit", "source")
        .annotate(
            pools=Count("pk"),
            filled_total=Sum("filled"),
            assigned_total=Sum(F("next_index") - F("free")),
        )
        .annotate(available_total=F("filled_total") - F("assigned_total"))
        .order_by("kind", "product_code", "sscc_prefix", "sscc_extension_digit", "source")
    )


# --- allocations --------------------------------------------------------------------------------------------------

ALLOCATION_FILTERS = {
    "pool": "pool_id",
    "purpose": "purpose",
    "request_id": "request_id",
    "reference": "reference",
    "product_code": "pool__product_code",
}


def list_allocations(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[Allocation]:
    queryset = Allocation.objects.select_related("pool", "requested_by").prefetch_related("ranges")
    return apply_filters(scope_allocations(queryset, user=user), filters, ALLOCATION_FILTERS)


def get_allocation(*, user, pk: Any) -> Allocation:
    return get_visible(list_allocations(user=user), pk, "allocation")


def allocation_exists(*, pool: SerialPool, request_id: str) -> bool:
    """Whether ``request_id`` was already used on ``pool`` (a repeated request answers 200, not 201)."""
    return Allocation.objects.filter(pool=pool, request_id=request_id).exists()


# --- export and import jobs -----------------------------------------------------------------------------------------


def list_exports(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[ExportJob]:
    queryset = ExportJob.objects.select_related("allocation__pool", "requested_by")
    queryset = scope_to_company(queryset, user=user, company_field="allocation__pool__owner_id")
    return apply_filters(queryset, filters, {"allocation": "allocation_id", "status": "status"})


def get_export(*, user, pk: Any) -> ExportJob:
    return get_visible(list_exports(user=user), pk, "export")


def list_imports(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[ImportJob]:
    queryset = ImportJob.objects.select_related("pool", "requested_by")
    queryset = scope_to_company(queryset, user=user, company_field="pool__owner_id")
    return apply_filters(queryset, filters, {"pool": "pool_id", "status": "status"})


def get_import(*, user, pk: Any) -> ImportJob:
    return get_visible(list_imports(user=user), pk, "import")


def is_pool_visible(*, user, pool: SerialPool) -> bool:
    return scope_pools(SerialPool.objects.filter(pk=pool.pk), user=user).exists()


# --- EPCIS capture jobs --------------------------------------------------------------------------------------------


def scope_capture_jobs(queryset: QuerySet[CaptureJob], *, user) -> QuerySet[CaptureJob]:
    """Capture jobs sent by users of the user's company (every job for the operator's staff)."""
    return scope_to_company(queryset, user=user, company_field="company_id")


def get_capture_job(*, user, pk) -> CaptureJob:
    """A capture job the user may see, or NotFound (404) — the same for another company's job."""
    return get_visible(scope_capture_jobs(CaptureJob.objects.all(), user=user), pk, "capture job")


# --- batches and packaging orders ---------------------------------------------------------------------------------

BATCH_FILTERS = {"status": "status", "product": "product_id", "lot": "lot", "product_code": "product__product_code"}
ORDER_FILTERS = {"batch": "batch_id", "status": "status", "line": "line_id", "number": "number"}


# Scope rule for production records: the product owner's users see them by ownership (the company rule); a CMO's
# users see an MAH's batch or order only where the CMO's company group holds the object permission, granted when the
# order was placed on the CMO's line (create_packaging_order) — and, for an order, only while it runs on their line.
# The operator's staff see everything. Model-level view permissions never widen the object scope.


def scope_batches(queryset: QuerySet[Batch], *, user) -> QuerySet[Batch]:
    """Batches of products the user's company owns, or shared with its company (a CMO packing them)."""
    company_id = get_user_company_id(user=user) if user is not None and user.is_authenticated else None
    if company_id is None:
        return scope_to_company(queryset, user=user, company_field="product__owner_id")
    return queryset.filter(Q(product__owner_id=company_id) | Q(pk__in=granted_pks(Batch, user=user)))


def scope_orders(queryset: QuerySet[PackagingOrder], *, user) -> QuerySet[PackagingOrder]:
    """Orders for products the user's company owns, or shared with its company and run on its own lines."""
    company_id = get_user_company_id(user=user) if user is not None and user.is_authenticated else None
    if company_id is None:
        return scope_to_company(queryset, user=user, company_field="batch__product__owner_id")
    shared = RawSQL(*_shared_orders_sql(user, company_id))  # noqa: S611 - values are parameters
    return queryset.filter(Q(batch__product__owner_id=company_id) | Q(pk__in=shared))


def with_latest_reconciliation(queryset: QuerySet[Batch]) -> QuerySet[Batch]:
    """Annotate ``latest_reconciliation_id`` / ``_passed`` / ``_at`` (None when never reconciled)."""
    latest = Reconciliation.objects.filter(batch=OuterRef("pk")).order_by("-performed_at", "-pk")
    return queryset.annotate(
        latest_reconciliation_id=Subquery(latest.values("pk")[:1]),
        latest_reconciliation_passed=Subquery(latest.values("passed")[:1]),
        latest_reconciliation_at=Subquery(latest.values("performed_at")[:1]),
    )


def list_batches(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[Batch]:
    queryset = with_latest_reconciliation(
        Batch.objects.select_related("product", "site", "released_by").prefetch_related(
            "lines",
            Prefetch("markets", queryset=Market.objects.order_by("code")),
            Prefetch("orders", queryset=PackagingOrder.objects.order_by("number")),
        )
    )
    return apply_filters(scope_batches(queryset, user=user), filters, BATCH_FILTERS)


def get_batch(*, user, pk: Any) -> Batch:
    return get_visible(list_batches(user=user), pk, "batch")


def list_orders(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[PackagingOrder]:
    queryset = PackagingOrder.objects.select_related("batch__product", "line", "closed_by").prefetch_related(
        Prefetch(
            "allocations",
            queryset=Allocation.objects.select_related("pool", "requested_by")
            .prefetch_related("ranges")
            .order_by("pk"),
        )
    )
    return apply_filters(scope_orders(queryset, user=user), filters, ORDER_FILTERS)


def get_order(*, user, pk: Any) -> PackagingOrder:
    return get_visible(list_orders(user=user), pk, "packaging order")


# --- pack history -------------------------------------------------------------------------------------------------
# For one serial or SSCC: where the number came from (pool, fill or import, allocation), what happened to its pack
# (events in time order) and where it sits (the containers above, the tree below). The number of queries does not
# grow with the tree: each direction of the hierarchy is one recursive CTE (SQLite and PostgreSQL alike), never a
# query per child, and the listing below is capped while its counts stay exact.

LEVEL_NAMES = {0: "unit", 1: "bundle", 2: "case", 3: "pallet"}
LEVEL_PLURALS = {0: "units", 1: "bundles", 2: "cases", 3: "pallets"}
BELOW_LIST_LIMIT = 1_000
# unit → bundle → case → pallet is 3 steps; the bound only stops a corrupt cycle from looping forever.
MAX_HIERARCHY_DEPTH = 8
_IMPORT_JOB_IN_FILL_REASON = re.compile(r"\(job (\d+):")


def level_name(level: int, *, plural: bool = False) -> str:
    names = LEVEL_PLURALS if plural else LEVEL_NAMES
    return names.get(level, f"level {level}")


@dataclass(frozen=True)
class PoolOrigin:
    """How the serial got into its pool: the generator fill that covered its index, or the list import."""

    how: str  # "generated" or "imported"
    fill_quantity: int | None
    fill_reason: str
    filled_at: datetime | None
    filled_by: str
    import_job_id: int | None
    import_file: str
    import_layout: str


@dataclass(frozen=True)
class ReleaseEntry:
    quantity: int
    reason: str
    released_by: str
    created_at: datetime


@dataclass(frozen=True)
class AllocationEntry:
    """The allocation that holds the serial, and the releases of its unused serials (this one stayed held)."""

    id: int
    request_id: str
    purpose: str
    reference: str
    packaging_order: str
    requested_by: str
    created_at: datetime
    quantity: int
    released: int
    releases: tuple[ReleaseEntry, ...]


@dataclass(frozen=True)
class PoolHistory:
    pool_id: int
    pool_name: str
    pool_kind: str
    pool_source: str
    index: int
    status: str  # SerialStatus.ASSIGNED or AVAILABLE
    origin: PoolOrigin
    allocation: AllocationEntry | None
    released_to_available: bool  # handed out once, then released back (the release rows keep no indices)


@dataclass(frozen=True)
class PackState:
    """The pack's current state."""

    level: int
    status: str
    reason: str
    eu_state: str
    batch_lot: str
    batch_expiry: str
    order: str
    commissioned_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class PackTimelineEntry:
    """One PackEvent as a line reported it: who (the report's submitter), when, in which report."""

    occurred_at: datetime
    action: str
    parent_product_code: str
    parent_serial: str  # the SSCC of the container it was packed into (or unpacked from); "" for none
    reason: str
    report_id: str
    report_kind: str
    user: str


@dataclass(frozen=True)
class PackRef:
    """A pack in the hierarchy: ``depth`` steps above (in ``above``) or below (in ``below``) the pack asked about."""

    id: int
    product_code: str
    serial: str
    level: int
    status: str
    depth: int
    parent_serial: str

    @property
    def level_name(self) -> str:
        return level_name(self.level)


@dataclass(frozen=True)
class PackTree:
    """What a container holds: exact counts per level (top level first) and at most BELOW_LIST_LIMIT packs listed,
    upper levels first, in tree order (each container followed by its contents)."""

    counts: dict[str, int]
    total: int
    items: tuple[PackRef, ...]
    truncated: bool


@dataclass(frozen=True)
class PackHistory:
    product_code: str  # "" for an SSCC
    serial: str  # the serial, or the SSCC
    pool: PoolHistory
    pack: PackState | None  # None while the serial was never commissioned
    events: tuple[PackTimelineEntry, ...]
    above: tuple[PackRef, ...]  # nearest container first: unit → case → pallet
    below: PackTree


_EMPTY_TREE = PackTree(counts={}, total=0, items=(), truncated=False)


def scope_packs(queryset: QuerySet[Pack], *, user) -> QuerySet[Pack]:
    """``queryset`` narrowed to the packs of pools ``user`` may see, and the packs packed on the user's company's
    own lines (a CMO's packs are recorded in the MAH's pool, where their serials were made)."""
    company_id = get_user_company_id(user=user) if user is not None and user.is_authenticated else None
    if company_id is None:
        return scope_to_company(queryset, user=user, company_field="pool__owner_id")
    shared = RawSQL(*_shared_orders_sql(user, company_id))  # noqa: S611 - values are parameters
    return queryset.filter(Q(pool__owner_id=company_id) | Q(order_id__in=shared))


def _shared_orders_sql(user, company_id: int) -> tuple[str, list]:
    """The ids of the orders shared with the user's company and run on its lines (see scope_orders), as SQL: their
    packs are the CMO's to see although they are recorded in the MAH's pool, where their serials were made."""
    granted, granted_params = granted_pks_sql(PackagingOrder, user=user)
    sql = (
        f"SELECT shared.id FROM {_table(PackagingOrder)} shared "  # noqa: S608 - names from _meta
        f"JOIN {_table(Location)} shared_line ON shared_line.id = shared.line_id "
        f"WHERE shared_line.company_id = %s AND shared.id IN ({granted})"
    )
    return sql, [company_id, *granted_params]


def _pack_scope_sql(user, prefix: str) -> tuple[str, list]:
    """scope_packs() as a condition on the pack columns ``{prefix}pool_id`` and ``{prefix}order_id`` for the raw
    statements of the pack history: "" for users who see every pool, else packs of the company's pools or of the
    orders shared with it."""
    company_id = get_user_company_id(user=user)
    if company_id is None:
        return "", []
    orders, order_params = _shared_orders_sql(user, company_id)
    pools = f"SELECT id FROM {_table(SerialPool)} WHERE owner_id = %s"  # noqa: S608 - names from _meta
    condition = f"({prefix}pool_id IN ({pools}) OR {prefix}order_id IN ({orders}))"
    return condition, [company_id, *order_params]


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _aware(value: datetime | None) -> datetime | None:
    """A datetime as a raw cursor returns it, aware: PostgreSQL's already are, SQLite's come back naive in UTC
    (the ORM's field converters, which a raw read skips, would have made them aware)."""
    if value is None or timezone.is_aware(value):
        return value
    return timezone.make_aware(value, UTC)


def _username_column() -> str:
    user_model = get_user_model()
    return connection.ops.quote_name(user_model._meta.get_field(user_model.USERNAME_FIELD).column)


@dataclass(frozen=True)
class _PackRead:
    """The pack asked about, with its pool, batch and order, as the one statement of _read_pack returns them."""

    id: int
    pool: SerialPool  # unsaved: the columns the pool history shows
    index: int
    serial: str
    parent_id: int | None
    visible: bool
    state: PackState


def get_pack_history(
    *, user, product_code: str | None = None, serial: str | None = None, sscc: str | None = None
) -> PackHistory:
    """Pool history, pack history and hierarchy of the unit ``product_code`` + ``serial``, or of ``sscc``.

    UnknownSerial (404) for a serial in no pool, and for one in a pool the user may not see. Containers above or
    below that belong to pools outside the user's scope are left out.

    This path must answer in milliseconds with billions of packs: four statements written as SQL (pack, pool
    history, events, hierarchy) after the user's company, since building the equivalent querysets took longer than
    running them.
    """
    if sscc and not (product_code or serial):
        product_code, serial = "", sscc
    elif not (product_code and serial) or sscc:
        raise DomainError("Ask with product_code and serial, or with sscc alone.", field="serial")
    # A commissioned pack knows its pool and index: one indexed read answers where its number lives, without FF1
    # decryption or list-pool probes. Only serials without a (visible) pack go through the lookup.
    pack = _read_pack(product_code, serial, user=user) if user and user.is_authenticated else None
    if pack is None or not pack.visible:
        found = lookup_sscc(sscc=serial) if sscc else lookup_serial(product_code=product_code, serial=serial)
        visible = is_pool_visible(user=user, pool=found.pool) or (
            found.partner_pool is not None and is_pool_visible(user=user, pool=found.partner_pool)
        )
        if found.pack is not None or not visible:
            raise _unknown(product_code, serial)
        return PackHistory(product_code, serial, _pool_history(found.pool, found.index), None, (), (), _EMPTY_TREE)
    above, below = _hierarchy(pack, _pack_scope_sql(user, prefix=""))
    return PackHistory(
        product_code=product_code,
        serial=serial,
        pool=_pool_history(pack.pool, pack.index),
        pack=pack.state,
        events=_timeline(pack.id),
        above=above,
        below=below,
    )


def _unknown(product_code: str, serial: str) -> UnknownSerial:
    """Word for word what lookup_serial / lookup_sscc say about a number that does not exist: whether another
    company's serial exists is not the caller's business."""
    if not product_code:
        return UnknownSerial(
            f"SSCC {serial} is in no SSCC pool here. Check the extension digit and prefix.", field="sscc"
        )
    return UnknownSerial(
        f"Serial {serial!r} of {product_code} is in no pool: it was never generated or imported here. "
        "Check the product code and the serial.",
        field="serial",
    )


def _read_pack(product_code: str, serial: str, *, user) -> _PackRead | None:
    """The pack with this number, its pool, batch and order — named columns only: never the pool's wrapped key —
    and whether ``user`` may see it (the scope rule of scope_packs, evaluated on this one row)."""
    condition, condition_params = _pack_scope_sql(user, prefix="pack.")
    sql = f"""
        SELECT pack.id, pack.pool_id, pack."index", pack.serial, pack.parent_id, pack.level, pack.status, pack.reason,
               pack.eu_state, pack.commissioned_at, pack.updated_at, pool.name, pool.kind, pool.source,
               pool.next_index, pool.owner_id, batch.lot, batch.expiry, ord.number,
               {f"CASE WHEN {condition} THEN 1 ELSE 0 END" if condition else "1"}
        FROM {_table(Pack)} pack
        JOIN {_table(SerialPool)} pool ON pool.id = pack.pool_id
        LEFT JOIN {_table(Batch)} batch ON batch.id = pack.batch_id
        LEFT JOIN {_table(PackagingOrder)} ord ON ord.id = pack.order_id
        WHERE pack.product_code = %s AND pack.serial = %s
    """  # noqa: S608 - names from _meta, values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [*condition_params, product_code, serial])
        row = cursor.fetchone()
    if row is None:
        return None
    pk, pool_id, index, number, parent_id, level, status, reason, eu_state, commissioned_at, updated_at = row[:11]
    pool_name, pool_kind, pool_source, next_index, owner_id, lot, expiry, order_number, visible = row[11:]
    return _PackRead(
        id=pk,
        pool=SerialPool(
            pk=pool_id, name=pool_name, kind=pool_kind, source=pool_source, next_index=next_index, owner_id=owner_id
        ),
        index=index,
        serial=number,
        parent_id=parent_id,
        visible=bool(visible),
        state=PackState(
            level=level,
            status=status,
            reason=reason,
            eu_state=eu_state,
            batch_lot=lot or "",
            batch_expiry=expiry or "",
            order=order_number or "",
            commissioned_at=_aware(commissioned_at),
            updated_at=_aware(updated_at),
        ),
    )


def _username(path: str) -> str:
    """The lookup path of a user's username, for a values() read."""
    return f"{path}__{get_user_model().USERNAME_FIELD}"


def _pool_history(pool: SerialPool, index: int) -> PoolHistory:
    # One statement: the fill that brought the index in (fills only ever raise ``filled``, so the first fill ending
    # above the index) and the range holding it (the last one starting at or below it, a seek on the (pool,
    # first_index) unique index), each found by a keyed subquery, then joined with its user, allocation and order.
    user = _table(get_user_model())
    username = _username_column()
    sql = f"""
        SELECT fill.quantity, fill.reason, fill.created_at, filler.{username},
               held.first_index, held.count, alloc.id, alloc.request_id, alloc.purpose, alloc.reference, ord.number,
               requester.{username}, alloc.created_at, alloc.quantity, alloc.released
        FROM (
            SELECT (SELECT id FROM {_table(PoolFill)} WHERE pool_id = %s AND filled_after > %s
                    ORDER BY filled_after, id LIMIT 1) AS fill_id,
                   (SELECT id FROM {_table(AllocationRange)} WHERE pool_id = %s AND first_index <= %s
                    ORDER BY first_index DESC LIMIT 1) AS range_id
        ) found
        LEFT JOIN {_table(PoolFill)} fill ON fill.id = found.fill_id
        LEFT JOIN {user} filler ON filler.id = fill.actor_id
        LEFT JOIN {_table(AllocationRange)} held ON held.id = found.range_id
        LEFT JOIN {_table(Allocation)} alloc ON alloc.id = held.allocation_id
        LEFT JOIN {_table(PackagingOrder)} ord ON ord.id = alloc.packaging_order_id
        LEFT JOIN {user} requester ON requester.id = alloc.requested_by_id
    """  # noqa: S608 - names from _meta, values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [pool.pk, index, pool.pk, index])
        row = cursor.fetchone()
    fill_quantity, fill_reason, filled_at, filled_by, first_index, count, allocation_id = row[:7]
    request_id, purpose, reference, order_number, requested_by, requested_at, quantity, released = row[7:]
    job = None
    if fill_quantity is not None and not pool.is_generated:
        match = _IMPORT_JOB_IN_FILL_REASON.search(fill_reason)
        if match:
            job = ImportJob.objects.filter(pk=int(match[1]), pool_id=pool.pk).first()
    origin = PoolOrigin(
        how="generated" if pool.is_generated else "imported",
        fill_quantity=fill_quantity,
        fill_reason=fill_reason or "",
        filled_at=_aware(filled_at),
        filled_by=filled_by or "",
        import_job_id=job.pk if job else None,
        import_file=job.original_name if job else "",
        import_layout=job.layout if job else "",
    )
    allocation = None
    if allocation_id is not None and index < first_index + count:
        releases = (
            Release.objects.filter(allocation_id=allocation_id)
            .order_by("created_at", "pk")
            .values_list("quantity", "reason", _username("released_by"), "created_at")
            if released
            else ()
        )
        allocation = AllocationEntry(
            id=allocation_id,
            request_id=request_id,
            purpose=purpose,
            reference=reference,
            packaging_order=order_number or "",
            requested_by=requested_by or "",
            created_at=_aware(requested_at),
            quantity=quantity,
            released=released,
            releases=tuple(ReleaseEntry(q, reason, by or "", at) for q, reason, by, at in releases),
        )
    return PoolHistory(
        pool_id=pool.pk,
        pool_name=pool.name,
        pool_kind=pool.kind,
        pool_source=pool.source,
        index=index,
        status=SerialStatus.ASSIGNED if allocation else SerialStatus.AVAILABLE,
        origin=origin,
        allocation=allocation,
        released_to_available=allocation is None and index < pool.next_index,
    )


def _timeline(pack_id: int) -> tuple[PackTimelineEntry, ...]:
    sql = f"""
        SELECT event.occurred_at, event.action, parent.product_code, parent.serial, event.reason, report.report_id,
               report.kind, submitter.{_username_column()}
        FROM {_table(PackEvent)} event
        LEFT JOIN {_table(Pack)} parent ON parent.id = event.parent_id
        LEFT JOIN {_table(LineReport)} report ON report.id = event.report_id
        LEFT JOIN {_table(get_user_model())} submitter ON submitter.id = report.submitted_by_id
        WHERE event.pack_id = %s
        ORDER BY event.occurred_at, event.id
    """  # noqa: S608 - names from _meta, values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [pack_id])
        rows = cursor.fetchall()
    return tuple(
        PackTimelineEntry(
            _aware(at), action, parent_code or "", parent_serial or "", reason, report_id or "", kind or "", by or ""
        )
        for at, action, parent_code, parent_serial, reason, report_id, kind, by in rows
    )


_PACK_COLUMNS = "id, product_code, serial, level, status, parent_id, pool_id, order_id"
_ABOVE, _COUNT, _BELOW = 0, 1, 2


def _ref(row: tuple, serials: Mapping[int, str]) -> PackRef:
    """A PackRef from (id, product_code, serial, level, status, parent_id, depth)."""
    pk, code, number, level, status, parent_id, depth = row
    return PackRef(pk, code, number, level, status, depth, parent_serial=serials.get(parent_id, ""))


def _hierarchy(pack: _PackRead, scope: tuple[str, list]) -> tuple[tuple[PackRef, ...], PackTree]:
    """The containers above ``pack`` and the tree below it, in one statement: the chain up (``up``), exact counts
    per level over the whole tree below (``tree``, read twice; PostgreSQL materialises it once), and the first
    BELOW_LIST_LIMIT packs below by depth, so containers come before their contents.

    Both recursions start from one row found by primary key (``down`` from the pack itself, at depth 0): the
    planner sizes a recursive CTE from its first step, and a first step of "every child of X" made PostgreSQL
    estimate hundreds of thousands of rows — above ``jit_above_cost``, so each 0.1 ms lookup paid ~25 ms of JIT
    compilation."""
    table = connection.ops.quote_name(Pack._meta.db_table)
    condition, condition_params = scope
    sql = f"""
        WITH RECURSIVE up(id, product_code, serial, level, status, parent_id, pool_id, order_id, depth) AS (
            SELECT {_PACK_COLUMNS}, 1 FROM {table} WHERE id = %s
            UNION ALL
            SELECT p.id, p.product_code, p.serial, p.level, p.status, p.parent_id, p.pool_id, p.order_id, up.depth + 1
            FROM {table} p JOIN up ON p.id = up.parent_id
            WHERE up.depth < %s
        ),
        down(id, product_code, serial, level, status, parent_id, pool_id, order_id, depth) AS (
            SELECT {_PACK_COLUMNS}, 0 FROM {table} WHERE id = %s
            UNION ALL
            SELECT c.id, c.product_code, c.serial, c.level, c.status, c.parent_id, c.pool_id, c.order_id, down.depth + 1
            FROM {table} c JOIN down ON c.parent_id = down.id
            WHERE down.depth < %s
        ),
        tree AS (SELECT * FROM down WHERE depth > 0 {f"AND {condition}" if condition else ""})
        SELECT {_ABOVE}, id, product_code, serial, level, status, parent_id, depth, CAST(NULL AS BIGINT) FROM up
        {f"WHERE {condition}" if condition else ""}
        UNION ALL
        SELECT {_COUNT}, NULL, NULL, NULL, level, NULL, NULL, NULL, COUNT(*) FROM tree GROUP BY level
        UNION ALL
        SELECT * FROM (
            SELECT {_BELOW}, id, product_code, serial, level, status, parent_id, depth, CAST(NULL AS BIGINT) FROM tree
            ORDER BY depth, id LIMIT %s
        ) listed
    """  # noqa: S608 - table name from _meta, scope subquery compiled by the ORM; values are parameters
    params = [pack.parent_id, MAX_HIERARCHY_DEPTH, pack.id, MAX_HIERARCHY_DEPTH, *condition_params, *condition_params]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, BELOW_LIST_LIMIT])
        rows = cursor.fetchall()
    up = sorted((row[1:8] for row in rows if row[0] == _ABOVE), key=lambda row: row[6])
    counts = {row[4]: row[8] for row in rows if row[0] == _COUNT}
    listed = [row[1:8] for row in rows if row[0] == _BELOW]

    up_serials = {row[0]: row[2] for row in up}
    above = tuple(_ref(row, up_serials) for row in up)

    serials = {pack.id: pack.serial, **{row[0]: row[2] for row in listed}}
    children: dict[int, list[tuple]] = defaultdict(list)
    for row in listed:
        children[row[5]].append(row)
    ordered: list[tuple] = []

    def walk(parent_id: int) -> None:
        for row in children.pop(parent_id, ()):
            ordered.append(row)
            walk(row[0])

    walk(pack.id)
    # Packs whose container is out of the user's scope have no listed parent: they follow, by depth.
    ordered.extend(sorted((row for rows_ in children.values() for row in rows_), key=lambda row: (row[6], row[0])))
    total = sum(counts.values())
    below = PackTree(
        counts={level_name(level, plural=True): counts[level] for level in sorted(counts, reverse=True)},
        total=total,
        items=tuple(_ref(row, serials) for row in ordered),
        truncated=total > len(listed),
    )
    return above, below
