"""The outbox's API for ERP systems: list the submissions you may see, read one, and create one for a batch and a
market — built and validated at once; a report that fails its checks answers 400 with every problem by field:

    {"error": {"code": "report_invalid", "message": "…",
               "fields": {"batch.expiry": ["batch L1: expiry 2612 is not YYMMDD — …"], …},
               "details": {"problems": [{"field": "batch.expiry", "message": "…"}, …]}}}

Reading needs ``view_submission``, creating ``add_submission``; submissions are scoped to the caller's company
(``serialization.outbox_selectors``) and batches through the batch reads, so anything else is 404.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response

from audit.api.exceptions import error_response
from audit.exceptions import NotFound
from masterdata.models import Market
from serialization import outbox_selectors, selectors
from serialization.models import LineReport
from serialization.outbox_models import Submission
from serialization.reports import ReportRefused
from serialization.services import outbox

_400 = OpenApiResponse(
    description='The report failed its checks: {"error": {"code": "report_invalid", "fields": {field: [problem]}, '
    '"details": {"problems": [{"field", "message"}]}}}; nothing was queued'
)
_409 = OpenApiResponse(description="The batch already has a live submission to the market")


class SubmissionSerializer(serializers.ModelSerializer):
    market = serializers.CharField(source="market.code")
    batch_lot = serializers.CharField(source="batch.lot")
    product_code = serializers.CharField(source="batch.product.product_code")
    shipping_report = serializers.CharField(source="shipping_report.report_id", allow_null=True, default=None)
    endpoint = serializers.CharField(source="endpoint.name")

    class Meta:
        model = Submission
        fields = [
            "id",
            "market",
            "kind",
            "batch",
            "batch_lot",
            "product_code",
            "shipping_report",
            "endpoint",
            "status",
            "attempts",
            "next_attempt_at",
            "last_attempt_at",
            "last_error",
            "response_status",
            "response_body",
            "sha256",
            "size",
            "items",
            "created_at",
            "updated_at",
            "finished_at",
        ]
        read_only_fields = fields


class SubmissionFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Submission.Status.choices, required=False)
    market = serializers.CharField(required=False, help_text="Market code, e.g. EU")
    batch = serializers.IntegerField(required=False)
    kind = serializers.ChoiceField(choices=Submission.Kind.choices, required=False)


class SubmissionCreateSerializer(serializers.Serializer):
    batch = serializers.IntegerField(help_text="Id of the batch to report")
    market = serializers.SlugRelatedField(
        slug_field="code", queryset=Market.objects.all(), help_text="Market code: EU, US, RU, SA, PK…"
    )
    shipping_report = serializers.CharField(
        required=False, allow_blank=True, help_text="US DSCSA: the report id of the shipping report to send"
    )


class SubmissionListCreateView(generics.ListCreateAPIView):
    """Submissions you may see, newest first; POST builds, validates and queues a market report for a batch."""

    serializer_class = SubmissionSerializer
    queryset = Submission.objects.none()

    def get_queryset(self):
        serializer = SubmissionFilterSerializer(data=self.request.query_params)
        serializer.is_valid(raise_exception=True)
        return outbox_selectors.list_submissions(user=self.request.user, filters=serializer.validated_data)

    @extend_schema(summary="List submissions to regulators and partners", parameters=[SubmissionFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Build, validate and queue a market report for a batch",
        request=SubmissionCreateSerializer,
        responses={201: SubmissionSerializer, 400: _400, 409: _409},
    )
    def post(self, request, *args, **kwargs):
        serializer = SubmissionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            batch = selectors.get_batch(user=request.user, pk=data["batch"])
        except NotFound as exc:
            raise serializers.ValidationError({"batch": exc.message}) from None
        shipping_report = None
        if data.get("shipping_report"):
            shipping_report = LineReport.objects.filter(
                report_id=data["shipping_report"], kind=LineReport.Kind.SHIPPING, order__batch=batch
            ).first()
            if shipping_report is None:
                raise serializers.ValidationError(
                    {"shipping_report": f"Batch {batch.lot} has no shipping report {data['shipping_report']!r}."}
                )
        try:
            submission = outbox.create_submission(
                market=data["market"], batch=batch, shipping_report=shipping_report, actor=request.user, request=request
            )
        except ReportRefused as exc:
            fields: dict[str, list[str]] = {}
            for problem in exc.problems:
                fields.setdefault(problem.field, []).append(problem.message)
            return error_response(status.HTTP_400_BAD_REQUEST, exc.code, exc.message, fields, exc.details)
        body = SubmissionSerializer(outbox_selectors.get_submission(user=request.user, pk=submission.pk)).data
        return Response(body, status=status.HTTP_201_CREATED)


class SubmissionDetailView(generics.RetrieveAPIView):
    """One submission: its status, attempts, next try and the receiver's last answer."""

    serializer_class = SubmissionSerializer
    queryset = Submission.objects.none()

    def get_object(self):
        submission = outbox_selectors.get_submission(user=self.request.user, pk=self.kwargs["pk"])
        self.check_object_permissions(self.request, submission)
        return submission
