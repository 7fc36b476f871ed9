"""Getting an allocation's serials out: a streamed download for small lists, a background export file for large ones.

Every download — streamed or of an export file — is written to the access log (who, which allocation, how many
serials, format, notation and the SHA-256 of exactly the bytes sent) *before* the first byte leaves. Every file
names who asked for it, when, and its export or download id (``file_stamp``), so a copy found anywhere leads back to
its access-log row. All three doors out (streamed list, export job, export download) pass the anomaly rule of
``audit.pilferage`` (hourly serial limit per account, blocked accounts refused with 403).
"""

import logging
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from audit import pilferage
from audit.exceptions import DomainError
from serialization.exceptions import TooLargeToStream
from serialization.models import Allocation, ExportJob
from serialization.services.allocation import allocation_ranges
from serialization.services.jobs import JobDownload, check_job_file, claim_job, fail_job, finish_job, progress_of
from serialization.services.materialise import CONTENT_TYPES, check_notation, stream_serials, write_serials

logger = logging.getLogger(__name__)

FILE_EXTENSIONS = {ExportJob.Format.CSV: "csv", ExportJob.Format.JSON: "json", ExportJob.Format.TEXT: "txt"}


def stream_limit() -> int:
    """Largest allocation answered as a streamed download (setting SERIAL_STREAM_MAX); larger ones need an export."""
    return settings.SERIAL_STREAM_MAX


def download_filename(allocation: Allocation, *, format: str, notation: str, job: ExportJob | None = None) -> str:
    suffix = f"-export-{job.pk}" if job is not None else ""
    return f"allocation-{allocation.pk}-{notation}{suffix}.{FILE_EXTENSIONS[format]}"


def file_stamp(*, user, requested_at: datetime, **reference) -> dict:
    """What an exported file says about itself: who asked (``system`` for no user), when (UTC), and ``reference``
    (``export_id=`` of a job, ``download_id=`` of a streamed download)."""
    return {
        "requested_by": user.get_username() if user is not None else "system",
        "requested_at": requested_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **reference,
    }


@dataclass(frozen=True)
class SerialDownload:
    """A streamed download ready to send: its bytes are produced while the response is written."""

    filename: str
    content_type: str
    rows: int
    sha256: str
    size: int
    chunks: Iterator[bytes]


def start_serial_download(
    *,
    allocation: Allocation,
    format: str,
    notation: str,
    user,
    request=None,
) -> SerialDownload:
    """Check the allocation may be streamed (and ``user`` may take it), record the download, and return the stream.

    The bytes are produced twice: once here, only to count them and take their SHA-256 for the access log and the
    response headers, and once while they are sent. Both passes read the same index ranges, read once here, and
    carry the same stamp. Up to SERIAL_STREAM_MAX serials that costs a fraction of a second and buys a complete
    record even when the client stops reading halfway.
    """
    pool = allocation.pool
    check_notation(pool, format=format, notation=notation)
    pilferage.check_not_blocked(user=user)  # before materialising anything; checked again under the lock
    ranges = allocation_ranges(allocation)
    quantity = sum(count for _, count in ranges)
    limit = stream_limit()
    if quantity > limit:
        raise TooLargeToStream(
            f"Allocation {allocation.pk} holds {quantity:,} serials; lists of more than {limit:,} are not streamed. "
            f"Create an export job (POST /api/v1/allocations/{allocation.pk}/exports/) and download its file when "
            "it is done.",
            details={"quantity": quantity, "stream_max": limit},
        )
    stamp = file_stamp(user=user, requested_at=timezone.now(), download_id=secrets.token_hex(8))
    counter = _CountingSink()
    rows, sha256 = write_serials(allocation, format=format, notation=notation, out=counter, ranges=ranges, stamp=stamp)
    with pilferage.serial_handout(user=user, request=request, counted=rows) as handout:
        handout.record(
            kind="download",
            target=f"allocation {allocation.pk}",
            quantity=rows,
            details={
                "format": str(format),
                "notation": str(notation),
                "sha256": sha256,
                "pool": pool.pk,
                "download_id": stamp["download_id"],
            },
        )
    return SerialDownload(
        filename=download_filename(allocation, format=format, notation=notation),
        content_type=CONTENT_TYPES[format],
        rows=rows,
        sha256=sha256,
        size=counter.size,
        chunks=stream_serials(allocation, format=format, notation=notation, ranges=ranges, stamp=stamp),
    )


class _CountingSink:
    size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


# --- export jobs ----------------------------------------------------------------------------------------------


def create_export(
    *,
    allocation: Allocation,
    format: str,
    notation: str,
    actor,
    request=None,
) -> ExportJob:
    """Queue the materialisation of ``allocation`` into a file; a django-q2 worker runs it after the commit.

    Its serials count against ``actor``'s hourly limit now, when they are asked for (audit.pilferage).
    """
    check_notation(allocation.pool, format=format, notation=notation)
    quantity = allocation.active_quantity
    with pilferage.serial_handout(user=actor, request=request, counted=quantity) as handout:
        job = ExportJob.objects.create(
            allocation=allocation,
            format=format,
            notation=notation,
            total=quantity,
            requested_by=actor,
        )
        handout.record(
            kind="export",
            target=f"allocation {allocation.pk}",
            quantity=job.total,
            details={"format": str(format), "notation": str(notation), "export_job": job.pk},
        )
        transaction.on_commit(
            lambda: async_task("serialization.tasks.run_export", job.pk, task_name=f"export {job.pk}")
        )
    return job


def run_export(*, job_id: int) -> ExportJob:
    """Write the export file of job ``job_id`` to the default storage, updating progress per chunk of serials.

    A job that is not pending (a task delivered twice) is left alone. Failures are kept on the job, for the user.
    """
    if claim_job(ExportJob, job_id) is None:
        return ExportJob.objects.get(pk=job_id)
    job = ExportJob.objects.select_related("allocation__pool", "requested_by").get(pk=job_id)
    allocation = job.allocation
    stamp = file_stamp(user=job.requested_by, requested_at=job.created_at, export_id=job.pk)
    try:
        ranges = allocation_ranges(allocation)
        total = sum(count for _, count in ranges)
        ExportJob.objects.filter(pk=job.pk).update(total=total, written=0)
        # Written to a local temporary file first, then handed to the storage (a local folder, or S3) in one go.
        with tempfile.TemporaryFile() as scratch:
            rows, sha256 = write_serials(
                allocation,
                format=job.format,
                notation=job.notation,
                out=scratch,
                progress=progress_of(job),
                ranges=ranges,
                stamp=stamp,
            )
            scratch.seek(0)
            name = default_storage.save(
                f"exports/{download_filename(allocation, format=job.format, notation=job.notation, job=job)}",
                File(scratch),
            )
    except DomainError as exc:
        fail_job(job, exc.message)
    except Exception:
        logger.exception("export job %s of allocation %s failed", job.pk, allocation.pk)
        fail_job(job, "The export failed unexpectedly; the worker log has the details. Create a new export to retry.")
    else:
        finish_job(job, file=name, sha256=sha256, total=rows, written=rows)
    job.refresh_from_db()
    return job


def open_export_download(*, job: ExportJob, user, request=None) -> JobDownload:
    """Open a finished export's file for sending, after recording the download.

    The serials of one's own export counted when it was requested; anyone else's download of the file counts now.
    """
    check_job_file(job, label=f"Export {job.pk}")
    counted = 0 if user is not None and job.requested_by_id == user.pk else job.written
    handle = default_storage.open(job.file.name, "rb")
    try:
        with pilferage.serial_handout(user=user, request=request, counted=counted) as handout:
            handout.record(
                kind="download",
                target=f"allocation {job.allocation_id}",
                quantity=job.written,
                details={
                    "format": job.format,
                    "notation": job.notation,
                    "sha256": job.sha256,
                    "export_job": job.pk,
                },
            )
    except BaseException:
        handle.close()
        raise
    return JobDownload(
        filename=job.file.name.rsplit("/", 1)[-1],
        content_type=CONTENT_TYPES[job.format],
        file=handle,
        size=handle.size,
    )
