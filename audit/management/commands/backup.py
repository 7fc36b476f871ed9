import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from audit import backup


class Command(BaseCommand):
    help = (
        "Write one consistent archive of the database (pg_dump on PostgreSQL, the online backup API on SQLite) and the "
        "media folder, with a manifest: the SHA-256 of every file, rows per table, pool state, the audit-chain head, "
        "the applied migrations. Prints the archive's path and the manifest's SHA-256 (keep it apart from the archive "
        "to check it later with restore/verify_backup --expect-sha256)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", help="Archive path (default: BACKUP_DIR/backup-<UTC time>.tar).")
        parser.add_argument("--actor", help="Username recorded in the access log (default: the operating-system user).")

    def handle(self, *args, output: str | None, actor: str | None, **options):
        user = None
        if actor:
            user = get_user_model()._default_manager.filter(username=actor).first()
            if user is None:
                raise CommandError(f"No user named {actor!r}: name an existing account with --actor.")
        started = time.monotonic()
        try:
            result = backup.make_backup(path=output, actor=user)
        except backup.BackupError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Archive: {result.path} ({result.path.stat().st_size:,} bytes)")
        self.stdout.write(backup.manifest_summary(result.manifest))
        self.stdout.write(f"Manifest SHA-256: {result.manifest_sha256}")
        self.stdout.write(f"Took {time.monotonic() - started:.1f} s.")
