"""Run the replenishment check now (django-q2 runs it every 15 minutes)."""

from django.core.management.base import BaseCommand

from serialization.services.replenishment import replenish_pools


class Command(BaseCommand):
    help = "Refill generated pools whose available count is under their minimum; alert on list pools under it."

    def handle(self, *args, **options):
        results = replenish_pools()
        if not results:
            self.stdout.write("Every pool with a minimum is above it.")
        for result in results:
            line = f"pool {result.pool_id}: {result.available_before} available, filled {result.filled}"
            self.stdout.write(line + (f" — ALERT: {result.alert}" if result.alert else ""))
