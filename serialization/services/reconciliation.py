"""Reconciling a batch, and releasing it with QA's electronic signature.

Reconciliation checks, per packaging order and serial pool and then for the whole batch, that

    assigned (the order's allocations) = commissioned + decommissioned (by reason) + returned (released back)

and, when any of the batch's markets requires aggregation, that every commissioned unit that was not
decommissioned sits in a container. Every difference is listed as a discrepancy; a failed reconciliation raises an
incident QA must resolve and leaves the batch completed, a passed one moves it to reconciled.

The counts come from a handful of GROUP BY queries over the packs (one pass over the batch's packs, whatever its
size), never from a Python loop over them: reconciling a million-unit batch reads a few hundred aggregate rows.

Release re-checks the signer: their password and a fresh second-factor code, and a reason. A wrong password or code
is written to the access log as a failed attempt (outside the release's transaction, so it stays) and nothing
else changes.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.http import HttpRequest
from django.utils import timezone
from django_otp import user_has_device

from audit.exceptions import Conflict, DomainError, PermissionDenied
from audit.models import AccessEvent, Incident
from audit.services import raise_incident, record_access, verify_second_factor
from serialization.models import Allocation, Batch, Pack, PackagingOrder, Reconciliation, SerialPool
from serialization.services.batches import clean_reason, set_batch_status

Status = Batch.Status

EXAMPLES = 10  # example serials listed per discrepancy of unaggregated units
SIGNATURE_PURPOSE = "electronic signature: batch release"


class ReconciliationRefused(Conflict):
    code = "reconciliation_refused"


class BatchReleaseRefused(Conflict):
    code = "batch_release_refused"


class SignatureRefused(DomainError):
    code = "signature_refused"


class Discrepancy:
    """The kinds of discrepancy a reconciliation reports."""

    COUNT_MISMATCH = "count_mismatch"  # assigned ≠ commissioned + decommissioned + returned, per order and pool
    UNAGGREGATED_UNITS = "unaggregated_units"  # commissioned units outside any container where aggregation is required
    BATCH_MISMATCH = "batch_mismatch"  # packs reported under an order of this batch but carrying another batch
    PACKS_OUTSIDE_ORDERS = "packs_outside_orders"  # packs of this batch under no order of it


# --- reconciliation ----------------------------------------------------------------------------------------------


@dataclass
class _Balance:
    assigned: int = 0
    returned: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    decommissioned: dict[str, int] = field(default_factory=dict)
    unaggregated: int = 0
    other_batch: int = 0

    @property
    def commissioned(self) -> int:
        return sum(n for status, n in self.by_status.items() if status != Pack.Status.DECOMMISSIONED)

    @property
    def accounted(self) -> int:
        return self.commissioned + sum(self.decommissioned.values()) + self.returned

    def as_dict(self) -> dict:
        return {
            "assigned": self.assigned,
            "commissioned": self.commissioned,
            "by_status": dict(sorted(self.by_status.items())),
            "decommissioned": dict(sorted(self.decommissioned.items())),
            "returned": self.returned,
            "accounted": self.accounted,
        }


def count_batch(batch: Batch, orders: list[PackagingOrder], *, examples: int = EXAMPLES) -> tuple[dict, list[dict]]:
    """(counts, discrepancies) of ``batch`` and its ``orders``, from aggregate queries only."""
    order_ids = [o.pk for o in orders]
    aggregation_markets = sorted(batch.markets.filter(aggregation_required=True).values_list("code", flat=True))

    balances: dict[tuple[int, int], _Balance] = defaultdict(_Balance)
    allocated = (
        Allocation.objects.filter(packaging_order_id__in=order_ids)
        .values("packaging_order_id", "pool_id")
        .annotate(assigned=Sum("quantity"), returned=Sum("released"))
        .order_by()
    )
    for row in allocated:
        balance = balances[row["packaging_order_id"], row["pool_id"]]
        balance.assigned, balance.returned = row["assigned"], row["returned"]
    # The one pass over the packs: every count the reconciliation needs, grouped in the database.
    packed = (
        Pack.objects.filter(order_id__in=order_ids)
        .values("order_id", "pool_id", "status", "reason")
        .annotate(
            n=Count("pk"),
            unparented_units=Count("pk", filter=Q(level=0, parent__isnull=True)),
            other_batch=Count("pk", filter=~Q(batch_id=batch.pk)),
        )
        .order_by()
    )
    for row in packed:
        balance = balances[row["order_id"], row["pool_id"]]
        status = row["status"]
        balance.by_status[status] = balance.by_status.get(status, 0) + row["n"]
        if status == Pack.Status.DECOMMISSIONED:
            reason = row["reason"] or "unspecified"
            balance.decommissioned[reason] = balance.decommissioned.get(reason, 0) + row["n"]
        else:
            balance.unaggregated += row["unparented_units"]
        balance.other_batch += row["other_batch"]
    outside = Pack.objects.filter(batch=batch).exclude(order_id__in=order_ids).count()

    pools = {
        p["pk"]: p for p in SerialPool.objects.filter(pk__in={k[1] for k in balances}).values("pk", "name", "kind")
    }
    discrepancies: list[dict] = []
    order_counts, total = [], _Balance()
    for order in orders:
        order_total = _Balance()
        pool_counts = []
        for (order_id, pool_id), balance in sorted(balances.items()):
            if order_id != order.pk:
                continue
            pool = pools[pool_id]
            pool_counts.append({"pool": pool_id, "pool_name": pool["name"], "kind": pool["kind"], **balance.as_dict()})
            _add_into(order_total, balance)
            if balance.assigned != balance.accounted:
                discrepancies.append(_count_mismatch(order.number, pool, balance))
            if balance.other_batch:
                discrepancies.append(
                    {
                        "order": order.number,
                        "kind": Discrepancy.BATCH_MISMATCH,
                        "expected": 0,
                        "found": balance.other_batch,
                        "detail": f"{balance.other_batch:,} packs of order {order.number} from {pool['name']} carry "
                        f"another batch than {batch.lot}.",
                    }
                )
        if aggregation_markets and order_total.unaggregated:
            discrepancies.append(
                _unaggregated(batch, order, order_total.unaggregated, aggregation_markets, examples=examples)
            )
        order_counts.append(
            {
                "order": order.number,
                "id": order.pk,
                **order_total.as_dict(),
                "unaggregated_units": order_total.unaggregated,
                "pools": pool_counts,
            }
        )
        _add_into(total, order_total)
    if outside:
        discrepancies.append(
            {
                "order": None,
                "kind": Discrepancy.PACKS_OUTSIDE_ORDERS,
                "expected": 0,
                "found": outside,
                "detail": f"{outside:,} packs of batch {batch.lot} were reported under no packaging order of it.",
            }
        )
    counts = {
        "batch": {**total.as_dict(), "unaggregated_units": total.unaggregated, "packs_outside_orders": outside},
        "orders": order_counts,
        "aggregation_required": bool(aggregation_markets),
        "aggregation_markets": aggregation_markets,
    }
    return counts, discrepancies


def _add_into(total: _Balance, part: _Balance) -> None:
    total.assigned += part.assigned
    total.returned += part.returned
    total.unaggregated += part.unaggregated
    total.other_batch += part.other_batch
    for status, n in part.by_status.items():
        total.by_status[status] = total.by_status.get(status, 0) + n
    for reason, n in part.decommissioned.items():
        total.decommissioned[reason] = total.decommissioned.get(reason, 0) + n


def _count_mismatch(number: str, pool: dict, balance: _Balance) -> dict:
    what = "SSCCs" if pool["kind"] == SerialPool.Kind.SSCC else "unit serials"
    decommissioned = sum(balance.decommissioned.values())
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(balance.decommissioned.items()))
    gap = balance.assigned - balance.accounted
    return {
        "order": number,
        "kind": Discrepancy.COUNT_MISMATCH,
        "pool": pool["pk"],
        "expected": balance.assigned,
        "found": balance.accounted,
        "detail": f"Order {number}: {balance.assigned:,} {what} assigned from {pool['name']}, "
        f"{balance.accounted:,} accounted for (commissioned {balance.commissioned:,}, decommissioned "
        f"{decommissioned:,}{f' ({reasons})' if reasons else ''}, returned {balance.returned:,}): "
        + (f"{gap:,} missing." if gap > 0 else f"{-gap:,} more than assigned."),
    }


def _unaggregated(batch: Batch, order: PackagingOrder, count: int, markets: list[str], *, examples: int) -> dict:
    sample = list(
        Pack.objects.filter(order=order, level=0, parent__isnull=True)
        .exclude(status=Pack.Status.DECOMMISSIONED)
        .order_by("pk")
        .values_list("serial", flat=True)[:examples]
    )
    return {
        "order": order.number,
        "kind": Discrepancy.UNAGGREGATED_UNITS,
        "expected": 0,
        "found": count,
        "examples": sample,
        "detail": f"{count:,} commissioned units of order {order.number} ({batch.product.product_code}) are in no "
        f"container, but {', '.join(markets)} requires aggregation.",
    }


def reconcile_batch(*, batch: Batch, actor) -> Reconciliation:
    """Reconcile a completed batch (every order closed). Passed → the batch is reconciled; failed → an incident
    (kind reconciliation, severity high) is raised and linked, and the batch stays completed to be fixed and
    reconciled again."""
    with transaction.atomic():
        locked = Batch.objects.select_for_update().select_related("product").get(pk=batch.pk)
        if locked.status != Status.COMPLETED:
            hint = {
                Status.PLANNED: "produce it, close its orders and complete it first",
                Status.IN_PRODUCTION: "close every packaging order and complete it first",
                Status.RECONCILED: "it was reconciled already",
            }.get(locked.status, "a reconciliation can no longer change it")
            raise ReconciliationRefused(
                f"Batch {locked.lot} is {Status(locked.status).label.lower()}: only a completed batch can be "
                f"reconciled; {hint}.",
                details={"status": locked.status},
            )
        orders = list(locked.orders.order_by("number"))
        still_open = [o.number for o in orders if o.status == PackagingOrder.Status.OPEN]
        if still_open:
            raise ReconciliationRefused(
                f"Close every packaging order of batch {locked.lot} first; still open: {', '.join(still_open)}.",
                details={"open_orders": still_open},
            )
        counts, discrepancies = count_batch(locked, orders)
        reconciliation = Reconciliation.objects.create(
            batch=locked,
            passed=not discrepancies,
            counts=counts,
            discrepancies=discrepancies,
            performed_by=actor,
        )
        if reconciliation.passed:
            set_batch_status(
                locked, Status.RECONCILED, actor=actor, reason=f"reconciliation {reconciliation.pk} passed"
            )
        else:
            reconciliation.incident = raise_incident(
                kind=Incident.Kind.RECONCILIATION,
                title=f"Reconciliation of batch {locked.lot} ({locked.product.product_code}) failed",
                severity=Incident.Severity.HIGH,
                details={
                    "reconciliation": reconciliation.pk,
                    "discrepancy_count": len(discrepancies),
                    "discrepancies": discrepancies[:50],
                },
                subject=locked,
                actor=actor,
            )
            reconciliation.save(update_fields=["incident"])
    batch.status = locked.status
    return reconciliation


# --- release ----------------------------------------------------------------------------------------------------------


def _check_releasable(batch: Batch) -> Reconciliation:
    latest = batch.reconciliations.order_by("-performed_at", "-pk").first()
    if batch.status == Status.RELEASED:
        raise BatchReleaseRefused(
            f"Batch {batch.lot} was released already, on {batch.released_at:%Y-%m-%d %H:%M} UTC by "
            f"{batch.released_by}.",
        )
    if latest is None or not latest.passed or batch.status != Status.RECONCILED:
        state = (
            "has never been reconciled"
            if latest is None
            else f"has a {'passed' if latest.passed else 'failed'} latest reconciliation ({latest.pk})"
        )
        raise BatchReleaseRefused(
            f"Batch {batch.lot} is {Status(batch.status).label.lower()} and {state}: only a reconciled batch whose "
            "latest reconciliation passed can be released.",
            details={"status": batch.status, "reconciliation": latest.pk if latest else None},
        )
    return latest


def release_batch(
    *, batch: Batch, actor, password: str, otp_code: str, reason: str, request: HttpRequest | None = None
) -> Batch:
    """QA's electronic signature on a reconciled batch: the signer's password and a current authenticator code
    (or a backup code), re-entered now, and a reason. Records who, when and why; the history row carries the
    reason. A wrong password or code changes nothing but the access log (a failed attempt)."""
    if not actor.has_perm("serialization.release_batch"):
        raise PermissionDenied(
            "Releasing a batch is QA's electronic signature: your account lacks the 'release batch' permission "
            "(the QA role has it)."
        )
    reason = clean_reason(reason, required=True, what="releasing the batch")
    _check_releasable(Batch.objects.get(pk=batch.pk))  # before the signature, so no code is spent in vain
    target = f"batch {batch.pk} ({batch.lot})"

    def refuse(kind: str, step: str, message: str, field: str, **details) -> None:
        record_access(
            kind=kind,
            user=actor,
            request=request,
            target=target,
            details={"purpose": SIGNATURE_PURPOSE, "step": step, **details},
        )
        raise SignatureRefused(message, field=field)

    if not password or not actor.check_password(password):
        refuse(
            AccessEvent.Kind.LOGIN_FAILED, "password", "The password is wrong: sign with your own password.", "password"
        )
    if not user_has_device(actor, confirmed=True):
        refuse(
            AccessEvent.Kind.OTP_FAILED,
            "second factor",
            "You have no confirmed authenticator: enrol one (sign out and in again) before signing a release.",
            "otp_code",
        )
    check = verify_second_factor(user=actor, token=otp_code or "")
    if not check.ok:
        message = "The authenticator code is wrong or expired: enter the code your app shows now."
        if check.retry_at is not None:
            message = f"Too many wrong codes: try again after {check.retry_at:%H:%M:%S} UTC."
        refuse(AccessEvent.Kind.OTP_FAILED, "second factor", message, "otp_code", method=check.method)

    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        reconciliation = _check_releasable(locked)  # again, under the lock: the state may have moved meanwhile
        set_batch_status(
            locked,
            Status.RELEASED,
            actor=actor,
            reason=reason,
            released_at=timezone.now(),
            released_by=actor,
            release_reason=reason,
        )
        record_access(
            kind=AccessEvent.Kind.OTP_VERIFIED,
            user=actor,
            request=request,
            target=target,
            details={
                "purpose": SIGNATURE_PURPOSE,
                "method": check.method,
                "reconciliation": reconciliation.pk,
                "reason": reason,
            },
        )
    return locked
