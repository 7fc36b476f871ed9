from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from audit import retention
from audit.exceptions import DomainError


class Command(BaseCommand):
    help = (
        "Remove the records past their retention and not on legal hold (batches with their orders, packs, pack "
        "events, line reports, reconciliations…), one DELETE per table, and record what went. Try --dry-run first: "
        "it counts exactly the same rows and changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would go; change nothing.")
        parser.add_argument("--actor", help="Username of who purges (required unless --dry-run).")
        parser.add_argument("--reason", default="", help="Why (required unless --dry-run), e.g. “yearly purge 2031”.")

    def handle(self, *args, dry_run: bool, actor: str | None, reason: str, **options):
        user = None
        if actor:
            user = get_user_model()._default_manager.filter(username=actor).first()
            if user is None:
                raise CommandError(f"No user named {actor!r}: name an existing account with --actor.")
        try:
            result = retention.purge_expired(actor=user, reason=reason, dry_run=dry_run)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        verb = "Would remove" if dry_run else "Removed"
        self.stdout.write(f"{verb} {len(result.removed)} record(s) kept until before {result.day}:")
        for item in result.removed:
            self.stdout.write(f"  {item['type']} {item['id']} {item['label']} (kept until {item['keep_until']})")
        self.stdout.write("Rows per table:")
        for label, count in result.counts.items():
            self.stdout.write(f"  {label:<45} {count:>12,}")
        self.stdout.write(f"  {'total':<45} {result.rows:>12,}")
        for item in result.skipped:
            self.stdout.write(
                f"Kept although past retention: {item['type']} {item['id']} {item['label']}: {item['why']}"
            )
        if result.record is not None:
            self.stdout.write(self.style.SUCCESS(f"Recorded as purge record {result.record.pk}."))
        elif dry_run:
            self.stdout.write("Dry run: nothing was changed.")
