"""django-q2 entry points of the serial engine: each takes ids, reloads, and calls one service."""

from serialization.services import epcis_exports, exports, imports, outbox, replenishment


def run_export(job_id: int) -> str:
    """Materialise export job ``job_id`` into its file (queued by ``exports.create_export``)."""
    job = exports.run_export(job_id=job_id)
    return f"export {job.pk}: {job.status}, {job.written} of {job.total} serials"


def run_epcis_export(job_id: int) -> str:
    """Write the EPCIS document of job ``job_id`` (queued by ``epcis_exports.create_epcis_export``)."""
    job = epcis_exports.run_epcis_export(job_id=job_id)
    return f"EPCIS export {job.pk}: {job.status}, {job.events} events, {job.written} of {job.total} EPCs"


def replenish_pools() -> str:
    """Refill generated pools under their minimum; alert on list pools (scheduled every 15 minutes)."""
    results = replenishment.replenish_pools()
    filled = sum(result.filled for result in results)
    alerts = sum(1 for result in results if result.alert)
    return f"{len(results)} pools under their minimum: {filled} serials filled, {alerts} alerts"


def run_import(job_id: int) -> str:
    """Import the file of import job ``job_id`` (the entry point ``imports.start_import`` may schedule)."""
    job = imports.run_import_job(job_id)
    return f"import {job.pk}: {job.status}, {job.imported} of {job.rows} rows"


def send_submission(submission_id: int) -> str:
    """One attempt to deliver submission ``submission_id`` (queued on creation, scheduled for each retry)."""
    submission = outbox.send_submission(submission_id=submission_id)
    return f"submission {submission.pk}: {submission.status} after {submission.attempts} attempts"


def send_due_submissions() -> str:
    """Queue every submission whose next try is due (scheduled every 5 minutes)."""
    return f"{outbox.send_due_submissions()} submissions queued"


def refresh_retention_dates() -> str:
    """Recompute every batch's stored keep-until date from the market rules (scheduled daily)."""
    from serialization.retention import refresh_keep_until

    return f"{refresh_keep_until()} batch keep-until dates changed"


def run_capture(job_id: int) -> str:
    """Apply the events of EPCIS capture job ``job_id`` (queued by ``epcis_capture.start_capture``)."""
    from serialization.services.epcis_capture import run_capture as run

    job = run(job_id=job_id)
    return f"capture {job.pk}: {job.status}, {job.applied_count} of {job.event_count} events applied"
