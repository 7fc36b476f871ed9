"""EPCIS documents in the API: the events of a batch, a packaging order or a shipment (a shipping line report).

* ``POST /api/v1/batches/{id}/epcis-exports/`` (and ``orders/{id}/…``, ``line-reports/{report_id}/…``)
  ``{version, syntax}`` → **202** with an export job; a worker writes the document in the background;
* ``GET /api/v1/epcis-exports/{id}/`` → the job's status and progress (EPCs written of the EPCs in scope);
* ``GET /api/v1/epcis-exports/{id}/download/`` → the finished file (409 while it is being written);
* ``GET /api/v1/batches/{id}/epcis/?version=&syntax=`` (and orders, line reports) → the document itself, written in
  the request, for scopes of at most ``EPCIS_SYNC_MAX_EPCS`` EPCs (409 beyond: create a job).

``version`` is ``2.0`` (default) or ``1.2``, ``syntax`` ``json`` (JSON-LD, default) or ``xml``; 1.2 is XML only (400
naming ``syntax``). Creating a job needs ``serialization.add_epcisexportjob``, reading ``view_epcisexportjob``. A
batch, order or report you cannot see is 404; every export and download is in the access log, and counts against
the "export" rate limits (audit.limits) like the serial downloads.
"""

from django.http import FileResponse, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.response import Response

from audit.limits import RATE_LIMITS
from serialization.api.views import FileContentNegotiation
from serialization.epcis import EpcisError, check_format
from serialization.epcis.events import EpcisScope
from serialization.models import EpcisExportJob
from serialization.selectors import get_batch, get_order
from serialization.services.epcis_exports import (
    build_epcis_document,
    create_epcis_export,
    get_epcis_export,
    get_shipment,
    list_epcis_exports,
    open_epcis_download,
)

_400 = OpenApiResponse(description='Invalid input: {"error": {"code", "message", "fields"}}; fields name the input')
_404 = OpenApiResponse(description="No such batch, order, shipment or job, or not visible to you")
_409 = OpenApiResponse(description='Not available now: {"error": {"code", "message", "details"}}')
_DOCUMENT_RESPONSES = {(200, "application/ld+json"): OpenApiTypes.BINARY, (200, "application/xml"): OpenApiTypes.BINARY}


class EpcisFormatSerializer(serializers.Serializer):
    version = serializers.ChoiceField(choices=EpcisExportJob.Version.choices, default=EpcisExportJob.Version.V2_0)
    syntax = serializers.ChoiceField(
        choices=EpcisExportJob.Syntax.choices,
        default=EpcisExportJob.Syntax.JSON,
        help_text="json (JSON-LD, EPCIS 2.0 only) or xml",
    )

    def validate(self, attrs):
        try:
            check_format(version=attrs["version"], syntax=attrs["syntax"])
        except EpcisError as exc:
            raise serializers.ValidationError({exc.field: exc.message}) from None
        return attrs


class EpcisExportJobSerializer(serializers.ModelSerializer):
    shipment = serializers.SlugRelatedField(
        source="shipping_report", slug_field="report_id", read_only=True, help_text="The shipping report's id"
    )
    progress = serializers.FloatField(read_only=True, help_text="written / total EPCs, 0.0 to 1.0")
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    download_url = serializers.SerializerMethodField(help_text="Where to fetch the file, once the status is done")

    class Meta:
        model = EpcisExportJob
        fields = [
            "id",
            "batch",
            "order",
            "shipment",
            "version",
            "syntax",
            "status",
            "total",
            "written",
            "progress",
            "events",
            "validated",
            "sha256",
            "error",
            "requested_by",
            "created_at",
            "finished_at",
            "download_url",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_download_url(self, job: EpcisExportJob) -> str | None:
        if job.status != EpcisExportJob.Status.DONE:
            return None
        return reverse("api-v1:epcis-export-download", args=[job.pk])


def _format(data) -> dict:
    serializer = EpcisFormatSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# --- the scope in the URL --------------------------------------------------------------------------------------------


class _ScopeMixin:
    """Which batch, order or shipment the URL names, fetched through the selectors (404 when not visible)."""

    scope_kind = ""  # "batch", "order" or "shipment"

    def scope_objects(self, request, key) -> dict:
        if self.scope_kind == "batch":
            return {"batch": get_batch(user=request.user, pk=key)}
        if self.scope_kind == "order":
            return {"order": get_order(user=request.user, pk=key)}
        return {"shipping_report": get_shipment(user=request.user, report_id=key)}

    def scope(self, request, key) -> EpcisScope:
        return EpcisScope(**{f"{name}_id": obj.pk for name, obj in self.scope_objects(request, key).items()})


class _ExportCreateView(_ScopeMixin, generics.GenericAPIView):
    serializer_class = EpcisFormatSerializer
    queryset = EpcisExportJob.objects.none()
    throttle_classes = RATE_LIMITS
    throttle_scope = "export"

    def create(self, request, key):
        objects = self.scope_objects(request, key)
        data = _format(request.data)
        job = create_epcis_export(actor=request.user, request=request, **data, **objects)
        job = get_epcis_export(user=request.user, pk=job.pk)
        response = Response(EpcisExportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
        response["Location"] = reverse("api-v1:epcis-export-detail", args=[job.pk])
        return response


class _DocumentView(_ScopeMixin, generics.GenericAPIView):
    serializer_class = EpcisFormatSerializer
    queryset = EpcisExportJob.objects.none()
    content_negotiation_class = FileContentNegotiation
    throttle_classes = RATE_LIMITS
    throttle_scope = "export"

    def document(self, request, key):
        scope = self.scope(request, key)
        data = _format(request.query_params)
        document = build_epcis_document(scope=scope, user=request.user, request=request, **data)
        response = HttpResponse(document.content, content_type=document.content_type)
        response["Content-Disposition"] = f'attachment; filename="{document.filename}"'
        response["X-EPC-Count"] = str(document.epcs)
        response["X-Event-Count"] = str(document.events)
        response["X-Content-SHA256"] = document.sha256
        return response


_CREATE = {
    "request": EpcisFormatSerializer,
    "responses": {202: EpcisExportJobSerializer, 400: _400, 404: _404},
}
_DOCUMENT = {
    "parameters": [EpcisFormatSerializer],
    "responses": {**_DOCUMENT_RESPONSES, 400: _400, 404: _404, 409: _409},
}


class BatchEpcisExportView(_ExportCreateView):
    scope_kind = "batch"

    @extend_schema(summary="Write a batch's EPCIS document in the background", **_CREATE)
    def post(self, request, pk: int):
        return self.create(request, pk)


class OrderEpcisExportView(_ExportCreateView):
    scope_kind = "order"

    @extend_schema(summary="Write a packaging order's EPCIS document in the background", **_CREATE)
    def post(self, request, pk: int):
        return self.create(request, pk)


class ShipmentEpcisExportView(_ExportCreateView):
    scope_kind = "shipment"

    @extend_schema(
        summary="Write a shipment's EPCIS document in the background (its containers and everything in them)",
        **_CREATE,
    )
    def post(self, request, report_id: str):
        return self.create(request, report_id)


class BatchEpcisDocumentView(_DocumentView):
    scope_kind = "batch"

    @extend_schema(summary="A small batch's EPCIS document, written in the request", **_DOCUMENT)
    def get(self, request, pk: int):
        return self.document(request, pk)


class OrderEpcisDocumentView(_DocumentView):
    scope_kind = "order"

    @extend_schema(summary="A small packaging order's EPCIS document, written in the request", **_DOCUMENT)
    def get(self, request, pk: int):
        return self.document(request, pk)


class ShipmentEpcisDocumentView(_DocumentView):
    scope_kind = "shipment"

    @extend_schema(summary="A shipment's EPCIS document, written in the request", **_DOCUMENT)
    def get(self, request, report_id: str):
        return self.document(request, report_id)


# --- jobs -----------------------------------------------------------------------------------------------------------


class EpcisExportListView(generics.ListAPIView):
    serializer_class = EpcisExportJobSerializer
    queryset = EpcisExportJob.objects.none()

    def get_queryset(self):
        return list_epcis_exports(user=self.request.user)

    @extend_schema(summary="List EPCIS export jobs, newest first")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class EpcisExportDetailView(generics.RetrieveAPIView):
    serializer_class = EpcisExportJobSerializer
    queryset = EpcisExportJob.objects.none()

    def get_object(self):
        return get_epcis_export(user=self.request.user, pk=self.kwargs["pk"])

    @extend_schema(
        summary="An EPCIS export job's status, progress and download link",
        responses={200: EpcisExportJobSerializer, 404: _404},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class EpcisExportDownloadView(generics.GenericAPIView):
    serializer_class = EpcisExportJobSerializer
    queryset = EpcisExportJob.objects.none()
    content_negotiation_class = FileContentNegotiation
    throttle_classes = RATE_LIMITS
    throttle_scope = "export"

    @extend_schema(
        summary="Download a finished EPCIS export's document",
        responses={**_DOCUMENT_RESPONSES, 404: _404, 409: _409},
    )
    def get(self, request, pk: int):
        job = get_epcis_export(user=request.user, pk=pk)
        download = open_epcis_download(job=job, user=request.user, request=request)
        response = FileResponse(
            download.file, as_attachment=True, filename=download.filename, content_type=download.content_type
        )
        response["X-EPC-Count"] = str(job.written)
        response["X-Event-Count"] = str(job.events)
        response["X-Content-SHA256"] = job.sha256
        return response
