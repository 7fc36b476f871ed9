import django.db.models.deletion
import django.utils.timezone
import simple_history.models
from django.conf import settings
from django.core.management import call_command
from django.db import migrations, models


def create_cache_tables(apps, schema_editor):
    # Rate limits count requests in the cache; without Redis that is the database cache, whose table no model
    # declares. createcachetable does nothing for other backends and for tables that exist.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0004_retention_and_legal_hold"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="accessevent",
            name="api_token",
            field=models.ForeignKey(
                blank=True,
                help_text="The API key the request was authenticated with.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="access_events",
                to="audit.apitoken",
            ),
        ),
        migrations.AddField(
            model_name="accessevent",
            name="counted_serials",
            field=models.PositiveBigIntegerField(
                default=0,
                help_text="Serials this event put in the account's hands that count towards "
                "SERIAL_EXPORT_LIMIT_PER_HOUR (0 for a repeat download of the account's own export file: its serials "
                "counted when it was requested).",
            ),
        ),
        migrations.AddField(
            model_name="accessevent",
            name="door",
            field=models.CharField(
                blank=True,
                choices=[
                    ("admin", "Admin"),
                    ("portal", "Partner portal"),
                    ("api", "API"),
                    ("sign_in", "Sign-in pages"),
                    ("web", "Other web page"),
                    ("system", "System (command or worker)"),
                ],
                max_length=10,
            ),
        ),
        migrations.CreateModel(
            name="ExportBlock",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("reason", models.TextField()),
                (
                    "serials_in_hour",
                    models.PositiveBigIntegerField(help_text="Serials the account had taken plus those it asked for."),
                ),
                (
                    "limit",
                    models.PositiveBigIntegerField(help_text="SERIAL_EXPORT_LIMIT_PER_HOUR when the block was made."),
                ),
                ("created_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("lifted_at", models.DateTimeField(blank=True, null=True)),
                ("lift_reason", models.TextField(blank=True)),
                (
                    "api_token",
                    models.ForeignKey(
                        blank=True,
                        help_text="The API key of the request that crossed the limit, if it came through the API.",
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="export_blocks",
                        to="audit.apitoken",
                    ),
                ),
                (
                    "incident",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="export_blocks",
                        to="audit.incident",
                    ),
                ),
                (
                    "lifted_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="export_blocks",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [("lift_exportblock", "Can lift an export block")],
            },
        ),
        migrations.CreateModel(
            name="HistoricalExportBlock",
            fields=[
                ("id", models.BigIntegerField(auto_created=True, blank=True, db_index=True, verbose_name="ID")),
                ("reason", models.TextField()),
                (
                    "serials_in_hour",
                    models.PositiveBigIntegerField(help_text="Serials the account had taken plus those it asked for."),
                ),
                (
                    "limit",
                    models.PositiveBigIntegerField(help_text="SERIAL_EXPORT_LIMIT_PER_HOUR when the block was made."),
                ),
                ("created_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("lifted_at", models.DateTimeField(blank=True, null=True)),
                ("lift_reason", models.TextField(blank=True)),
                ("history_id", models.AutoField(primary_key=True, serialize=False)),
                ("history_date", models.DateTimeField(db_index=True)),
                ("history_change_reason", models.CharField(max_length=100, null=True)),
                (
                    "history_type",
                    models.CharField(choices=[("+", "Created"), ("~", "Changed"), ("-", "Deleted")], max_length=1),
                ),
                (
                    "api_token",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        help_text="The API key of the request that crossed the limit, if it came through the API.",
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="audit.apitoken",
                    ),
                ),
                (
                    "history_user",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "incident",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="audit.incident",
                    ),
                ),
                (
                    "lifted_by",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "historical export block",
                "verbose_name_plural": "historical export blocks",
                "ordering": ("-history_date", "-history_id"),
                "get_latest_by": ("history_date", "history_id"),
            },
            bases=(simple_history.models.HistoricalChanges, models.Model),
        ),
        migrations.AddConstraint(
            model_name="exportblock",
            constraint=models.UniqueConstraint(
                condition=models.Q(("lifted_at__isnull", True)),
                fields=("user",),
                name="audit_exportblock_one_active_per_user",
            ),
        ),
        migrations.AddConstraint(
            model_name="exportblock",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("lift_reason", ""), ("lifted_at__isnull", True), ("lifted_by__isnull", True)),
                    models.Q(
                        ("lifted_at__isnull", False),
                        ("lifted_by__isnull", False),
                        models.Q(("lift_reason", ""), _negated=True),
                    ),
                    _connector="OR",
                ),
                name="audit_exportblock_lifted_with_who_and_why",
            ),
        ),
        migrations.RunPython(create_cache_tables, migrations.RunPython.noop),
    ]
