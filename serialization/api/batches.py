"""The API of production: batches (create, list, transition, reconcile, release) and packaging orders (create, list,
request serials, close). One view per operation: input serializer → service → output serializer.

Every batch or order in a URL is fetched through the scoped reads of ``serialization.services.batches``, so objects
outside the caller's company are 404. Permissions are model permissions: reading needs ``view_batch`` /
``view_packagingorder``; creating ``add_batch`` / ``add_packagingorder``; requesting serials ``add_allocation``;
transitions, reconciliation and release ``change_batch``; closing an order ``change_packagingorder``. Release also
needs the signer's password and a current authenticator code in the request, every time.
"""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.response import Response

from audit.api.permissions import ModelPermissions
from audit.exceptions import NotFound
from audit.limits import RATE_LIMITS
from masterdata import selectors as masterdata_selectors
from masterdata.models import Location, Market
from serialization import selectors
from serialization.api.serializers import AllocationSerializer
from serialization.models import Allocation, Batch, PackagingOrder, Reconciliation
from serialization.retention import batch_keep_until, delete_batch
from serialization.services import batches as batch_services
from serialization.services.reconciliation import Discrepancy, reconcile_batch, release_batch

_400 = OpenApiResponse(description='Invalid input: {"error": {"code", "message", "fields"}}; fields name the input')
_404 = OpenApiResponse(description="No such object, or not visible to you")
_403 = OpenApiResponse(description='Not allowed: {"error": {"code", "message"}} says which permission and the way')
_409 = OpenApiResponse(description='Conflict with the current state: {"error": {"code", "message", "details"}}')


class ChangeModelPermissions(ModelPermissions):
    """POST needs ``change_<model>``: for operations that move an existing row along its workflow."""

    perms_map = {**ModelPermissions.perms_map, "POST": ["%(app_label)s.change_%(model_name)s"]}


def _validated(serializer_class, data, **kwargs):
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _visible_or_field_error(getter, *, user, pk, field: str):
    try:
        return getter(user=user, pk=pk)
    except NotFound as exc:
        raise serializers.ValidationError({field: exc.message}) from None


# --- serializers ------------------------------------------------------------------------------------------------------


class ReconciliationSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    passed = serializers.BooleanField()
    performed_at = serializers.DateTimeField()


class DiscrepancySerializer(serializers.Serializer):
    order = serializers.CharField(allow_null=True, help_text="Order number; null for a batch-level discrepancy")
    kind = serializers.ChoiceField(
        choices=[
            Discrepancy.COUNT_MISMATCH,
            Discrepancy.UNAGGREGATED_UNITS,
            Discrepancy.BATCH_MISMATCH,
            Discrepancy.PACKS_OUTSIDE_ORDERS,
        ]
    )
    pool = serializers.IntegerField(required=False, help_text="The pool, for a count mismatch")
    expected = serializers.IntegerField()
    found = serializers.IntegerField()
    detail = serializers.CharField()
    examples = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Some of the serials concerned"
    )


class ReconciliationSerializer(serializers.ModelSerializer):
    counts = serializers.JSONField(
        read_only=True,
        help_text="batch: assigned, commissioned, decommissioned by reason, returned, unaggregated_units; orders: the "
        "same per order, with pools",
    )
    discrepancies = DiscrepancySerializer(many=True, read_only=True)
    performed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Reconciliation
        fields = ["id", "batch", "passed", "counts", "discrepancies", "incident", "performed_by", "performed_at"]
        read_only_fields = fields


class OrderRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = PackagingOrder
        fields = ["id", "number"]
        read_only_fields = fields


class BatchSerializer(serializers.ModelSerializer):
    product_code = serializers.CharField(source="product.product_code", read_only=True)
    product_name = serializers.CharField(source="product.name", read_only=True)
    markets = serializers.SlugRelatedField(slug_field="code", many=True, read_only=True)
    released_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    latest_reconciliation = serializers.SerializerMethodField(help_text="null until the batch is first reconciled")
    orders = OrderRefSerializer(many=True, read_only=True, help_text="Its packaging orders (GET /orders/ for more)")
    open_orders = serializers.SerializerMethodField(help_text="How many of its orders are still open")
    keep_until = serializers.SerializerMethodField(
        help_text="Last day the batch and its records are kept (the latest over its markets' retention rules); null "
        "while it cannot be computed (e.g. not released yet), and then it is kept"
    )
    keep_until_reason = serializers.SerializerMethodField(help_text="Which market and term decide keep_until")

    class Meta:
        model = Batch
        fields = [
            "id",
            "product",
            "product_code",
            "product_name",
            "lot",
            "expiry",
            "manufactured_on",
            "site",
            "lines",
            "markets",
            "status",
            "released_at",
            "released_by",
            "release_reason",
            "latest_reconciliation",
            "orders",
            "open_orders",
            "keep_until",
            "keep_until_reason",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DateField(allow_null=True))
    def get_keep_until(self, batch: Batch):
        return batch_keep_until(batch).date

    def get_keep_until_reason(self, batch: Batch) -> str:
        return batch_keep_until(batch).because

    def get_open_orders(self, batch: Batch) -> int:
        # Counted in Python: the list prefetches the orders, and a filter() would query again.
        return sum(1 for order in batch.orders.all() if order.status == PackagingOrder.Status.OPEN)

    @extend_schema_field(ReconciliationSummarySerializer(allow_null=True))
    def get_latest_reconciliation(self, batch: Batch) -> dict | None:
        pk = getattr(batch, "latest_reconciliation_id", None)
        if pk is None:
            return None
        return {"id": pk, "passed": batch.latest_reconciliation_passed, "performed_at": batch.latest_reconciliation_at}


class BatchFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Batch.Status.choices, required=False)
    product = serializers.IntegerField(required=False, help_text="Product id")
    product_code = serializers.CharField(required=False, max_length=14)
    lot = serializers.CharField(required=False, max_length=20)


class BatchCreateSerializer(serializers.Serializer):
    product = serializers.IntegerField(help_text="Product id")
    # Not trimmed: the lot and expiry are kept exactly as given (and printed).
    lot = serializers.CharField(trim_whitespace=False, help_text="AI 10: up to 20 characters of GS1 set 82")
    expiry = serializers.CharField(
        trim_whitespace=False, help_text="AI 17 YYMMDD as printed; day 00 = end of month, kept as given"
    )
    manufactured_on = serializers.DateField(required=False, allow_null=True)
    site = serializers.IntegerField(required=False, allow_null=True, help_text="Site (location) id")
    lines = serializers.ListField(child=serializers.IntegerField(), required=False, help_text="Packaging line ids")
    markets = serializers.ListField(
        child=serializers.CharField(max_length=8),
        required=False,
        help_text='Market codes, e.g. ["EU"]; default: the product\'s markets',
    )


class TransitionSerializer(serializers.Serializer):
    # Every status a batch can be moved to (not back to planned); the service says which are next for this batch.
    status = serializers.ChoiceField(choices=Batch.Status.choices[1:])
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Required for a recall and once the batch is released"
    )


class ReleaseSerializer(serializers.Serializer):
    """QA's electronic signature: every field is required on every release."""

    password = serializers.CharField(
        write_only=True, trim_whitespace=False, style={"input_type": "password"}, help_text="Your password"
    )
    otp_code = serializers.CharField(write_only=True, help_text="The code your authenticator app shows now")
    reason = serializers.CharField(help_text="Why the batch is released (kept with the release and in its history)")


class OrderSerializer(serializers.ModelSerializer):
    batch_lot = serializers.CharField(source="batch.lot", read_only=True)
    product_code = serializers.CharField(source="batch.product.product_code", read_only=True)
    line_name = serializers.CharField(source="line.name", read_only=True)
    closed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    allocations = AllocationSerializer(many=True, read_only=True)

    class Meta:
        model = PackagingOrder
        fields = [
            "id",
            "number",
            "batch",
            "batch_lot",
            "product_code",
            "line",
            "line_name",
            "planned_quantity",
            "status",
            "closed_at",
            "closed_by",
            "created_at",
            "allocations",
        ]
        read_only_fields = fields


class OrderFilterSerializer(serializers.Serializer):
    batch = serializers.IntegerField(required=False)
    status = serializers.ChoiceField(choices=PackagingOrder.Status.choices, required=False)
    line = serializers.IntegerField(required=False)
    number = serializers.CharField(required=False, max_length=40)


class OrderCreateSerializer(serializers.Serializer):
    batch = serializers.IntegerField(help_text="Batch id")
    line = serializers.IntegerField(help_text="Packaging line (location) id")
    number = serializers.CharField(max_length=40, help_text="Order number, unique (e.g. the ERP process order)")
    planned_quantity = serializers.IntegerField(min_value=1)


class OrderSerialsRequestSerializer(serializers.Serializer):
    quantity = serializers.IntegerField(min_value=0, default=0, help_text="Unit serials wanted")
    request_id = serializers.CharField(max_length=97, help_text="Your idempotency key: a repeat returns the same")
    sscc = serializers.DictField(
        child=serializers.IntegerField(min_value=0),
        required=False,
        default=dict,
        help_text='SSCCs per packaging level identified by SSCC, e.g. {"2": 10, "3": 1} (cases, pallets)',
    )


class OrderSerialsSerializer(serializers.Serializer):
    order = serializers.IntegerField(source="order.pk")
    replayed = serializers.BooleanField(help_text="True when this request id was answered before")
    units = AllocationSerializer(allow_null=True, help_text="The unit serial allocation (null if none was asked)")
    ssccs = serializers.DictField(child=AllocationSerializer(), help_text="SSCC allocations by packaging level")


class OrderCloseSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="Why the order is closed; kept with the released serials")


class OrderClosedSerializer(serializers.Serializer):
    order = OrderSerializer()
    released = serializers.IntegerField(help_text="Unused serials (units and SSCCs) that went back to Available")


# --- batches ----------------------------------------------------------------------------------------------------------


def _batch_body(request, pk) -> dict:
    return BatchSerializer(selectors.get_batch(user=request.user, pk=pk)).data


class BatchListCreateView(generics.ListCreateAPIView):
    """Batches visible to you, each with its latest reconciliation; POST creates a planned batch."""

    serializer_class = BatchSerializer
    queryset = Batch.objects.none()

    def get_queryset(self):
        filters = _validated(BatchFilterSerializer, self.request.query_params)
        return selectors.list_batches(user=self.request.user, filters=filters)

    @extend_schema(summary="List batches with their latest reconciliation", parameters=[BatchFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Create a batch (planned)",
        request=BatchCreateSerializer,
        responses={201: BatchSerializer, 400: _400},
    )
    def post(self, request, *args, **kwargs):
        data = _validated(BatchCreateSerializer, request.data)
        user = request.user
        product = _visible_or_field_error(
            masterdata_selectors.get_product, user=user, pk=data["product"], field="product"
        )
        locations = masterdata_selectors.list_locations(user=user)
        site = None
        if data.get("site") is not None:
            site = _visible_or_field_error(masterdata_selectors.get_location, user=user, pk=data["site"], field="site")
        lines = _all_visible(locations, data.get("lines", []), "lines", "packaging line")
        markets = []
        if data.get("markets"):
            by_code = {m.code: m for m in Market.objects.filter(code__in=data["markets"])}
            unknown = [code for code in data["markets"] if code not in by_code]
            if unknown:
                raise serializers.ValidationError({"markets": f"Unknown market code(s): {', '.join(unknown)}."})
            markets = [by_code[code] for code in data["markets"]]
        batch = batch_services.create_batch(
            product=product,
            lot=data["lot"],
            expiry=data["expiry"],
            manufactured_on=data.get("manufactured_on"),
            site=site,
            lines=lines,
            markets=markets,
            actor=user,
        )
        return Response(_batch_body(request, batch.pk), status=status.HTTP_201_CREATED)


def _all_visible(queryset, pks: list[int], field: str, label: str) -> list[Location]:
    found = {row.pk: row for row in queryset.filter(pk__in=pks)}
    missing = [str(pk) for pk in pks if pk not in found]
    if missing:
        raise serializers.ValidationError({field: f"No {label} with id {', '.join(missing)} is visible to you."})
    return [found[pk] for pk in dict.fromkeys(pks)]


class DeleteCheckedByServicePermissions(ModelPermissions):
    """DELETE needs only ``view_<model>`` here: the delete service checks ``delete_<model>`` itself and answers 403
    with the reason and the way (DRF's own check would say only "no permission")."""

    perms_map = {**ModelPermissions.perms_map, "DELETE": ["%(app_label)s.view_%(model_name)s"]}


class BatchDetailView(generics.RetrieveAPIView):
    serializer_class = BatchSerializer
    queryset = Batch.objects.none()
    permission_classes = [DeleteCheckedByServicePermissions]

    def get_object(self):
        return selectors.get_batch(user=self.request.user, pk=self.kwargs["pk"])

    @extend_schema(
        summary="Get one batch with its orders and latest reconciliation",
        responses={200: BatchSerializer, 404: _404},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Delete a batch past its retention, with everything kept with it",
        description="Refused while the batch is within its retention period (409 names the keep-until date) or on "
        "legal hold (409 names the hold); needs the 'delete batch' permission, which no role grants (403). A deletion "
        "is recorded as a purge.",
        parameters=[OpenApiParameter("reason", str, description="Why the batch is deleted (kept in the purge record)")],
        responses={204: None, 403: _403, 404: _404, 409: _409},
    )
    def delete(self, request, pk: int):
        batch = selectors.get_batch(user=request.user, pk=pk)
        delete_batch(batch=batch, actor=request.user, reason=request.query_params.get("reason", ""))
        return Response(status=status.HTTP_204_NO_CONTENT)


class BatchTransitionView(generics.GenericAPIView):
    serializer_class = TransitionSerializer
    queryset = Batch.objects.none()
    permission_classes = [ChangeModelPermissions]

    @extend_schema(
        summary="Move a batch to its next status (in production, completed, recalled)",
        description="planned → in_production → completed; completed, reconciled or released → recalled (final). "
        "reconciled and released are reached through /reconcile/ and /release/. A reason is required for a recall "
        "and for any change once the batch was released.",
        request=TransitionSerializer,
        responses={200: BatchSerializer, 400: _400, 404: _404, 409: _409},
    )
    def post(self, request, pk: int):
        batch = selectors.get_batch(user=request.user, pk=pk)
        data = _validated(TransitionSerializer, request.data)
        batch_services.transition_batch(batch=batch, status=data["status"], reason=data["reason"], actor=request.user)
        return Response(_batch_body(request, pk))


class BatchReconcileView(generics.GenericAPIView):
    serializer_class = ReconciliationSerializer
    queryset = Batch.objects.none()
    permission_classes = [ChangeModelPermissions]

    @extend_schema(
        summary="Reconcile a completed batch",
        description="Passed: the batch becomes reconciled. Failed: the discrepancies are listed, an incident is "
        "raised (and linked), and the batch stays completed. Both answer 201 with the reconciliation.",
        request=None,
        responses={201: ReconciliationSerializer, 404: _404, 409: _409},
    )
    def post(self, request, pk: int):
        batch = selectors.get_batch(user=request.user, pk=pk)
        reconciliation = reconcile_batch(batch=batch, actor=request.user)
        return Response(ReconciliationSerializer(reconciliation).data, status=status.HTTP_201_CREATED)


class BatchReleaseView(generics.GenericAPIView):
    serializer_class = ReleaseSerializer
    queryset = Batch.objects.none()
    permission_classes = [ChangeModelPermissions]

    @extend_schema(
        summary="Release a reconciled batch with your electronic signature",
        description="Re-enter your password and the current code of your authenticator, and give a reason. A wrong "
        "password or code is logged as a failed attempt and changes nothing.",
        request=ReleaseSerializer,
        responses={200: BatchSerializer, 400: _400, 404: _404, 409: _409},
    )
    def post(self, request, pk: int):
        batch = selectors.get_batch(user=request.user, pk=pk)
        data = _validated(ReleaseSerializer, request.data)
        release_batch(
            batch=batch,
            actor=request.user,
            password=data["password"],
            otp_code=data["otp_code"],
            reason=data["reason"],
            request=request,
        )
        return Response(_batch_body(request, pk))


class BatchReconciliationListView(generics.ListAPIView):
    serializer_class = ReconciliationSerializer
    queryset = Batch.objects.none()

    def get_queryset(self):
        batch = selectors.get_batch(user=self.request.user, pk=self.kwargs["pk"])
        return batch.reconciliations.select_related("performed_by").order_by("-performed_at", "-pk")

    @extend_schema(
        summary="Reconciliations of a batch, newest first, with their counts and discrepancies",
        responses={200: ReconciliationSerializer(many=True), 404: _404},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


# --- packaging orders ------------------------------------------------------------------------------------------------


class OrderListCreateView(generics.ListCreateAPIView):
    serializer_class = OrderSerializer
    queryset = PackagingOrder.objects.none()

    def get_queryset(self):
        filters = _validated(OrderFilterSerializer, self.request.query_params)
        return selectors.list_orders(user=self.request.user, filters=filters)

    @extend_schema(summary="List packaging orders with their allocations", parameters=[OrderFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Create a packaging order for a batch on a line",
        request=OrderCreateSerializer,
        responses={201: OrderSerializer, 400: _400, 409: _409},
    )
    def post(self, request, *args, **kwargs):
        data = _validated(OrderCreateSerializer, request.data)
        user = request.user
        batch = _visible_or_field_error(selectors.get_batch, user=user, pk=data["batch"], field="batch")
        line = _visible_or_field_error(masterdata_selectors.get_location, user=user, pk=data["line"], field="line")
        order = batch_services.create_packaging_order(
            batch=batch, line=line, number=data["number"], planned_quantity=data["planned_quantity"], actor=user
        )
        body = OrderSerializer(selectors.get_order(user=user, pk=order.pk)).data
        return Response(body, status=status.HTTP_201_CREATED)


class OrderDetailView(generics.RetrieveAPIView):
    serializer_class = OrderSerializer
    queryset = PackagingOrder.objects.none()

    def get_object(self):
        return selectors.get_order(user=self.request.user, pk=self.kwargs["pk"])

    @extend_schema(summary="Get one packaging order with its allocations", responses={200: OrderSerializer, 404: _404})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class OrderSerialsView(generics.GenericAPIView):
    serializer_class = OrderSerialsRequestSerializer
    queryset = Allocation.objects.none()
    throttle_classes = RATE_LIMITS
    throttle_scope = "allocation"

    @extend_schema(
        summary="Give an order unit serials and SSCCs (all or nothing, idempotent by request_id)",
        request=OrderSerialsRequestSerializer,
        responses={
            201: OrderSerialsSerializer,
            200: OpenApiResponse(OrderSerialsSerializer, description="A repeated request_id: the first result"),
            400: _400,
            404: _404,
            409: OpenApiResponse(
                description="No pool has enough serials (details list each pool's available count), the order is "
                "closed, or the request_id was used with other quantities"
            ),
        },
    )
    def post(self, request, pk: int):
        order = selectors.get_order(user=request.user, pk=pk)
        data = _validated(OrderSerialsRequestSerializer, request.data)
        result = batch_services.request_order_serials(
            order=order,
            quantity=data["quantity"],
            actor=request.user,
            request_id=data["request_id"],
            sscc_quantities=data["sscc"],
        )
        body = OrderSerialsSerializer(result).data
        return Response(body, status=status.HTTP_200_OK if result.replayed else status.HTTP_201_CREATED)


class OrderCloseView(generics.GenericAPIView):
    serializer_class = OrderCloseSerializer
    queryset = PackagingOrder.objects.none()
    permission_classes = [ChangeModelPermissions]

    @extend_schema(
        summary="Close a packaging order: its unused serials go back to Available",
        request=OrderCloseSerializer,
        responses={200: OrderClosedSerializer, 400: _400, 404: _404, 409: _409},
    )
    def post(self, request, pk: int):
        order = selectors.get_order(user=request.user, pk=pk)
        data = _validated(OrderCloseSerializer, request.data)
        closed = batch_services.close_packaging_order(order=order, actor=request.user, reason=data["reason"])
        body = {"order": selectors.get_order(user=request.user, pk=pk), "released": closed.released}
        return Response(OrderClosedSerializer(body).data)
