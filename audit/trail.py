"""Reads of the audit trail: the history rows of every model (django-simple-history), filtered, with each change
shown as old → new values side by side.

The trail spans every history table the user may read (view permission on the history model), found through
django.apps — audit imports no domain app. A page is one ``UNION ALL`` over those tables for the ids in date order,
then, per table on the page, one query for the rows (with the id of each row's previous version as a subquery), one
for those previous versions and one per many-to-many field. The CSV export streams the same way, a chunk at a time.
"""

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.apps import apps
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db.models import CharField, Model, OuterRef, Q, QuerySet, Subquery, Value
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from simple_history.utils import get_m2m_reverse_field_name

from audit.chain import history_models, is_m2m_history_model
from audit.models import ChainLink
from audit.services import _is_secret_name

EXPORT_CHUNK = 500
ACTIONS = {"+": "Created", "~": "Changed", "-": "Deleted"}


@dataclass(frozen=True)
class TrailFilters:
    """What to show: one history model (its label) or all, one object, one user, a date range (both days included)."""

    model: str = ""
    object_id: str = ""
    username: str = ""
    date_from: date | None = None
    date_to: date | None = None
    history_id: int | None = None  # one history row (the audit-chain incidents link to rows)


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: str
    new: str


@dataclass
class TrailEntry:
    """One history row: who did what to which object, when and why, and each field's old and new value."""

    label: str
    model_name: str
    object_id: str
    history_id: int
    date: datetime
    username: str
    action: str
    reason: str
    changes: list[FieldChange] = field(default_factory=list)
    object_url: str | None = None
    history_url: str | None = None


def trail_models(*, user: AbstractBaseUser) -> list[type[Model]]:
    """The history models (not the many-to-many ones) whose rows ``user`` may read, by app and name."""
    readable = []
    for model in history_models():
        opts = model._meta
        if is_m2m_history_model(model) or not user.has_perm(f"{opts.app_label}.view_{opts.model_name}"):
            continue
        readable.append(model)
    return sorted(readable, key=lambda m: (m._meta.app_label, m.instance_type._meta.verbose_name))


def model_choice_label(model: type[Model]) -> str:
    instance_opts = model.instance_type._meta
    return f"{instance_opts.app_config.verbose_name} › {instance_opts.verbose_name}"


def _object_field(model: type[Model]):
    """The history model's copy of its model's primary key (``id`` for every tracked model today)."""
    return model._meta.get_field(model.instance_type._meta.pk.name)


def object_id_for(model: type[Model], value: str):
    """``value`` as an id of ``model``'s objects; ValidationError when it cannot be one (text for a numeric key)."""
    return _object_field(model).to_python(value)


def _filtered(model: type[Model], filters: TrailFilters) -> QuerySet | None:
    """``model``'s history rows matching ``filters``; None when the object id cannot be one of this model's."""
    rows = model._base_manager.all()
    if filters.object_id:
        try:
            object_id = object_id_for(model, filters.object_id)
        except ValidationError:
            return None  # nothing of this model can match
        rows = rows.filter(**{_object_field(model).attname: object_id})
    if filters.history_id:
        rows = rows.filter(pk=filters.history_id)
    if filters.username:
        rows = rows.filter(history_user__username__iexact=filters.username)
    if filters.date_from:
        rows = rows.filter(history_date__gte=_start_of(filters.date_from))
    if filters.date_to:
        rows = rows.filter(history_date__lt=_start_of(filters.date_to + timedelta(days=1)))
    return rows


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def _selected_models(*, user: AbstractBaseUser, filters: TrailFilters) -> list[type[Model]]:
    models = trail_models(user=user)
    if filters.model:
        models = [m for m in models if m._meta.label_lower == filters.model]
    return models


def list_trail(*, user: AbstractBaseUser, filters: TrailFilters) -> QuerySet:
    """``(label, history id, date)`` of the matching history rows of every model ``user`` may read, newest first.

    Lazy and sliceable (``get_trail_page`` slices it); turn a slice into entries with ``load_entries``.
    """
    parts = []
    for model in _selected_models(user=user, filters=filters):
        rows = _filtered(model, filters)
        if rows is None:
            continue
        label = Value(model._meta.label_lower, output_field=CharField())
        # No ORDER BY inside a UNION part (history models order by date by default); the union is ordered.
        parts.append(
            rows.order_by().annotate(trail_label=label).values_list("trail_label", "history_id", "history_date")
        )
    if not parts:
        return ChainLink.objects.none().values_list("history_label", "history_id", "created_at")
    first, *rest = parts
    trail = first.union(*rest, all=True) if rest else first
    return trail.order_by("-history_date", "-history_id")


@dataclass(frozen=True)
class TrailPage:
    """One page of the trail, newest first. No total: counting every history table on each view would cost more and
    more as the years of history grow; a page knows only whether older entries follow."""

    number: int
    entries: list[TrailEntry]
    has_previous: bool
    has_next: bool
    first: int  # position of the first entry (1-based), for "changes 51–100"
    last: int


def get_trail_page(*, user: AbstractBaseUser, filters: TrailFilters, number: int, size: int) -> TrailPage:
    """Page ``number`` (from 1) of the trail; one row more than a page is read to know whether more follow."""
    number = max(number, 1)
    offset = (number - 1) * size
    rows = list(list_trail(user=user, filters=filters)[offset : offset + size + 1])
    entries = load_entries(rows[:size])
    return TrailPage(
        number=number,
        entries=entries,
        has_previous=number > 1,
        has_next=len(rows) > size,
        first=offset + 1 if entries else 0,
        last=offset + len(entries),
    )


def load_entries(rows: Iterable[tuple[str, int, datetime]]) -> list[TrailEntry]:
    """The entries of ``(label, history id, …)`` rows, in the same order, each with its old → new values."""
    rows = list(rows)
    ids_by_label: dict[str, list[int]] = defaultdict(list)
    for label, history_id, *_ in rows:
        ids_by_label[label].append(history_id)
    entries = {}
    for label, ids in ids_by_label.items():
        model = next(m for m in history_models() if m._meta.label_lower == label)
        for entry in _entries_of(model, ids):
            entries[(label, entry.history_id)] = entry
    return [entries[(label, history_id)] for label, history_id, *_ in rows if (label, history_id) in entries]


def iter_trail_entries(*, user: AbstractBaseUser, filters: TrailFilters) -> Iterator[TrailEntry]:
    """Every matching entry, model by model and oldest first, read a chunk at a time (for exports)."""
    for model in _selected_models(user=user, filters=filters):
        rows = _filtered(model, filters)
        if rows is None:
            continue
        chunk: list[int] = []
        for history_id in (
            rows.order_by("history_date", "history_id")
            .values_list("history_id", flat=True)
            .iterator(chunk_size=EXPORT_CHUNK)
        ):
            chunk.append(history_id)
            if len(chunk) == EXPORT_CHUNK:
                yield from _entries_of(model, chunk)
                chunk = []
        if chunk:
            yield from _entries_of(model, chunk)


# --- Building entries ---------------------------------------------------------------------------------------------


def _shown_fields(model: type[Model]) -> list:
    """The tracked fields of ``model`` worth showing: none that holds a secret (a key, a token…), and no timestamp
    the database keeps by itself (``auto_now``), which changes with every save and would drown the real changes."""
    return [
        f
        for f in model.tracked_fields
        if not _is_secret_name(f.name) and not _is_secret_name(f.attname) and not getattr(f, "auto_now", False)
    ]


def _entries_of(model: type[Model], ids: list[int]) -> list[TrailEntry]:
    """Entries of history rows ``ids`` of ``model``, in ``ids`` order, in a few queries whatever their number."""
    object_attname = _object_field(model).attname
    earlier = model._base_manager.filter(**{object_attname: OuterRef(object_attname)}).filter(
        Q(history_date__lt=OuterRef("history_date"))
        | Q(history_date=OuterRef("history_date"), history_id__lt=OuterRef("history_id"))
    )
    records = {
        record.pk: record
        for record in model._base_manager.filter(pk__in=ids)
        .select_related("history_user")
        .annotate(previous_id=Subquery(earlier.order_by("-history_date", "-history_id").values("history_id")[:1]))
    }
    previous_ids = {r.previous_id for r in records.values() if r.previous_id is not None}
    previous = {r.pk: r for r in model._base_manager.filter(pk__in=previous_ids)} if previous_ids else {}
    m2m_values = _m2m_values(model, [*records, *previous])
    fields = _shown_fields(model)
    opts = model.instance_type._meta
    entries = []
    for history_id in ids:
        record = records.get(history_id)
        if record is None:
            continue
        old = previous.get(record.previous_id)
        object_id = str(getattr(record, object_attname))
        entries.append(
            TrailEntry(
                label=model._meta.label_lower,
                model_name=str(opts.verbose_name),
                object_id=object_id,
                history_id=record.pk,
                date=record.history_date,
                username=record.history_user.get_username() if record.history_user_id else "",
                action=ACTIONS.get(record.history_type, record.history_type),
                reason=record.history_change_reason or "",
                changes=_changes(record, old, fields, m2m_values),
                object_url=_admin_url(opts, "change", object_id),
                history_url=_admin_url(opts, "history", object_id),
            )
        )
    return entries


def _changes(record, old, fields: list, m2m_values: dict) -> list[FieldChange]:
    """Old → new of each field that differs from the previous version; every filled-in field of a first version."""
    if record.history_type == "-":
        return []  # the row keeps the last values; nothing changed but the object's existence
    changes = []
    if old is None:
        for f in fields:
            value = getattr(record, f.attname)
            if value not in (None, "", [], {}):
                changes.append(FieldChange(str(f.verbose_name), "", _show(value)))
    else:
        # Field by field rather than simple-history's diff_against: that one leaves out non-editable fields (a batch's
        # released_at, released_by and release_reason), which are exactly what an inspector asks about.
        for f in fields:
            old_value, new_value = getattr(old, f.attname), getattr(record, f.attname)
            if old_value != new_value:
                changes.append(FieldChange(str(f.verbose_name), _show(old_value), _show(new_value)))
    for f in record._history_m2m_fields:
        new_values = m2m_values.get((f.name, record.pk), [])
        old_values = m2m_values.get((f.name, old.pk), []) if old is not None else []
        if new_values != old_values:
            changes.append(FieldChange(str(f.verbose_name), _show(old_values), _show(new_values)))
    return changes


def _m2m_values(model: type[Model], history_ids: list[int]) -> dict[tuple[str, int], list]:
    """For each tracked many-to-many field: {(field name, history id): sorted ids of the related objects}."""
    values: dict[tuple[str, int], list] = defaultdict(list)
    if not history_ids:
        return values
    for f in getattr(model, "_history_m2m_fields", []):
        through = f.remote_field.through._meta  # simple-history names the m2m history model after the through model
        m2m_model = apps.get_model(model._meta.app_label, f"historical{through.model_name}")
        target = get_m2m_reverse_field_name(f)
        rows = m2m_model._base_manager.filter(history_id__in=history_ids).values_list("history_id", f"{target}_id")
        for history_id, target_id in rows.order_by("history_id", f"{target}_id"):
            values[(f.name, history_id)].append(target_id)
    return values


def _show(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z") if timezone.is_aware(value) else str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return str(value)


def _admin_url(opts, view: str, object_id: str) -> str | None:
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[object_id])
    except NoReverseMatch:
        return None
