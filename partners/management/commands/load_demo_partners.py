"""``manage.py load_demo_partners``: the demo MAH→CMO partnership (after load_demo and load_demo_pools)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from partners.demo import load_demo_partners


class Command(BaseCommand):
    help = "Create the demo partnership Acme Pharma → Contract Pack GmbH with assigned serials and a CMO order."

    def handle(self, *args, **options):
        steward = get_user_model().objects.filter(username="steward").first()
        if steward is None:
            raise CommandError("The demo steward is missing: run `manage.py load_demo` first.")
        done = load_demo_partners(actor=steward)
        for line in done:
            self.stdout.write(f"  created {line}")
        self.stdout.write(
            self.style.SUCCESS("Demo partnership ready: sign in as 'cmo' and open /portal/ to see the CMO's view.")
        )
