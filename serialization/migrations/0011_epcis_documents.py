import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("serialization", "0010_pack_checked_per_statement"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="EpcisExportJob",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "version",
                    models.CharField(choices=[("2.0", "EPCIS 2.0"), ("1.2", "EPCIS 1.2")], default="2.0", max_length=3),
                ),
                (
                    "syntax",
                    models.CharField(choices=[("json", "JSON-LD"), ("xml", "XML")], default="json", max_length=4),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("running", "Running"),
                            ("done", "Done"),
                            ("failed", "Failed"),
                        ],
                        default="pending",
                        max_length=8,
                    ),
                ),
                ("total", models.BigIntegerField(default=0, help_text="EPCs in scope, counted when the job starts")),
                ("written", models.BigIntegerField(default=0, help_text="EPCs written so far")),
                ("events", models.BigIntegerField(default=0, help_text="EPCIS events in the finished document")),
                (
                    "validated",
                    models.BooleanField(default=False, help_text="The file was checked against the official schema"),
                ),
                ("file", models.FileField(blank=True, upload_to="epcis/")),
                ("sha256", models.CharField(blank=True, max_length=64)),
                ("error", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "batch",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="epcis_exports",
                        to="serialization.batch",
                    ),
                ),
                (
                    "order",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="epcis_exports",
                        to="serialization.packagingorder",
                    ),
                ),
                (
                    "requested_by",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "shipping_report",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="epcis_exports",
                        to="serialization.linereport",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-pk"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(
                                ("batch__isnull", False), ("order__isnull", True), ("shipping_report__isnull", True)
                            ),
                            models.Q(
                                ("batch__isnull", True), ("order__isnull", False), ("shipping_report__isnull", True)
                            ),
                            models.Q(
                                ("batch__isnull", True), ("order__isnull", True), ("shipping_report__isnull", False)
                            ),
                            _connector="OR",
                        ),
                        name="epcis_export_has_one_scope",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("version", "1.2"), _negated=True), ("syntax", "xml"), _connector="OR"
                        ),
                        name="epcis_export_1_2_is_xml",
                    ),
                ],
            },
        ),
    ]
