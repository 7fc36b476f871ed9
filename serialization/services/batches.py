"""Batches and packaging orders: creating them, moving a batch along its statuses, giving an order its serials and
closing it (unused serials go back to Available).

Statuses run planned → in production → completed → reconciled → released; a batch that has left production
(completed, reconciled or released) may be recalled, and recalled is final. ``reconciled`` is reached only through
``serialization.services.reconciliation.reconcile_batch`` and ``released`` only through ``release_batch`` (the
electronic signature). Once a batch has been released, every change to it needs a reason, kept as the history
row's change reason.

Lock order, shared with reconciliation and release: the batch row, then its order rows, then pool rows (taken by
``allocate_serials`` / ``release_serials``) — parent before children, so concurrent callers queue, never deadlock.

The reads (``list_batches`` … ``get_order``, ``scope_batches``/``scope_orders``) live in ``serialization.selectors``.
"""

import calendar
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Case, F, IntegerField, QuerySet, Value, When
from django.utils import timezone

from audit.exceptions import Conflict, DomainError
from masterdata import gs1
from masterdata.models import Company, Location, Market, PackagingLevel, Product
from masterdata.permissions import grant_company_object_permissions
from serialization.exceptions import IdempotencyConflict, InvalidAllocationRequest, PoolExhausted, ReleaseRefused
from serialization.models import Allocation, Batch, PackagingOrder, SerialPool
from serialization.services.allocation import allocate_serials, release_serials

Status = Batch.Status

# The reason lands in the history row's change reason, whose column has this many characters.
REASON_MAX = Batch.history.model._meta.get_field("history_change_reason").max_length
_REQUEST_ID_MAX = Allocation._meta.get_field("request_id").max_length - 3  # room for the ":L2" of SSCC requests

# Where each status may go by a plain transition. ``reconciled`` and ``released`` are listed so the error names them,
# but only reconcile_batch and release_batch reach them.
NEXT_STATUSES: dict[str, tuple[str, ...]] = {
    Status.PLANNED: (Status.IN_PRODUCTION,),
    Status.IN_PRODUCTION: (Status.COMPLETED,),
    Status.COMPLETED: (Status.RECONCILED, Status.RECALLED),
    Status.RECONCILED: (Status.RELEASED, Status.RECALLED),
    Status.RELEASED: (Status.RECALLED,),
    Status.RECALLED: (),
}
# Orders may be added and given serials only while the batch is being made.
PRODUCTION_STATUSES = (Status.PLANNED, Status.IN_PRODUCTION)


class InvalidTransition(Conflict):
    code = "invalid_transition"


class ReasonRequired(DomainError):
    code = "reason_required"


class OrderClosed(Conflict):
    code = "order_closed"


# --- shared checks ------------------------------------------------------------------------------------------------


def clean_reason(reason: str | None, *, required: bool, what: str, kept_in: str = "the batch history") -> str:
    """The stripped reason; refused when required and empty, or longer than the history row keeps (every
    simple-history model keeps the same length)."""
    reason = (reason or "").strip()
    if required and not reason:
        raise ReasonRequired(f"Give a reason for {what}; it is kept in {kept_in}.", field="reason")
    if len(reason) > REASON_MAX:
        raise DomainError(
            f"The reason has {len(reason)} characters; keep it to {REASON_MAX} (the history keeps that many).",
            field="reason",
        )
    return reason


def needs_reason(batch: Batch) -> bool:
    """Whether a change to ``batch`` must give a reason: from its release on, for good (a recall included)."""
    return batch.released_at is not None or batch.status == Status.RELEASED


def _status_label(status: str) -> str:
    return Status(status).label.lower()


def _allowed_text(status: str) -> str:
    allowed = NEXT_STATUSES[status]
    if not allowed:
        return "it is final: nothing follows it"
    return "it can go to " + " or ".join(_status_label(s) for s in allowed) + " only"


def expiry_date(expiry: str) -> datetime.date:
    """The last day an AI 17 value covers: day 00 means the end of the month (the value itself is never changed)."""
    year, month, day = 2000 + int(expiry[:2]), int(expiry[2:4]), int(expiry[4:6])
    return datetime.date(year, month, day or calendar.monthrange(year, month)[1])


def check_batch_fields(
    *,
    product: Product | None,
    lot: Any,
    expiry: Any,
    manufactured_on: datetime.date | None = None,
    site: Location | None = None,
    lines: Iterable[Location] = (),
    markets: Iterable[Market] = (),
) -> dict[str, list[str]]:
    """Every problem with the fields of a batch, by field name (empty when they are fine). Used by the services and
    by the admin form, so both say the same thing."""
    errors: dict[str, list[str]] = {}

    def add(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    try:
        gs1.validate_lot(lot)
    except gs1.GS1Error as exc:
        add("lot", str(exc))
    valid_expiry = False
    try:
        gs1.validate_ai_value("17", expiry)
        valid_expiry = True
    except gs1.GS1Error as exc:
        add("expiry", f"{exc} Give the expiry exactly as printed, YYMMDD (day 00 = end of month).")
    if manufactured_on is not None and valid_expiry and manufactured_on > expiry_date(expiry):
        add("manufactured_on", f"The batch cannot be made on {manufactured_on} after its expiry {expiry}.")
    if site is not None and site.kind != Location.Kind.SITE:
        add("site", f"{site} is a {site.get_kind_display().lower()}, not a site.")
    for line in lines:
        if line.kind != Location.Kind.LINE:
            add("lines", f"{line} is not a packaging line.")
        elif site is not None and line.parent_id != site.pk:
            add("lines", f"Line {line.name} belongs to another site than {site.name}.")
    if product is not None:
        sold_in = {m.pk for m in product.markets.all()}
        foreign = sorted(m.code for m in markets if m.pk not in sold_in)
        if foreign:
            add(
                "markets",
                f"{product.product_code} is not registered for {', '.join(foreign)}; add the market to the product "
                "first or leave it out.",
            )
    return errors


def _raise_field_errors(errors: dict[str, list[str]]) -> None:
    if errors:
        raise ValidationError(errors)


# --- batches --------------------------------------------------------------------------------------------------------


def create_batch(
    *,
    product: Product,
    lot: str,
    expiry: str,
    manufactured_on: datetime.date | None = None,
    site: Location | None = None,
    lines: Iterable[Location] = (),
    markets: Iterable[Market] = (),
    actor,
) -> Batch:
    """A planned batch. ``expiry`` is kept exactly as given (AI 17 as printed, day 00 allowed); ``markets`` default
    to the product's. Field problems are raised together as a ValidationError keyed by field."""
    lines, markets = list(lines), list(markets) or list(product.markets.all())
    errors = check_batch_fields(
        product=product,
        lot=lot,
        expiry=expiry,
        manufactured_on=manufactured_on,
        site=site,
        lines=lines,
        markets=markets,
    )
    _raise_field_errors(errors)
    batch = Batch(product=product, lot=lot, expiry=expiry, manufactured_on=manufactured_on, site=site, created_by=actor)
    duplicate = ValidationError({"lot": [f"{product.product_code} already has a batch with lot {lot}."]})
    try:
        batch.full_clean(exclude=["created_by"])
    except ValidationError as exc:
        if "__all__" in exc.message_dict and Batch.objects.filter(product=product, lot=lot).exists():
            raise duplicate from exc
        raise
    batch._history_user = actor
    try:
        with transaction.atomic():
            batch.save()
            batch.lines.set(lines)
            batch.markets.set(markets)
    except IntegrityError as exc:  # the same lot created concurrently
        raise duplicate from exc
    return batch


EDITABLE_FIELDS = ("manufactured_on", "site", "lines", "markets")
PLANNED_ONLY_FIELDS = ("lot", "expiry")  # printed on the packs: fixed once production starts


def update_batch(*, batch: Batch, actor, reason: str = "", **changes) -> Batch:
    """Change a batch's details (``manufactured_on``, ``site``, ``lines``, ``markets``; ``lot`` and ``expiry`` only
    while planned). From its release on, a reason is required and kept in the history row."""
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS) - set(PLANNED_ONLY_FIELDS))
    if unknown:
        raise DomainError(f"{', '.join(unknown)} cannot be changed here.", field=unknown[0])
    with transaction.atomic():
        locked = Batch.objects.select_for_update().select_related("product").get(pk=batch.pk)
        reason = clean_reason(reason, required=needs_reason(locked), what="changing a released batch")
        fixed = [name for name in PLANNED_ONLY_FIELDS if name in changes and changes[name] != getattr(locked, name)]
        if fixed and locked.status != Status.PLANNED:
            raise DomainError(
                f"The {fixed[0]} is printed on the packs: it can change only while the batch is planned "
                f"(it is {_status_label(locked.status)}).",
                field=fixed[0],
            )
        lines = list(changes["lines"]) if "lines" in changes else list(locked.lines.all())
        markets = list(changes["markets"]) if "markets" in changes else list(locked.markets.all())
        merged = {
            "lot": changes.get("lot", locked.lot),
            "expiry": changes.get("expiry", locked.expiry),
            "manufactured_on": changes.get("manufactured_on", locked.manufactured_on),
            "site": changes.get("site", locked.site),
        }
        errors = check_batch_fields(product=locked.product, lines=lines, markets=markets, **merged)
        _raise_field_errors({name: messages for name, messages in errors.items() if name in changes})
        for name, value in merged.items():
            setattr(locked, name, value)
        locked._history_user = actor
        locked._change_reason = reason or None
        locked.full_clean(exclude=["created_by"])
        locked.save()
        if "lines" in changes:
            locked.lines.set(lines)
        if "markets" in changes:
            locked.markets.set(markets)
    return locked


def transition_batch(*, batch: Batch, status: str, actor, reason: str = "") -> Batch:
    """Move ``batch`` to the next ``status`` along the allowed path (see NEXT_STATUSES). ``completed`` needs every
    order closed; ``recalled`` needs a reason; ``reconciled`` and ``released`` have services of their own."""
    if status not in Status.values:
        raise DomainError(f"Unknown status {status!r}; use one of {', '.join(Status.values)}.", field="status")
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        current = locked.status
        if status not in NEXT_STATUSES[current]:
            raise InvalidTransition(
                f"Batch {locked.lot} is {_status_label(current)}: it cannot go to {_status_label(status)}; "
                f"{_allowed_text(current)}.",
                field="status",
                details={"status": current, "allowed": list(NEXT_STATUSES[current])},
            )
        if status == Status.RECONCILED:
            raise InvalidTransition(
                "A batch becomes reconciled only by a passed reconciliation: reconcile it.", field="status"
            )
        if status == Status.RELEASED:
            raise InvalidTransition(
                "Releasing a batch needs the electronic signature (password, authenticator code and reason): use "
                "the release operation.",
                field="status",
            )
        required = status == Status.RECALLED or needs_reason(locked)
        reason = clean_reason(reason, required=required, what=f"moving the batch to {_status_label(status)}")
        if status == Status.COMPLETED:
            _check_orders_closed(locked)
        set_batch_status(locked, status, actor=actor, reason=reason)
    return locked


def _check_orders_closed(batch: Batch) -> None:
    numbers = list(batch.orders.order_by("number").values_list("number", "status"))
    if not numbers:
        raise InvalidTransition(f"Batch {batch.lot} has no packaging order; nothing was produced.")
    still_open = [number for number, status in numbers if status == PackagingOrder.Status.OPEN]
    if still_open:
        raise InvalidTransition(
            f"Close every packaging order of batch {batch.lot} first; still open: {', '.join(still_open)}.",
            details={"open_orders": still_open},
        )


def set_batch_status(batch: Batch, status: str, *, actor, reason: str = "", **fields) -> None:
    """Write a status the caller has checked, on a row it has locked, with a history row (who, and why)."""
    batch.status = status
    for name, value in fields.items():
        setattr(batch, name, value)
    batch._history_user = actor
    batch._change_reason = reason or None
    batch.save(update_fields=["status", *fields])


# --- packaging orders -------------------------------------------------------------------------------------------------


def create_packaging_order(
    *, batch: Batch, line: Location, number: str, planned_quantity: int, actor
) -> PackagingOrder:
    """An open order to pack ``planned_quantity`` units of ``batch`` on ``line``."""
    errors: dict[str, list[str]] = {}
    number = (number or "").strip()
    if not number:
        errors["number"] = ["Give the order a number (e.g. the ERP process order)."]
    if isinstance(planned_quantity, bool) or not isinstance(planned_quantity, int) or planned_quantity < 1:
        errors["planned_quantity"] = [f"Plan at least 1 unit (got {planned_quantity!r})."]
    if line.kind != Location.Kind.LINE:
        errors["line"] = [f"{line} is not a packaging line."]
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        allowed_lines = list(locked.lines.all())
        if "line" not in errors and allowed_lines and line not in allowed_lines:
            errors["line"] = [
                f"Batch {locked.lot} is made on {', '.join(x.name for x in allowed_lines)}, not on {line.name}; "
                "add the line to the batch first."
            ]
        if "line" not in errors and locked.site_id and line.parent_id != locked.site_id:
            errors["line"] = [f"Line {line.name} is not at the batch's site."]
        if number and PackagingOrder.objects.filter(number=number).exists():
            errors["number"] = [f"Packaging order {number} exists already; give a new number."]
        _raise_field_errors(errors)
        if locked.status not in PRODUCTION_STATUSES:
            raise InvalidTransition(
                f"Batch {locked.lot} is {_status_label(locked.status)}: orders are added only while it is planned "
                "or in production.",
                field="batch",
            )
        order = PackagingOrder(
            number=number, batch=locked, line=line, planned_quantity=planned_quantity, created_by=actor
        )
        order._history_user = actor
        try:
            with transaction.atomic():
                order.save()
        except IntegrityError as exc:
            raise ValidationError({"number": [f"Packaging order {number} exists already; give a new number."]}) from exc
        if line.company_id != locked.product.owner_id:
            # A CMO's line: its users work the order and see the batch it belongs to, nothing else of the MAH's.
            grant_company_object_permissions(company=line.company, obj=order, actions=("view", "change"))
            grant_company_object_permissions(company=line.company, obj=locked, actions=("view",))
    return order


@dataclass(frozen=True)
class OrderSerials:
    """What one serial request of an order got: the unit allocation and one SSCC allocation per packaging level."""

    order: PackagingOrder
    units: Allocation | None
    ssccs: dict[int, Allocation] = field(default_factory=dict)
    replayed: bool = False


def _sscc_request_id(request_id: str, level: int) -> str:
    return f"{request_id}:L{level}"


def _check_serial_request(
    *, product: Product, quantity: Any, request_id: Any, sscc_quantities: Mapping | None
) -> dict[int, int]:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
        raise InvalidAllocationRequest(f"Ask for 0 or more unit serials (got {quantity!r}).", field="quantity")
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > _REQUEST_ID_MAX:
        raise InvalidAllocationRequest(
            f"Give a request id of 1 to {_REQUEST_ID_MAX} characters, so a retried request returns the same serials.",
            field="request_id",
        )
    sscc_levels = set(PackagingLevel.objects.filter(product=product, uses_sscc=True).values_list("level", flat=True))
    ssccs: dict[int, int] = {}
    for raw_level, count in (sscc_quantities or {}).items():
        try:
            level = int(raw_level)
        except (TypeError, ValueError):
            level = None
        if level not in sscc_levels:
            names = ", ".join(f"{lv} ({PackagingLevel.Level(lv).label.lower()})" for lv in sorted(sscc_levels))
            raise InvalidAllocationRequest(
                f"Level {raw_level!r} of {product.product_code} is not identified by SSCC; "
                + (f"use {names}." if names else "the product has no SSCC level: define its cases/pallets first."),
                field="sscc",
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidAllocationRequest(f"Ask for 0 or more SSCCs for level {level} (got {count!r}).", field="sscc")
        if count:
            ssccs[level] = count
    if quantity == 0 and not ssccs:
        raise InvalidAllocationRequest("Ask for at least one unit serial or SSCC.", field="quantity")
    return ssccs


def _available():
    return F("filled") - F("next_index") + F("free")


def pick_unit_pool(product: Product, quantity: int, *, company_id: int) -> SerialPool:
    """The pool unit serials of ``product`` come from, among the pools of the company running the line (the MAH's
    own pools on its own lines; a CMO's partner pools, shared by the MAH, on the CMO's lines): the generated pool
    when that has ``quantity`` available, else the oldest list or partner pool that has."""
    candidates = (
        SerialPool.objects.filter(kind=SerialPool.Kind.SGTIN, product_code=product.product_code, owner_id=company_id)
        .annotate(
            spare=_available(),
            generated_first=Case(
                When(source=SerialPool.Source.GENERATOR, then=Value(0)), default=Value(1), output_field=IntegerField()
            ),
        )
        .order_by("generated_first", "pk")
    )
    return _first_with(candidates, quantity, f"unit serials of {product.product_code}", "quantity")


def pick_sscc_pool(company: Company, quantity: int) -> SerialPool:
    """The SSCC pool of the company running the line (cases and pallets carry the packer's SSCCs), oldest first."""
    candidates = (
        SerialPool.objects.filter(kind=SerialPool.Kind.SSCC, owner_id=company.pk)
        .annotate(spare=_available())
        .order_by("pk")
    )
    return _first_with(candidates, quantity, f"SSCCs of {company}", "sscc")


def _first_with(candidates: QuerySet[SerialPool], quantity: int, what: str, field_name: str) -> SerialPool:
    pools = list(candidates)
    for pool in pools:
        if pool.spare >= quantity:
            return pool
    if not pools:
        raise PoolExhausted(
            f"There is no pool of {what}: create a generated pool or import a serial list first.",
            field=field_name,
            details={"requested": quantity, "pools": []},
        )
    listing = "; ".join(f"{p.name}: {p.spare:,}" for p in pools)
    raise PoolExhausted(
        f"No pool of {what} has {quantity:,} available ({listing}). Fill a pool or ask for fewer.",
        field=field_name,
        details={"requested": quantity, "pools": [{"id": p.pk, "available": p.spare} for p in pools]},
    )


def request_order_serials(
    *,
    order: PackagingOrder,
    quantity: int,
    actor,
    request_id: str,
    sscc_quantities: Mapping[int, int] | None = None,
) -> OrderSerials:
    """Unit serials (``quantity``) and SSCCs per packaging level (``sscc_quantities``, e.g. {2: 10, 3: 1}) for an open
    order, in one transaction: all granted or none. Idempotent by ``request_id``: a repeat returns the first result
    (``replayed``); the same id with other quantities is refused. The first request moves a planned batch to in
    production. Allocations have purpose ``packaging_order``, reference the order number and point at the order."""
    product = Product.objects.get(pk=order.batch.product_id)
    packer = Company.objects.get(locations__pk=order.line_id)
    ssccs = _check_serial_request(
        product=product, quantity=quantity, request_id=request_id, sscc_quantities=sscc_quantities
    )
    with transaction.atomic():
        batch = Batch.objects.select_for_update().get(pk=order.batch_id)
        locked = PackagingOrder.objects.select_for_update().get(pk=order.pk)
        replay = _replay_order_request(locked, request_id, quantity, ssccs)
        if replay is not None:
            return replay
        if locked.status != PackagingOrder.Status.OPEN:
            raise OrderClosed(
                f"Packaging order {locked.number} was closed on {locked.closed_at:%Y-%m-%d %H:%M}; open a new order.",
            )
        if batch.status not in PRODUCTION_STATUSES:
            raise InvalidTransition(
                f"Batch {batch.lot} is {_status_label(batch.status)}: serials are given only while it is planned or "
                "in production."
            )
        wanted = []  # (pool, quantity, request_id, level)
        if quantity:
            wanted.append((pick_unit_pool(product, quantity, company_id=packer.pk), quantity, request_id, None))
        if ssccs:
            sscc_pool = pick_sscc_pool(packer, sum(ssccs.values()))
            wanted += [(sscc_pool, n, _sscc_request_id(request_id, lv), lv) for lv, n in sorted(ssccs.items())]
        units, by_level = None, {}
        # Pools in pk order, so two requests needing the same two pools lock them in the same order.
        for pool, count, rid, level in sorted(wanted, key=lambda w: (w[0].pk, w[3] or 0)):
            allocation = allocate_serials(
                pool=pool,
                quantity=count,
                actor=actor,
                request_id=rid,
                purpose=Allocation.Purpose.PACKAGING_ORDER,
                reference=locked.number,
            )
            if level is None:
                units = allocation
            else:
                by_level[level] = allocation
        granted = [a.pk for a in [units, *by_level.values()] if a is not None]
        # allocate_serials knows nothing of orders: link the allocations here, inside the same transaction.
        Allocation.objects.filter(pk__in=granted).update(packaging_order=locked)
        for allocation in [units, *by_level.values()]:
            if allocation is not None:
                allocation.packaging_order = locked
        if batch.status == Status.PLANNED:
            set_batch_status(batch, Status.IN_PRODUCTION, actor=actor, reason=f"order {locked.number} started")
    return OrderSerials(order=locked, units=units, ssccs=by_level)


def _replay_order_request(
    order: PackagingOrder, request_id: str, quantity: int, ssccs: dict[int, int]
) -> OrderSerials | None:
    ids = {request_id: None, **{_sscc_request_id(request_id, lv): lv for lv in range(4)}}
    previous = list(Allocation.objects.filter(packaging_order=order, request_id__in=ids).select_related("pool"))
    if not previous:
        return None
    units = next((a for a in previous if a.request_id == request_id), None)
    by_level = {ids[a.request_id]: a for a in previous if ids[a.request_id] is not None}
    asked = (quantity, ssccs)
    got = (units.requested_quantity if units else 0, {lv: a.requested_quantity for lv, a in by_level.items()})
    if asked != got:
        raise IdempotencyConflict(
            f"Request id {request_id!r} was already used on order {order.number} for {got[0]} unit serials and "
            f"SSCCs {got[1] or 'none'}; send a new request id for a new request.",
            field="request_id",
        )
    return OrderSerials(order=order, units=units, ssccs=dict(sorted(by_level.items())), replayed=True)


@dataclass(frozen=True)
class ClosedOrder:
    order: PackagingOrder
    released: int  # serials (units and SSCCs) that went back to Available


def close_packaging_order(*, order: PackagingOrder, actor, reason: str) -> ClosedOrder:
    """Close an open order: every serial of its allocations that was not commissioned goes back to Available (with
    ``reason``); commissioned ones stay assigned. Closing a closed order is refused."""
    reason = clean_reason(reason, required=True, what="closing the order")
    with transaction.atomic():
        Batch.objects.select_for_update().filter(pk=order.batch_id).values_list("pk").get()
        locked = PackagingOrder.objects.select_for_update().get(pk=order.pk)
        if locked.status == PackagingOrder.Status.CLOSED:
            who = f" by {locked.closed_by}" if locked.closed_by_id else ""
            raise OrderClosed(
                f"Packaging order {locked.number} was already closed on {locked.closed_at:%Y-%m-%d %H:%M}{who}.",
                details={"closed_at": locked.closed_at.isoformat()},
            )
        released = 0
        for allocation in Allocation.objects.filter(packaging_order=locked).order_by("pool_id", "pk"):
            if allocation.quantity == allocation.released:
                continue
            try:
                released += release_serials(allocation=allocation, actor=actor, reason=reason).quantity
            except ReleaseRefused as exc:
                if exc.field is not None:  # not "nothing to release": a real refusal
                    raise
        locked.status = PackagingOrder.Status.CLOSED
        locked.closed_at = timezone.now()
        locked.closed_by = actor
        locked._history_user = actor
        locked._change_reason = reason
        locked.save(update_fields=["status", "closed_at", "closed_by"])
    return ClosedOrder(order=locked, released=released)
