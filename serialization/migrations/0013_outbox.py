"""The outbox: endpoints per market, submissions with their history, and the django-q2 schedule that sends any
submission whose next try is due (a safety net beside the one-off schedule each retry gets)."""

import django.db.models.deletion
import simple_history.models
from django.conf import settings
from django.db import migrations, models

SWEEP_SCHEDULE_NAME = "serialization: send due submissions"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={
            "func": "serialization.tasks.send_due_submissions",
            "schedule_type": "I",  # Schedule.MINUTES
            "minutes": 5,
            "repeats": -1,  # forever
        },
    )


def delete_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SWEEP_SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("serialization", "0012_epcis_capture"),
        ("audit", "0002_incidents"),
        ("masterdata", "0002_market_defaults"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Endpoint',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100, unique=True)),
                ('kind', models.CharField(choices=[('http', 'HTTP(S) POST'), ('file_drop', 'File drop folder')], default='http', max_length=16)),
                ('url', models.URLField(blank=True, help_text='https://… for HTTP(S) endpoints', max_length=500, verbose_name='URL')),
                ('folder', models.CharField(blank=True, help_text='For a file drop: a folder inside OUTBOX_DROP_ROOT (relative, e.g. eu-hub/outgoing)', max_length=255)),
                ('auth_kind', models.CharField(choices=[('none', 'None'), ('bearer', 'Bearer token (Authorization: Bearer …)'), ('basic', 'HTTP basic (user name + password)'), ('api_key', 'API key in a header')], default='none', max_length=16)),
                ('username', models.CharField(blank=True, help_text='For HTTP basic only', max_length=150)),
                ('api_key_header', models.CharField(blank=True, default='X-API-Key', help_text='For an API key only', max_length=100, verbose_name='API key header')),
                ('credential_env', models.CharField(blank=True, help_text='Name of the environment variable holding the token, API key or password (never the secret itself)', max_length=100, verbose_name='credential environment variable')),
                ('timeout_seconds', models.PositiveSmallIntegerField(default=30, help_text='How long one attempt may wait for the receiver before it counts as failed')),
                ('is_active', models.BooleanField(default=True, help_text='New submissions of the market go to its active endpoint')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('market', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='masterdata.market')),
            ],
            options={
                'ordering': ['market__code', 'name'],
            },
        ),
        migrations.CreateModel(
            name='HistoricalEndpoint',
            fields=[
                ('id', models.BigIntegerField(auto_created=True, blank=True, db_index=True, verbose_name='ID')),
                ('name', models.CharField(db_index=True, max_length=100)),
                ('kind', models.CharField(choices=[('http', 'HTTP(S) POST'), ('file_drop', 'File drop folder')], default='http', max_length=16)),
                ('url', models.URLField(blank=True, help_text='https://… for HTTP(S) endpoints', max_length=500, verbose_name='URL')),
                ('folder', models.CharField(blank=True, help_text='For a file drop: a folder inside OUTBOX_DROP_ROOT (relative, e.g. eu-hub/outgoing)', max_length=255)),
                ('auth_kind', models.CharField(choices=[('none', 'None'), ('bearer', 'Bearer token (Authorization: Bearer …)'), ('basic', 'HTTP basic (user name + password)'), ('api_key', 'API key in a header')], default='none', max_length=16)),
                ('username', models.CharField(blank=True, help_text='For HTTP basic only', max_length=150)),
                ('api_key_header', models.CharField(blank=True, default='X-API-Key', help_text='For an API key only', max_length=100, verbose_name='API key header')),
                ('credential_env', models.CharField(blank=True, help_text='Name of the environment variable holding the token, API key or password (never the secret itself)', max_length=100, verbose_name='credential environment variable')),
                ('timeout_seconds', models.PositiveSmallIntegerField(default=30, help_text='How long one attempt may wait for the receiver before it counts as failed')),
                ('is_active', models.BooleanField(default=True, help_text='New submissions of the market go to its active endpoint')),
                ('created_at', models.DateTimeField(blank=True, editable=False)),
                ('history_id', models.AutoField(primary_key=True, serialize=False)),
                ('history_date', models.DateTimeField(db_index=True)),
                ('history_change_reason', models.CharField(max_length=100, null=True)),
                ('history_type', models.CharField(choices=[('+', 'Created'), ('~', 'Changed'), ('-', 'Deleted')], max_length=1)),
                ('history_user', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('market', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='masterdata.market')),
            ],
            options={
                'verbose_name': 'historical endpoint',
                'verbose_name_plural': 'historical endpoints',
                'ordering': ('-history_date', '-history_id'),
                'get_latest_by': ('history_date', 'history_id'),
            },
            bases=(simple_history.models.HistoricalChanges, models.Model),
        ),
        migrations.CreateModel(
            name='HistoricalSubmission',
            fields=[
                ('id', models.BigIntegerField(auto_created=True, blank=True, db_index=True, verbose_name='ID')),
                ('kind', models.CharField(choices=[('eu_hub', 'EU hub: product master data and batch pack data'), ('us_dscsa', 'US DSCSA: EPCIS 1.2 shipment'), ('ru_mdlp', 'RU MDLP: serials with crypto codes'), ('pk_drap', 'PK DRAP: batch production data'), ('sa_rsd', 'SA RSD: EPCIS with SSCC aggregation')], max_length=16)),
                ('file', models.TextField(max_length=255)),
                ('content_type', models.CharField(max_length=100)),
                ('sha256', models.CharField(max_length=64, verbose_name='SHA-256')),
                ('size', models.BigIntegerField(help_text='Bytes')),
                ('items', models.BigIntegerField(default=0, help_text='Serials (units and containers) in the document')),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('sending', 'Sending'), ('accepted', 'Accepted'), ('rejected', 'Rejected'), ('failed', 'Failed (will retry)'), ('dead', 'Dead (gave up)')], default='pending', max_length=10)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('next_attempt_at', models.DateTimeField(blank=True, help_text='When the next try is due', null=True)),
                ('last_attempt_at', models.DateTimeField(blank=True, null=True)),
                ('last_error', models.TextField(blank=True)),
                ('response_status', models.PositiveSmallIntegerField(blank=True, null=True, verbose_name='response status code')),
                ('response_body', models.TextField(blank=True, verbose_name='response body (excerpt)')),
                ('finished_at', models.DateTimeField(blank=True, help_text='Accepted, rejected or dead at', null=True)),
                ('created_at', models.DateTimeField(blank=True, editable=False)),
                ('updated_at', models.DateTimeField(blank=True, editable=False)),
                ('history_id', models.AutoField(primary_key=True, serialize=False)),
                ('history_date', models.DateTimeField(db_index=True)),
                ('history_change_reason', models.CharField(max_length=100, null=True)),
                ('history_type', models.CharField(choices=[('+', 'Created'), ('~', 'Changed'), ('-', 'Deleted')], max_length=1)),
                ('batch', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='serialization.batch')),
                ('company', models.ForeignKey(blank=True, db_constraint=False, help_text="The MAH the document reports for (the product's owner); its users see the submission", null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='masterdata.company')),
                ('created_by', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('endpoint', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='serialization.endpoint')),
                ('history_user', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('incident', models.ForeignKey(blank=True, db_constraint=False, editable=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='audit.incident')),
                ('market', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='masterdata.market')),
                ('shipping_report', models.ForeignKey(blank=True, db_constraint=False, help_text='The shipment reported (US DSCSA)', null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='serialization.linereport')),
            ],
            options={
                'verbose_name': 'historical submission',
                'verbose_name_plural': 'historical submissions',
                'ordering': ('-history_date', '-history_id'),
                'get_latest_by': ('history_date', 'history_id'),
            },
            bases=(simple_history.models.HistoricalChanges, models.Model),
        ),
        migrations.CreateModel(
            name='Submission',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('eu_hub', 'EU hub: product master data and batch pack data'), ('us_dscsa', 'US DSCSA: EPCIS 1.2 shipment'), ('ru_mdlp', 'RU MDLP: serials with crypto codes'), ('pk_drap', 'PK DRAP: batch production data'), ('sa_rsd', 'SA RSD: EPCIS with SSCC aggregation')], max_length=16)),
                ('file', models.FileField(max_length=255, upload_to='submissions/')),
                ('content_type', models.CharField(max_length=100)),
                ('sha256', models.CharField(max_length=64, verbose_name='SHA-256')),
                ('size', models.BigIntegerField(help_text='Bytes')),
                ('items', models.BigIntegerField(default=0, help_text='Serials (units and containers) in the document')),
                ('status', models.CharField(choices=[('pending', 'Pending'), ('sending', 'Sending'), ('accepted', 'Accepted'), ('rejected', 'Rejected'), ('failed', 'Failed (will retry)'), ('dead', 'Dead (gave up)')], default='pending', max_length=10)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('next_attempt_at', models.DateTimeField(blank=True, help_text='When the next try is due', null=True)),
                ('last_attempt_at', models.DateTimeField(blank=True, null=True)),
                ('last_error', models.TextField(blank=True)),
                ('response_status', models.PositiveSmallIntegerField(blank=True, null=True, verbose_name='response status code')),
                ('response_body', models.TextField(blank=True, verbose_name='response body (excerpt)')),
                ('finished_at', models.DateTimeField(blank=True, help_text='Accepted, rejected or dead at', null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('batch', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='submissions', to='serialization.batch')),
                ('company', models.ForeignKey(help_text="The MAH the document reports for (the product's owner); its users see the submission", on_delete=django.db.models.deletion.PROTECT, related_name='+', to='masterdata.company')),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('endpoint', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='submissions', to='serialization.endpoint')),
                ('incident', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='audit.incident')),
                ('market', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='masterdata.market')),
                ('shipping_report', models.ForeignKey(blank=True, help_text='The shipment reported (US DSCSA)', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='serialization.linereport')),
            ],
            options={
                'ordering': ['-created_at', '-pk'],
            },
        ),
        migrations.AddConstraint(
            model_name='endpoint',
            constraint=models.UniqueConstraint(condition=models.Q(('is_active', True)), fields=('market',), name='one_active_endpoint_per_market', violation_error_message='This market already has an active endpoint; deactivate it first.'),
        ),
        migrations.AddConstraint(
            model_name='endpoint',
            constraint=models.CheckConstraint(condition=models.Q(('timeout_seconds__gte', 1), ('timeout_seconds__lte', 600)), name='endpoint_timeout_1_to_600'),
        ),
        migrations.AddIndex(
            model_name='submission',
            index=models.Index(fields=['status', 'next_attempt_at'], name='submission_due'),
        ),
        migrations.AddIndex(
            model_name='submission',
            index=models.Index(fields=['company', 'status'], name='submission_company_status'),
        ),
        migrations.AddConstraint(
            model_name='submission',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['pending', 'sending', 'accepted', 'rejected', 'failed', 'dead'])), name='submission_status_known'),
        ),
        migrations.AddConstraint(
            model_name='submission',
            constraint=models.UniqueConstraint(condition=models.Q(('shipping_report__isnull', True), ('status__in', ['pending', 'sending', 'failed', 'accepted'])), fields=('batch', 'market', 'kind'), name='one_live_submission_per_batch_and_market', violation_error_message='This batch already has a live submission to this market.'),
        ),
        migrations.AddConstraint(
            model_name='submission',
            constraint=models.UniqueConstraint(condition=models.Q(('shipping_report__isnull', False), ('status__in', ['pending', 'sending', 'failed', 'accepted'])), fields=('shipping_report', 'market', 'kind'), name='one_live_submission_per_shipment_and_market', violation_error_message='This shipment already has a live submission to this market.'),
        ),
        migrations.AddConstraint(
            model_name='submission',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('status', 'failed'), _negated=True), ('next_attempt_at__isnull', False), _connector='OR'), name='submission_retry_has_a_time'),
        ),
        migrations.RunPython(create_schedule, delete_schedule),
    ]
