from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS

from audit.roles import seed_roles


class Command(BaseCommand):
    help = (
        "Create or update the role groups (Steward, QA, Line system, CMO user, Auditor) to their defined permissions."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args, database, **options):
        for role, count in seed_roles(using=database).items():
            self.stdout.write(f"{role}: {count} permissions")
