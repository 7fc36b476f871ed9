"""``manage.py load_demo_pools``: demo serial pools on top of ``load_demo``'s master data (idempotent)."""

from django.core.management.base import BaseCommand, CommandError

from masterdata.models import Product
from serialization.demo import load_demo_pools


class Command(BaseCommand):
    help = "Create demo serial pools (randomised, sequential, imported list, SSCC) and one allocation."

    def handle(self, *args, **options):
        if not Product.objects.exists():
            raise CommandError("No products yet: run `manage.py load_demo` first.")
        summary = load_demo_pools(actor=None)
        for name in summary.created:
            self.stdout.write(f"  created {name}")
        for name in summary.skipped:
            self.stdout.write(f"  kept    {name} (exists)")
        self.stdout.write(self.style.SUCCESS("Demo serial pools ready: see Serialization → Serial pools in the admin."))
