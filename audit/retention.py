"""Retention and legal holds: how long a record is kept, what stops it from being deleted, and the purge that removes
what is past its retention.

Domain apps describe what they keep in a ``RetentionPolicy`` and ``register`` it from their AppConfig.ready
(``serialization.retention`` for batches); this module knows them only through that registry, so ``audit`` imports
no domain app. A policy names an *anchor* (a batch), how its keep-until date is computed, and the records kept with it
(its orders, packs, pack events…), each with the lookups that lead from a record to its anchor.

Guards between a retained record and its deletion, whatever the door:

- ``deletion_refusal`` / ``check_deletable``: the service-level check. The admin (every ModelAdmin, through
  ``RetentionGuardedAdmin`` which the admin site mixes in) and the API call it first and show its message, which names
  the keep-until date or the hold;
- a ``pre_delete`` receiver on every registered model: the safety net under any ORM delete that skipped the check;
- on PostgreSQL, statement triggers refuse a DELETE of batch-anchored rows within retention or on hold (migration
  ``serialization.0015_retention``), for deletes behind the application's back.

``purge_expired`` removes what is past its retention and not on hold, set-based (one DELETE per table, children
first, the anchor last) and records what it removed in a PurgeRecord and the access log.
"""

import datetime
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import connection, models, transaction
from django.db.models import Q, QuerySet
from django.db.models.signals import pre_delete
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from simple_history.models import HistoricalChanges

from audit.exceptions import Conflict, DomainError
from audit.models import AccessEvent, LegalHold, PurgeRecord
from audit.services import record_access


class RetentionProtected(Conflict):
    """A delete refused because the record is within its retention period or on legal hold (HTTP 409)."""

    code = "retention_protected"


# --- the rules ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MarketRule:
    """One market's rule: keep records ``years_after_expiry`` after expiry and/or ``years_after_release`` after
    release, whichever ends later (EU: 1 and 5; US: release + 6; PK: at least 5)."""

    market: str
    years_after_expiry: int | None
    years_after_release: int | None


@dataclass(frozen=True)
class KeepUntil:
    """The last day a record must be kept, and why. ``date`` None: it cannot be computed yet, so the record is kept."""

    date: datetime.date | None
    because: str


def add_years(day: datetime.date, years: int) -> datetime.date:
    """``day`` moved ``years`` calendar years on; 29 February lands on 28 February in a common year."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def keep_until_for(
    *, expiry: datetime.date, released_on: datetime.date | None, rules: Sequence[MarketRule]
) -> KeepUntil:
    """The latest keep-until date over ``rules`` (one per market the record was made for).

    Each market keeps the record for the longer of its terms after ``expiry`` and after ``released_on``. While a market
    counts from release and there is no release yet, the date is unknown and the record is kept; so is a record made
    for no market at all.
    """
    if not rules:
        return KeepUntil(None, "it is made for no market, so no retention rule applies yet")
    terms: list[KeepUntil] = []
    for rule in sorted(rules, key=lambda r: r.market):
        if rule.years_after_expiry is not None:
            years = rule.years_after_expiry
            terms.append(
                KeepUntil(add_years(expiry, years), f"{rule.market}: {_years(years)} after expiry on {expiry}")
            )
        if rule.years_after_release is not None:
            years = rule.years_after_release
            if released_on is None:
                return KeepUntil(
                    None, f"it is not released yet and {rule.market} keeps records {_years(years)} after release"
                )
            terms.append(
                KeepUntil(
                    add_years(released_on, years), f"{rule.market}: {_years(years)} after release on {released_on}"
                )
            )
    if not terms:
        return KeepUntil(None, "its markets set no retention period")
    return max(terms, key=lambda term: term.date)


def _years(n: int) -> str:
    return f"{n} year" if n == 1 else f"{n} years"


# --- the registry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetainedRecords:
    """Rows of ``model`` kept as long as their anchor.

    ``anchor_lookups`` lead from a row to its anchor's primary key; the first one that is not null decides (a pack
    names its batch, or else its order's). The anchor itself is listed with ``("pk",)``. With ``detach_field`` the rows
    outlive the anchor (a pool's allocations: serials are never reused), and a purge only clears that foreign key.
    """

    model: type[models.Model]
    anchor_lookups: tuple[str, ...]
    detach_field: str = ""

    @property
    def label(self) -> str:
        return self.model._meta.label_lower


@dataclass(frozen=True)
class RetentionPolicy:
    """What one domain app keeps around one anchor model, and how long.

    - ``keep_until_field``: the anchor's stored keep-until column, which ``refresh(ids)`` recomputes (for every anchor
      when ``ids`` is None; the purge and the database triggers read it); ``explain`` computes one anchor's date now,
      with the reason;
    - ``records``: in deletion order, children first, the anchor itself last;
    - ``held_through``: foreign keys of the anchor whose target's hold holds the anchor (a product's hold holds its
      batches);
    - ``holdable``: further models a hold may be placed on;
    - ``queryset``: the anchor's queryset for labels (with what ``str()`` needs selected).
    """

    anchor: type[models.Model]
    keep_until_field: str
    explain: Callable[[models.Model], KeepUntil]
    refresh: Callable[[list | None], int]
    records: tuple[RetainedRecords, ...]
    held_through: tuple[str, ...] = ()
    holdable: tuple[type[models.Model], ...] = ()
    queryset: Callable[[], QuerySet] | None = None

    def anchor_queryset(self) -> QuerySet:
        return self.queryset() if self.queryset is not None else self.anchor._base_manager.all()

    @property
    def deleted_records(self) -> tuple[RetainedRecords, ...]:
        return tuple(record for record in self.records if not record.detach_field)


_policies: list[RetentionPolicy] = []


def register(policy: RetentionPolicy) -> None:
    """Add ``policy`` to the registry (from the domain app's AppConfig.ready) and guard its models' deletes."""
    last = policy.records[-1] if policy.records else None
    if last is None or last.model is not policy.anchor or last.anchor_lookups != ("pk",):
        raise ValueError(f"List {policy.anchor.__name__} itself last in its records, with anchor_lookups=('pk',).")
    policy.anchor._meta.get_field(policy.keep_until_field)  # fails loudly on a typo
    for name in policy.held_through:
        if not policy.anchor._meta.get_field(name).many_to_one:
            raise ValueError(f"held_through names foreign keys of {policy.anchor.__name__}; {name} is not one.")
    if any(registered.anchor is policy.anchor for registered in _policies):
        return  # ready() ran twice (some test runners): once is enough
    _policies.append(policy)
    for model in _guarded_models(policy):
        pre_delete.connect(_refuse_retained_delete, sender=model, dispatch_uid=f"audit.retention:{_label(model)}")


def policies() -> tuple[RetentionPolicy, ...]:
    return tuple(_policies)


def holdable_models() -> dict[str, type[models.Model]]:
    """Models a legal hold may be placed on, by label: every registered record, the held-through targets, the rest."""
    found: dict[str, type[models.Model]] = {}
    for policy in _policies:
        for model in _guarded_models(policy):
            found[_label(model)] = model
    return dict(sorted(found.items()))


def _guarded_models(policy: RetentionPolicy) -> list[type[models.Model]]:
    targets = [policy.anchor._meta.get_field(name).related_model for name in policy.held_through]
    return [*(record.model for record in policy.records), *targets, *policy.holdable]


def _label(model: type[models.Model]) -> str:
    return model._meta.concrete_model._meta.label_lower


def _record_of(model: type[models.Model]) -> tuple[RetentionPolicy, RetainedRecords] | None:
    concrete = model._meta.concrete_model
    for policy in _policies:
        for record in policy.records:
            if record.model is concrete:
                return policy, record
    return None


def _pks(model: type[models.Model], raw_ids: Iterable[str]) -> list:
    """The valid primary keys of ``model`` among ``raw_ids`` (holds store ids as text)."""
    pks = []
    for raw in raw_ids:
        try:
            pks.append(model._meta.pk.to_python(raw))
        except ValidationError:  # a hold with an id of another shape holds nothing of this model
            continue
    return pks


def _rows_of(record: RetainedRecords, anchor_ids) -> QuerySet:
    """Rows of ``record`` whose anchor is in ``anchor_ids`` (list or subquery); the first non-null lookup decides."""
    condition, lookups_null = Q(), Q()
    for lookup in record.anchor_lookups:
        condition |= lookups_null & Q(**{f"{lookup}__in": anchor_ids})
        lookups_null &= Q(**{f"{lookup}__isnull": True})
    return record.model._base_manager.filter(condition)


def _anchor_ids(record: RetainedRecords, rows: QuerySet) -> set:
    """The anchors of ``rows`` (rows of ``record``); rows with no anchor add nothing."""
    anchors = set()
    for values in rows.values_list(*record.anchor_lookups).iterator():
        anchor = next((value for value in values if value is not None), None)
        if anchor is not None:
            anchors.add(anchor)
    return anchors


def database_today() -> datetime.date:
    """Today by the database's clock (UTC), the same day the PostgreSQL triggers compare keep-until dates with."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_DATE")
        (today,) = cursor.fetchone()
    return today if isinstance(today, datetime.date) else datetime.date.fromisoformat(today)


# --- holds -------------------------------------------------------------------------------------------------------


def active_holds() -> QuerySet[LegalHold]:
    return LegalHold.objects.filter(released_at__isnull=True)


def holds_on(obj: models.Model) -> QuerySet[LegalHold]:
    """Holds in force on ``obj`` itself."""
    return active_holds().filter(target_type=_label(type(obj)), target_id=str(obj.pk))


def _holds_on_anchor(policy: RetentionPolicy, anchor: models.Model) -> QuerySet[LegalHold]:
    """Holds in force on ``anchor`` or on what it is held through (its product)."""
    condition = Q(target_type=_label(policy.anchor), target_id=str(anchor.pk))
    for name in policy.held_through:
        target_model = policy.anchor._meta.get_field(name).related_model
        target_id = getattr(anchor, policy.anchor._meta.get_field(name).attname)
        if target_id is not None:
            condition |= Q(target_type=_label(target_model), target_id=str(target_id))
    return active_holds().filter(condition).order_by("placed_at", "pk")


def _held_anchors(policy: RetentionPolicy) -> Q:
    """A filter on the anchor matching every anchor held directly, through its product, or through a held record."""
    ids_by_type: dict[str, list[str]] = defaultdict(list)
    for target_type, target_id in active_holds().values_list("target_type", "target_id"):
        ids_by_type[target_type].append(target_id)
    held = Q(pk__in=[])
    for record in policy.records:
        raw_ids = ids_by_type.get(record.label)
        if not raw_ids:
            continue
        pks = _pks(record.model, raw_ids)
        if record.model is policy.anchor:
            held |= Q(pk__in=pks)
        else:
            held |= Q(pk__in=list(_anchor_ids(record, record.model._base_manager.filter(pk__in=pks))))
    for name in policy.held_through:
        target_model = policy.anchor._meta.get_field(name).related_model
        raw_ids = ids_by_type.get(_label(target_model))
        if raw_ids:
            held |= Q(**{f"{name}__in": _pks(target_model, raw_ids)})
    return held


def _describe(obj: models.Model) -> str:
    return f"{obj._meta.verbose_name.capitalize()} “{obj}”"


def _hold_text(hold: LegalHold) -> str:
    return f"placed by {hold.placed_by} on {hold.placed_at:%Y-%m-%d}: {hold.reason}"


def _target_noun(hold: LegalHold) -> str:
    model = holdable_models().get(hold.target_type)
    return str(model._meta.verbose_name) if model is not None else hold.target_type


def resolve_hold_target(*, target_type: str, target_id: str, lock: bool = False) -> models.Model:
    """The record a hold would name, or DomainError naming the field to fix (an unknown model or a missing id)."""
    models_by_label = holdable_models()
    model = models_by_label.get((target_type or "").strip().lower())
    if model is None:
        raise DomainError(
            f"A hold can be placed on {', '.join(models_by_label)}; “{target_type}” is not one of them.",
            field="target_type",
        )
    pks = _pks(model, [str(target_id).strip()])
    rows = model._base_manager.select_for_update() if lock else model._base_manager.all()
    target = rows.filter(pk=pks[0]).first() if pks else None
    if target is None:
        raise DomainError(f"There is no {model._meta.verbose_name} with id {target_id}.", field="target_id")
    return target


def place_hold(*, target_type: str, target_id: str, reason: str, actor) -> LegalHold:
    """Put the record ``target_type`` (a model label) ``target_id`` on legal hold, with ``reason``.

    The record's row is locked while the hold is written, so a purge running at the same moment either removed the
    record before (and the hold is refused: no such record) or sees the hold.
    """
    reason = (reason or "").strip()
    if not reason:
        raise DomainError("Say why the record is held (the case, the authority's request).", field="reason")
    with transaction.atomic():
        target = resolve_hold_target(target_type=target_type, target_id=target_id, lock=True)
        hold = LegalHold(
            target_type=_label(type(target)),
            target_id=str(target.pk),
            target_label=str(target)[:255],
            reason=reason,
            placed_by=actor,
        )
        hold._history_user = actor
        hold._change_reason = reason[:100]
        hold.save()
    return hold


def release_hold(*, hold: LegalHold, reason: str, actor) -> LegalHold:
    """Release ``hold`` with ``reason``; the record falls back under its retention date."""
    reason = (reason or "").strip()
    if not reason:
        raise DomainError("Say why the hold is released (e.g. the case is closed).", field="reason")
    with transaction.atomic():
        locked = LegalHold.objects.select_for_update().get(pk=hold.pk)
        if locked.released_at is not None:
            raise Conflict(
                f"Legal hold {locked.pk} was already released on {locked.released_at:%Y-%m-%d} by {locked.released_by}."
            )
        locked.released_at = timezone.now()
        locked.released_by = actor
        locked.release_reason = reason
        locked._history_user = actor
        locked._change_reason = reason[:100]  # the history column's length; the whole reason is on the hold
        locked.save(update_fields=["released_at", "released_by", "release_reason"])
    return locked


# --- the guard -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Why a record cannot be deleted now: the message for people, and the date or hold behind it."""

    message: str
    keep_until: datetime.date | None = None
    hold: int | None = None

    def details(self) -> dict:
        return {"keep_until": self.keep_until, "legal_hold": self.hold}


def deletion_refusal(obj: models.Model) -> Refusal | None:
    """Why ``obj`` may not be deleted now (a hold on it; or, for a retained record, a hold on its anchor or the
    anchor's keep-until date not yet passed), or None when nothing keeps it."""
    what = _describe(obj)
    hold = holds_on(obj).select_related("placed_by").order_by("placed_at", "pk").first()
    if hold is not None:
        return Refusal(
            f"{what} is under legal hold {hold.pk} ({_hold_text(hold)}). It cannot be deleted until the hold is "
            "released.",
            hold=hold.pk,
        )
    found = _record_of(type(obj))
    if found is None:
        return None
    policy, record = found
    if record.model is policy.anchor:
        anchor, whose = obj, what
    else:
        anchor_ids = _anchor_ids(record, record.model._base_manager.filter(pk=obj.pk))
        anchor = policy.anchor_queryset().filter(pk__in=anchor_ids).first()
        if anchor is None:
            return Refusal(
                f"{what} belongs to no {policy.anchor._meta.verbose_name}, so no retention date can be computed for "
                "it: it is kept."
            )
        whose = f"{what} belongs to {policy.anchor._meta.verbose_name} “{anchor}”, which"
    hold = _holds_on_anchor(policy, anchor).select_related("placed_by").first()
    if hold is not None:
        on = "" if hold.target_type == _label(policy.anchor) else f" on its {_target_noun(hold)} “{hold.target_label}”"
        return Refusal(
            f"{whose} is under legal hold {hold.pk}{on} ({_hold_text(hold)}). It cannot be deleted until the hold is "
            "released.",
            hold=hold.pk,
        )
    keep = policy.explain(anchor)
    if keep.date is None:
        return Refusal(f"{whose} has no keep-until date yet ({keep.because}): it is kept until one can be computed.")
    if keep.date >= database_today():
        return Refusal(
            f"{whose} is kept until {keep.date:%Y-%m-%d} ({keep.because}); it cannot be deleted before then.",
            keep_until=keep.date,
        )
    return None


def check_deletable(obj: models.Model) -> None:
    """Raise RetentionProtected (409) with the reason when ``obj`` may not be deleted now."""
    refusal = deletion_refusal(obj)
    if refusal is not None:
        raise RetentionProtected(refusal.message, details=refusal.details())


def _refuse_retained_delete(sender, instance, **kwargs) -> None:
    # The safety net under every ORM delete of a registered model; the doors check first and say it better.
    check_deletable(instance)


# --- the purge -----------------------------------------------------------------------------------------------------


@dataclass
class PurgeResult:
    """What a purge removed (or, in a dry run, would remove): the anchors, the rows per table, what stayed and why."""

    day: datetime.date
    dry_run: bool
    removed: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    record: PurgeRecord | None = None

    @property
    def rows(self) -> int:
        return sum(self.counts.values())


class _DryRun(Exception):
    """Rolls a dry run's transaction back once its counts are taken."""


def purge_expired(
    *, actor=None, reason: str = "", dry_run: bool = False, only: Sequence[models.Model] = ()
) -> PurgeResult:
    """Remove every anchor past its keep-until date and not on hold, with every record kept with it.

    One transaction: the stored keep-until dates are refreshed, the anchors to remove are locked, then each table loses
    its rows in one DELETE (children first; detached records only lose their link). Anchors still referenced by rows
    that stay (a pack of a kept batch inside a pallet of this one) stay too, and are listed as skipped. A real run needs
    ``actor`` and ``reason`` and leaves a PurgeRecord and a ``purge`` access event; a dry run counts exactly the same
    rows and rolls back. ``only`` narrows the purge to those anchors (one batch deleted through the admin or API);
    one of them that may not go raises RetentionProtected.
    """
    reason = (reason or "").strip()
    if not dry_run and actor is None:
        raise DomainError("Name the user who purges (--actor): the purge record says who removed what.", field="actor")
    if not dry_run and not reason:
        raise DomainError("Give the reason for the purge (--reason); it is kept in the purge record.", field="reason")
    only_by_policy: dict[int, list] = defaultdict(list)
    for obj in only:
        found = _record_of(type(obj))
        if found is None or found[1].model is not found[0].anchor:
            raise DomainError(f"{_describe(obj)} is not a record the purge removes on its own.")
        only_by_policy[id(found[0])].append(obj.pk)

    result = PurgeResult(day=datetime.date.min, dry_run=dry_run)
    files: list[str] = []
    try:
        with transaction.atomic():
            result.day = database_today()
            for policy in _policies:
                if only and id(policy) not in only_by_policy:
                    continue
                _purge_policy(policy, result, files, only_ids=only_by_policy.get(id(policy)))
            if only and len(result.removed) != len(only):
                kept = [obj for obj in only if not any(r["id"] == obj.pk for r in result.removed)]
                refusal = deletion_refusal(kept[0]) or Refusal(
                    f"{_describe(kept[0])} is still referenced by records that are kept: "
                    + next((s["why"] for s in result.skipped if s["id"] == kept[0].pk), "it cannot be deleted now.")
                )
                raise RetentionProtected(refusal.message, details=refusal.details())
            if dry_run:
                raise _DryRun
            result.record = _record_purge(result, actor=actor, reason=reason)
            # Files of removed rows (exports, submissions) go only once the rows are gone for good.
            transaction.on_commit(lambda: _delete_files(files))
    except _DryRun:
        pass
    return result


def delete_past_retention(*, obj: models.Model, actor, reason: str) -> PurgeResult:
    """Delete one anchor (a batch) and everything kept with it, through the purge: refused (409) unless it is past its
    keep-until date and not on hold. For the admin's and the API's delete."""
    check_deletable(obj)
    return purge_expired(actor=actor, reason=reason, only=[obj])


def _purge_policy(policy: RetentionPolicy, result: PurgeResult, files: list[str], *, only_ids: list | None) -> None:
    anchor_label = _label(policy.anchor)
    policy.refresh(only_ids)
    expired = policy.anchor._base_manager.filter(**{f"{policy.keep_until_field}__lt": result.day})
    if only_ids is not None:
        expired = expired.filter(pk__in=only_ids)
    held = _held_anchors(policy)
    labels = policy.anchor_queryset()
    for anchor in labels.filter(pk__in=expired.filter(held).values("pk")).order_by("pk"):
        result.skipped.append({"type": anchor_label, "id": anchor.pk, "label": str(anchor), "why": "on legal hold"})
    candidates = expired.exclude(held)
    blocked: dict = {}
    while True:
        found = _blocked_by_references(policy, candidates.exclude(pk__in=list(blocked)))
        if not found.keys() - blocked.keys():
            break
        blocked.update(found)
    going = candidates.exclude(pk__in=list(blocked))
    for anchor in labels.filter(pk__in=list(blocked)).order_by("pk"):
        result.skipped.append({"type": anchor_label, "id": anchor.pk, "label": str(anchor), "why": blocked[anchor.pk]})
    # Locked, so nothing changes under the purge (a hold placed now waits for it, then finds the record gone).
    going_ids = list(going.select_for_update().order_by("pk").values_list("pk", flat=True))
    if not going_ids:
        return
    keep_until = policy.keep_until_field
    for anchor in labels.filter(pk__in=going.values("pk")).order_by("pk").iterator():
        result.removed.append(
            {"type": anchor_label, "id": anchor.pk, "label": str(anchor), "keep_until": getattr(anchor, keep_until)}
        )
    going_subquery = going.values("pk")
    for record in policy.records:
        rows = _rows_of(record, going_subquery)
        if record.detach_field:
            result.counts[f"{record.label}.{record.detach_field}"] = rows.update(**{record.detach_field: None})
            continue
        files.extend(_file_names(rows))
        for through, through_field in _m2m_links_into(record.model):
            linked = through._base_manager.filter(**{f"{through_field}__in": rows.values("pk")})
            result.counts[_label(through)] = _delete_set(linked)
        result.counts[record.label] = _delete_set(rows)


def _blocked_by_references(policy: RetentionPolicy, candidates: QuerySet) -> dict:
    """Candidate anchors whose rows are still pointed at by rows that stay, with why (by anchor id)."""
    candidate_ids = candidates.values("pk")
    going = {record.model: _rows_of(record, candidate_ids) for record in policy.deleted_records}
    detached = {(record.model, record.detach_field) for record in policy.records if record.detach_field}
    blocked: dict = {}
    for record in policy.deleted_records:
        for relation in record.model._meta.related_objects:
            fk = relation.field
            source = relation.related_model
            if not fk.many_to_one or issubclass(source, HistoricalChanges) or source._meta.auto_created:
                continue  # history rows outlive what they describe; many-to-many links go with their row
            if (source, fk.name) in detached:
                continue
            staying = source._base_manager.filter(**{f"{fk.name}__isnull": False})
            if source in going:
                staying = staying.exclude(pk__in=going[source].values("pk"))
            pointed_at = going[record.model].filter(**{f"{fk.target_field.attname}__in": staying.values(fk.attname)})
            for anchor in _anchor_ids(record, pointed_at):
                blocked.setdefault(
                    anchor,
                    f"{source._meta.verbose_name_plural} that are kept still point at its "
                    f"{record.model._meta.verbose_name_plural}",
                )
    return blocked


def _m2m_links_into(model: type[models.Model]) -> list[tuple[type[models.Model], str]]:
    """The auto-created many-to-many tables with a foreign key to ``model`` (a batch's markets and lines)."""
    links = []
    for relation in model._meta.get_fields(include_hidden=True):  # the links' relations are hidden ones
        if relation.one_to_many and relation.related_model._meta.auto_created:
            links.append((relation.related_model, relation.field.name))
    return links


def _delete_set(rows: QuerySet) -> int:
    """DELETE ``rows`` in one statement, without loading them: ``DELETE … WHERE pk IN (SELECT …)``."""
    model = rows.model
    sql, params = rows.values("pk").query.sql_with_params()
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {quote(model._meta.db_table)} WHERE {quote(model._meta.pk.column)} IN ({sql})",  # noqa: S608
            params,
        )
        return cursor.rowcount


def _file_names(rows: QuerySet) -> list[str]:
    names = [f.attname for f in rows.model._meta.concrete_fields if isinstance(f, models.FileField)]
    if not names:
        return []
    return [name for values in rows.values_list(*names).iterator() for name in values if name]


def _delete_files(names: list[str]) -> None:
    for name in names:
        default_storage.delete(name)


def _record_purge(result: PurgeResult, *, actor, reason: str) -> PurgeRecord:
    record = PurgeRecord(
        performed_by=actor,
        reason=reason,
        kept_until_before=result.day,
        removed=result.removed,
        counts=result.counts,
        skipped=result.skipped,
    )
    record._history_user = actor
    record._change_reason = reason[:100]  # the history column's length; the whole reason is on the record
    record.save()
    record_access(
        kind=AccessEvent.Kind.PURGE,
        user=actor,
        target=f"purge record {record.pk}",
        quantity=result.rows,
        details={"records": len(result.removed), "counts": result.counts, "reason": reason},
    )
    return record


# --- the admin door ------------------------------------------------------------------------------------------------


class RetentionGuardedAdmin:
    """Mixed into every ModelAdmin by the admin site: a delete (the button or the bulk action) is refused with the
    reason — the keep-until date or the hold — before anything is deleted. A registered anchor (a batch) past its
    retention is deleted through the purge, with everything kept with it, and recorded."""

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and self.has_delete_permission(request, obj):
            refusal = deletion_refusal(obj)
            if refusal is not None:
                self.message_user(request, refusal.message, messages.ERROR)
                opts = self.model._meta
                return redirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions["delete_selected"] = (_guarded_delete_selected, name, description)
        return actions

    def get_deleted_objects(self, objs, request):
        if _is_anchor(self.model):
            # The purge removes the anchor's records in one go, which the admin's collector would call protected.
            try:
                plan = purge_expired(dry_run=True, only=list(objs))
            except RetentionProtected as exc:  # e.g. still referenced by a record that is kept
                return [str(obj) for obj in objs], {}, set(), [exc.message]
            return [str(obj) for obj in objs], _plural_counts(plan.counts), set(), []
        return super().get_deleted_objects(objs, request)

    def delete_model(self, request, obj):
        if _is_anchor(self.model):
            delete_past_retention(obj=obj, actor=request.user, reason=_admin_reason(request, [obj]))
            return
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        if _is_anchor(self.model):
            objs = list(queryset)
            purge_expired(actor=request.user, reason=_admin_reason(request, objs), only=objs)
            return
        super().delete_queryset(request, queryset)


def _guarded_delete_selected(modeladmin, request, queryset):
    refusals = [refusal for obj in queryset if (refusal := deletion_refusal(obj)) is not None]
    if refusals:
        for refusal in refusals:
            modeladmin.message_user(request, refusal.message, messages.ERROR)
        modeladmin.message_user(request, "Nothing was deleted.", messages.WARNING)
        return None
    return delete_selected(modeladmin, request, queryset)


_guarded_delete_selected.allowed_permissions = ("delete",)
_guarded_delete_selected.short_description = delete_selected.short_description


def _is_anchor(model: type[models.Model]) -> bool:
    found = _record_of(model)
    return found is not None and found[1].model is found[0].anchor


def _admin_reason(request, objs: list) -> str:
    return f"Deleted in the admin by {request.user} past retention: {', '.join(str(obj) for obj in objs)}"[:2000]


def _plural_counts(counts: dict[str, int]) -> dict[str, int]:
    """The purge's counts as the admin's confirmation page lists them: “packs: 120”, “allocations (link cleared): 2”."""
    readable = {}
    for label, count in counts.items():
        app_label, model_name, *detached = label.split(".")
        name = str(apps.get_model(app_label, model_name)._meta.verbose_name_plural)
        if count:
            readable[f"{name} (link cleared)" if detached else name] = count
    return readable


def guarded_admin_class(admin_class: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    """``admin_class`` with RetentionGuardedAdmin mixed in (the admin site calls this for every registration)."""
    if issubclass(admin_class, RetentionGuardedAdmin):
        return admin_class
    return type(admin_class.__name__, (RetentionGuardedAdmin, admin_class), {"__module__": admin_class.__module__})
