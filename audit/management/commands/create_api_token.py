from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from audit import services
from audit.exceptions import DomainError


class Command(BaseCommand):
    help = (
        "Create an API token for a user and print its key once (stdout, alone on its line; notes go to stderr). "
        "Only the key's hash is stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", required=True, help="The account the token acts as, e.g. line1-system.")
        parser.add_argument("--name", required=True, help="What uses the key, e.g. “line 1”.")
        parser.add_argument("--days", type=int, default=None, help="Expire after this many days (default: never).")

    def handle(self, *args, username, name, days, **options):
        user = get_user_model()._default_manager.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}. Create the account first.")
        if days is not None and days < 1:
            raise CommandError("--days must be 1 or more.")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        try:
            token, raw_key = services.create_api_token(user=user, name=name, expires_at=expires_at)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        expiry = f"expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else "does not expire"
        self.stderr.write(
            f"API token “{token.name}” for {username} ({expiry}). Copy the key now; it is not shown again:"
        )
        self.stdout.write(raw_key)
