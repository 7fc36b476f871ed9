"""Legal holds and purge records (audit.retention), and the access-log kind of a purge."""

import django.core.serializers.json
import django.db.models.deletion
import django.utils.timezone
import simple_history.models
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0003_audit_chain_and_incident_workflow"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='accessevent',
            name='kind',
            field=models.CharField(choices=[('login', 'Signed in'), ('login_failed', 'Sign-in failed'), ('locked_out', 'Locked out'), ('otp_verified', 'Second factor verified'), ('otp_failed', 'Second factor failed'), ('mfa_enrolled', 'Authenticator enrolled'), ('logout', 'Signed out'), ('token_created', 'API token created'), ('token_revoked', 'API token revoked'), ('token_used', 'API token used'), ('download', 'Download'), ('export', 'Export'), ('purge', 'Records purged past retention')], max_length=32),
        ),
        migrations.CreateModel(
            name='HistoricalLegalHold',
            fields=[
                ('id', models.BigIntegerField(auto_created=True, blank=True, db_index=True, verbose_name='ID')),
                ('target_type', models.CharField(help_text='Model label, e.g. serialization.batch', max_length=100)),
                ('target_id', models.CharField(help_text='Primary key of the held record', max_length=64)),
                ('target_label', models.CharField(blank=True, help_text='The record as it read when it was held', max_length=255)),
                ('reason', models.TextField(help_text="Why the record is held, e.g. the case or the authority's request")),
                ('placed_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('released_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('release_reason', models.TextField(blank=True, editable=False)),
                ('history_id', models.AutoField(primary_key=True, serialize=False)),
                ('history_date', models.DateTimeField(db_index=True)),
                ('history_change_reason', models.CharField(max_length=100, null=True)),
                ('history_type', models.CharField(choices=[('+', 'Created'), ('~', 'Changed'), ('-', 'Deleted')], max_length=1)),
                ('history_user', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('placed_by', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('released_by', models.ForeignKey(blank=True, db_constraint=False, editable=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'historical legal hold',
                'verbose_name_plural': 'historical legal holds',
                'ordering': ('-history_date', '-history_id'),
                'get_latest_by': ('history_date', 'history_id'),
            },
            bases=(simple_history.models.HistoricalChanges, models.Model),
        ),
        migrations.CreateModel(
            name='HistoricalPurgeRecord',
            fields=[
                ('id', models.BigIntegerField(auto_created=True, blank=True, db_index=True, verbose_name='ID')),
                ('performed_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False)),
                ('reason', models.TextField()),
                ('kept_until_before', models.DateField(help_text="The purge's day: records whose keep-until date was before it, and not on hold, were removed")),
                ('removed', models.JSONField(blank=True, default=list, encoder=django.core.serializers.json.DjangoJSONEncoder, help_text='[{type, id, label, keep_until}] per record')),
                ('counts', models.JSONField(blank=True, default=dict, help_text='Rows deleted per table (model label); “label.field” = links cleared')),
                ('skipped', models.JSONField(blank=True, default=list, encoder=django.core.serializers.json.DjangoJSONEncoder, help_text='Records past their retention that stayed: on legal hold, or still referenced by kept records')),
                ('history_id', models.AutoField(primary_key=True, serialize=False)),
                ('history_date', models.DateTimeField(db_index=True)),
                ('history_change_reason', models.CharField(max_length=100, null=True)),
                ('history_type', models.CharField(choices=[('+', 'Created'), ('~', 'Changed'), ('-', 'Deleted')], max_length=1)),
                ('history_user', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('performed_by', models.ForeignKey(blank=True, db_constraint=False, editable=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'historical purge record',
                'verbose_name_plural': 'historical purge records',
                'ordering': ('-history_date', '-history_id'),
                'get_latest_by': ('history_date', 'history_id'),
            },
            bases=(simple_history.models.HistoricalChanges, models.Model),
        ),
        migrations.CreateModel(
            name='PurgeRecord',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('performed_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False)),
                ('reason', models.TextField()),
                ('kept_until_before', models.DateField(help_text="The purge's day: records whose keep-until date was before it, and not on hold, were removed")),
                ('removed', models.JSONField(blank=True, default=list, encoder=django.core.serializers.json.DjangoJSONEncoder, help_text='[{type, id, label, keep_until}] per record')),
                ('counts', models.JSONField(blank=True, default=dict, help_text='Rows deleted per table (model label); “label.field” = links cleared')),
                ('skipped', models.JSONField(blank=True, default=list, encoder=django.core.serializers.json.DjangoJSONEncoder, help_text='Records past their retention that stayed: on legal hold, or still referenced by kept records')),
                ('performed_by', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-performed_at', '-id'],
            },
        ),
        migrations.CreateModel(
            name='LegalHold',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('target_type', models.CharField(help_text='Model label, e.g. serialization.batch', max_length=100)),
                ('target_id', models.CharField(help_text='Primary key of the held record', max_length=64)),
                ('target_label', models.CharField(blank=True, help_text='The record as it read when it was held', max_length=255)),
                ('reason', models.TextField(help_text="Why the record is held, e.g. the case or the authority's request")),
                ('placed_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('released_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('release_reason', models.TextField(blank=True, editable=False)),
                ('placed_by', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('released_by', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-placed_at', '-id'],
                'indexes': [models.Index(fields=['target_type', 'target_id'], name='audit_legalhold_target')],
                'constraints': [models.CheckConstraint(condition=models.Q(('reason', ''), _negated=True), name='audit_legalhold_reason_given'), models.CheckConstraint(condition=models.Q(models.Q(('release_reason', ''), ('released_at__isnull', True), ('released_by__isnull', True)), models.Q(('released_at__isnull', False), ('released_by__isnull', False), models.Q(('release_reason', ''), _negated=True)), _connector='OR'), name='audit_legalhold_released_with_who_and_why')],
            },
        ),
    ]
