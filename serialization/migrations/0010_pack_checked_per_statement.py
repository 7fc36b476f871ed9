# The foreign keys of Pack and PackEvent, kept by statement-level triggers instead of PostgreSQL's per-row checks.

import django.db.models.deletion
from django.db import migrations, models

# A line report writes a million packs (and as many events) with one COPY, and aggregation re-parents a million
# packs with one UPDATE. PostgreSQL checks a foreign key with one query per row, queued until commit: a third of a
# million-unit report's time. These triggers check every row of a statement with one set-based query per reference,
# raise the same SQLSTATE (23503, an IntegrityError in Django) and keep both halves of a foreign key: a row cannot
# name a missing parent, and a parent that rows name cannot be deleted or truncated away.
#
# References to the few pools, batches, orders and reports a statement names take the same FOR KEY SHARE lock a
# foreign key takes, so a concurrent delete waits. References to packs (an event's pack, a pack's parent) are
# checked but not locked — a million row locks is what this avoids; packs are deleted only by the retention purge,
# of records long finished, and the delete side below refuses while anything still names them.
#
# Columns that never change after a row is written (a pack's pool, batch and order; every column of an event) are
# held still by a row trigger whose WHEN clause PostgreSQL evaluates without calling a function.

PACK = "serialization_pack"
EVENT = "serialization_packevent"

# (trigger-name stem, child table, column, parent table, lock the parent rows?)
REFERENCES = [
    ("pack_pool", PACK, "pool_id", "serialization_serialpool", True),
    ("pack_batch", PACK, "batch_id", "serialization_batch", True),
    ("pack_order", PACK, "order_id", "serialization_packagingorder", True),
    ("pack_parent", PACK, "parent_id", PACK, False),
    ("pack_event_pack", EVENT, "pack_id", PACK, False),
    ("pack_event_report", EVENT, "report_id", "serialization_linereport", True),
    ("pack_event_parent", EVENT, "parent_id", PACK, False),
]


def _violation(constraint: str, message: str, detail: str) -> str:
    return (
        f"RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', CONSTRAINT = '{constraint}', "
        f"MESSAGE = '{message}', DETAIL = {detail};"
    )


def _check(stem: str, child: str, column: str, parent: str, lock: bool) -> str:
    """The body that checks one reference of the rows in ``new_rows``."""
    missing = _violation(
        stem,
        f'insert or update on table "{child}" violates foreign key constraint "{stem}"',
        f"format('Key ({column})=(%s) is not present in table \"{parent}\".', missing)",
    )
    if lock:
        return f"""
    SELECT array_agg({column}) INTO named FROM (SELECT DISTINCT {column} FROM new_rows WHERE {column} IS NOT NULL) AS d;
    SELECT count(*) INTO present FROM (SELECT 1 FROM {parent} WHERE id = ANY (named) FOR KEY SHARE) AS locked;
    IF present < coalesce(cardinality(named), 0) THEN
        SELECT x INTO missing FROM unnest(named) AS x WHERE NOT EXISTS (SELECT 1 FROM {parent} WHERE id = x) LIMIT 1;
        {missing}
    END IF;"""
    return f"""
    SELECT n.{column} INTO missing FROM new_rows AS n
    WHERE n.{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE p.id = n.{column}) LIMIT 1;
    IF FOUND THEN
        {missing}
    END IF;"""


def _child_function(name: str, references: list[tuple]) -> str:
    checks = "".join(_check(*reference) for reference in references)
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    named bigint[];
    present bigint;
    missing bigint;
BEGIN{checks}
    RETURN NULL;
END
$$;"""


def _kept_function(stem: str, child: str, column: str, parent: str) -> str:
    """The parent half: deleting (or truncating) rows that ``child.column`` still names is refused."""
    named = _violation(
        stem,
        f'update or delete on table "{parent}" violates foreign key constraint "{stem}" on table "{child}"',
        f"format('Key (id)=(%s) is still referenced from table \"{child}\".', missing)",
    )
    truncated = _violation(
        stem,
        f'truncate of table "{parent}" violates foreign key constraint "{stem}" on table "{child}"',
        f"'Table \"{child}\" still references it.'",
    )
    return f"""
CREATE FUNCTION {stem}_kept() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM 1 FROM {child} LIMIT 1;
        IF FOUND THEN
            {truncated}
        END IF;
        RETURN NULL;
    END IF;
    SELECT o.id INTO missing FROM old_rows AS o WHERE EXISTS (SELECT 1 FROM {child} AS c WHERE c.{column} = o.id)
    LIMIT 1;
    IF FOUND THEN
        {named}
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER {stem}_kept AFTER DELETE ON {parent}
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {stem}_kept();
CREATE TRIGGER {stem}_kept_on_truncate AFTER TRUNCATE ON {parent}
    FOR EACH STATEMENT EXECUTE FUNCTION {stem}_kept();"""


def _still(name: str, table: str, columns: list[str], what: str) -> str:
    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in columns)
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = '{name}',
        MESSAGE = '{what}';
END
$$;
CREATE TRIGGER {name} BEFORE UPDATE ON {table} FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {name}();"""


def _forward() -> str:
    pack_refs = [r for r in REFERENCES if r[1] == PACK]
    event_refs = [r for r in REFERENCES if r[1] == EVENT]
    parent_ref = [r for r in pack_refs if r[2] == "parent_id"]
    sql = [
        _child_function("pack_references_exist", pack_refs),
        f"CREATE TRIGGER pack_references_exist AFTER INSERT ON {PACK} REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION pack_references_exist();",
        # Aggregation, unpacking and re-aggregation move packs between parents: the one reference that changes.
        _child_function("pack_parent_exists", parent_ref),
        f"CREATE TRIGGER pack_parent_exists AFTER UPDATE ON {PACK} REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION pack_parent_exists();",
        _still("pack_origin_unchanged", PACK, ["pool_id", "batch_id", "order_id"],
               "A pack keeps the pool, batch and order it was commissioned in."),
        _child_function("pack_event_references_exist", event_refs),
        f"CREATE TRIGGER pack_event_references_exist AFTER INSERT ON {EVENT} REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION pack_event_references_exist();",
        _still("pack_event_unchanged", EVENT, ["pack_id", "report_id", "parent_id"],
               "A pack event is a record of what happened: it is never re-pointed."),
    ]
    sql += [_kept_function(stem, child, column, parent) for stem, child, column, parent, _ in REFERENCES]
    return "\n".join(sql)


def _backward() -> str:
    sql = []
    for stem, _, _, parent, _ in reversed(REFERENCES):
        sql += [
            f"DROP TRIGGER {stem}_kept_on_truncate ON {parent};",
            f"DROP TRIGGER {stem}_kept ON {parent};",
            f"DROP FUNCTION {stem}_kept();",
        ]
    sql += [
        f"DROP TRIGGER pack_event_unchanged ON {EVENT};",
        "DROP FUNCTION pack_event_unchanged();",
        f"DROP TRIGGER pack_event_references_exist ON {EVENT};",
        "DROP FUNCTION pack_event_references_exist();",
        f"DROP TRIGGER pack_origin_unchanged ON {PACK};",
        "DROP FUNCTION pack_origin_unchanged();",
        f"DROP TRIGGER pack_parent_exists ON {PACK};",
        "DROP FUNCTION pack_parent_exists();",
        f"DROP TRIGGER pack_references_exist ON {PACK};",
        "DROP FUNCTION pack_references_exist();",
    ]
    return "\n".join(sql)


# SQLite (the demo and test database) gets no triggers, as in 0006: a trigger naming another table breaks Django's
# later rebuilds of that table. There the ORM's PROTECT keeps packs and events pointing at existing rows.


def create_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_forward(), params=None)


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_backward(), params=None)


class Migration(migrations.Migration):
    dependencies = [("serialization", "0009_listed_serial_keyed_by_pool_and_ordinal")]

    operations = [
        migrations.AlterField(
            model_name="pack",
            name="batch",
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="packs", to="serialization.batch"),
        ),
        migrations.AlterField(
            model_name="pack",
            name="order",
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="packs", to="serialization.packagingorder"),
        ),
        migrations.AlterField(
            model_name="pack",
            name="parent",
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="children", to="serialization.pack"),
        ),
        migrations.AlterField(
            model_name="pack",
            name="pool",
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="serialization.serialpool"),
        ),
        migrations.AlterField(
            model_name="packevent",
            name="pack",
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="events", to="serialization.pack"),
        ),
        migrations.AlterField(
            model_name="packevent",
            name="parent",
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="serialization.pack"),
        ),
        migrations.AlterField(
            model_name="packevent",
            name="report",
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="serialization.linereport"),
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
