# Fewer B-trees on Pack and PackEvent, so a million-unit line report pays for fewer index entries per row.
#
# Dropped: the unique (pool, index) — implied by the unique (product code, serial), since a pool's serial at an index
# is fixed — and the (order, status) and batch B-trees of Pack, the report and parent B-trees of PackEvent. The
# packs of an order or a batch, and the events of a report, are written together by one report, so on PostgreSQL a
# BRIN index (one summary per 128 blocks, kept up to date by autovacuum; blocks not yet summarised are always
# scanned) finds them with almost no cost per insert. SQLite has no BRIN: plain indexes of the same names there.
# These indexes are outside Django's model state, like the triggers of migration 0010.

import django.db.models.deletion
from django.db import migrations, models

BRIN_INDEXES = [
    ("pack_order", "serialization_pack", "order_id"),
    ("pack_batch", "serialization_pack", "batch_id"),
    ("pack_event_report", "serialization_packevent", "report_id"),
]


def create_range_indexes(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    for name, table, column in BRIN_INDEXES:
        using = " USING brin" if postgres else ""
        options = " WITH (autosummarize = on)" if postgres else ""
        schema_editor.execute(f"CREATE INDEX {name} ON {table}{using} ({column}){options}")


def drop_range_indexes(apps, schema_editor):
    for name, _, _ in BRIN_INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [
        ("serialization", "0015_retention"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="pack",
            name="pack_unique_pool_index",
        ),
        migrations.RemoveIndex(
            model_name="pack",
            name="pack_order_status",
        ),
        migrations.AlterField(
            model_name="pack",
            name="batch",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="packs",
                to="serialization.batch",
            ),
        ),
        migrations.AlterField(
            model_name="packevent",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="serialization.pack",
            ),
        ),
        migrations.AlterField(
            model_name="packevent",
            name="report",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="serialization.linereport",
            ),
        ),
        migrations.AddIndex(
            model_name="packevent",
            index=models.Index(
                condition=models.Q(("parent__isnull", False)), fields=["parent"], name="pack_event_parent"
            ),
        ),
        migrations.RunPython(create_range_indexes, drop_range_indexes),
    ]
