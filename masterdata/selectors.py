"""Reads of master data, scoped to what the user may see and prefetched for constant query counts.

Scope rule (ARCHITECTURE.md, invariant 5): a user with a CompanyMembership sees only their own company, its
locations and the products it owns; users without a membership (the operator's own staff) and superusers see
everything; markets are reference data visible to every authenticated user. Model permissions (view_*) are checked
by the caller (API permission classes, admin); these functions only narrow the rows.
"""

from collections.abc import Mapping
from typing import Any

from django.db.models import QuerySet

from audit.exceptions import NotFound
from masterdata.models import Company, CompanyMembership, Location, Market, Product

_UNSCOPED = object()


def get_user_company_id(*, user) -> int | None:
    """The id of the company ``user`` is confined to, or None when the user may see every company."""
    if user.is_superuser:
        return None
    cached = getattr(user, "_masterdata_company_id", _UNSCOPED)
    if cached is _UNSCOPED:
        cached = CompanyMembership.objects.filter(user_id=user.pk).values_list("company_id", flat=True).first()
        user._masterdata_company_id = cached
    return cached


def scope_to_company(queryset: QuerySet, *, user, company_field: str) -> QuerySet:
    """Rows of the user's own company (by ``company_field``) for a company member; every row for the operator's
    own staff (no membership); none for anonymous users. Every app's selectors scope through this."""
    if not user or not user.is_authenticated:
        return queryset.none()
    company_id = get_user_company_id(user=user)
    if company_id is None:
        return queryset
    return queryset.filter(**{company_field: company_id})


def apply_filters(queryset: QuerySet, filters: Mapping[str, Any] | None, allowed: Mapping[str, str]) -> QuerySet:
    """Apply the known, non-empty ``filters`` (name → ORM lookup); unknown names are a programming error."""
    for name, value in (filters or {}).items():
        if name not in allowed:
            raise ValueError(f"Unknown filter {name!r}; use one of {', '.join(sorted(allowed))}.")
        if value not in (None, ""):
            queryset = queryset.filter(**{allowed[name]: value})
    return queryset


def get_visible(queryset: QuerySet, pk: Any, label: str):
    """The row ``pk`` of an already scoped queryset, or NotFound (404) — the same answer for out-of-scope rows."""
    try:
        return queryset.get(pk=pk)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
        # Objects outside the user's scope are reported exactly like objects that do not exist.
        raise NotFound(f"No {label} with id {pk} is visible to you.") from None


def list_companies(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[Company]:
    queryset = scope_to_company(Company.objects.with_prefixes(), user=user, company_field="pk")
    return apply_filters(
        queryset,
        filters,
        {
            "is_mah": "is_mah",
            "is_cmo": "is_cmo",
            "is_3pl": "is_3pl",
            "is_wholesaler": "is_wholesaler",
            "country": "country",
        },
    )


def get_company(*, user, pk: Any) -> Company:
    return get_visible(list_companies(user=user), pk, "company")


def list_locations(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[Location]:
    queryset = scope_to_company(Location.objects.with_sgln_data(), user=user, company_field="company_id")
    return apply_filters(
        queryset, filters, {"company": "company_id", "kind": "kind", "parent": "parent_id", "is_active": "is_active"}
    )


def get_location(*, user, pk: Any) -> Location:
    return get_visible(list_locations(user=user), pk, "location")


def list_markets(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[Market]:
    if not user or not user.is_authenticated:
        return Market.objects.none()
    return apply_filters(Market.objects.all(), filters, {"code": "code"})


def get_market(*, user, pk: Any) -> Market:
    return get_visible(list_markets(user=user), pk, "market")


def list_products(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[Product]:
    queryset = scope_to_company(Product.objects.with_details(), user=user, company_field="owner_id")
    return apply_filters(
        queryset,
        filters,
        {
            "owner": "owner_id",
            "market": "markets__code",
            "code_schema": "code_schema",
            "product_code": "product_code",
            "is_active": "is_active",
        },
    )


def get_product(*, user, pk: Any) -> Product:
    return get_visible(list_products(user=user), pk, "product")
