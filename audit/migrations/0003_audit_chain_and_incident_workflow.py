"""The tamper-evident audit chain (links, layouts, head), the audit-trail admin page, and the incident workflow
(notes as rows with author and time, linked objects, closed_at). Also registers the django-q2 schedules that seal
the chain every minute and verify it every hour (a migration, like serialization's replenishment schedule: it runs
once wherever the database is migrated and is undone with it).

Free-text notes of existing incidents become their first IncidentNote before the column goes.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

SCHEDULES = {
    "audit: seal chain": {"func": "audit.tasks.seal_audit_chain", "schedule_type": "I", "minutes": 1},
    "audit: verify chain": {"func": "audit.tasks.verify_audit_chain", "schedule_type": "H"},
}


def copy_notes(apps, schema_editor):
    Incident = apps.get_model("audit", "Incident")
    IncidentNote = apps.get_model("audit", "IncidentNote")
    IncidentNote.objects.bulk_create(
        IncidentNote(incident_id=pk, text=notes, created_at=created_at)
        for pk, notes, created_at in Incident.objects.exclude(notes="").values_list("id", "notes", "created_at")
    )
    if schema_editor.connection.vendor == "postgresql":
        # Check the new rows' deferred foreign keys now: PostgreSQL refuses to alter a table with pending trigger
        # events, and the notes column is dropped next.
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def notes_back(apps, schema_editor):
    Incident = apps.get_model("audit", "Incident")
    for incident in Incident.objects.filter(notes_rows__isnull=False).distinct():
        incident.notes = "\n\n".join(incident.notes_rows.values_list("text", flat=True))
        incident.save(update_fields=["notes"])


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, fields in SCHEDULES.items():
        Schedule.objects.update_or_create(name=name, defaults={**fields, "repeats": -1})


def delete_schedules(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name__in=SCHEDULES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_incidents"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="historicalincident",
            name="closed_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="incident",
            name="closed_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AlterField(
            model_name="historicalincident",
            name="resolved_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AlterField(
            model_name="incident",
            name="resolved_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.CreateModel(
            name="ChainHead",
            fields=[
                ("id", models.PositiveSmallIntegerField(default=1, editable=False, primary_key=True, serialize=False)),
                ("sequence", models.BigIntegerField(default=0)),
                (
                    "hash",
                    models.CharField(
                        default="0000000000000000000000000000000000000000000000000000000000000000", max_length=64
                    ),
                ),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("verified_at", models.DateTimeField(blank=True, null=True)),
                (
                    "verified_sequence",
                    models.BigIntegerField(blank=True, help_text="Links checked by the last verification", null=True),
                ),
                ("verified_ok", models.BooleanField(blank=True, null=True)),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("id", 1)), name="audit_chainhead_single_row")
                ],
            },
        ),
        migrations.CreateModel(
            name="ChainLayout",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("history_label", models.CharField(max_length=100)),
                ("columns", models.JSONField(help_text="Attribute names, in hashing order")),
                ("digest", models.CharField(help_text="SHA-256 of label and columns", max_length=64)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("digest",), name="audit_chainlayout_digest_unique")],
            },
        ),
        migrations.CreateModel(
            name="ChainLink",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "history_label",
                    models.CharField(
                        help_text="Label of the history model, e.g. serialization.historicalbatch", max_length=100
                    ),
                ),
                ("history_id", models.BigIntegerField(help_text="Primary key of the history row")),
                ("sequence", models.BigIntegerField(blank=True, editable=False, null=True)),
                ("hash", models.CharField(blank=True, editable=False, max_length=64)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ("sealed_at", models.DateTimeField(blank=True, editable=False, null=True)),
                (
                    "layout",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="audit.chainlayout",
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="AuditTrail",
            fields=[],
            options={
                "verbose_name": "audit trail",
                "verbose_name_plural": "audit trail",
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("audit.chainlink",),
        ),
        migrations.CreateModel(
            name="IncidentLink",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("object_type", models.CharField(help_text="Model label, e.g. serialization.batch", max_length=100)),
                ("object_id", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                (
                    "incident",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="links", to="audit.incident"
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
            },
        ),
        migrations.CreateModel(
            name="IncidentNote",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("text", models.TextField()),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                (
                    "author",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "incident",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="notes_rows", to="audit.incident"
                    ),
                ),
            ],
            options={
                "ordering": ["created_at", "id"],
            },
        ),
        migrations.AddIndex(
            model_name="chainlink",
            index=models.Index(
                condition=models.Q(("sequence__isnull", True)), fields=["id"], name="audit_chainlink_unsealed"
            ),
        ),
        migrations.AddConstraint(
            model_name="chainlink",
            constraint=models.UniqueConstraint(
                fields=("history_label", "history_id"), name="audit_chainlink_row_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="chainlink",
            constraint=models.UniqueConstraint(fields=("sequence",), name="audit_chainlink_sequence_unique"),
        ),
        migrations.AddConstraint(
            model_name="chainlink",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("hash", ""), ("layout__isnull", True), ("sequence__isnull", True)),
                    models.Q(("layout__isnull", False), ("sequence__gte", 1), models.Q(("hash", ""), _negated=True)),
                    _connector="OR",
                ),
                name="audit_chainlink_sealed_consistently",
            ),
        ),
        migrations.AddConstraint(
            model_name="incidentlink",
            constraint=models.UniqueConstraint(
                fields=("incident", "object_type", "object_id"), name="audit_incidentlink_unique"
            ),
        ),
        # While the old column exists the notes' reverse name must differ from it; renamed once it is gone.
        migrations.RunPython(copy_notes, notes_back),
        migrations.RemoveField(model_name="historicalincident", name="notes"),
        migrations.RemoveField(model_name="incident", name="notes"),
        migrations.AlterField(
            model_name="incidentnote",
            name="incident",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="notes", to="audit.incident"
            ),
        ),
        migrations.RunPython(create_schedules, delete_schedules),
    ]
