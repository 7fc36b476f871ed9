from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS

from audit import services

SHOWN_PROBLEMS = 20


class Command(BaseCommand):
    help = (
        "Verify the tamper-evident audit chain end to end: every history row's hash, the sequence, the head, and "
        "history rows written without a link. A break is raised as an audit-chain incident and exits with status 1."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args, database, **options):
        report, incident = services.verify_audit_chain(using=database)
        if report.ok:
            self.stdout.write(self.style.SUCCESS(report.summary()))
            return
        lines = [report.summary()]
        for problem in report.problems[:SHOWN_PROBLEMS]:
            where = f"table {problem.table}, row {problem.row_id if problem.row_id is not None else '—'}"
            where += f", sequence {problem.sequence}" if problem.sequence is not None else ", no sequence"
            lines.append(f"  [{problem.kind}] {where}: {problem.message}")
        if report.problem_count > SHOWN_PROBLEMS:
            lines.append(f"  … and {report.problem_count - SHOWN_PROBLEMS} more (the first 100 are in the incident).")
        lines.append(f"Raised as incident {incident.pk}: {incident.title}")
        raise CommandError("\n".join(lines))
