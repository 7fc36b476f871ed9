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

from audit.exceptions import NotFound
from masterdata.selectors import get_user_company_id
from serialization.models import Allocation, ExportJob, ImportJob, SerialPool


def _visible(queryset: QuerySet, *, user, owner_field: str) -> QuerySet:
    if user is None or not user.is_authenticated:
        return queryset.none()
    company_id = get_user_company_id(user=user)
    if company_id is None:
        return queryset
    return queryset.filter(**{owner_field: company_id})


def _apply(queryset: QuerySet, filters: Mapping[str, Any] | None, allowed: Mapping[str, str]) -> QuerySet:
    for name, value in (filters or {}).items():
        if name not in allowed:
            raise ValueError(f"Unknown filter {name!r}; use one of {', '.join(sorted(allowed))}.")
        if value not in (None, ""):
            queryset = queryset.filter(**{allowed[name]: value})
    return queryset


def _get(queryset: QuerySet, pk: Any, label: str):
    try:
        return queryset.get(pk=pk)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"No {label} with id {pk} is visible to you.") from None


def scope_pools(queryset: QuerySet[SerialPool], *, user) -> QuerySet[SerialPool]:
    """``queryset`` narrowed to the pools ``user`` may see (for the admin, which brings its own queryset)."""
    return _visible(queryset, user=user, owner_field="owner_id")


def scope_allocations(queryset: QuerySet[Allocation], *, user) -> QuerySet[Allocation]:
    return _visible(queryset, user=user, owner_field="pool__owner_id")


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
    return _apply(scope_pools(queryset, user=user), filters, POOL_FILTERS)


def get_pool(*, user, pk: Any) -> SerialPool:
    return _get(list_pools(user=user), pk, "serial pool")


def count_pools_by_source(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet:
    """Filled / assigned / available serials per product code (or SSCC range) and source, one row per pair."""
    queryset = _apply(scope_pools(SerialPool.objects.all(), user=user), filters, POOL_FILTERS)
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
    return _apply(scope_allocations(queryset, user=user), filters, ALLOCATION_FILTERS)


def get_allocation(*, user, pk: Any) -> Allocation:
    return _get(list_allocations(user=user), pk, "allocation")


def allocation_exists(*, pool: SerialPool, request_id: str) -> bool:
    """Whether ``request_id`` was already used on ``pool`` (a repeated request answers 200, not 201)."""
    return Allocation.objects.filter(pool=pool, request_id=request_id).exists()


# --- export and import jobs -----------------------------------------------------------------------------------------


def list_exports(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[ExportJob]:
    queryset = ExportJob.objects.select_related("allocation__pool", "requested_by")
    queryset = _visible(queryset, user=user, owner_field="allocation__pool__owner_id")
    return _apply(queryset, filters, {"allocation": "allocation_id", "status": "status"})


def get_export(*, user, pk: Any) -> ExportJob:
    return _get(list_exports(user=user), pk, "export")


def list_imports(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[ImportJob]:
    queryset = ImportJob.objects.select_related("pool", "requested_by")
    queryset = _visible(queryset, user=user, owner_field="pool__owner_id")
    return _apply(queryset, filters, {"pool": "pool_id", "status": "status"})


def get_import(*, user, pk: Any) -> ImportJob:
    return _get(list_imports(user=user), pk, "import")


def is_pool_visible(*, user, pool: SerialPool) -> bool:
    return scope_pools(SerialPool.objects.filter(pk=pool.pk), user=user).exists()
