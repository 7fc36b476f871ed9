"""django-q2 entry points of the serial engine: each takes ids, reloads, and calls one service."""

from serialization.services import exports, imports, replenishment


def run_export(job_id: int) -> str:
    """Materialise export job ``job_id`` into its file (queued by ``exports.create_export``)."""
    job = exports.run_export(job_id=job_id)
    return f"export {job.pk}: {job.status}, {job.written} of {job.total} serials"


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
