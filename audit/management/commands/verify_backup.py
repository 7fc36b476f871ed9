import time

from django.core.management.base import BaseCommand, CommandError

from audit import backup


class Command(BaseCommand):
    help = (
        "Restore a backup archive into a scratch database (a temporary SQLite file, or a PostgreSQL database created "
        "and dropped here) and compare it with the manifest: rows per table, pool state, audit-chain head, migrations; "
        "then verify the restored audit chain link by link. Prints a table; exits non-zero on any mismatch."
    )

    def add_arguments(self, parser):
        parser.add_argument("archive", help="The .tar written by manage.py backup.")
        parser.add_argument(
            "--expect-sha256", default="", help="The manifest SHA-256 printed by the backup: refuse any other."
        )
        parser.add_argument(
            "--skip-chain", action="store_true", help="Do not verify the restored audit chain link by link."
        )

    def handle(self, *args, archive: str, expect_sha256: str, skip_chain: bool, **options):
        started = time.monotonic()
        try:
            result = backup.verify_archive(
                path=archive, expect_manifest_sha256=expect_sha256, verify_chain=not skip_chain
            )
        except backup.BackupError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(backup.manifest_summary(result.manifest))
        self.stdout.write(f"Manifest SHA-256: {result.manifest_sha256}; restored into scratch {result.scratch}")
        self.stdout.write(result.verification.table())
        failures = result.verification.failures
        if failures:
            raise CommandError(
                f"{len(failures)} of {len(result.verification.checks)} checks do not match the manifest: "
                + ", ".join(check.what for check in failures[:10])
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"All {len(result.verification.checks)} checks match (took {time.monotonic() - started:.1f} s)."
            )
        )
