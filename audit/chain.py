"""The tamper-evident chain over every history row (django-simple-history) of the project.

**Writing.** Every history row gets a ``ChainLink`` in the same transaction: the receivers below listen to
simple-history's ``post_create_historical_record`` and ``post_create_historical_m2m_records``; rows written by
hand are linked by ``bulk_history_create`` / ``link_history_rows`` (ORM) or ``link_insert_sql`` (raw SQL, as in the
one-statement allocation). A link is written unsealed: no sequence, no hash, no lock.

**Sealing.** ``seal_chain`` appends the unsealed links to the chain one at a time, in one order, under a lock on the
one ``ChainHead`` row: ``hash = SHA-256(previous hash + canonical content of the history row)``. It runs right
after each commit that wrote history (``transaction.on_commit``; it skips when another sealer holds the head, which
then picks those links up), from the scheduled tasks and before every verification. The lock is taken *after* the
writer's commit, never inside it: a global lock held until commit would serialise every write of the system (a long
line report would stall all allocations) and deadlock against the domain's own row locks.

**Verifying.** ``verify_chain`` streams the links in sequence order (keyset pages, one query per history table per
page), recomputes every hash from the row as it is now and names each problem by table, row id and sequence: a row
edited or deleted behind the application's back, a row inserted without a link (anti-join per table), a link
removed (a gap in the sequence) or the chain cut short (the head no longer reached).

This module reads history models through django.apps and simple-history; it imports no domain app.
"""

import functools
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from uuid import UUID

from django.apps import apps
from django.core.exceptions import FieldError
from django.db import DEFAULT_DB_ALIAS, connections, router, transaction
from django.db.models import Exists, Model, OuterRef
from django.utils import timezone
from simple_history.models import HistoricalChanges
from simple_history.signals import (
    post_create_historical_m2m_records,
    post_create_historical_record,
    pre_create_historical_record,
)

from audit.models import CHAIN_GENESIS_HASH, ChainHead, ChainLayout, ChainLink

SEAL_BATCH = 2000
MAX_SEAL_BATCHES = 50  # links sealed by one call at most: SEAL_BATCH × this
VERIFY_BATCH = 2000
# A history row written outside a transaction commits a moment before its link; a verification running in between
# must not call that a forgery. Rows younger than this are checked by the next run.
UNLINKED_GRACE = timedelta(seconds=60)
MAX_REPORTED_PROBLEMS = 1000


# --- Which tables are chained -------------------------------------------------------------------------------------


def history_models() -> list[type[Model]]:
    """Every history model installed (one per ``HistoricalRecords``, plus one per tracked many-to-many field)."""
    return [model for model in apps.get_models() if issubclass(model, HistoricalChanges)]


def _migrated_history_models(using: str) -> list[type[Model]]:
    """The history models whose tables exist in ``using`` (a model whose migration has not run yet has none)."""
    tables = set(connections[using].introspection.table_names())
    return [
        model
        for model in history_models()
        if router.allow_migrate_model(using, model) and model._meta.db_table in tables
    ]


def is_m2m_history_model(model: type[Model]) -> bool:
    """Whether history model ``model`` holds many-to-many rows: they hang off a history row of their parent and have
    no date or user of their own."""
    return issubclass(model, HistoricalChanges) and not any(
        f.name == "history_type" for f in model._meta.concrete_fields
    )


def _history_model(label: str) -> type[Model] | None:
    try:
        model = apps.get_model(label)
    except LookupError:
        return None
    return model if issubclass(model, HistoricalChanges) else None


# --- Canonical content -------------------------------------------------------------------------------------------


def _columns(model: type[Model]) -> list[str]:
    return sorted(f.attname for f in model._meta.concrete_fields if not f.primary_key)


def _encode(value):
    """A JSON value that means the same thing whichever Python type the database driver returned."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if timezone.is_aware(value) else value).isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value.total_seconds())
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (dict, list)):
        return value
    return str(value)


def canonical_content(label: str, row_id: int, columns: list[str], values: Iterable | None) -> bytes:
    """The bytes a link hashes: table, row id and each column's value, as sorted, compact UTF-8 JSON.

    ``values`` None stands for a row that was already gone when its link was sealed.
    """
    if values is None:
        document = {"table": label, "row": row_id, "missing": True}
    else:
        document = {"table": label, "row": row_id, "values": dict(zip(columns, map(_encode, values), strict=True))}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(previous_hash: str, content: bytes) -> str:
    """SHA-256 of the previous link's hash (64 hex characters) followed by the row's canonical content."""
    return hashlib.sha256(previous_hash.encode("ascii") + content).hexdigest()


def _layout(model: type[Model], using: str, cache: dict[str, ChainLayout]) -> ChainLayout:
    label = model._meta.label_lower
    if label not in cache:
        columns = _columns(model)
        digest = hashlib.sha256(json.dumps([label, columns]).encode()).hexdigest()
        layout = ChainLayout.objects.using(using).filter(digest=digest).first()
        if layout is None:
            # Only ever created under the head lock, so no second sealer races this insert.
            layout = ChainLayout.objects.using(using).create(history_label=label, columns=columns, digest=digest)
        cache[label] = layout
    return cache[label]


def _read_rows(model: type[Model], ids: Iterable[int], columns: list[str], using: str) -> dict[int, tuple]:
    """The rows ``ids`` of one history table, in one query: {row id: values in ``columns`` order}."""
    rows = model._base_manager.using(using).filter(pk__in=list(ids)).values_list("pk", *columns)
    return {row[0]: row[1:] for row in rows}


# --- Writing links -------------------------------------------------------------------------------------------------


def _db_for(model: type[Model], using: str | None) -> str:
    return using or router.db_for_write(model) or DEFAULT_DB_ALIAS


def link_history_rows(history_model: type[Model], row_ids: Iterable[int], *, using: str | None = None) -> int:
    """Link history rows written without simple-history's signals (``bulk_create`` of history rows). Call it in the
    transaction that wrote them; returns how many links were written."""
    db = _db_for(history_model, using)
    label = history_model._meta.label_lower
    links = [ChainLink(history_label=label, history_id=row_id) for row_id in row_ids]
    ChainLink.objects.using(db).bulk_create(links, batch_size=SEAL_BATCH)
    if links:
        _seal_after_commit(db)
    return len(links)


def bulk_history_create(model: type[Model], objs: list[Model], **kwargs) -> list[Model]:
    """simple-history's ``bulk_history_create`` for ``model`` (same arguments), with the rows linked into the chain.

    Use this instead of ``Model.history.bulk_history_create`` (and ``bulk_create_with_history``'s history step):
    the plain one sends no signal, so its rows would look inserted behind the application's back.
    """
    rows = model.history.bulk_history_create(objs, **kwargs) or []
    if rows:
        history_model = type(rows[0])
        ids = [row.pk for row in rows]
        if None in ids:  # a backend that cannot return ids from a bulk insert
            raise RuntimeError("bulk_history_create needs a database that returns the ids of bulk inserts.")
        link_history_rows(history_model, ids)
    return rows


def link_insert_sql(history_model: type[Model], *, source: str, id_column: str, now_sql: str) -> str:
    """``INSERT … SELECT`` linking the history rows that the CTE or table ``source`` returns (their ids in
    ``id_column``), for code that writes history rows in raw SQL. ``now_sql`` is the SQL (or placeholder) of the time.

    Every spliced name comes from models' _meta, quoted; the label is a model label, never user input.
    """
    qn = connections[DEFAULT_DB_ALIAS].ops.quote_name
    meta = ChainLink._meta
    label = history_model._meta.label_lower.replace("'", "''")
    columns = ", ".join(
        qn(meta.get_field(name).column) for name in ("history_label", "history_id", "hash", "created_at")
    )
    return (
        f"INSERT INTO {qn(meta.db_table)} ({columns}) "  # noqa: S608
        f"SELECT '{label}', {source}.{qn(id_column)}, '', {now_sql} FROM {source}"
    )


def _link_history_row(sender, history_instance, using=None, **kwargs) -> None:
    db = _db_for(sender, using)
    ChainLink.objects.using(db).create(history_label=sender._meta.label_lower, history_id=history_instance.pk)
    _seal_after_commit(db)


def _link_m2m_history_rows(sender, created_rows, history_instance, **kwargs) -> None:
    if not created_rows:
        return
    db = _db_for(sender, None)
    ids = [row.pk for row in created_rows]
    if None in ids:  # a backend that cannot return ids from bulk_create: read them back
        ids = list(sender._base_manager.using(db).filter(history=history_instance).values_list("pk", flat=True))
    link_history_rows(sender, ids, using=db)


def connect_receivers() -> None:
    """Link every history row simple-history writes (called once, from ``AuditConfig.ready``)."""
    post_create_historical_record.connect(_link_history_row, dispatch_uid="audit.chain.link_history_row")
    post_create_historical_m2m_records.connect(_link_m2m_history_rows, dispatch_uid="audit.chain.link_m2m_rows")


def history_receivers_besides_chain(history_model: type[Model]) -> bool:
    """Whether anything but the chain listens to simple-history's record signals for ``history_model``.

    Code that writes history rows in raw SQL links them itself (``link_insert_sql``) but must still leave the ORM
    path to any other receiver, which would otherwise miss those rows.
    """
    ours = {_link_history_row}
    for signal in (pre_create_historical_record, post_create_historical_record):
        sync_receivers, async_receivers = signal._live_receivers(history_model)
        if any(receiver not in ours for receiver in [*sync_receivers, *async_receivers]):
            return True
    return False


def _seal_after_commit(using: str) -> None:
    """Seal once the writing transaction commits — registered once per transaction, however many rows it wrote."""
    sealer = _sealer(using)
    pending = getattr(connections[using], "run_on_commit", None) or []
    if any(callback is sealer for _, callback, _ in pending):
        return
    transaction.on_commit(sealer, using=using, robust=True)


@functools.cache
def _sealer(using: str) -> Callable[[], int]:
    """The after-commit seal of database ``using``: one function per database, so a transaction registers it once."""
    return functools.partial(seal_chain, wait=False, using=using)


# --- Sealing --------------------------------------------------------------------------------------------------------


def _lock_head(*, using: str, wait: bool) -> ChainHead | None:
    """The head row, locked for this transaction; None when ``wait`` is False and another sealer holds it."""
    heads = ChainHead.objects.using(using).select_for_update(skip_locked=not wait)
    head = heads.filter(pk=1).first()
    if head is None:
        if ChainHead.objects.using(using).filter(pk=1).exists():
            return None  # locked by another sealer, which will seal our links too
        ChainHead.objects.using(using).bulk_create([ChainHead(id=1)], ignore_conflicts=True)
        head = ChainHead.objects.using(using).select_for_update().get(pk=1)
    return head


def seal_chain(*, wait: bool = True, using: str = DEFAULT_DB_ALIAS, batch_size: int = SEAL_BATCH) -> int:
    """Append the unsealed links to the chain, oldest link first (at most MAX_SEAL_BATCHES pages of them); returns
    how many were sealed.

    With ``wait`` False it returns 0 at once when another sealer holds the head (that one seals what is pending).
    """
    sealed = 0
    with transaction.atomic(using=using):
        head = _lock_head(using=using, wait=wait)
        if head is None:
            return 0
        if not wait and connections[using].vendor == "postgresql":
            # The seal right after a writer's commit need not wait for the disk: a seal lost in a crash is redone
            # by the next one, over the same rows — and the writer's own commit is not delayed by a second flush.
            with connections[using].cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
        layouts: dict[str, ChainLayout] = {}
        # Bounded: under a write load faster than sealing, one call must still end (the next one goes on).
        for _ in range(MAX_SEAL_BATCHES):
            pending = list(
                ChainLink.objects.using(using)
                .filter(sequence__isnull=True)
                .order_by("id")
                .values_list("id", "history_label", "history_id")[:batch_size]
            )
            if not pending:
                break
            contents = _contents_for_sealing(pending, using=using, layouts=layouts)
            now = timezone.now()
            updates = []
            for link_id, label, row_id in pending:
                layout, content = contents[(label, row_id)]
                head.sequence += 1
                head.hash = chain_hash(head.hash, content)
                updates.append(
                    ChainLink(id=link_id, sequence=head.sequence, hash=head.hash, layout=layout, sealed_at=now)
                )
            ChainLink.objects.using(using).bulk_update(
                updates, ["sequence", "hash", "layout", "sealed_at"], batch_size=500
            )
            sealed += len(pending)
        if sealed:
            head.updated_at = timezone.now()
            head.save(using=using, update_fields=["sequence", "hash", "updated_at"])
    return sealed


def _contents_for_sealing(
    pending: list[tuple[int, str, int]], *, using: str, layouts: dict[str, ChainLayout]
) -> dict[tuple[str, int], tuple[ChainLayout, bytes]]:
    ids_by_label: dict[str, list[int]] = defaultdict(list)
    for _, label, row_id in pending:
        ids_by_label[label].append(row_id)
    contents = {}
    for label, ids in ids_by_label.items():
        model = _history_model(label)
        if model is None:
            # A link to a table this code no longer knows: sealed as missing, reported by every verification.
            layout = _unknown_layout(label, using=using, cache=layouts)
            rows = {}
        else:
            layout = _layout(model, using, layouts)
            rows = _read_rows(model, ids, layout.columns, using)
        for row_id in ids:
            contents[(label, row_id)] = (layout, canonical_content(label, row_id, layout.columns, rows.get(row_id)))
    return contents


def _unknown_layout(label: str, *, using: str, cache: dict[str, ChainLayout]) -> ChainLayout:
    key = f"?{label}"
    if key not in cache:
        digest = hashlib.sha256(json.dumps([label, None]).encode()).hexdigest()
        cache[key], _ = ChainLayout.objects.using(using).get_or_create(
            digest=digest, defaults={"history_label": label, "columns": []}
        )
    return cache[key]


def chain_head(*, using: str = DEFAULT_DB_ALIAS) -> dict:
    """The last sealed link as ``{"sequence": n, "hash": "…"}`` (sequence 0 and the genesis hash when empty)."""
    head = ChainHead.objects.using(using).filter(pk=1).values("sequence", "hash").first()
    return head or {"sequence": 0, "hash": CHAIN_GENESIS_HASH}


def adopt_existing_history(*, using: str = DEFAULT_DB_ALIAS) -> int:
    """Link every history row of a database whose chain never started (the upgrade that introduces the chain).

    Once any link was sealed this does nothing: from then on a row without a link is a forgery to report, not a row
    to adopt. One ``INSERT … SELECT`` per history table, then a seal.
    """
    head = ChainHead.objects.using(using).filter(pk=1).first()
    if (head is not None and head.sequence > 0) or ChainLink.objects.using(using).exists():
        return 0
    adopted = 0
    now = timezone.now()
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        for model in _migrated_history_models(using):
            qn = connections[using].ops.quote_name
            pk_column = qn(model._meta.pk.column)
            sql = link_insert_sql(model, source=qn(model._meta.db_table), id_column=model._meta.pk.column, now_sql="%s")
            cursor.execute(f"{sql} ORDER BY {pk_column}", [now])
            adopted += max(cursor.rowcount, 0)
    if adopted:
        seal_chain(using=using)
    return adopted


def adopt_after_migrate(sender, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    tables = connections[using].introspection.table_names()
    # Not after a migration back to before the chain existed.
    if router.allow_migrate_model(using, ChainLink) and {ChainLink._meta.db_table, ChainHead._meta.db_table} <= set(
        tables
    ):
        adopt_existing_history(using=using)


# --- Verifying ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainProblem:
    """One place where the chain does not verify: a history table, a row id and (where there is one) a sequence."""

    kind: str  # edited, deleted, unlinked, gap, truncated, unknown_table, unreadable
    table: str
    row_id: int | None
    sequence: int | None
    message: str

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "table": self.table,
            "row_id": self.row_id,
            "sequence": self.sequence,
            "message": self.message,
        }


@dataclass
class ChainReport:
    """What one verification checked and found."""

    links_checked: int = 0
    head_sequence: int = 0
    head_hash: str = CHAIN_GENESIS_HASH
    tables_checked: int = 0
    problem_count: int = 0
    problems: list[ChainProblem] = field(default_factory=list)  # the first MAX_REPORTED_PROBLEMS

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: ChainProblem) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(problem)

    def summary(self) -> str:
        if self.ok:
            return (
                f"Audit chain verified: {self.links_checked} links over {self.tables_checked} history tables, "
                f"head #{self.head_sequence} {self.head_hash}."
            )
        return (
            f"Audit chain BROKEN: {self.problem_count} problem{'s' if self.problem_count != 1 else ''} in "
            f"{self.links_checked} links over {self.tables_checked} history tables."
        )


def _link_pages(*, using: str, up_to: int, batch_size: int) -> Iterator[list[tuple]]:
    """Sealed links in sequence order, a page at a time (keyset pagination: no OFFSET, no whole-table read)."""
    last = 0
    while True:
        page = list(
            ChainLink.objects.using(using)
            .filter(sequence__gt=last, sequence__lte=up_to)
            .order_by("sequence")
            .values_list("sequence", "history_label", "history_id", "hash", "layout_id")[:batch_size]
        )
        if not page:
            return
        yield page
        last = page[-1][0]


def verify_chain(*, using: str = DEFAULT_DB_ALIAS, batch_size: int = VERIFY_BATCH) -> ChainReport:
    """Seal what is pending, then check the whole chain and every history table; returns what was found.

    Memory stays flat: links are read a page at a time, their rows one query per table per page.
    """
    seal_chain(using=using)
    head = ChainHead.objects.using(using).filter(pk=1).first() or ChainHead(id=1)
    report = ChainReport(head_sequence=head.sequence, head_hash=head.hash)
    layouts = {layout.pk: layout for layout in ChainLayout.objects.using(using).all()}
    previous_hash, expected_sequence, last_hash = CHAIN_GENESIS_HASH, 1, None
    for page in _link_pages(using=using, up_to=head.sequence, batch_size=batch_size):
        rows, unreadable = _rows_for_page(page, layouts=layouts, using=using)
        for sequence, label, row_id, stored_hash, layout_id in page:
            report.links_checked += 1
            hash_checkable = True
            if sequence != expected_sequence:
                report.add(
                    ChainProblem(
                        "gap",
                        label,
                        row_id,
                        sequence,
                        f"links #{expected_sequence}–#{sequence - 1} are missing from the chain (deleted) before "
                        f"#{sequence} ({label} row {row_id})",
                    )
                )
                hash_checkable = False  # its predecessor is gone: nothing to recompute its hash from
            layout = layouts.get(layout_id)
            model = _history_model(label)
            if model is None or layout is None:
                report.add(
                    ChainProblem(
                        "unknown_table", label, row_id, sequence, f"#{sequence}: {label} is not a history table here"
                    )
                )
            elif (label, layout_id) in unreadable:
                report.add(
                    ChainProblem(
                        "unreadable",
                        label,
                        row_id,
                        sequence,
                        f"{label} row {row_id} (link #{sequence}) cannot be read with the columns it was sealed with "
                        f"({unreadable[(label, layout_id)]}): a column was dropped since",
                    )
                )
            else:
                values = rows.get((label, row_id))
                if values is None:
                    report.add(
                        ChainProblem(
                            "deleted",
                            label,
                            row_id,
                            sequence,
                            f"{label} row {row_id} (link #{sequence}) was deleted",
                        )
                    )
                elif hash_checkable:
                    content = canonical_content(label, row_id, layout.columns, values)
                    if chain_hash(previous_hash, content) != stored_hash:
                        report.add(
                            ChainProblem(
                                "edited",
                                label,
                                row_id,
                                sequence,
                                f"{label} row {row_id} (link #{sequence}) was changed after it was written "
                                "(or its link was altered)",
                            )
                        )
            previous_hash, expected_sequence, last_hash = stored_hash, sequence + 1, stored_hash
    if expected_sequence - 1 != head.sequence:
        report.add(
            ChainProblem(
                "truncated",
                "audit.chainhead",
                None,
                head.sequence,
                f"the chain ends at #{expected_sequence - 1} but its head says #{head.sequence}: links were removed "
                "from the end or the head was altered",
            )
        )
    elif head.sequence and last_hash != head.hash:
        report.add(
            ChainProblem(
                "truncated",
                "audit.chainhead",
                None,
                head.sequence,
                f"the head's hash is not the hash of link #{head.sequence}: the head or the last link was altered",
            )
        )
    _find_unlinked_rows(report, using=using)
    ChainHead.objects.using(using).filter(pk=1).update(
        verified_at=timezone.now(), verified_sequence=report.links_checked, verified_ok=report.ok
    )
    return report


def _rows_for_page(
    page: list[tuple], *, layouts: dict[int, ChainLayout], using: str
) -> tuple[dict[tuple[str, int], tuple], dict[tuple[str, int], str]]:
    """The rows the links of ``page`` point at, one query per (table, layout): ``({(label, row id): values},
    {(label, layout id): why unreadable})``."""
    ids: dict[tuple[str, int], list[int]] = defaultdict(list)
    for _, label, row_id, _, layout_id in page:
        ids[(label, layout_id)].append(row_id)
    rows, unreadable = {}, {}
    for (label, layout_id), row_ids in ids.items():
        model, layout = _history_model(label), layouts.get(layout_id)
        if model is None or layout is None:
            continue
        try:
            found = _read_rows(model, row_ids, layout.columns, using)
        except FieldError as exc:  # a column of the sealed layout no longer exists (a field removed later)
            unreadable[(label, layout_id)] = str(exc)
            continue
        rows.update({(label, row_id): values for row_id, values in found.items()})
    return rows, unreadable


def _find_unlinked_rows(report: ChainReport, *, using: str) -> None:
    """History rows that have no link: written behind the application's back (one anti-join per table)."""
    now = timezone.now()
    for model in _migrated_history_models(using):
        report.tables_checked += 1
        label = model._meta.label_lower
        links = ChainLink.objects.using(using).filter(history_label=label, history_id=OuterRef("pk"))
        unlinked = model._base_manager.using(using).filter(~Exists(links))
        date_path = "history__history_date" if is_m2m_history_model(model) else "history_date"
        unlinked = unlinked.exclude(**{f"{date_path}__gte": now - UNLINKED_GRACE, f"{date_path}__lte": now})
        for row_id in unlinked.order_by("pk").values_list("pk", flat=True).iterator(chunk_size=VERIFY_BATCH):
            report.add(
                ChainProblem(
                    "unlinked",
                    label,
                    row_id,
                    None,
                    f"{label} row {row_id} is not in the chain: it was inserted behind the application's back",
                )
            )
