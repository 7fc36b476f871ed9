"""Re-wrap every pool key under the newest master key, so older master keys can be retired."""

from cryptography.fernet import InvalidToken
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from serialization.keys import rewrap_pool_key, unwrap_pool_key
from serialization.models import SerialPool


class Command(BaseCommand):
    help = (
        "Re-wrap every serial pool's key under the first (newest) key of SERIAL_MASTER_KEYS, in one transaction. "
        "Serials do not change. Afterwards the older master keys can be removed from SERIAL_MASTER_KEYS."
    )

    def handle(self, *args, **options):
        try:
            with transaction.atomic():
                # Locked in pk order, like every multi-pool write, so a concurrent fill or allocation waits.
                pools = list(
                    SerialPool.objects.select_for_update()
                    .exclude(encrypted_key="")
                    .order_by("pk")
                    .only("encrypted_key")
                )
                for pool in pools:
                    try:
                        token = rewrap_pool_key(pool.encrypted_key)
                    except InvalidToken:
                        raise CommandError(
                            f"Pool {pool.pk}'s key cannot be unwrapped with SERIAL_MASTER_KEYS: keep the master key it "
                            "was wrapped with in the list (after the new one) while rotating. Nothing was changed."
                        ) from None
                    if unwrap_pool_key(token) != unwrap_pool_key(pool.encrypted_key):
                        raise CommandError(f"Pool {pool.pk}: the re-wrapped key differs; nothing was changed.")
                    pool.encrypted_key = token
                # bulk_update writes no history rows: the wrapped key is not a change anyone needs to review.
                SerialPool.objects.bulk_update(pools, ["encrypted_key"], batch_size=500)
        except ImproperlyConfigured as exc:
            raise CommandError(f"{exc} Nothing was changed.") from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Re-wrapped {len(pools)} pool key{'s' if len(pools) != 1 else ''} under the newest master key. "
                "Older keys can now be removed from SERIAL_MASTER_KEYS."
            )
        )
