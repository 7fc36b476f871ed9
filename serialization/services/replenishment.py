"""Keeping pools above their minimum: generated pools are refilled up to their maximum, list pools raise an alert.

Run every 15 minutes by django-q2 (``serialization.tasks.replenish_pools``) and by ``manage.py replenish_pools``.
"""

import logging
from dataclasses import dataclass

from django.db.models import F

from audit.services import raise_incident
from serialization.exceptions import IssueLimitExceeded
from serialization.models import SerialPool
from serialization.services.pools import fill_pool, serial_format

logger = logging.getLogger("serialization.replenishment")

REASON = "replenishment: available fell below the minimum"


@dataclass(frozen=True)
class Replenishment:
    """What one run did for one pool under its minimum."""

    pool_id: int
    available_before: int
    filled: int  # serials added (0 for list pools and pools at their limit)
    alert: str  # empty when the pool was refilled to its maximum


def replenish_pools() -> list[Replenishment]:
    """Refill every generated pool whose available count is under ``min_available``, up to ``max_available``."""
    below = (
        SerialPool.objects.filter(min_available__isnull=False)
        .alias(available_now=F("filled") - F("next_index") + F("free"))
        .filter(available_now__lt=F("min_available"))
        .order_by("pk")
    )
    return [_replenish(pool) for pool in below]


def _replenish(pool: SerialPool) -> Replenishment:
    available = pool.available
    if not pool.is_generated:
        message = (
            f"List pool {pool} ({pool.code}) has {available:,} serials available, below its minimum of "
            f"{pool.min_available:,}. Import more serials from {pool.get_source_display()}."
        )
        _alert(pool, "Serial pool below minimum: import needed", message)
        return Replenishment(pool.pk, available, 0, message)

    target = max(pool.max_available or 0, pool.min_available)
    wanted = target - available
    domain = serial_format(pool).domain_size
    ceiling = min(domain, pool.issue_limit) if pool.issue_limit is not None else domain
    filled_before = pool.filled  # fill_pool refreshes ``pool``
    quantity = max(0, min(wanted, ceiling - filled_before))
    message = ""
    if quantity:
        try:
            fill_pool(pool=pool, quantity=quantity, actor=None, reason=REASON)
        except IssueLimitExceeded as exc:  # another fill raised the count since we read it
            quantity, message = 0, exc.message
    if quantity < wanted and not message:
        what = (
            "the market's guess bound" if pool.issue_limit is not None and pool.issue_limit < domain else "its format"
        )
        message = (
            f"Generated pool {pool} ({pool.code}) cannot be refilled to {target:,} available: {what} caps it at "
            f"{ceiling:,} serials and {filled_before + quantity:,} are filled. Create a pool with a longer format."
        )
    if message:
        _alert(pool, "Serial pool cannot be replenished", message)
    return Replenishment(pool.pk, available, quantity, message)


def _alert(pool: SerialPool, title: str, message: str) -> None:
    # One open incident per pool and problem: raise_incident returns the open one when the check repeats.
    logger.warning("serial pool %s: %s", pool.pk, message)
    raise_incident(
        kind="serial_supply",
        title=f"{title}: {pool.code}",
        severity="medium",
        details={"pool": pool.pk, "identifier": pool.code, "available": pool.available, "message": message},
        subject=pool,
    )
