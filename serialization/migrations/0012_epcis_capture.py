# EPCIS capture: capture jobs, and the EPCIS identity of the line reports captured events became.
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# Reports stored before occurred_at existed: the time of their pack events (every event of a report has the same
# one), or when the report arrived when it changed no pack (a rejected report).
BACKFILL_OCCURRED_AT = """
UPDATE serialization_linereport SET occurred_at = COALESCE(
    (SELECT MIN(e.occurred_at) FROM serialization_packevent e WHERE e.report_id = serialization_linereport.id),
    received_at
) WHERE occurred_at IS NULL
"""


class Migration(migrations.Migration):
    dependencies = [
        ("serialization", "0011_epcis_documents"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="linereport",
            name="corrects",
            field=models.ForeignKey(
                blank=True,
                help_text="The report declared erroneous whose effect this report reverses",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="corrections",
                to="serialization.linereport",
            ),
        ),
        migrations.AddField(
            model_name="linereport",
            name="error_declaration",
            field=models.JSONField(
                blank=True,
                help_text="EPCIS errorDeclaration received for this event (time, reason, corrections)",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="linereport",
            name="event",
            field=models.JSONField(
                blank=True,
                help_text="The captured event's fields other than its EPCs (readPoint, bizLocation…)",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="linereport",
            name="event_hash",
            field=models.CharField(
                blank=True, default="", help_text="SHA-256 of the captured event's canonical content", max_length=64
            ),
        ),
        migrations.AddField(
            model_name="linereport",
            name="event_id",
            field=models.CharField(
                blank=True,
                default="",
                help_text="eventID of the captured EPCIS event (given, or assigned)",
                max_length=255,
            ),
        ),
        migrations.AddField(
            model_name="linereport",
            name="occurred_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When the line did it (the EPCIS eventTime); null only for reports older than it",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="linereport",
            name="source",
            field=models.CharField(
                choices=[("line", "Line report (API)"), ("epcis", "EPCIS capture")], default="line", max_length=8
            ),
        ),
        migrations.CreateModel(
            name="CaptureJob",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "status",
                    models.CharField(
                        choices=[("running", "Running"), ("succeeded", "Succeeded"), ("failed", "Failed")],
                        default="running",
                        max_length=10,
                    ),
                ),
                (
                    "error_behaviour",
                    models.CharField(
                        choices=[
                            ("rollback", "Roll back the whole document on any error"),
                            ("proceed", "Apply the good events, report the bad"),
                        ],
                        default="rollback",
                        max_length=8,
                    ),
                ),
                ("document", models.FileField(help_text="The document as received", upload_to="epcis/capture/")),
                (
                    "document_format",
                    models.CharField(
                        choices=[("json", "EPCIS 2.0 JSON / JSON-LD"), ("xml", "EPCIS 1.2 / 2.0 XML")], max_length=4
                    ),
                ),
                ("document_sha256", models.CharField(max_length=64)),
                ("event_count", models.PositiveIntegerField(default=0)),
                ("applied_count", models.PositiveIntegerField(default=0)),
                ("error_count", models.PositiveIntegerField(default=0)),
                (
                    "errors",
                    models.JSONField(blank=True, default=list, help_text="One RFC 7807 problem per refused event"),
                ),
                (
                    "events",
                    models.JSONField(blank=True, default=list, help_text="Per event: its id, outcome and line report"),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "company",
                    models.ForeignKey(
                        blank=True,
                        help_text="The sender's company",
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="masterdata.company",
                    ),
                ),
                (
                    "created_by",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-pk"],
            },
        ),
        migrations.AddField(
            model_name="linereport",
            name="capture_job",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="reports",
                to="serialization.capturejob",
            ),
        ),
        migrations.AddIndex(
            model_name="linereport",
            index=models.Index(fields=["occurred_at", "id"], name="line_report_occurred"),
        ),
        migrations.AddConstraint(
            model_name="linereport",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "applied"), models.Q(("event_id", ""), _negated=True)),
                fields=("event_id",),
                name="line_report_event_id_applied_once",
            ),
        ),
        migrations.AddConstraint(
            model_name="linereport",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "applied"), models.Q(("event_hash", ""), _negated=True)),
                fields=("event_hash",),
                name="line_report_event_hash_applied_once",
            ),
        ),
        migrations.RunSQL(BACKFILL_OCCURRED_AT, reverse_sql=migrations.RunSQL.noop),
    ]
