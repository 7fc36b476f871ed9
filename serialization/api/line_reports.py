"""Line reports in the API: a packaging line (L3) posts what it did; the back-office applies it all-or-nothing.

``POST /api/v1/line-reports/`` ``{report_id, kind, order, lines, occurred_at?}`` answers

* **201** with the stored report when it was applied (``status: applied``, ``result.counts``);
* **422** with the stored report when it was rejected (``status: rejected``, ``result.errors`` lists every problem
  with its 1-based line number, ``result.error_count`` counts them) — nothing was changed;
* **200** with the stored report, unchanged, when ``report_id`` was sent before with the same content (a retry);
* **409** when ``report_id`` was used before with other content, or the order is closed;
* **400** when the envelope is malformed (unknown kind, no lines, an order you cannot see) — nothing is stored;
* **413** past 256 MB of JSON (a million-unit report is ~60 MB).

``GET /api/v1/line-reports/{report_id}/`` returns a stored report. Posting needs ``serialization.add_linereport``
(the "Line system" role), reading ``view_linereport``; reports and orders of other companies are not visible (400 for
an order named in a report, 404 for a report).

The envelope is checked here; the lines are checked by ``serialization.services.line_reports`` — in bulk, with every
problem listed — so the serializer does not validate a million line objects one by one.
"""

import json

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, generics, serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from serialization import cbv
from serialization.models import LineReport
from serialization.services.line_reports import (
    MAX_LINES,
    apply_line_report,
    find_order_for_report,
    get_line_report,
)

# A million-unit report is ~60 MB of JSON; Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB), which DRF's JSONParser
# applies by reading request.body, is meant for forms. This endpoint reads the stream itself, up to its own bound.
MAX_REPORT_BYTES = 256 * 1024 * 1024


class ReportTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "report_too_large"
    default_detail = f"A line report is at most {MAX_REPORT_BYTES // 1024 // 1024} MB of JSON; split it."


class LineReportParser(BaseParser):
    """JSON read straight from the request stream, bounded by MAX_REPORT_BYTES (not a JSONParser subclass: DRF
    reads ``request.body`` — and so applies the form-upload limit — for those)."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > MAX_REPORT_BYTES:
            raise ReportTooLarge()
        data = stream.read(MAX_REPORT_BYTES + 1) if stream is not None else b""
        if len(data) > MAX_REPORT_BYTES:
            raise ReportTooLarge()
        try:
            encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
            return json.loads(data.decode(encoding))
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(f"The body is not valid JSON: {exc}") from None


# --- schemas of the lines ---------------------------------------------------------------------------------------

_UNIT = {
    "type": "object",
    "description": "A unit: its product code (GTIN/NTIN) and serial.",
    "properties": {
        "product_code": {"type": "string", "maxLength": 14, "example": "09521234543213"},
        "serial": {"type": "string", "minLength": 1, "maxLength": 20, "example": "X7KQ2M9P4T1B"},
    },
    "required": ["product_code", "serial"],
    "additionalProperties": False,
}
_CONTAINER = {
    "type": "object",
    "description": "A container (bundle, case, pallet): its SSCC.",
    "properties": {"sscc": {"type": "string", "pattern": "^[0-9]{18}$", "example": "395212340000000017"}},
    "required": ["sscc"],
    "additionalProperties": False,
}
_REASON = {"type": "string", "enum": list(cbv.DECOMMISSION_REASONS)}
_PACKS = {"type": "array", "minItems": 1, "items": {"oneOf": [_UNIT, _CONTAINER]}}


def _line(title: str, properties: dict, required: list[str]) -> dict:
    return {
        "type": "object",
        "title": title,
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_INTO = {
    "parent_sscc": {
        **_CONTAINER["properties"]["sscc"],
        "description": "The container it is commissioned straight into: commissioned on another line of this report "
        "or before",
    }
}

LINE_SCHEMAS = [
    _line("commissioning: a unit", {**_UNIT["properties"], **_INTO}, ["product_code", "serial"]),
    _line(
        "commissioning: a container",
        {
            **_CONTAINER["properties"],
            "level": {"type": "integer", "enum": [1, 2, 3], "description": "1 bundle, 2 case, 3 pallet"},
            **_INTO,
        },
        ["sscc", "level"],
    ),
    _line("decommissioning: a unit", {**_UNIT["properties"], "reason": _REASON}, ["product_code", "serial", "reason"]),
    _line("decommissioning: a container", {**_CONTAINER["properties"], "reason": _REASON}, ["sscc", "reason"]),
    _line(
        "aggregation (or unpacking of the children named)",
        {"parent_sscc": _CONTAINER["properties"]["sscc"], "children": _PACKS},
        ["parent_sscc", "children"],
    ),
    _line("unpacking: everything in the container", {"parent_sscc": _CONTAINER["properties"]["sscc"]}, ["parent_sscc"]),
    _line("shipping: a unit", _UNIT["properties"], ["product_code", "serial"]),
    _line("shipping: a container (and everything in it)", _CONTAINER["properties"], ["sscc"]),
]

_LINES_DESCRIPTION = (
    "The report's lines (1 to {max:,}), one object each; its shape depends on `kind`:\n\n"
    "* `commissioning`: `{{product_code, serial}}` for a unit of the order's product, `{{sscc, level}}` for a "
    "container (level 1 bundle, 2 case, 3 pallet). The serial must be allocated to the order and not commissioned "
    "before. Either may add `parent_sscc`: the pack is commissioned straight into that container (commissioned on "
    "another line of the report or before, of a higher level, with room for it), so one report can carry units "
    "into cases onto pallets.\n"
    "* `decommissioning`: a unit or container plus `reason` ({reasons}). A unit leaves its container; a container "
    "must be empty, or emptied by the same report.\n"
    "* `aggregation`: `{{parent_sscc, children: [unit | {{sscc}}, …]}}`. Children are commissioned, in no other "
    "container, of a lower level than the parent; the parent holds at most the product's packaging-level "
    "quantity.\n"
    "* `unpacking`: `{{parent_sscc}}` takes everything out; `{{parent_sscc, children: […]}}` only the children named.\n"
    "* `shipping`: a unit or container that is in no container; everything in it ships with it.\n\n"
    "A report is applied whole or not at all: any problem rejects it, with every problem listed by line."
).format(max=MAX_LINES, reasons=", ".join(cbv.DECOMMISSION_REASONS))


@extend_schema_field(
    {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_LINES,
        "items": {"oneOf": LINE_SCHEMAS},
        "description": _LINES_DESCRIPTION,
    }
)
class LinesField(serializers.Field):
    """A non-empty JSON list of at most MAX_LINES objects; their shapes are checked by the service, in bulk."""

    default_error_messages = {
        "not_a_list": "Give the lines as a JSON list of objects.",
        "empty": "A report needs at least one line.",
        "too_many": "A report has at most {max:,} lines; this one has {count:,}. Split it into several reports.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("not_a_list")
        if not data:
            self.fail("empty")
        if len(data) > MAX_LINES:
            self.fail("too_many", max=MAX_LINES, count=len(data))
        return data

    def to_representation(self, value):
        return value


_ERROR = {
    "type": "object",
    "properties": {
        "line": {"type": "integer", "description": "1-based line number"},
        "code": {"type": "string", "example": "already_commissioned"},
        "serial": {"type": "string", "description": "The serial or SSCC the problem is about"},
        "problem": {"type": "string"},
    },
    "required": ["line", "code", "serial", "problem"],
}


@extend_schema_field(
    {
        "type": "object",
        "description": "Applied: `counts` (what changed). Rejected: `errors` (every problem, in line order, at most "
        "1,000) and `error_count` (all of them).",
        "properties": {
            "counts": {"type": "object", "additionalProperties": True},
            "errors": {"type": "array", "items": _ERROR},
            "error_count": {"type": "integer"},
        },
    }
)
class ResultField(serializers.JSONField):
    pass


# The report kinds as an enum wrapped in allOf: a bare enum on a property named "kind" would share drf-spectacular's
# enum naming with SerialPool.kind and make the schema build warn (ENUM_NAME_OVERRIDES would be the settings fix).
@extend_schema_field(
    {
        "allOf": [{"type": "string", "enum": list(LineReport.Kind.values)}],
        "description": "What the line reports: " + ", ".join(LineReport.Kind.values),
    }
)
class KindField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=LineReport.Kind.choices, **kwargs)


# --- serializers --------------------------------------------------------------------------------------------------


class LineReportCreateSerializer(serializers.Serializer):
    report_id = serializers.CharField(
        max_length=LineReport._meta.get_field("report_id").max_length,
        help_text="The line's id for this report. Sending it again with the same content returns the first result; "
        "with other content it is refused (409).",
    )
    kind = KindField()
    order = serializers.CharField(max_length=40, help_text="The packaging order's number (or its id)")
    occurred_at = serializers.DateTimeField(
        required=False, help_text="When the line did it (default: when the report arrives)"
    )
    lines = LinesField()


class LineReportSerializer(serializers.ModelSerializer):
    order = serializers.SlugRelatedField(slug_field="number", read_only=True, help_text="Packaging order number")
    submitted_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    kind = KindField(read_only=True)
    result = ResultField(read_only=True)

    class Meta:
        model = LineReport
        fields = ["report_id", "kind", "order", "status", "lines", "result", "submitted_by", "received_at"]
        read_only_fields = fields


# --- views --------------------------------------------------------------------------------------------------------

_400 = OpenApiResponse(description='Malformed envelope: {"error": {"code", "message", "fields"}}; nothing stored')


class LineReportCreateView(generics.GenericAPIView):
    """Apply a line report all-or-nothing (idempotent by report_id)."""

    serializer_class = LineReportCreateSerializer
    queryset = LineReport.objects.none()
    parser_classes = [LineReportParser]  # JSON only: a form cannot carry the nested lines

    @extend_schema(
        summary="Report what a packaging line did (commissioning, decommissioning, aggregation, unpacking, shipping)",
        request=LineReportCreateSerializer,
        responses={
            201: OpenApiResponse(LineReportSerializer, description="Applied"),
            200: OpenApiResponse(LineReportSerializer, description="A repeated report_id: the first result"),
            422: OpenApiResponse(
                LineReportSerializer, description="Rejected: result.errors lists every problem; nothing changed"
            ),
            400: _400,
            409: OpenApiResponse(description="report_id used before with other content, or the order is closed"),
            413: OpenApiResponse(description="More than 256 MB of JSON: split the report"),
        },
    )
    def post(self, request):
        serializer = LineReportCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        order = find_order_for_report(user=request.user, reference=data["order"])
        report = apply_line_report(
            report_id=data["report_id"],
            kind=data["kind"],
            order=order,
            lines=data["lines"],
            actor=request.user,
            occurred_at=data.get("occurred_at"),
        )
        if report.replayed:
            code = status.HTTP_200_OK
        elif report.status == LineReport.Status.APPLIED:
            code = status.HTTP_201_CREATED
        else:
            code = status.HTTP_422_UNPROCESSABLE_ENTITY
        return Response(LineReportSerializer(report).data, status=code)


class LineReportDetailView(generics.RetrieveAPIView):
    serializer_class = LineReportSerializer
    queryset = LineReport.objects.none()

    def get_object(self):
        return get_line_report(user=self.request.user, report_id=self.kwargs["report_id"])

    @extend_schema(
        summary="Get a stored line report",
        responses={200: LineReportSerializer, 404: OpenApiResponse(description="No such report, or not visible")},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
