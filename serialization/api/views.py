"""The serial engine's API: one view per workflow (input serializer → service → output serializer).

Every object in a URL is fetched through ``serialization.selectors``, so objects outside the caller's company are
404. The permission on each view is the model permission of the row the request reads or creates
(``queryset = <Model>.objects.none()`` tells ``ModelPermissions`` which): allocating needs
``serialization.add_allocation``, releasing ``add_release``, filling ``add_poolfill``, exporting ``add_exportjob``,
importing ``add_importjob``; reads need the matching ``view_`` permission. Allocating and getting serials out are
rate-limited per account and per API client (``audit.limits``, scopes "allocation" and "export"); getting serials
out also passes the hourly anomaly rule (``audit.pilferage``, 403 for a blocked account).
"""

from django.http import FileResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from audit.exceptions import NotFound
from audit.limits import RATE_LIMITS
from masterdata import selectors as masterdata_selectors
from masterdata.models import CompanyPrefix
from serialization import selectors
from serialization.api.serializers import (
    AllocateSerializer,
    AllocationFilterSerializer,
    AllocationSerializer,
    ExportCreateSerializer,
    ExportJobSerializer,
    FillSerializer,
    ImportCreateSerializer,
    ImportJobSerializer,
    LookupQuerySerializer,
    LookupResultSerializer,
    PoolCountsSerializer,
    PoolCreateSerializer,
    PoolFilterSerializer,
    PoolSerializer,
    ReleaseInputSerializer,
    ReleaseSerializer,
    SerialListQuerySerializer,
)
from serialization.exceptions import UnknownSerial
from serialization.models import Allocation, ExportJob, ImportJob, PoolFill, Release, SerialPool
from serialization.services import (
    allocate_serials,
    create_generated_pool,
    create_list_pool,
    fill_pool,
    lookup_serial,
    lookup_sscc,
    release_serials,
)
from serialization.services.exports import create_export, open_export_download, start_serial_download
from serialization.services.imports import start_import
from serialization.services.materialise import indices_of_serials

_400 = OpenApiResponse(description='Invalid input: {"error": {"code", "message", "fields"}}; fields name the input')
_404 = OpenApiResponse(description="No such object, or not visible to you")
_409 = OpenApiResponse(description='Conflict with the current state: {"error": {"code", "message", "details"}}')


class FileContentNegotiation(DefaultContentNegotiation):
    """For views that send files: ``?format=`` names the file's format, not a DRF renderer, and an ``Accept: text/csv``
    header must not be refused. Error bodies are JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _validated(serializer_class, data, **kwargs):
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# --- pools ------------------------------------------------------------------------------------------------------


class PoolListCreateView(generics.ListCreateAPIView):
    """Serial pools visible to you, with their counts; POST creates a generated pool (or an empty list pool)."""

    serializer_class = PoolSerializer
    queryset = SerialPool.objects.none()

    def get_queryset(self):
        filters = _validated(PoolFilterSerializer, self.request.query_params)
        return selectors.list_pools(user=self.request.user, filters=filters)

    @extend_schema(summary="List serial pools with their counts", parameters=[PoolFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Create a serial pool",
        request=PoolCreateSerializer,
        responses={201: PoolSerializer, 400: _400},
    )
    def post(self, request, *args, **kwargs):
        data = _validated(PoolCreateSerializer, request.data)
        user = request.user
        source = data.pop("source")
        product = prefix = None
        if data.get("product") is not None:
            try:
                product = masterdata_selectors.get_product(user=user, pk=data["product"])
            except NotFound:
                raise serializers.ValidationError(
                    {"product": f"No product with id {data['product']} is visible to you."}
                ) from None
        else:
            prefix = (
                CompanyPrefix.objects.select_related("company")
                .filter(company__in=masterdata_selectors.list_companies(user=user), prefix=data["sscc_prefix"])
                .first()
            )
            if prefix is None:
                raise serializers.ValidationError(
                    {"sscc_prefix": f"No company prefix {data['sscc_prefix']} is registered to a company you can see."}
                )
        owner = product.owner if product is not None else prefix.company
        if source == SerialPool.Source.GENERATOR:
            pool = create_generated_pool(
                owner=owner,
                actor=user,
                product=product,
                sscc_prefix=prefix,
                extension_digit=data.get("extension_digit"),
                name=data["name"],
                alphabet=data.get("alphabet"),
                length=data.get("length"),
                no_leading_zero=data["no_leading_zero"],
                randomised=data["randomised"],
                initial_fill=data["initial_fill"],
                min_available=data.get("min_available"),
                max_available=data.get("max_available"),
                max_per_request=data.get("max_per_request"),
            )
        else:
            unsupported = sorted({"min_available", "max_available", "max_per_request"} & data.keys())
            if unsupported:
                raise serializers.ValidationError(
                    {unsupported[0]: "Set this on a list pool after creating it (in the admin)."}
                )
            pool = create_list_pool(owner=owner, actor=user, product=product, source=source, name=data["name"])
        pool = selectors.get_pool(user=user, pk=pool.pk)
        return Response(PoolSerializer(pool).data, status=status.HTTP_201_CREATED)


class PoolDetailView(generics.RetrieveAPIView):
    serializer_class = PoolSerializer
    queryset = SerialPool.objects.none()

    def get_object(self):
        return selectors.get_pool(user=self.request.user, pk=self.kwargs["pk"])

    @extend_schema(summary="Get one serial pool with its counts", responses={200: PoolSerializer, 404: _404})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class PoolCountsView(generics.GenericAPIView):
    serializer_class = PoolCountsSerializer
    queryset = SerialPool.objects.none()
    pagination_class = None

    @extend_schema(
        summary="Filled, assigned and available serials per product code and source",
        parameters=[PoolFilterSerializer],
        responses={200: PoolCountsSerializer(many=True)},
    )
    def get(self, request):
        filters = _validated(PoolFilterSerializer, request.query_params)
        rows = selectors.count_pools_by_source(user=request.user, filters=filters)
        return Response(PoolCountsSerializer(rows, many=True).data)


class PoolFillView(generics.GenericAPIView):
    serializer_class = FillSerializer
    queryset = PoolFill.objects.none()

    @extend_schema(
        summary="Raise a generated pool's ceiling (its serials become Available)",
        request=FillSerializer,
        responses={200: PoolSerializer, 400: _400, 404: _404},
    )
    def post(self, request, pk: int):
        pool = selectors.get_pool(user=request.user, pk=pk)
        data = _validated(FillSerializer, request.data)
        fill_pool(pool=pool, quantity=data["quantity"], actor=request.user, reason=data["reason"])
        return Response(PoolSerializer(selectors.get_pool(user=request.user, pk=pk)).data)


# --- allocations ------------------------------------------------------------------------------------------------


class AllocateView(generics.GenericAPIView):
    serializer_class = AllocateSerializer
    queryset = Allocation.objects.none()
    throttle_classes = RATE_LIMITS
    throttle_scope = "allocation"

    @extend_schema(
        summary="Allocate serials from a pool (idempotent by request_id)",
        request=AllocateSerializer,
        responses={
            201: AllocationSerializer,
            200: OpenApiResponse(AllocationSerializer, description="A repeated request_id: the first allocation"),
            400: _400,
            404: _404,
            409: OpenApiResponse(
                description="Pool exhausted (details.available says how many are left), or the request_id was used "
                "with other parameters"
            ),
        },
    )
    def post(self, request, pk: int):
        pool = selectors.get_pool(user=request.user, pk=pk)
        data = _validated(AllocateSerializer, request.data)
        replay = selectors.allocation_exists(pool=pool, request_id=data["request_id"])
        allocation = allocate_serials(pool=pool, actor=request.user, **data)
        body = AllocationSerializer(selectors.get_allocation(user=request.user, pk=allocation.pk)).data
        return Response(body, status=status.HTTP_200_OK if replay else status.HTTP_201_CREATED)


class AllocationListView(generics.ListAPIView):
    serializer_class = AllocationSerializer
    queryset = Allocation.objects.none()

    def get_queryset(self):
        filters = _validated(AllocationFilterSerializer, self.request.query_params)
        return selectors.list_allocations(user=self.request.user, filters=filters)

    @extend_schema(summary="List allocations, newest first", parameters=[AllocationFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class AllocationDetailView(generics.RetrieveAPIView):
    serializer_class = AllocationSerializer
    queryset = Allocation.objects.none()

    def get_object(self):
        return selectors.get_allocation(user=self.request.user, pk=self.kwargs["pk"])

    @extend_schema(summary="Get one allocation with its index ranges", responses={200: AllocationSerializer, 404: _404})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ReleaseView(generics.GenericAPIView):
    serializer_class = ReleaseInputSerializer
    queryset = Release.objects.none()

    @extend_schema(
        summary="Release unused serials of an allocation back to Available",
        request=ReleaseInputSerializer,
        responses={201: ReleaseSerializer, 400: _400, 404: _404, 409: _409},
    )
    def post(self, request, pk: int):
        allocation = selectors.get_allocation(user=request.user, pk=pk)
        data = _validated(ReleaseInputSerializer, request.data)
        indices = indices_of_serials(allocation.pool, data["serials"]) if "serials" in data else None
        release = release_serials(allocation=allocation, actor=request.user, reason=data["reason"], indices=indices)
        return Response(ReleaseSerializer(release).data, status=status.HTTP_201_CREATED)


# --- getting the serials out --------------------------------------------------------------------------------------

_FILE_RESPONSES = {
    (200, "text/csv"): OpenApiTypes.BINARY,
    (200, "application/json"): OpenApiTypes.BINARY,
    (200, "text/plain"): OpenApiTypes.BINARY,
}


class SerialListView(generics.GenericAPIView):
    """The allocation's serials as a streamed file. Allocations larger than SERIAL_STREAM_MAX answer 409: create an
    export job instead. Every download is recorded in the access log with its row count and SHA-256."""

    serializer_class = SerialListQuerySerializer
    queryset = Allocation.objects.none()
    content_negotiation_class = FileContentNegotiation
    throttle_classes = RATE_LIMITS
    throttle_scope = "export"

    @extend_schema(
        summary="Download an allocation's serials (streamed)",
        parameters=[SerialListQuerySerializer],
        responses={**_FILE_RESPONSES, 400: _400, 404: _404, 409: _409},
    )
    def get(self, request, pk: int):
        allocation = selectors.get_allocation(user=request.user, pk=pk)
        query = _validated(SerialListQuerySerializer, request.query_params)
        download = start_serial_download(
            allocation=allocation,
            format=query["format"],
            notation=query["notation"],
            user=request.user,
            request=request,
        )
        response = StreamingHttpResponse(download.chunks, content_type=download.content_type)
        response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
        response["Content-Length"] = str(download.size)
        response["X-Serial-Count"] = str(download.rows)
        response["X-Content-SHA256"] = download.sha256
        return response


class ExportCreateView(generics.GenericAPIView):
    serializer_class = ExportCreateSerializer
    queryset = ExportJob.objects.none()
    throttle_classes = RATE_LIMITS
    throttle_scope = "export"

    @extend_schema(
        summary="Materialise an allocation's serials into a file in the background",
        request=ExportCreateSerializer,
        responses={202: ExportJobSerializer, 400: _400, 404: _404},
    )
    def post(self, request, pk: int):
        allocation = selectors.get_allocation(user=request.user, pk=pk)
        data = _validated(ExportCreateSerializer, request.data)
        job = create_export(
            allocation=allocation, format=data["format"], notation=data["notation"], actor=request.user, request=request
        )
        job = selectors.get_export(user=request.user, pk=job.pk)
        response = Response(ExportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
        response["Location"] = reverse("api-v1:export-detail", args=[job.pk])
        return response


class ExportListView(generics.ListAPIView):
    serializer_class = ExportJobSerializer
    queryset = ExportJob.objects.none()

    def get_queryset(self):
        return selectors.list_exports(user=self.request.user)

    @extend_schema(summary="List export jobs, newest first")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ExportDetailView(generics.RetrieveAPIView):
    serializer_class = ExportJobSerializer
    queryset = ExportJob.objects.none()

    def get_object(self):
        return selectors.get_export(user=self.request.user, pk=self.kwargs["pk"])

    @extend_schema(
        summary="An export job's status, progress and download link", responses={200: ExportJobSerializer, 404: _404}
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ExportDownloadView(generics.GenericAPIView):
    serializer_class = ExportJobSerializer
    queryset = ExportJob.objects.none()
    content_negotiation_class = FileContentNegotiation
    throttle_classes = RATE_LIMITS
    throttle_scope = "export"

    @extend_schema(
        summary="Download a finished export's file",
        responses={**_FILE_RESPONSES, 404: _404, 409: _409},
    )
    def get(self, request, pk: int):
        job = selectors.get_export(user=request.user, pk=pk)
        download = open_export_download(job=job, user=request.user, request=request)
        response = FileResponse(
            download.file, as_attachment=True, filename=download.filename, content_type=download.content_type
        )
        response["X-Serial-Count"] = str(job.written)
        response["X-Content-SHA256"] = job.sha256
        return response


# --- imports ------------------------------------------------------------------------------------------------------


class ImportCreateView(generics.GenericAPIView):
    serializer_class = ImportCreateSerializer
    queryset = ImportJob.objects.none()
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        summary="Upload a serial list into a list pool; the import runs in the background",
        request={"multipart/form-data": ImportCreateSerializer},
        responses={202: ImportJobSerializer, 400: _400, 404: _404},
    )
    def post(self, request, pk: int):
        pool = selectors.get_pool(user=request.user, pk=pk)
        data = _validated(ImportCreateSerializer, request.data)
        job = start_import(pool=pool, layout=data["layout"], uploaded_file=data["file"], actor=request.user)
        job = selectors.get_import(user=request.user, pk=job.pk)
        return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ImportDetailView(generics.RetrieveAPIView):
    serializer_class = ImportJobSerializer
    queryset = ImportJob.objects.none()

    def get_object(self):
        return selectors.get_import(user=self.request.user, pk=self.kwargs["pk"])

    @extend_schema(
        summary="An import job's status, counts and error report", responses={200: ImportJobSerializer, 404: _404}
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


# --- lookup -------------------------------------------------------------------------------------------------------


class LookupView(generics.GenericAPIView):
    serializer_class = LookupResultSerializer
    queryset = SerialPool.objects.none()

    @extend_schema(
        summary="Which pool, index, allocation and status is this serial (or SSCC)?",
        parameters=[LookupQuerySerializer],
        responses={200: LookupResultSerializer, 400: _400, 404: _404},
    )
    def get(self, request):
        query = _validated(LookupQuerySerializer, request.query_params)
        if query.get("sscc"):
            result, product_code, serial = lookup_sscc(sscc=query["sscc"]), "", query["sscc"]
        else:
            product_code, serial = query["product_code"], query["serial"]
            result = lookup_serial(product_code=product_code, serial=serial)
        if not selectors.is_pool_visible(user=request.user, pool=result.pool):
            # Same answer as for a serial that does not exist: its existence is not the caller's business.
            raise UnknownSerial(
                f"Serial {serial!r} is in no pool visible to you. Check the product code and the serial.",
                field="sscc" if query.get("sscc") else "serial",
            )
        pool, allocation, pack = result.pool, result.allocation, result.pack
        body = {
            "product_code": product_code,
            "serial": serial,
            "pool": {"id": pool.pk, "name": pool.name, "kind": pool.kind, "source": pool.source},
            "index": result.index,
            "status": result.status,
            "allocation": None
            if allocation is None
            else {
                "id": allocation.pk,
                "request_id": allocation.request_id,
                "purpose": allocation.purpose,
                "reference": allocation.reference,
            },
            "pack": None if pack is None else {"status": pack.status, "commissioned_at": pack.commissioned_at},
        }
        return Response(LookupResultSerializer(body).data)
