"""The anomaly rule against pilferage: no account takes more than SERIAL_EXPORT_LIMIT_PER_HOUR serials in an hour.

Every door that hands out serial lists — the API's serial list, export jobs and export downloads, the portal's CSV
download, the admin's export download — goes through ``serial_handout``:

    with serial_handout(user=user, request=request, counted=rows) as handout:
        ...                                  # the caller's own writes (an export job), same transaction
        handout.record(kind="download", target=..., quantity=rows, details={...})

Under a lock on the account it refuses an account with an active ``ExportBlock`` (403), sums the serials the account
took in the last hour from the access log (one SUM over ``AccessEvent.counted_serials``), and when this hand-out would
take the total past the limit it refuses it too, blocks the account and raises a high-severity security incident.
Because the sum and the access event that adds to it are written under the same lock, two parallel requests cannot
both slip past the limit. A steward lifts a block with a reason (``lift_export_block``, the admin's action); the
next hour of allowance starts then.
"""

import sys
from datetime import datetime, timedelta

from axes.helpers import get_client_ip_address
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit import selectors
from audit.exceptions import Conflict, DomainError, PermissionDenied
from audit.models import AccessEvent, ExportBlock, Incident
from audit.services import api_token_of, raise_incident, record_access

WINDOW = timedelta(hours=1)


class ExportBlocked(PermissionDenied):
    """The account may not get serials out: it is blocked, or this request would have crossed the hourly limit."""

    code = "export_blocked"


def export_limit() -> int:
    """Most serials one account may take within an hour (setting SERIAL_EXPORT_LIMIT_PER_HOUR)."""
    return settings.SERIAL_EXPORT_LIMIT_PER_HOUR


def blocked_message(block: ExportBlock) -> str:
    """What a blocked account is told on every door: why, since when, and whom to ask."""
    return (
        f"Serial downloads and exports are blocked for account “{block.user.get_username()}” since "
        f"{block.created_at:%Y-%m-%d %H:%M} UTC: {block.reason} Contact {settings.SECURITY_CONTACT} to have the "
        "block reviewed and lifted."
    )


def check_not_blocked(*, user: AbstractBaseUser | None) -> None:
    """Raise ExportBlocked when ``user`` is blocked: a cheap early answer before any serial is materialised.
    ``serial_handout`` checks again under the lock, so this is not the guard itself."""
    block = selectors.get_active_export_block(user=user) if user is not None else None
    if block is not None:
        raise ExportBlocked(blocked_message(block), details={"export_block": block.pk})


def serial_handout(
    *, user: AbstractBaseUser | None, request: HttpRequest | None = None, counted: int
) -> "SerialHandout":
    """A transaction in which ``user`` may take ``counted`` more serials (see the module docstring).

    Open it outside any other transaction: when it refuses and blocks, the block and the incident must commit even
    though the caller's work does not happen. ``user=None`` (the system itself) is not limited.
    """
    if counted < 0:
        raise ValueError("counted must not be negative")
    return SerialHandout(user=user, request=request, counted=counted)


class SerialHandout:
    """The context manager behind ``serial_handout``; ``record`` writes the access event that counts the serials."""

    def __init__(self, *, user: AbstractBaseUser | None, request: HttpRequest | None, counted: int) -> None:
        self.user, self.request, self.counted = user, request, counted
        self._atomic = transaction.atomic()

    def __enter__(self) -> "SerialHandout":
        self._atomic.__enter__()
        try:
            over_limit = self._check() if self.user is not None else None
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        if over_limit is None:
            return self
        # Nothing was written in this transaction; ending it releases the lock before the block is made (in its
        # own transaction, which takes the lock again and makes one block even if two requests got here).
        self._atomic.__exit__(None, None, None)
        block = block_account(user=self.user, request=self.request, serials_in_hour=over_limit, asked_for=self.counted)
        raise ExportBlocked(blocked_message(block), details={"export_block": block.pk})

    def __exit__(self, exc_type, exc, traceback) -> bool | None:
        return self._atomic.__exit__(exc_type, exc, traceback)

    def _check(self) -> int | None:
        """Lock the account, refuse a blocked one; the hour's total with this hand-out if it crosses the limit."""
        _lock_account(self.user)
        check_not_blocked(user=self.user)
        total = taken_in_window(user=self.user) + self.counted
        return total if total > export_limit() else None

    def record(self, *, kind: str, target: str, quantity: int | None, details: dict | None = None) -> AccessEvent:
        """Write the access event of this hand-out, carrying the serials it counts against the limit."""
        return record_access(
            kind=kind,
            user=self.user,
            request=self.request,
            target=target,
            quantity=quantity,
            details=details,
            counted_serials=self.counted,
        )


def _lock_account(user: AbstractBaseUser) -> None:
    # The user row is the per-account lock. FOR NO KEY UPDATE (PostgreSQL) queues the account's own hand-outs but
    # not the rows that merely reference the user (sign-ins, history), which take FOR KEY SHARE. SQLite serialises
    # writers anyway: its transactions take the write lock at BEGIN (settings: transaction_mode IMMEDIATE).
    list(get_user_model().objects.select_for_update(no_key=True).filter(pk=user.pk).values_list("pk", flat=True))


def window_start(*, user: AbstractBaseUser, now: datetime | None = None) -> datetime:
    """Where the account's rolling hour starts: an hour ago, or at its last lifted block if that is later."""
    start = (now or timezone.now()) - WINDOW
    lifted = selectors.get_last_block_lift(user=user)
    return max(start, lifted) if lifted is not None else start


def taken_in_window(*, user: AbstractBaseUser) -> int:
    """Serials ``user`` took within its current rolling hour (``window_start``)."""
    return selectors.sum_counted_serials(user=user, since=window_start(user=user))


def block_account(
    *, user: AbstractBaseUser, request: HttpRequest | None = None, serials_in_hour: int, asked_for: int
) -> ExportBlock:
    """Block ``user`` from getting serials out and raise a high-severity security incident about it.

    Idempotent per account: with a block already active (a parallel request crossed the limit too) that block is
    returned and nothing new is written.
    """
    limit = export_limit()
    with transaction.atomic():
        _lock_account(user)
        existing = selectors.get_active_export_block(user=user)
        if existing is not None:
            return existing
        username = user.get_username()
        token = api_token_of(request)
        block = ExportBlock.objects.create(
            user=user,
            api_token=token,
            serials_in_hour=serials_in_hour,
            limit=limit,
            reason=(
                f"it asked for {asked_for:,} serials with {serials_in_hour - asked_for:,} already taken within the "
                f"hour, more than the limit of {limit:,} serials an hour."
            ),
        )
        block.incident = raise_incident(
            kind=Incident.Kind.SECURITY,
            severity=Incident.Severity.HIGH,
            title=f"Serial export limit exceeded by {username}",
            subject=block,
            details={
                "user": username,
                "serials_in_hour": serials_in_hour,
                "asked_for": asked_for,
                "limit": limit,
                "export_block": block.pk,
                "api_client": {"id": token.pk, "name": token.name} if token is not None else None,
                "ip": get_client_ip_address(request) if request is not None else None,
            },
        )
        block.save(update_fields=["incident"])
    return block


def lift_export_block(*, block: ExportBlock, actor: AbstractBaseUser, reason: str) -> ExportBlock:
    """Lift ``block``: the account may get serials out again, with a fresh hour of allowance from now.

    Needs ``audit.lift_exportblock`` (stewards) and a reason, kept on the block and in its history.
    """
    reason = (reason or "").strip()
    if not reason:
        raise DomainError("Give the reason for lifting the block, e.g. what the investigation found.", field="reason")
    if not actor.has_perm("audit.lift_exportblock"):
        raise PermissionDenied("Lifting an export block needs the permission “Can lift an export block” (stewards).")
    with transaction.atomic():
        locked = ExportBlock.objects.select_for_update().get(pk=block.pk)
        if locked.lifted_at is not None:
            raise Conflict(
                f"This block was already lifted on {locked.lifted_at:%Y-%m-%d %H:%M} UTC by {locked.lifted_by}."
            )
        locked.lifted_at, locked.lifted_by, locked.lift_reason = timezone.now(), actor, reason
        locked._history_user = actor
        locked._change_reason = f"Lifted: {reason}"[:100]
        locked.save(update_fields=["lifted_at", "lifted_by", "lift_reason"])
    return locked
