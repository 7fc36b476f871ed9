"""Reads of the partner portal, composed from the scoped selectors of masterdata and serialization.

The portal adds no scope rule of its own: pools, allocations, orders, batches and pack histories come from the
selectors every door uses (invariant 5: a company member sees its own company's rows, anything else is "not found").
What the portal adds is the shape of its pages:

- the **SN/SSCC pool** tab lists the products of the company's unit pools — plus, for a CMO, the products of its
  active partnerships that have no serials yet — with filled / assigned / available summed per product and source
  from the pools' counters, in a constant number of queries whatever the number of products or serials;
- a product's page lists its pools one by one;
- orders, batches and allocations are the scoped reads of ``serialization``.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from guardian.shortcuts import get_objects_for_user

from audit.exceptions import NotFound
from masterdata.models import Company, Product
from masterdata.selectors import apply_filters, get_company, get_user_company_id, get_visible
from partners.models import Partnership, SerialAssignment
from serialization import selectors as serial_selectors
from serialization.models import Allocation, Batch, LineReport, Pack, PackagingOrder, PartnerSegment, SerialPool

SOURCE_LABELS = dict(SerialPool.Source.choices)
SCHEMA_LABELS = dict(Product.CodeSchema.choices)
SEARCH_MAX_LENGTH = 100


@dataclass(frozen=True)
class Counts:
    """Serials of one or more pools by status; available + assigned = filled (invariant 2)."""

    filled: int = 0
    assigned: int = 0

    @property
    def available(self) -> int:
        return self.filled - self.assigned

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.filled + other.filled, self.assigned + other.assigned)


@dataclass(frozen=True)
class SourceCounts:
    """The pools of one product (or SSCC range) that share a source."""

    source: str
    pools: int
    counts: Counts

    @property
    def label(self) -> str:
        return SOURCE_LABELS.get(self.source, self.source)


@dataclass
class PortalProduct:
    """One row of the pool tab: a product code with its pools' counts per source (none yet for a product a CMO
    may pack but has not received serials for)."""

    product_code: str
    code_schema: str
    name: str
    sources: list[SourceCounts] = field(default_factory=list)
    partners: list[str] = field(default_factory=list)  # MAHs whose partnership lets the company pack it

    @property
    def code_schema_label(self) -> str:
        return SCHEMA_LABELS.get(self.code_schema, self.code_schema or "—")

    @property
    def counts(self) -> Counts:
        total = Counts()
        for source in self.sources:
            total += source.counts
        return total

    @property
    def source_labels(self) -> list[str]:
        return [source.label for source in self.sources]

    @property
    def has_serials(self) -> bool:
        return bool(self.sources)


@dataclass
class SsccRange:
    """The SSCC pools of one company prefix and extension digit."""

    extension_digit: str
    prefix: str
    sources: list[SourceCounts] = field(default_factory=list)

    @property
    def code(self) -> str:
        return f"{self.extension_digit}{self.prefix}"

    @property
    def counts(self) -> Counts:
        total = Counts()
        for source in self.sources:
            total += source.counts
        return total

    @property
    def source_labels(self) -> list[str]:
        return [source.label for source in self.sources]


@dataclass
class ProductPools:
    """A product's page: the product and each of the company's pools of it."""

    product: PortalProduct
    pools: list[SerialPool]


# --- the company -------------------------------------------------------------------------------------------------


def get_portal_company(*, user) -> Company | None:
    """The company whose portal ``user`` sees, or None: the portal is for company members only (the operator's own
    staff and superusers, who see every company, use the admin)."""
    if not user or not user.is_authenticated:
        return None
    company_id = get_user_company_id(user=user)
    if company_id is None:
        return None
    return get_company(user=user, pk=company_id)


# --- the pool tab ------------------------------------------------------------------------------------------------


def clean_search(search: Any) -> str:
    return str(search or "").strip()[:SEARCH_MAX_LENGTH]


def _summed_by_source(pools: QuerySet[SerialPool], *group: str) -> QuerySet:
    """One row per ``group`` + source with the pools' counters summed in the database (never a row per serial)."""
    return (
        pools.order_by()  # list_pools orders by columns that would otherwise join the GROUP BY
        .values(*group, "source")
        .annotate(pool_count=Count("pk"), filled_sum=Sum("filled"), assigned_sum=Sum(F("next_index") - F("free")))
        .order_by(*group, "source")
    )


def _source_counts(row: dict) -> SourceCounts:
    return SourceCounts(
        source=row["source"],
        pools=row["pool_count"],
        counts=Counts(filled=row["filled_sum"] or 0, assigned=row["assigned_sum"] or 0),
    )


def list_portal_products(*, user, search: str = "") -> list[PortalProduct]:
    """The pool tab's products, by name: those of the company's unit pools, and — for a CMO — those of its active
    partnerships. ``search`` keeps product codes containing it and names containing it (any case).

    Two queries, whatever the number of products, pools or serials."""
    search = clean_search(search)
    pools = serial_selectors.list_pools(user=user, filters={"kind": SerialPool.Kind.SGTIN})
    if search:
        pools = pools.filter(Q(product_code__icontains=search) | Q(product__name__icontains=search))
    products: dict[str, PortalProduct] = {}
    for row in _summed_by_source(pools, "product_code", "product__name", "product__code_schema"):
        code = row["product_code"]
        product = products.get(code)
        if product is None:
            product = products[code] = PortalProduct(
                product_code=code,
                code_schema=row["product__code_schema"] or "",
                name=row["product__name"] or "",
            )
        product.sources.append(_source_counts(row))
    for code, name, schema, mah in _partnership_products(user=user, search=search):
        product = products.get(code)
        if product is None:
            product = products[code] = PortalProduct(product_code=code, code_schema=schema, name=name)
        if mah not in product.partners:
            product.partners.append(mah)
    return sorted(products.values(), key=lambda p: (p.name.casefold(), p.product_code))


def _partnership_products(*, user, search: str = "", product_code: str = "") -> Iterable[tuple[str, str, str, str]]:
    """(product code, name, code schema, MAH name) of the products the user's company may pack as a CMO."""
    company_id = get_user_company_id(user=user)
    if company_id is None:
        return []
    # The partnerships the CMO's users may see (the object-permission rule of scope_partnerships), active ones.
    partnerships = scope_partnerships(
        Partnership.objects.filter(cmo_id=company_id, status=Partnership.Status.ACTIVE), user=user
    )
    rows = Partnership.products.through.objects.filter(partnership__in=partnerships.values("pk"))
    if search:
        rows = rows.filter(Q(product__product_code__icontains=search) | Q(product__name__icontains=search))
    if product_code:
        rows = rows.filter(product__product_code=product_code)
    return rows.order_by("partnership__mah__name").values_list(
        "product__product_code", "product__name", "product__code_schema", "partnership__mah__name"
    )


def list_sscc_ranges(*, user, search: str = "") -> list[SsccRange]:
    """The company's SSCC pools, one row per extension digit + company prefix; ``search`` matches either. One query."""
    search = clean_search(search)
    pools = serial_selectors.list_pools(user=user, filters={"kind": SerialPool.Kind.SSCC})
    if search:
        # The prefix alone, or the range's code as printed: extension digit followed by the prefix.
        as_code = Q(sscc_extension_digit=search[:1], sscc_prefix__startswith=search[1:])
        pools = pools.filter(Q(sscc_prefix__icontains=search) | as_code)
    ranges: dict[tuple[str, str], SsccRange] = {}
    for row in _summed_by_source(pools, "sscc_extension_digit", "sscc_prefix"):
        key = (row["sscc_extension_digit"], row["sscc_prefix"])
        if key not in ranges:
            ranges[key] = SsccRange(extension_digit=key[0], prefix=key[1])
        ranges[key].sources.append(_source_counts(row))
    return list(ranges.values())


def get_portal_product(*, user, product_code: str) -> ProductPools:
    """A product of the pool tab with each of the company's pools of it; NotFound (404) for a product the company
    has neither pools nor an active partnership for — another company's product reads exactly like no product."""
    product_code = str(product_code)[:14]
    pools = list(
        serial_selectors.list_pools(user=user, filters={"kind": SerialPool.Kind.SGTIN, "product_code": product_code})
        .select_related("product")
        .order_by("source", "pk")
    )
    partnerships = list(_partnership_products(user=user, product_code=product_code))
    if not pools and not partnerships:
        raise NotFound(f"No product {product_code} is visible to you.")
    if pools:
        first = pools[0].product
        product = PortalProduct(
            product_code=product_code,
            code_schema=first.code_schema if first else "",
            name=first.name if first else pools[0].name,
        )
        by_source: dict[str, list[SerialPool]] = defaultdict(list)
        for pool in pools:
            by_source[pool.source].append(pool)
        product.sources = [
            SourceCounts(
                source=source,
                pools=len(group),
                counts=Counts(filled=sum(p.filled for p in group), assigned=sum(p.assigned for p in group)),
            )
            for source, group in by_source.items()
        ]
    else:
        _, name, schema, _ = partnerships[0]
        product = PortalProduct(product_code=product_code, code_schema=schema, name=name)
    product.partners = list(dict.fromkeys(mah for *_, mah in partnerships))
    return ProductPools(product=product, pools=pools)


# --- orders, allocations, line reports, batches ----------------------------------------------------------------------


def list_portal_orders(*, user, include_closed: bool = False) -> QuerySet[PackagingOrder]:
    """The company's packaging orders (open ones unless ``include_closed``), newest first, allocations prefetched."""
    filters = {} if include_closed else {"status": PackagingOrder.Status.OPEN}
    return serial_selectors.list_orders(user=user, filters=filters).order_by("status", "-created_at", "-pk")


def get_portal_order(*, user, pk: Any) -> PackagingOrder:
    return serial_selectors.get_order(user=user, pk=pk)


def get_portal_allocation(*, user, pk: Any) -> Allocation:
    return serial_selectors.get_allocation(user=user, pk=pk)


def list_order_reports(*, order: PackagingOrder, limit: int = 10) -> list[LineReport]:
    """The latest line reports of an order the caller has already fetched through the scoped reads."""
    return list(order.reports.select_related("submitted_by").order_by("-received_at", "-pk")[:limit])


def list_portal_batches(*, user) -> QuerySet[Batch]:
    """The company's batches, newest first, each annotated with its latest reconciliation (passed, failed, none)."""
    return serial_selectors.list_batches(user=user)


def get_pack_history(*, user, product_code: str = "", serial: str = "", sscc: str = ""):
    """The pack history of a unit or an SSCC the user may see (UnknownSerial, a 404 error, otherwise)."""
    return serial_selectors.get_pack_history(
        user=user, product_code=product_code or None, serial=serial or None, sscc=sscc or None
    )


# --- partnerships, assignments, usage (object permissions) ------------------------------------------------------
# Scope rule for what an MAH shares with a CMO: the MAH's own users see it by ownership (the company rule); the CMO's
# users see it only where the CMO's company group holds the object permission (django-guardian, granted by
# partners.services) *and* the CMO is their company; the operator's staff and superusers see everything. Global
# (model-level) view permissions never widen the object scope. Anything else reads exactly like "does not exist".

PARTNERSHIP_FILTERS = {"mah": "mah_id", "cmo": "cmo_id", "status": "status", "product": "products"}


def _scope_shared(queryset: QuerySet, *, user, perm: str, mah_field: str, cmo_field: str) -> QuerySet:
    if not user or not user.is_authenticated:
        return queryset.none()
    company_id = get_user_company_id(user=user)
    if company_id is None:
        return queryset
    granted = get_objects_for_user(
        user, perm, klass=queryset.model, accept_global_perms=False, with_superuser=False
    ).values("pk")
    return queryset.filter(Q(**{mah_field: company_id}) | Q(**{cmo_field: company_id}, pk__in=granted))


def scope_partnerships(queryset: QuerySet[Partnership], *, user) -> QuerySet[Partnership]:
    """``queryset`` narrowed to the partnerships ``user`` may see (for the admin, which brings its own queryset)."""
    return _scope_shared(queryset, user=user, perm="partners.view_partnership", mah_field="mah_id", cmo_field="cmo_id")


def list_partnerships(*, user, filters: dict | None = None) -> QuerySet[Partnership]:
    queryset = (
        Partnership.objects.select_related("mah", "cmo", "created_by")
        .prefetch_related("products", "markets")
        .order_by("mah__name", "cmo__name", "pk")
    )
    return apply_filters(scope_partnerships(queryset, user=user), filters, PARTNERSHIP_FILTERS).distinct()


def get_partnership(*, user, pk: Any) -> Partnership:
    return get_visible(list_partnerships(user=user), pk, "partnership")


def scope_assignments(queryset: QuerySet[SerialAssignment], *, user) -> QuerySet[SerialAssignment]:
    return _scope_shared(
        queryset,
        user=user,
        perm="partners.view_serialassignment",
        mah_field="partnership__mah_id",
        cmo_field="partnership__cmo_id",
    )


def list_assignments(*, user, filters: dict | None = None) -> QuerySet[SerialAssignment]:
    queryset = SerialAssignment.objects.select_related("product", "created_by").order_by("-created_at", "-pk")
    return apply_filters(
        scope_assignments(queryset, user=user),
        filters,
        {"partnership": "partnership_id", "product": "product_id", "request_id": "request_id"},
    )


@dataclass(frozen=True)
class PartnerUsage:
    """What one CMO did with the serials of one product its MAH assigned to it under one partnership.

    ``assigned``: serials the MAH assigned (Assigned in the MAH's pool, received into the CMO's partner pool);
    ``used``: of them, commissioned at the CMO (its packs); ``returned``: handed back to the MAH unused;
    ``remaining``: still with the CMO, neither used nor returned (Available in the partner pool, or allocated to
    the CMO's orders and not yet commissioned)."""

    partnership_id: int
    partnership_status: str
    mah_id: int
    mah_name: str
    cmo_id: int
    cmo_name: str
    product_id: int
    product_code: str
    product_name: str
    in_partnership: bool
    assigned: int = 0
    used: int = 0
    returned: int = 0

    @property
    def remaining(self) -> int:
        return self.assigned - self.used - self.returned


def list_partner_usage(*, user, filters: dict | None = None) -> list[PartnerUsage]:
    """Per partnership and product — each product of the partnership, and each product assigned under it — the
    assigned, used, returned and remaining serials, ordered by MAH, CMO and product code.

    Set-based, five queries whatever the number of partnerships, products, pools or packs: packs are counted per
    partner pool by the database (``COUNT`` over the pack table's (pool, index) index), returns summed from the
    partner pools' return allocations."""
    scoped = scope_partnerships(Partnership.objects.select_related("mah", "cmo"), user=user)
    partnerships = list(apply_filters(scoped, filters, PARTNERSHIP_FILTERS).distinct())
    by_pk = {p.pk: p for p in partnerships}
    if not by_pk:
        return []
    keys: dict[tuple[int, int], dict] = {}
    for partnership_id, product_id, code, name in Partnership.products.through.objects.filter(
        partnership_id__in=by_pk
    ).values_list("partnership_id", "product_id", "product__product_code", "product__name"):
        keys[(partnership_id, product_id)] = {"code": code, "name": name, "in": True, "assigned": 0, "pools": set()}
    assigned_rows = (
        SerialAssignment.objects.filter(partnership_id__in=by_pk)
        .values("partnership_id", "product_id", "product__product_code", "product__name", "partner_pool_id")
        .annotate(total=Sum("quantity"))
        .order_by()
    )
    for row in assigned_rows:
        key = (row["partnership_id"], row["product_id"])
        entry = keys.setdefault(
            key,
            {
                "code": row["product__product_code"],
                "name": row["product__name"],
                "in": False,
                "assigned": 0,
                "pools": set(),
            },
        )
        entry["assigned"] += row["total"]
        entry["pools"].add(row["partner_pool_id"])
    pool_ids = {pool_id for entry in keys.values() for pool_id in entry["pools"]}
    # A CMO's packs are recorded at the MAH pool's index of the serial (one row per serial, whoever packed it), so
    # "used" counts the packs inside each segment the MAH shared — an index range scan per segment, in one query.
    packs_in_segment = (
        Pack.objects.filter(
            pool_id=OuterRef("pool__parent_pool_id"),
            index__gte=OuterRef("parent_first_index"),
            index__lt=OuterRef("parent_first_index") + OuterRef("count"),
        )
        .order_by()
        .values("pool_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    used = dict(
        PartnerSegment.objects.filter(pool_id__in=pool_ids)
        .annotate(n=Coalesce(Subquery(packs_in_segment), 0))
        .values("pool_id")
        .annotate(total=Sum("n"))
        .order_by()
        .values_list("pool_id", "total")
        if pool_ids
        else []
    )
    returned = dict(
        Allocation.objects.filter(pool_id__in=pool_ids, purpose=Allocation.RETURNED)
        .values("pool_id")
        .annotate(n=Sum(F("quantity") - F("released")))
        .values_list("pool_id", "n")
        if pool_ids
        else []
    )
    rows = []
    for (partnership_id, product_id), entry in keys.items():
        partnership = by_pk[partnership_id]
        rows.append(
            PartnerUsage(
                partnership_id=partnership_id,
                partnership_status=partnership.status,
                mah_id=partnership.mah_id,
                mah_name=partnership.mah.name,
                cmo_id=partnership.cmo_id,
                cmo_name=partnership.cmo.name,
                product_id=product_id,
                product_code=entry["code"],
                product_name=entry["name"],
                in_partnership=entry["in"],
                assigned=entry["assigned"],
                used=sum(used.get(pool_id, 0) for pool_id in entry["pools"]),
                returned=sum(returned.get(pool_id, 0) or 0 for pool_id in entry["pools"]),
            )
        )
    return sorted(rows, key=lambda r: (r.mah_name, r.cmo_name, r.product_code, r.partnership_id))
