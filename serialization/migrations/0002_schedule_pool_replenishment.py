"""Registers the django-q2 schedule that replenishes serial pools every 15 minutes.

A migration rather than a post_migrate handler or a command in the Makefile: it runs exactly once wherever the
database is migrated (demo, CI, production), needs no manual step, and is undone with the migration.
"""

from django.db import migrations

SCHEDULE_NAME = "serialization: replenish pools"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "serialization.tasks.replenish_pools",
            "schedule_type": "I",  # Schedule.MINUTES
            "minutes": 15,
            "repeats": -1,  # forever
        },
    )


def delete_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("serialization", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
