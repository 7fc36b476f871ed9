"""Partnerships, serial assignments, returns and the MAH's usage overview in the API (mounted under /api/v1/).

Every object comes through ``partners.selectors``, so a partnership outside the caller's scope — another CMO's, or
any partnership for a user of an unrelated company — answers 404 exactly like one that does not exist. Writes call
``partners.services``. Permissions are model permissions of the row a request reads or writes: partnerships need
``partners.*_partnership`` (revoking: ``change_partnership``), assigning ``add_serialassignment``, returning
``change_serialassignment``, reading assignments ``view_serialassignment``, the usage overview ``view_partnership``.
"""

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.settings import api_settings

from partners import selectors, services
from partners.api.serializers import (
    AssignSerializer,
    PartnershipSerializer,
    PartnershipUpdateSerializer,
    PartnerUsageFilterSerializer,
    PartnerUsageSerializer,
    ReturnResultSerializer,
    ReturnSerializer,
    RevokeSerializer,
    SerialAssignmentSerializer,
)
from partners.models import Partnership, SerialAssignment
from partners.permissions import ChangePermissions

_400 = OpenApiResponse(description='Invalid input: {"error": {"code", "message", "fields"}}; fields name the input')
_404 = OpenApiResponse(description="No such partnership, or not visible to you")
_409 = OpenApiResponse(description='Conflict with the current state: {"error": {"code", "message", "details"}}')


def _validated(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _call(service, **kwargs):
    """Run a service; model validation errors become 400s keyed by the same field names as the input."""
    try:
        return service(**kwargs)
    except DjangoValidationError as exc:
        detail = exc.message_dict if hasattr(exc, "error_dict") else {NON_FIELD_ERRORS: exc.messages}
        raise serializers.ValidationError(
            {(api_settings.NON_FIELD_ERRORS_KEY if k == NON_FIELD_ERRORS else k): v for k, v in detail.items()}
        ) from exc


def _product_of(partnership: Partnership, product_id: int):
    """A product named in a request about ``partnership``: one of the partnership's products, or one assigned under
    it before it was taken out. Others are a 400 on the field (never a hint that they exist)."""
    product = partnership.products.filter(pk=product_id).first()
    if product is None:
        assigned = SerialAssignment.objects.filter(partnership=partnership, product_id=product_id).first()
        product = assigned.product if assigned is not None else None
    if product is None:
        raise serializers.ValidationError(
            {"product": f"Product {product_id} is not in partnership {partnership.pk}; use one of its products."}
        )
    return product


@extend_schema_view(
    list=extend_schema(summary="List partnerships visible to you"),
    retrieve=extend_schema(summary="Get one partnership", responses={200: PartnershipSerializer, 404: _404}),
    create=extend_schema(summary="Create a partnership", responses={201: PartnershipSerializer, 400: _400}),
    update=extend_schema(
        summary="Replace a partnership's status, start date, products and markets",
        request=PartnershipUpdateSerializer,
        responses={200: PartnershipSerializer, 400: _400, 404: _404, 409: _409},
    ),
    partial_update=extend_schema(
        summary="Change some of a partnership's status, start date, products and markets",
        request=PartnershipUpdateSerializer,
        responses={200: PartnershipSerializer, 400: _400, 404: _404, 409: _409},
    ),
)
class PartnershipViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """MAH↔CMO partnerships: which of the MAH's products the CMO may pack, for which markets. Never deleted."""

    serializer_class = PartnershipSerializer
    queryset = Partnership.objects.none()  # for ModelPermissions and the schema; rows come from the selector
    filterset_fields = ["mah", "cmo", "status"]
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return selectors.list_partnerships(user=self.request.user)

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return PartnershipUpdateSerializer
        return PartnershipSerializer

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = _call(
            services.create_partnership,
            mah=data["mah"],
            cmo=data["cmo"],
            products=data.get("products", []),
            markets=data.get("markets", []),
            started_on=data.get("started_on"),
            status=data.get("status", Partnership.Status.ACTIVE),
            actor=self.request.user,
        )

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        products, markets = data.pop("products", None), data.pop("markets", None)
        _call(
            services.update_partnership,
            partnership=serializer.instance,
            actor=self.request.user,
            data={k: v for k, v in data.items() if k in services.PARTNERSHIP_FIELDS},
            products=products,
            markets=markets,
        )
        serializer.instance = selectors.get_partnership(user=self.request.user, pk=serializer.instance.pk)

    @extend_schema(
        summary="Revoke a partnership (final): no new assignments; history and what was assigned stay",
        request=RevokeSerializer,
        responses={200: PartnershipSerializer, 400: _400, 404: _404, 409: _409},
    )
    @action(detail=True, methods=["post"], permission_classes=[ChangePermissions])
    def revoke(self, request, pk=None):
        partnership = self.get_object()
        data = _validated(RevokeSerializer, request.data)
        _call(services.revoke_partnership, partnership=partnership, actor=request.user, reason=data["reason"])
        partnership = selectors.get_partnership(user=request.user, pk=partnership.pk)
        return Response(PartnershipSerializer(partnership, context=self.get_serializer_context()).data)


class AssignmentListCreateView(generics.ListAPIView):
    """The serials assigned to the CMO under one partnership (GET), and a new assignment (POST)."""

    serializer_class = SerialAssignmentSerializer
    queryset = SerialAssignment.objects.none()

    def get_queryset(self):
        partnership = selectors.get_partnership(user=self.request.user, pk=self.kwargs["pk"])
        return selectors.list_assignments(user=self.request.user, filters={"partnership": partnership.pk})

    @extend_schema(summary="List the serial assignments of a partnership, newest first", responses={404: _404})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Assign serials of a product to the partnership's CMO (idempotent by request_id)",
        request=AssignSerializer,
        responses={
            201: SerialAssignmentSerializer,
            200: OpenApiResponse(SerialAssignmentSerializer, description="A repeated request_id: the first result"),
            400: _400,
            404: _404,
            409: OpenApiResponse(
                description="Partnership not active, the MAH's pools are short (details.pools lists what each has), "
                "or the request_id was used with other parameters"
            ),
        },
    )
    def post(self, request, pk: int):
        partnership = selectors.get_partnership(user=request.user, pk=pk)
        data = _validated(AssignSerializer, request.data)
        product = _product_of(partnership, data["product"])
        replay = SerialAssignment.objects.filter(partnership=partnership, request_id=data["request_id"]).exists()
        assignment = _call(
            services.assign_serials,
            partnership=partnership,
            product=product,
            quantity=data["quantity"],
            actor=request.user,
            request_id=data["request_id"],
        )
        assignment = selectors.list_assignments(user=request.user).get(pk=assignment.pk)
        return Response(
            SerialAssignmentSerializer(assignment).data,
            status=status.HTTP_200_OK if replay else status.HTTP_201_CREATED,
        )


class ReturnView(generics.GenericAPIView):
    """Unused serials of a product handed back from the CMO's partner pool to the MAH."""

    serializer_class = ReturnSerializer
    queryset = SerialAssignment.objects.none()
    permission_classes = [ChangePermissions]

    @extend_schema(
        summary="Return unused serials of a product to the MAH (all, or a quantity)",
        request=ReturnSerializer,
        responses={200: ReturnResultSerializer, 400: _400, 404: _404, 409: _409},
    )
    def post(self, request, pk: int):
        partnership = selectors.get_partnership(user=request.user, pk=pk)
        data = _validated(ReturnSerializer, request.data)
        product = _product_of(partnership, data["product"])
        returned = _call(
            services.return_serials,
            partnership=partnership,
            product=product,
            actor=request.user,
            reason=data["reason"],
            quantity=data.get("quantity"),
        )
        body = {"partnership": partnership.pk, "product": product.pk, "returned": returned}
        return Response(ReturnResultSerializer(body).data)


class PartnerUsageView(generics.GenericAPIView):
    """The MAH's overview: per CMO and product, serials assigned, used (commissioned at the CMO), returned and
    remaining. A CMO's user sees the rows of its own partnerships."""

    serializer_class = PartnerUsageSerializer
    queryset = Partnership.objects.none()
    pagination_class = None

    @extend_schema(
        summary="Serials assigned, used, returned and remaining per CMO and product",
        parameters=[PartnerUsageFilterSerializer],
        responses={200: PartnerUsageSerializer(many=True), 400: _400},
    )
    def get(self, request):
        filters = _validated(PartnerUsageFilterSerializer, request.query_params)
        rows = selectors.list_partner_usage(user=request.user, filters=filters)
        return Response(PartnerUsageSerializer(rows, many=True).data)
