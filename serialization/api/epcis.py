"""The EPCIS 2.0 REST binding (GS1, ``standards/epcis/rest-bindings-openapi.yaml``): capture and the events query.

* ``POST /api/v1/epcis/capture/`` — an EPCIS 2.0 JSON / JSON-LD (``application/json``, ``application/ld+json``) or
  EPCIS 1.2 / 2.0 XML (``application/xml``, ``text/xml``) document. **202** with the capture job (and its URL in
  ``Location``); **400** malformed (line and column where the parser knows them), **409** events captured before,
  **413** too large, **415** another media type. Header ``GS1-Capture-Error-Behaviour``: ``rollback`` (default, all or
  nothing) or ``proceed`` (apply the good events, report the bad). Needs ``serialization.add_linereport`` (the "Line
  system" role): each event is applied as a line report, through the same rules.
* ``GET /api/v1/epcis/capture/{id}/`` — the capture job (the binding's CaptureJob: ``running``, ``success``,
  ``errors`` with one RFC 7807 problem per refused event), plus each event's outcome.
* ``GET /api/v1/epcis/events/`` — an EPCIS query document of the events (from line reports and from capture) on the
  orders you may see; filters and pagination as in the binding (``perPage``, ``nextPageToken``, ``Link: …;
  rel="next"``). The EPCs of a page count as serials handed out (``audit.pilferage``: logged as a download, refused
  past the account's hourly limit).

Reading needs ``serialization.view_linereport``; capture jobs of other companies answer 404.
"""

from dataclasses import dataclass

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from audit.pilferage import serial_handout
from serialization.epcis.capture import (
    MEDIA_TYPES,
    CaptureDocumentError,
    CaptureTooLarge,
    max_capture_bytes,
    max_capture_events,
)
from serialization.epcis.query import MAX_PER_PAGE, parse_query, query_events
from serialization.models import CaptureJob, LineReport
from serialization.selectors import get_capture_job
from serialization.services.epcis_capture import (
    ERROR_BEHAVIOUR_HEADER,
    SUPPORTED_EVENTS,
    error_behaviour_from_header,
    start_capture,
)

EPCIS_VERSION_HEADERS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}


def capture_limit_headers() -> dict[str, str]:
    return {
        "GS1-EPCIS-Capture-Limit": str(max_capture_events()),
        "GS1-EPCIS-Capture-File-Size-Limit": str(max_capture_bytes()),
    }


# --- parsing the body -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawDocument:
    """The body as received, and which syntax its Content-Type says it is."""

    content: bytes
    format: str


class _EpcisDocumentParser(BaseParser):
    """The body as bytes, read straight from the stream up to the capture size limit (DRF's JSON parser would apply
    Django's 2.5 MB form limit, and parse what the capture module must parse safely itself)."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = max_capture_bytes()
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        too_large = CaptureTooLarge(
            f"The document has more than {limit:,} bytes, the most the capture interface takes "
            "(GS1-EPCIS-Capture-File-Size-Limit); split it into several documents."
        )
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_large
        content = stream.read(limit + 1) if stream is not None else b""
        if len(content) > limit:
            raise too_large
        return RawDocument(content=content, format=MEDIA_TYPES[self.media_type])


class JsonLdDocumentParser(_EpcisDocumentParser):
    media_type = "application/ld+json"


class JsonDocumentParser(_EpcisDocumentParser):
    media_type = "application/json"


class XmlDocumentParser(_EpcisDocumentParser):
    media_type = "application/xml"


class TextXmlDocumentParser(_EpcisDocumentParser):
    media_type = "text/xml"


# --- serializers ----------------------------------------------------------------------------------------------------

_PROBLEM = {
    "type": "object",
    "description": "An RFC 7807 problem: one per refused event (or one for the whole document).",
    "properties": {
        "type": {"type": "string", "example": "epcisException:ValidationException"},
        "title": {"type": "string"},
        "status": {
            "type": "integer",
            "description": "400 refused, 404 unknown event, 409 captured before, 422 rejected by the line-report rules",
        },
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The event's eventID, when it has one"},
        "event": {"type": "integer", "description": "1-based position of the event in the document"},
        "eventID": {"type": "string", "nullable": True},
        "problems": {
            "type": "array",
            "description": "The line-report rules' problems (line n: the n-th EPC of the event, or its parent)",
            "items": {"type": "object", "additionalProperties": True},
        },
        "problemCount": {"type": "integer"},
    },
    "required": ["type", "title", "status", "detail"],
}
_OUTCOME = {
    "type": "object",
    "properties": {
        "event": {"type": "integer"},
        "eventID": {"type": "string", "description": "As sent, or assigned (urn:uuid) for an event sent without"},
        "status": {
            "type": "string",
            "description": "applied, declared (an error declaration applied), refused, duplicate (captured before), "
            "rolled_back (fine, but the document was rolled back)",
        },
        "lineReport": {"type": "string", "nullable": True, "description": "The line report the event became"},
    },
}


@extend_schema_field({"type": "array", "items": _PROBLEM})
class ProblemsField(serializers.JSONField):
    pass


@extend_schema_field({"type": "array", "items": _OUTCOME})
class OutcomesField(serializers.JSONField):
    pass


class CaptureJobSerializer(serializers.ModelSerializer):
    """The binding's CaptureJob, plus this system's counts and per-event outcomes."""

    captureID = serializers.CharField(source="pk", read_only=True)
    running = serializers.SerializerMethodField()
    success = serializers.SerializerMethodField()
    captureErrorBehaviour = serializers.CharField(source="error_behaviour", read_only=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    finishedAt = serializers.DateTimeField(source="finished_at", read_only=True, allow_null=True)
    state = serializers.CharField(source="status", read_only=True, help_text="running, succeeded or failed")
    eventCount = serializers.IntegerField(source="event_count", read_only=True)
    appliedCount = serializers.IntegerField(source="applied_count", read_only=True)
    errorCount = serializers.IntegerField(source="error_count", read_only=True)
    errors = ProblemsField(read_only=True)
    events = OutcomesField(read_only=True)

    class Meta:
        model = CaptureJob
        fields = [
            "captureID",
            "running",
            "success",
            "captureErrorBehaviour",
            "createdAt",
            "finishedAt",
            "state",
            "eventCount",
            "appliedCount",
            "errorCount",
            "errors",
            "events",
        ]
        read_only_fields = fields

    def get_running(self, job: CaptureJob) -> bool:
        return job.status == CaptureJob.Status.RUNNING

    def get_success(self, job: CaptureJob) -> bool:
        return job.error_count == 0


# --- views ----------------------------------------------------------------------------------------------------------

_DOCUMENT_BODY = {
    "application/ld+json": OpenApiTypes.OBJECT,
    "application/json": OpenApiTypes.OBJECT,
    "application/xml": OpenApiTypes.STR,
    "text/xml": OpenApiTypes.STR,
}


class CaptureView(generics.GenericAPIView):
    """Capture EPCIS events (GS1 REST binding ``POST /capture``).

    Each event becomes one line report, applied by the same rules as ``POST /api/v1/line-reports/`` (see
    ``serialization.services.epcis_capture`` for the mapping). The packaging order of an event is, first that
    applies: a ``bizTransactionList`` entry of type ``prodorder`` naming the order number (bare, or as the last
    segment of a URN/URL); the order that commissioned the event's packs (for an aggregation: its parent); the order
    whose allocation holds the serial or SSCC; for a commissioning, the batch named by ilmd ``cbvmda:lotNumber`` and the
    units' GTIN (its one open order, or the one on the line the readPoint/bizLocation SGLN names).
    """

    queryset = LineReport.objects.none()  # ModelPermissions: POST needs serialization.add_linereport
    serializer_class = CaptureJobSerializer
    parser_classes = [JsonLdDocumentParser, JsonDocumentParser, XmlDocumentParser, TextXmlDocumentParser]

    @extend_schema(
        summary="Capture EPCIS events (EPCIS 2.0 JSON/JSON-LD, EPCIS 1.2/2.0 XML)",
        description=(
            "Answers 202 with the capture job; poll the URL in `Location`. Applied events: "
            f"{SUPPORTED_EVENTS}. Others (TransformationEvent, sensor data, other bizSteps, unknown products…) are "
            "refused with a reason in the job's `errors`.\n\n"
            "**Which packaging order.** An event belongs to the order named by a `bizTransactionList` entry of type "
            "`prodorder` (the order number, bare or as the last segment of a URN/URL, e.g. "
            "`urn:epcglobal:cbv:bt:5412345000013:PO-0042`); without one, to the order that commissioned its packs "
            "(an aggregation: its parentID), else the order whose allocation holds its serials or SSCCs; a "
            "commissioning also by ilmd `cbvmda:lotNumber` + GTIN (the batch's one open order, or the one on the "
            "line its readPoint/bizLocation SGLN names). Lot and expiry in ilmd must be the batch's. A container's "
            "level is the one its SSCC was requested for on the order.\n\n"
            "**Captured twice** (same eventID, or same content — also across JSON and XML): 409 for the whole "
            "document with `rollback`, or when every event is a repeat; with `proceed` only that event is refused "
            "(status 409 in the job).\n\n"
            "**Error declarations** (`errorDeclaration` on a repeat of a captured event) undo that event through the "
            "same rules (a commissioning by decommissioning its packs as line_reject; an aggregation by unpacking; an "
            "unpacking by packing back) and mark it erroneous; shipping and decommissioning cannot be undone. They "
            "are applied before the document's other events, so corrective events can follow in the same document."
        ),
        request=_DOCUMENT_BODY,
        parameters=[
            OpenApiParameter(
                ERROR_BEHAVIOUR_HEADER,
                str,
                location=OpenApiParameter.HEADER,
                enum=["rollback", "proceed"],
                description="rollback (default): the whole document or nothing. proceed: apply the good events.",
            ),
            OpenApiParameter(
                "Location",
                str,
                location=OpenApiParameter.HEADER,
                response=[202],
                description="URL of the capture job",
            ),
        ],
        responses={
            202: OpenApiResponse(CaptureJobSerializer, description="Accepted: the capture job (running)"),
            400: OpenApiResponse(
                description="Malformed document (line/column or JSON path), or an unknown header value"
            ),
            409: OpenApiResponse(description="Events of the document were captured before; nothing was captured"),
            413: OpenApiResponse(description="More bytes or events than GS1-EPCIS-Capture-File-Size-Limit / -Limit"),
            415: OpenApiResponse(description="Not JSON, JSON-LD or XML"),
        },
    )
    def post(self, request):
        document = request.data
        if not isinstance(document, RawDocument) or not document.content.strip():
            raise CaptureDocumentError("The body is empty; send an EPCIS document (JSON, JSON-LD or XML).")
        job = start_capture(
            document=document.content,
            format=document.format,
            error_behaviour=error_behaviour_from_header(request.headers.get(ERROR_BEHAVIOUR_HEADER)),
            actor=request.user,
        )
        location = request.build_absolute_uri(reverse("api-v1:epcis-capture-job", kwargs={"pk": job.pk}))
        headers = {"Location": location, **EPCIS_VERSION_HEADERS, **capture_limit_headers()}
        return Response(CaptureJobSerializer(job).data, status=status.HTTP_202_ACCEPTED, headers=headers)

    def options(self, request, *args, **kwargs):
        """Discovery (the binding's OPTIONS /capture): the limits and versions as headers."""
        response = super().options(request, *args, **kwargs)
        for name, value in {**EPCIS_VERSION_HEADERS, **capture_limit_headers()}.items():
            response[name] = value
        response[ERROR_BEHAVIOUR_HEADER] = "rollback, proceed"
        return response


class CaptureJobView(generics.RetrieveAPIView):
    queryset = LineReport.objects.none()  # ModelPermissions: reading needs serialization.view_linereport
    serializer_class = CaptureJobSerializer

    def get_object(self):
        return get_capture_job(user=self.request.user, pk=self.kwargs["pk"])

    @extend_schema(
        summary="Get an EPCIS capture job (GS1 REST binding GET /capture/{captureID})",
        responses={
            200: CaptureJobSerializer,
            404: OpenApiResponse(description="No such capture job, or one of another company"),
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


def _list_parameter(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, str, description=description + " Several values: separate them with `|`.")


class EventsView(generics.GenericAPIView):
    queryset = LineReport.objects.none()  # ModelPermissions: reading needs serialization.view_linereport

    @extend_schema(
        summary="Query EPCIS events (GS1 REST binding GET /events)",
        description=(
            "An EPCISQueryDocument of the events of the line reports (posted by lines or captured as EPCIS) on the "
            "packaging orders you may see, in the order they were applied. Other parameters of the binding are "
            f"refused with 400. `perPage` is capped at {MAX_PER_PAGE}; while more events remain, the `Link` header "
            'holds the next page\'s URL (`rel="next"`) with its `nextPageToken`.'
        ),
        parameters=[
            _list_parameter("eventType", "ObjectEvent, AggregationEvent."),
            OpenApiParameter("GE_eventTime", OpenApiTypes.DATETIME, description="eventTime at or after (with zone)"),
            OpenApiParameter("LT_eventTime", OpenApiTypes.DATETIME, description="eventTime before (with zone)"),
            _list_parameter("EQ_action", "ADD, OBSERVE, DELETE."),
            _list_parameter("EQ_bizStep", "CBV business steps as bare words (commissioning, shipping…)."),
            _list_parameter("EQ_disposition", "CBV dispositions as bare words (active, in_transit…)."),
            _list_parameter(
                "MATCH_epc",
                "EPCs in epcList/childEPCs: SGTIN/SSCC URNs or Digital Links, or patterns "
                "(urn:epc:idpat:sgtin:0614141.107346.*).",
            ),
            _list_parameter("MATCH_parentID", "EPCs (or patterns) of the parentID."),
            _list_parameter("MATCH_anyEPC", "EPCs (or patterns) in epcList, childEPCs or parentID."),
            OpenApiParameter("perPage", int, description=f"Events per page (default 30, at most {MAX_PER_PAGE})"),
            OpenApiParameter("nextPageToken", str, description="From the previous page's Link header"),
            OpenApiParameter(
                "Link", str, location=OpenApiParameter.HEADER, response=[200], description='<url>; rel="next"'
            ),
        ],
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="An EPCIS 2.0 EPCISQueryDocument (JSON-LD)"),
            400: OpenApiResponse(description="A parameter that is unknown or malformed (named in the error)"),
        },
    )
    def get(self, request):
        params = {name: request.query_params.getlist(name) for name in request.query_params}
        query = parse_query(params)
        page = query_events(user=request.user, query=query)
        # The page hands out serials (its EPCs): counted against the account's hourly limit and logged, like any
        # serial download.
        with serial_handout(user=request.user, request=request, counted=page.epcs) as handout:
            handout.record(
                kind="download",
                target="EPCIS events query",
                quantity=page.epcs,
                details={"events": page.events, "filters": query.filters, "page_after": list(query.after or ())},
            )
        headers = dict(EPCIS_VERSION_HEADERS)
        if page.next_token is not None:
            query_string = request.query_params.copy()
            query_string.setlist("nextPageToken", [page.next_token])
            url = request.build_absolute_uri(f"{request.path}?{query_string.urlencode()}")
            headers["Link"] = f'<{url}>; rel="next"'
        return Response(page.document, headers=headers, content_type="application/ld+json")
