"""Retention of batches (serialization.retention): the stored keep-until date, a daily refresh of it, and — on
PostgreSQL — triggers that refuse to delete batch-anchored rows within their retention or on legal hold.

PostgreSQL fires the triggers of one event in name order: "keep_retained_…" sorts before the reference checks of
migration 0010 ("pack_…"), so a refused delete names the retention rule, the reason that matters first.

The triggers are the last line under the application's own guards (audit.retention): a DELETE run behind the
application's back (psql, a script) fails while any batch it touches has no keep-until date yet, a date not passed,
or a legal hold on it or its product. They fire once per statement over the deleted rows (a transition table), so
``manage.py purge_expired`` — which deletes only what has passed and refreshes the dates first, in the same
transaction — pays one join per table, not one lookup per row. SQLite has no statement triggers (and its test
flush deletes rows), so there the ORM guard stands alone. TRUNCATE does not fire them.
"""

from django.db import migrations, models

SCHEDULE_NAME = "serialization: refresh retention dates"

# table → SELECT of the batch id of every deleted row, from the transition table "gone".
ANCHORS = {
    "serialization_packagingorder": "SELECT g.batch_id FROM gone g",
    "serialization_reconciliation": "SELECT g.batch_id FROM gone g",
    "serialization_pack": (
        "SELECT COALESCE(g.batch_id, o.batch_id) FROM gone g "
        "LEFT JOIN serialization_packagingorder o ON o.id = g.order_id"
    ),
    "serialization_packevent": (
        "SELECT COALESCE(p.batch_id, o.batch_id) FROM gone g JOIN serialization_pack p ON p.id = g.pack_id "
        "LEFT JOIN serialization_packagingorder o ON o.id = p.order_id"
    ),
    "serialization_linereport": (
        "SELECT o.batch_id FROM gone g JOIN serialization_packagingorder o ON o.id = g.order_id"
    ),
}

KEPT = """
    b.keep_until IS NULL OR b.keep_until >= CURRENT_DATE
    OR EXISTS (
        SELECT 1 FROM audit_legalhold h
        WHERE h.released_at IS NULL
          AND ((h.target_type = 'serialization.batch' AND h.target_id = b.id::text)
               OR (h.target_type = 'masterdata.product' AND h.target_id = b.product_id::text))
    )
"""

FUNCTION = """
CREATE OR REPLACE FUNCTION keep_retained_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE kept text;
BEGIN
    SELECT string_agg(DISTINCT b.id::text, ', ') INTO kept FROM {source} WHERE {kept};
    IF kept IS NOT NULL THEN
        RAISE EXCEPTION 'refused: rows of {table} belong to batch(es) % within retention or on legal hold', kept
            USING ERRCODE = 'restrict_violation',
                  HINT = 'Records past retention are removed by manage.py purge_expired.';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER keep_retained_{table} AFTER DELETE ON {table}
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION keep_retained_{table}();
"""


def _statements():
    # The batch table's own rows are in "gone" (already deleted); the others join the batch that is still there.
    yield FUNCTION.format(table="serialization_batch", source="gone b", kept=KEPT)
    for table, anchors in ANCHORS.items():
        source = f"({anchors}) AS a(batch_id) JOIN serialization_batch b ON b.id = a.batch_id"
        yield FUNCTION.format(table=table, source=source, kept=KEPT)


def create_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in _statements():
        schema_editor.execute(statement, params=None)  # no parameters: RAISE's "%" is PL/pgSQL's, not psycopg's


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in ["serialization_batch", *ANCHORS]:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS keep_retained_{table} ON {table}")
        schema_editor.execute(f"DROP FUNCTION IF EXISTS keep_retained_{table}()")


def create_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "serialization.tasks.refresh_retention_dates",
            "schedule_type": "D",  # daily: a steward's change of a market rule reaches the triggers by tomorrow
            "repeats": -1,
        },
    )


def delete_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("serialization", "0014_history_for_regulated_records"),
        ("audit", "0004_retention_and_legal_hold"),
    ]

    operations = [
        migrations.AddField(
            model_name="batch",
            name="keep_until",
            field=models.DateField(
                blank=True,
                db_index=True,
                editable=False,
                help_text="Last day of retention as last stored by serialization.retention (empty: not known yet, "
                "kept); the admin and the API show the date computed now",
                null=True,
            ),
        ),
        migrations.RunPython(create_triggers, drop_triggers),
        migrations.RunPython(create_schedule, delete_schedule),
    ]
