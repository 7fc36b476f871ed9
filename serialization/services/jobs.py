"""The steps every background file job shares — serial exports (``ExportJob``) and EPCIS exports
(``EpcisExportJob``): claimed once by a worker, progress as it writes, done or failed with a message for the user,
and its file opened for a download only when it is done. Both models have the same status field."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from django.core.files import File
from django.db import models, transaction
from django.utils import timezone

from serialization.exceptions import ExportNotReady
from serialization.models import ExportJob

Status = ExportJob.Status
Job = TypeVar("Job", bound=models.Model)


def claim_job(model: type[Job], job_id: int) -> Job | None:
    """Move job ``job_id`` from pending to running under a row lock and return it; None when it is not pending (a
    task delivered twice, or a job already failed), which the worker then leaves alone."""
    with transaction.atomic():
        job = model.objects.select_for_update().get(pk=job_id)
        if job.status != Status.PENDING:
            return None
        job.status = Status.RUNNING
        job.save(update_fields=["status"])
    return job


def progress_of(job: models.Model) -> Callable[[int], None]:
    """A callback that records how much of ``job`` is written (the writers call it per chunk)."""
    rows = type(job).objects.filter(pk=job.pk)
    return lambda written: rows.update(written=written)


def finish_job(job: models.Model, **fields) -> None:
    type(job).objects.filter(pk=job.pk).update(status=Status.DONE, finished_at=timezone.now(), **fields)


def fail_job(job: models.Model, message: str) -> None:
    type(job).objects.filter(pk=job.pk).update(status=Status.FAILED, error=message, finished_at=timezone.now())


def check_job_file(job: models.Model, *, label: str) -> None:
    """ExportNotReady (409) unless ``job`` (called ``label`` in the message) is done and has its file."""
    if job.status != Status.DONE or not job.file:
        raise ExportNotReady(
            f"{label} is {job.get_status_display().lower()}, so it has no file yet"
            + (f": {job.error}" if job.error else "; poll its status and download it when it is done."),
            details={"status": job.status, "written": job.written, "total": job.total},
        )


@dataclass(frozen=True)
class JobDownload:
    """A finished job's file, open for sending."""

    filename: str
    content_type: str
    file: File
    size: int
