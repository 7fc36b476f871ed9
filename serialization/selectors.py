"""Reads of the serial engine, scoped to what the user may see and prefetched for constant query counts.

Scope rule (invariant 5): a user with a masterdata CompanyMembership sees only the pools its company owns — and
everything hanging off them (allocations, exports, imports); users without a membership (the operator's staff) and
superusers see everything. Pools shared to a CMO by its MAH join the scope when partner assignments exist. Model
permissions (view_*) are checked by the caller; these functions only narrow the rows. Out of scope is reported
exactly like "does not exist" (404).
"""

from collections.abc import Mapping
from typing import Any

from django.db.models import Count, F, QuerySet, Sum

from masterdata.selectors import apply_filters, get_visible, scope_to_company
from serialization.models import Allocation, ExportJob, ImportJob, SerialPool


def scope_pools(queryset: QuerySet[SerialPool], *, user) -> QuerySet[SerialPool]:
    """``queryset`` narrowed to the pools ``user`` may see (for the admin, which brings its own queryset)."""
    return scope_to_company(queryset, user=user, company_field="owner_id")


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
