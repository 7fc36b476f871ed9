"""EPCIS documents of a batch, a packaging order or a shipment: a background job that writes the file with progress,
a synchronous document for small scopes, and the downloads of both.

What a user gets follows the batch and order selectors (``scope_batches``/``scope_orders``): the scope object must
be visible to them (else 404), and the document holds only the reports of orders they may see — a CMO exporting a
batch it packed gets what its own lines reported. A job is written for the user who asked for it (its
``requested_by``), and only users of that user's company (or the operator's staff) see the job and its file.

Every export and every download is written to the access log: the job when it is created (``export``), the file or
the synchronous document when it is sent (``download``, with the EPC count and the SHA-256 of exactly the bytes
sent). A job's file is checked against the official schema before it is offered (``EpcisExportJob.validated``), as a
stream in both syntaxes: a document that fails is never offered, the job fails with the problems.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q, QuerySet
from django_q.tasks import async_task

from audit import pilferage
from audit import services as audit_services
from audit.exceptions import DomainError, NotFound
from masterdata.selectors import apply_filters, get_visible, scope_to_company
from serialization.epcis import EpcisError, check_format
from serialization.epcis.events import EpcisScope, EventSource
from serialization.epcis.validation import validate_epcis_document
from serialization.epcis.writer import write_epcis_document
from serialization.exceptions import TooLargeToStream
from serialization.models import Batch, EpcisExportJob, LineReport, PackagingOrder
from serialization.selectors import scope_batches, scope_orders
from serialization.services.jobs import JobDownload, check_job_file, claim_job, fail_job, finish_job, progress_of

logger = logging.getLogger(__name__)

CONTENT_TYPES = {"json": "application/ld+json", "xml": "application/xml"}
FILE_EXTENSIONS = {"json": "jsonld", "xml": "xml"}
# Problems of a failed validation kept on the job for the user (the whole list goes to the worker log).
SHOWN_PROBLEMS = 20


def job_scope(job: EpcisExportJob) -> EpcisScope:
    return EpcisScope(batch_id=job.batch_id, order_id=job.order_id, shipping_report_id=job.shipping_report_id)


def document_filename(scope: EpcisScope, *, version: str, syntax: str, job: EpcisExportJob | None = None) -> str:
    suffix = f"-export-{job.pk}" if job is not None else ""
    return f"epcis-{version}-{scope.label.replace(' ', '-')}{suffix}.{FILE_EXTENSIONS[syntax]}"


# --- reads ----------------------------------------------------------------------------------------------------------


def get_shipment(*, user, report_id: str) -> LineReport:
    """The shipping report ``report_id`` (the L3 system's id) on an order ``user`` may see; NotFound otherwise, and
    EpcisError (400) when it is another kind of report or was rejected."""
    report = (
        LineReport.objects.filter(report_id=report_id, order__in=scope_orders(PackagingOrder.objects.all(), user=user))
        .select_related("order")
        .first()
    )
    if report is None:
        raise NotFound(f"No line report {report_id!r} is visible to you.")
    if report.kind != LineReport.Kind.SHIPPING or report.status != LineReport.Status.APPLIED:
        state = "rejected " if report.status != LineReport.Status.APPLIED else ""
        raise EpcisError(
            f"Line report {report.report_id} is a {state}{report.get_kind_display().lower()} report; an EPCIS "
            "shipment document is made of an applied shipping report.",
            field="shipment",
        )
    return report


def scope_epcis_exports(queryset: QuerySet[EpcisExportJob], *, user) -> QuerySet[EpcisExportJob]:
    """Jobs asked for by users of ``user``'s company (every job for the operator's staff) whose batch, order or
    shipment ``user`` may still see."""
    queryset = scope_to_company(queryset, user=user, company_field="requested_by__membership__company_id")
    orders = scope_orders(PackagingOrder.objects.all(), user=user)
    return queryset.filter(
        Q(batch__in=scope_batches(Batch.objects.all(), user=user))
        | Q(order__in=orders)
        | Q(shipping_report__order__in=orders)
    )


def list_epcis_exports(*, user, filters: Mapping[str, Any] | None = None) -> QuerySet[EpcisExportJob]:
    queryset = EpcisExportJob.objects.select_related("batch", "order", "shipping_report", "requested_by")
    allowed = {"status": "status", "batch": "batch_id", "order": "order_id", "version": "version", "syntax": "syntax"}
    return apply_filters(scope_epcis_exports(queryset, user=user), filters, allowed)


def get_epcis_export(*, user, pk: Any) -> EpcisExportJob:
    return get_visible(list_epcis_exports(user=user), pk, "EPCIS export")


# --- export jobs ----------------------------------------------------------------------------------------------------


def create_epcis_export(
    *,
    version: str,
    syntax: str,
    actor,
    batch: Batch | None = None,
    order: PackagingOrder | None = None,
    shipping_report: LineReport | None = None,
    request=None,
) -> EpcisExportJob:
    """Queue the EPCIS document of one batch, order or shipment (already fetched through the caller's selectors); a
    django-q2 worker writes it after the commit. Refuses (400, naming the field) a version/syntax pair the
    standards do not define and a scope naming nothing or several things."""
    check_format(version=version, syntax=syntax)
    scope = EpcisScope(
        batch_id=batch.pk if batch is not None else None,
        order_id=order.pk if order is not None else None,
        shipping_report_id=shipping_report.pk if shipping_report is not None else None,
    )
    if sum(x is not None for x in (batch, order, shipping_report)) != 1:
        raise EpcisError("Name exactly one of a batch, a packaging order or a shipment.", field="scope")
    scope_order = order if order is not None else getattr(shipping_report, "order", None)
    _check_master_data(batch if batch is not None else getattr(scope_order, "batch", None))
    with transaction.atomic():
        job = EpcisExportJob.objects.create(
            batch=batch,
            order=order,
            shipping_report=shipping_report,
            version=version,
            syntax=syntax,
            requested_by=actor,
        )
        audit_services.record_access(
            kind="export",
            user=actor,
            request=request,
            target=f"EPCIS {scope.label}",
            details={"version": version, "syntax": syntax, "epcis_export": job.pk},
        )
        transaction.on_commit(
            lambda: async_task("serialization.tasks.run_epcis_export", job.pk, task_name=f"EPCIS export {job.pk}")
        )
    return job


def _check_master_data(batch: Batch | None) -> None:
    """What the job would stop on, said before it is queued: SGTIN URNs need the product's company prefix length."""
    product = batch.product if batch is not None else None
    if product is not None and product.company_prefix_length is None:
        raise EpcisError(
            f"Product {product.product_code} has no company prefix length in master data, and EPCIS names its units "
            "by SGTIN URNs, which need it: set the product's company prefix length first.",
            field="product",
        )


def run_epcis_export(*, job_id: int) -> EpcisExportJob:
    """Write the document of job ``job_id`` to the default storage, with progress (EPCs written of the EPCs in
    scope), validate it, and offer it. A job that is not pending (a task delivered twice) is left alone; failures are
    kept on the job, for the user."""
    if claim_job(EpcisExportJob, job_id) is None:
        return EpcisExportJob.objects.get(pk=job_id)
    job = EpcisExportJob.objects.select_related("requested_by").get(pk=job_id)
    scope = job_scope(job)
    try:
        source = EventSource(scope, visible_to=job.requested_by)
        EpcisExportJob.objects.filter(pk=job.pk).update(total=source.total_epcs, written=0)
        # Written to a local temporary file first (validated there, streaming), then handed to the storage (a local
        # folder, or S3) in one go.
        with tempfile.TemporaryDirectory(prefix="epcis-") as scratch:
            path = Path(scratch) / document_filename(scope, version=job.version, syntax=job.syntax, job=job)
            with path.open("wb") as handle:
                sink = _HashingSink(handle)
                events = write_epcis_document(
                    sink, scope=scope, version=job.version, syntax=job.syntax, progress=progress_of(job), source=source
                )
            written = EpcisExportJob.objects.values_list("written", flat=True).get(pk=job.pk)
            # Streamed in both syntaxes: memory stays flat however many EPCs the document names.
            problems = validate_epcis_document(path, version=job.version, syntax=job.syntax)
            if problems:
                logger.error("EPCIS export %s failed validation: %s", job.pk, problems)
                raise EpcisError(
                    f"The document failed validation against the EPCIS {job.version} schema, so it is not "
                    f"offered: {'; '.join(problems[:SHOWN_PROBLEMS])}"
                )
            with path.open("rb") as handle:
                name = default_storage.save(f"epcis/{path.name}", File(handle))
    except DomainError as exc:
        fail_job(job, exc.message)
    except Exception:
        logger.exception("EPCIS export %s of %s failed", job.pk, scope.label)
        fail_job(job, "The export failed unexpectedly; the worker log has the details. Create a new export to retry.")
    else:
        finish_job(job, file=name, sha256=sink.sha256, events=events, written=written, total=written, validated=True)
    job.refresh_from_db()
    return job


class _HashingSink:
    """Passes bytes on to ``out`` and takes their SHA-256 and size on the way."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._out.write(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def open_epcis_download(*, job: EpcisExportJob, user, request=None) -> JobDownload:
    """Open a finished job's file for sending, after recording the download (EPCs, events, SHA-256)."""
    check_job_file(job, label=f"EPCIS export {job.pk}")
    # A document names every serial of its scope: its EPCs count against the hourly serial limit (audit.pilferage),
    # like any other serial list handed out.
    with pilferage.serial_handout(user=user, request=request, counted=job.written) as handout:
        handout.record(
            kind="download",
            target=f"EPCIS export {job.pk} ({job_scope(job).label})",
            quantity=job.written,
            details={
                "version": job.version,
                "syntax": job.syntax,
                "events": job.events,
                "sha256": job.sha256,
                "epcis_export": job.pk,
            },
        )
    handle = default_storage.open(job.file.name, "rb")
    return JobDownload(
        filename=job.file.name.rsplit("/", 1)[-1],
        content_type=CONTENT_TYPES[job.syntax],
        file=handle,
        size=handle.size,
    )


# --- the synchronous document -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpcisDocument:
    """A small scope's document, written in the request."""

    content: bytes
    filename: str
    content_type: str
    events: int
    epcs: int
    sha256: str


def build_epcis_document(*, scope: EpcisScope, version: str, syntax: str, user, request=None) -> EpcisDocument:
    """The document of a scope of at most ``EPCIS_SYNC_MAX_EPCS`` EPCs, recorded as a download; a larger scope is
    refused (409) with the way to an export job."""
    check_format(version=version, syntax=syntax)
    source = EventSource(scope, visible_to=user)
    limit = settings.EPCIS_SYNC_MAX_EPCS
    if source.total_epcs > limit:
        raise TooLargeToStream(
            f"The EPCIS document of {scope.label} names {source.total_epcs:,} EPCs; documents of more than {limit:,} "
            "are written by an export job: POST to the epcis-exports/ URL beside this one and download the file "
            "when the job is done.",
            details={"epcs": source.total_epcs, "sync_max": limit},
        )
    buffer = io.BytesIO()
    written = 0

    def progress(epcs: int) -> None:
        nonlocal written
        written = epcs

    events = write_epcis_document(buffer, scope=scope, version=version, syntax=syntax, source=source, progress=progress)
    content = buffer.getvalue()
    sha256 = hashlib.sha256(content).hexdigest()
    with pilferage.serial_handout(user=user, request=request, counted=written) as handout:
        handout.record(
            kind="download",
            target=f"EPCIS {scope.label}",
            quantity=written,
            details={"version": version, "syntax": syntax, "events": events, "sha256": sha256},
        )
    return EpcisDocument(
        content=content,
        filename=document_filename(scope, version=version, syntax=syntax),
        content_type=CONTENT_TYPES[syntax],
        events=events,
        epcs=written,
        sha256=sha256,
    )
