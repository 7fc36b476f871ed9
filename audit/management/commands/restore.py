import time

from django.core.management.base import BaseCommand, CommandError

from audit import backup


class Command(BaseCommand):
    help = (
        "Load a backup archive into an EMPTY database (DATABASE_URL) and the media folder. Every file is checked "
        "against the manifest first (a tampered archive is refused), a database with tables is refused, and the "
        "loaded database is compared with the manifest: rows per table, pool state, audit-chain head, migrations."
    )

    def add_arguments(self, parser):
        parser.add_argument("archive", help="The .tar written by manage.py backup.")
        parser.add_argument(
            "--expect-sha256", default="", help="The manifest SHA-256 printed by the backup: refuse any other."
        )
        parser.add_argument("--media-root", default=None, help="Where the media files go (default: MEDIA_ROOT).")

    def handle(self, *args, archive: str, expect_sha256: str, media_root: str | None, **options):
        started = time.monotonic()
        try:
            result = backup.restore_archive(path=archive, expect_manifest_sha256=expect_sha256, media_root=media_root)
        except backup.BackupError as exc:
            raise CommandError(exc.message) from exc
        checks = result.verification.checks
        self.stdout.write(f"Restored {backup.manifest_summary(result.manifest)}")
        self.stdout.write(f"{result.media_files} media file(s) written.")
        self.stdout.write(self.style.SUCCESS(f"All {len(checks)} checks against the manifest passed."))
        self.stdout.write(f"Took {time.monotonic() - started:.1f} s.")
