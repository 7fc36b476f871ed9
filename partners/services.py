"""Writes of partners: partnerships between an MAH and a CMO, serials the MAH assigns to the CMO, and their return.

Allocation rules belong to the serial engine: an assignment is one ``serialization.services.allocate_serials`` from
the MAH's pool (purpose "CMO") shared into the CMO's partner pool by ``share_allocation``; a return is
``return_partner_serials``. What this module adds is the contract around them — who may assign what to whom, and
while the partnership is active — and the object permissions that let the CMO's users see what was shared
(``partners.permissions``).

Locks: a service that writes under a partnership locks the partnership row first (``select_for_update``), then lets
the engine lock its pools. Revoking takes the same row lock, so an assignment racing a revocation either commits
before it or sees the partnership revoked — never an assignment under a revoked partnership.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.exceptions import Conflict, DomainError, PermissionDenied
from masterdata.models import Company, Market, Product
from masterdata.permissions import grant_company_object_permissions
from masterdata.selectors import get_user_company_id
from partners.models import Partnership, SerialAssignment
from serialization import selectors as serial_selectors
from serialization import services as serial_services
from serialization.exceptions import IdempotencyConflict, PoolExhausted
from serialization.models import Allocation, SerialPool

PARTNERSHIP_FIELDS = frozenset({"status", "started_on"})
# Revoked is final and has its own service (it needs a reason); the other two move freely.
EDITABLE_STATUSES = (Partnership.Status.ACTIVE, Partnership.Status.SUSPENDED)
_REQUEST_ID_MAX = SerialAssignment._meta.get_field("request_id").max_length


class PartnershipInactive(Conflict):
    code = "partnership_inactive"


class ProductNotInPartnership(DomainError):
    code = "product_not_in_partnership"


# --- helpers ------------------------------------------------------------------------------------------------------


def _stamp(instance, *, actor: AbstractBaseUser | None, reason: str = "") -> None:
    # simple-history reads these when it writes the history row (outside a request too: API token, task, command).
    instance._history_user = actor
    if reason:
        instance._change_reason = reason[:100]


def _check_acts_for(actor: AbstractBaseUser | None, company: Company, what: str) -> None:
    """A company member may act only for its own company; the operator's staff (no membership) for any."""
    if actor is None:
        raise PermissionDenied(f"Say who {what}; an anonymous change cannot be traced.")
    company_id = get_user_company_id(user=actor)
    if company_id is not None and company_id != company.pk:
        raise PermissionDenied(f"Only {company}'s own users (or the operator's staff) may {what}.")


def check_partnership_products(mah: Company, products: Iterable[Product]) -> list[Product]:
    """``products`` as a list, or a ValidationError on "products" naming those ``mah`` does not own."""
    products = list(products)
    foreign = [p for p in products if p.owner_id != mah.pk]
    if foreign:
        listed = ", ".join(f"{p.product_code} ({p.owner})" for p in foreign)
        raise ValidationError({"products": f"A partnership covers only products of {mah}; not {listed}."})
    return products


def _lock(partnership: Partnership) -> Partnership:
    return Partnership.objects.select_for_update().select_related("mah", "cmo").get(pk=partnership.pk)


# --- partnerships -------------------------------------------------------------------------------------------------


def create_partnership(
    *,
    mah: Company,
    cmo: Company,
    products: Iterable[Product],
    markets: Iterable[Market] = (),
    actor: AbstractBaseUser | None,
    started_on=None,
    status: str = Partnership.Status.ACTIVE,
) -> Partnership:
    """A new partnership: ``cmo`` may pack ``products`` (all owned by ``mah``) for ``markets``.

    The CMO's users get ``view_partnership`` on it through the CMO's company group."""
    _check_acts_for(actor, mah, "create partnerships of this MAH")
    if status not in EDITABLE_STATUSES:
        raise ValidationError({"status": "A new partnership is active or suspended; revoke it afterwards if needed."})
    products = check_partnership_products(mah, products)
    with transaction.atomic():
        partnership = Partnership(mah=mah, cmo=cmo, status=status, started_on=started_on, created_by=actor)
        _stamp(partnership, actor=actor, reason="created")
        partnership.full_clean()
        partnership.save()
        partnership.products.set(products)
        partnership.markets.set(list(markets))
        grant_company_object_permissions(company=cmo, obj=partnership)
    return partnership


def update_partnership(
    *,
    partnership: Partnership,
    actor: AbstractBaseUser | None,
    data: Mapping[str, Any] | None = None,
    products: Iterable[Product] | None = None,
    markets: Iterable[Market] | None = None,
    reason: str = "",
) -> Partnership:
    """Change status (active ↔ suspended), start date, products or markets; ``None`` leaves a collection alone.

    The MAH and CMO of a partnership never change; a revoked partnership never changes again. Products taken out
    keep their assignments (and history); they only get no new ones."""
    data = dict(data or {})
    unknown = set(data) - PARTNERSHIP_FIELDS
    if unknown:
        raise ValueError(f"Partnership has no editable field(s) {', '.join(sorted(unknown))}.")
    _check_acts_for(actor, partnership.mah, "change this partnership")
    with transaction.atomic():
        locked = _lock(partnership)
        if locked.status == Partnership.Status.REVOKED:
            raise PartnershipInactive(f"Partnership {locked} was revoked on {locked.revoked_at:%Y-%m-%d}; it is final.")
        if "status" in data and data["status"] not in EDITABLE_STATUSES:
            raise ValidationError(
                {"status": "Set active or suspended here; revoking needs a reason (the revoke action)."}
            )
        for name, value in data.items():
            setattr(locked, name, value)
        _stamp(locked, actor=actor, reason=reason or "changed")
        locked.full_clean()
        locked.save()
        if products is not None:
            locked.products.set(check_partnership_products(locked.mah, products))
        if markets is not None:
            locked.markets.set(list(markets))
    return locked


def revoke_partnership(*, partnership: Partnership, actor: AbstractBaseUser | None, reason: str) -> Partnership:
    """End a partnership for good: no new assignments, and the CMO's partner pools of this MAH take no new
    allocations (what its orders already hold stays usable); everything assigned, reported and its history stay.
    The CMO keeps read access to what happened (its grants stay); unused serials come back by
    :func:`return_serials`."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the partnership is revoked (the reason is kept in the record)."})
    _check_acts_for(actor, partnership.mah, "revoke this partnership")
    with transaction.atomic():
        locked = _lock(partnership)
        if locked.status == Partnership.Status.REVOKED:
            raise PartnershipInactive(f"Partnership {locked} is already revoked.")
        locked.status = Partnership.Status.REVOKED
        locked.revoked_at = timezone.now()
        locked.revoke_reason = reason
        _stamp(locked, actor=actor, reason=f"revoked: {reason}")
        locked.save(update_fields=["status", "revoked_at", "revoke_reason"])
        partner_pools = SerialPool.objects.filter(
            owner_id=locked.cmo_id, source=SerialPool.Source.PARTNER, parent_pool__owner_id=locked.mah_id
        ).order_by("pk")  # pk order: the lock order of every other writer of pools
        for pool in partner_pools:
            serial_services.block_pool(pool=pool, actor=actor, reason=f"partnership with {locked.mah} revoked")
    return locked


# --- assignments --------------------------------------------------------------------------------------------------


def _mah_pool_for(*, partnership: Partnership, product: Product, quantity: int, actor) -> SerialPool:
    """The MAH's pool to assign from: its generated pool for the product if it has ``quantity`` available, else
    the first list pool that has; otherwise PoolExhausted naming each pool's availability."""
    pools = list(
        serial_selectors.list_pools(
            user=actor,
            filters={"owner": partnership.mah_id, "kind": SerialPool.Kind.SGTIN, "product": product.pk},
        ).exclude(source=SerialPool.Source.PARTNER)
    )
    if not pools:
        raise PoolExhausted(
            f"{partnership.mah} has no serial pool for {product.product_code} ({product.name}); create or import one "
            "first.",
            field="product",
            details={"pools": []},
        )
    pools.sort(key=lambda p: (not p.is_generated, p.pk))
    for pool in pools:
        if pool.available >= quantity:
            return pool
    availability = [{"pool": p.pk, "name": p.name, "source": p.source, "available": p.available} for p in pools]
    listed = "; ".join(f"{p.name} ({p.get_source_display()}): {p.available:,}" for p in pools)
    raise PoolExhausted(
        f"No pool of {product.product_code} has {quantity:,} serials available — {listed}. Fill or import serials, "
        "or assign fewer.",
        field="quantity",
        details={"requested": quantity, "pools": availability},
    )


def _replayed_assignment(
    *, partnership: Partnership, product: Product, quantity: int, request_id: str
) -> SerialAssignment | None:
    existing = SerialAssignment.objects.filter(partnership=partnership, request_id=request_id).first()
    if existing is None:
        return None
    if existing.product_id != product.pk or existing.quantity != quantity:
        raise IdempotencyConflict(
            f"Request id {request_id!r} was already used on this partnership for {existing.quantity:,} serials of "
            f"product {existing.product_id}; send a new request id for a new assignment.",
            field="request_id",
            details={"assignment": existing.pk},
        )
    return existing


def assign_serials(
    *, partnership: Partnership, product: Product, quantity: int, actor: AbstractBaseUser | None, request_id: str
) -> SerialAssignment:
    """Assign ``quantity`` serials of ``product`` to the partnership's CMO: one allocation from the MAH's pool
    (Assigned there), shared into the CMO's partner pool (Available there). All or nothing, in one transaction;
    a retry with the same ``request_id`` returns the first assignment."""
    if not request_id or len(request_id) > _REQUEST_ID_MAX:
        raise DomainError(
            f"Give a request id of 1 to {_REQUEST_ID_MAX} characters, so a retried request returns the same "
            "assignment.",
            field="request_id",
        )
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise DomainError(f"Assign at least 1 serial (asked {quantity!r}).", field="quantity")
    _check_acts_for(actor, partnership.mah, "assign serials of this MAH")
    with transaction.atomic():
        locked = _lock(partnership)  # parent before children: the engine locks the pools after this
        replay = _replayed_assignment(partnership=locked, product=product, quantity=quantity, request_id=request_id)
        if replay is not None:
            return replay
        if not locked.is_active:
            raise PartnershipInactive(
                f"Partnership {locked} is {locked.get_status_display().lower()}; serials are assigned only under an "
                "active partnership.",
                details={"status": locked.status},
            )
        if not locked.products.filter(pk=product.pk).exists():
            raise ProductNotInPartnership(
                f"{product.product_code} ({product.name}) is not one of the products {locked.cmo} may pack for "
                f"{locked.mah}; add it to the partnership first.",
                field="product",
            )
        pool = _mah_pool_for(partnership=locked, product=product, quantity=quantity, actor=actor)
        allocation = serial_services.allocate_serials(
            pool=pool,
            quantity=quantity,
            actor=actor,
            request_id=request_id,
            purpose=Allocation.Purpose.CMO,
            reference=f"partnership {locked.pk}",
        )
        partner_pool = serial_services.share_allocation(allocation=allocation, partner=locked.cmo, actor=actor)
        assignment = SerialAssignment(
            partnership=locked,
            product=product,
            allocation=allocation,
            partner_pool=partner_pool,
            quantity=allocation.quantity,
            request_id=request_id,
            created_by=actor,
        )
        _stamp(assignment, actor=actor, reason="assigned")
        assignment.full_clean()
        assignment.save()
        grant_company_object_permissions(company=locked.cmo, obj=partner_pool)
        grant_company_object_permissions(company=locked.cmo, obj=assignment)
    return assignment


def partner_pools_of(*, partnership: Partnership, product: Product) -> list[SerialPool]:
    """The CMO's partner pools that hold serials of ``product`` assigned under ``partnership``, oldest first."""
    pool_ids = (
        SerialAssignment.objects.filter(partnership=partnership, product=product)
        .values_list("partner_pool_id", flat=True)
        .distinct()
    )
    return list(SerialPool.objects.filter(pk__in=pool_ids).order_by("pk"))


def return_serials(
    *,
    partnership: Partnership,
    product: Product,
    actor: AbstractBaseUser | None,
    reason: str,
    quantity: int | None = None,
) -> int:
    """Give unused serials of ``product`` back from the CMO's partner pool(s) to the MAH: all that are Available in
    them, or exactly ``quantity``. Returns how many went back. Allowed after revocation too (that is when it is
    needed most). Serials the CMO already allocated to its own orders come back only once the CMO releases them."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the serials are returned (the reason is kept in the record)."})
    if quantity is not None and (isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1):
        raise DomainError(
            f"Return at least 1 serial, or leave the quantity out for all (asked {quantity!r}).", field="quantity"
        )
    company_id = get_user_company_id(user=actor) if actor is not None else None
    if actor is None or company_id not in (None, partnership.mah_id, partnership.cmo_id):
        raise PermissionDenied("Only the MAH's or the CMO's own users (or the operator's staff) may return serials.")
    with transaction.atomic():
        locked = _lock(partnership)
        pools = partner_pools_of(partnership=locked, product=product)
        if not pools:
            raise ProductNotInPartnership(
                f"No serials of {product.product_code} were assigned to {locked.cmo} under this partnership.",
                field="product",
            )
        if quantity is None:
            # Everything Available goes back; the engine leaves out what was commissioned.
            returned = sum(
                serial_services.return_partner_serials(partner_pool=pool, actor=actor, reason=reason) for pool in pools
            )
            if returned == 0:
                raise Conflict(
                    f"No serials of {product.product_code} are unused at {locked.cmo}; nothing was returned.",
                    field="product",
                    details={"available": 0},
                )
            return returned
        available = {pool.pk: serial_services.partner_pool_counts(partner_pool=pool)["available"] for pool in pools}
        total = sum(available.values())
        if quantity > total:
            raise PoolExhausted(
                f"{total:,} serials of {product.product_code} are unused at {locked.cmo}; return at most that many.",
                field="quantity",
                details={"available": total, "requested": quantity},
            )
        returned = 0
        for pool in pools:  # oldest partner pool first
            take = min(available[pool.pk], quantity - returned)
            if take > 0:
                returned += serial_services.return_partner_serials(
                    partner_pool=pool, actor=actor, reason=reason, quantity=take
                )
    return returned
