"""Master-data CRUD. Reads go through the selectors (so objects outside a user's scope are 404), writes through the
services (so the API enforces the same rules as the admin and leaves the same history)."""

import django_filters
from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.settings import api_settings

from masterdata import selectors, services
from masterdata.api.serializers import CompanySerializer, LocationSerializer, MarketSerializer, ProductSerializer
from masterdata.models import Company, Location, Market, Product

_ERRORS = {
    400: OpenApiResponse(description='Invalid input: {"error": {"code", "message", "fields"}}, fields name the input'),
    404: OpenApiResponse(description="No such object, or not visible to you"),
}
_DELETE_ERRORS = {
    404: _ERRORS[404],
    409: OpenApiResponse(description="Still referenced by other records; nothing was deleted"),
}


def _crud_schema(noun: str, serializer):
    return extend_schema_view(
        list=extend_schema(summary=f"List {noun}s visible to you"),
        retrieve=extend_schema(summary=f"Get one {noun}", responses={200: serializer, 404: _ERRORS[404]}),
        create=extend_schema(summary=f"Create a {noun}", responses={201: serializer, 400: _ERRORS[400]}),
        update=extend_schema(summary=f"Replace a {noun}", responses={200: serializer, **_ERRORS}),
        partial_update=extend_schema(summary=f"Change some fields of a {noun}", responses={200: serializer, **_ERRORS}),
        destroy=extend_schema(summary=f"Delete an unreferenced {noun}", responses={204: None, **_DELETE_ERRORS}),
    )


class ServiceModelViewSet(viewsets.ModelViewSet):
    """A ModelViewSet whose writes call services: ``create_service``/``update_service``/``delete_service`` take the
    validated data split by :meth:`service_arguments`."""

    model: type
    instance_name: str  # the keyword the update/delete services take the object under

    def service_arguments(self, data: dict) -> dict:
        return {"data": data}

    def perform_create(self, serializer):
        arguments = self.service_arguments(dict(serializer.validated_data))
        serializer.instance = self._call(self.create_service, actor=self.request.user, **arguments)

    def perform_update(self, serializer):
        arguments = self.service_arguments(dict(serializer.validated_data))
        serializer.instance = self._call(
            self.update_service, **{self.instance_name: serializer.instance}, actor=self.request.user, **arguments
        )

    def perform_destroy(self, instance):
        self._call(self.delete_service, **{self.instance_name: instance}, actor=self.request.user)

    @staticmethod
    def _call(service, **kwargs):
        try:
            return service(**kwargs)
        except DjangoValidationError as exc:
            # Model validation from the service: same field names as the serializer, "non_field_errors" for the rest.
            detail = exc.message_dict if hasattr(exc, "error_dict") else {NON_FIELD_ERRORS: exc.messages}
            raise serializers.ValidationError(
                {
                    (api_settings.NON_FIELD_ERRORS_KEY if key == NON_FIELD_ERRORS else key): msgs
                    for key, msgs in detail.items()
                }
            ) from exc


# --- companies ------------------------------------------------------------------------------------------------------


class CompanyFilter(django_filters.FilterSet):
    class Meta:
        model = Company
        fields = ["is_mah", "is_cmo", "is_3pl", "is_wholesaler", "country"]


@_crud_schema("company", CompanySerializer)
class CompanyViewSet(ServiceModelViewSet):
    """Companies (MAH, CMO, 3PL, wholesaler) with their GS1 company prefixes. A user who belongs to a company sees
    only that company."""

    serializer_class = CompanySerializer
    queryset = Company.objects.none()  # for ModelPermissions and the schema; rows come from the selector
    filterset_class = CompanyFilter
    instance_name = "company"
    create_service = staticmethod(services.create_company)
    update_service = staticmethod(services.update_company)
    delete_service = staticmethod(services.delete_company)

    def get_queryset(self):
        return selectors.list_companies(user=self.request.user)

    def service_arguments(self, data: dict) -> dict:
        arguments = {"data": data}
        if "prefixes" in data:  # left out (even from a PUT) means "unchanged"; [] means "none"
            arguments["prefixes"] = [item["prefix"] for item in data.pop("prefixes")]
        return arguments


# --- locations ------------------------------------------------------------------------------------------------------


class LocationFilter(django_filters.FilterSet):
    class Meta:
        model = Location
        fields = ["company", "kind", "parent", "is_active", "gln"]


@_crud_schema("location", LocationSerializer)
class LocationViewSet(ServiceModelViewSet):
    """Sites, packaging lines and warehouses with their GLN; the SGLN is derived and read-only."""

    serializer_class = LocationSerializer
    queryset = Location.objects.none()
    filterset_class = LocationFilter
    instance_name = "location"
    create_service = staticmethod(services.create_location)
    update_service = staticmethod(services.update_location)
    delete_service = staticmethod(services.delete_location)

    def get_queryset(self):
        return selectors.list_locations(user=self.request.user)


# --- markets --------------------------------------------------------------------------------------------------------


class MarketFilter(django_filters.FilterSet):
    class Meta:
        model = Market
        fields = ["code", "randomisation_required", "aggregation_required", "reporting_format"]


@_crud_schema("market", MarketSerializer)
class MarketViewSet(ServiceModelViewSet):
    """Regulated markets and their rules for serials, identifiers, reporting and record keeping."""

    serializer_class = MarketSerializer
    queryset = Market.objects.none()
    filterset_class = MarketFilter
    instance_name = "market"
    create_service = staticmethod(services.create_market)
    update_service = staticmethod(services.update_market)
    delete_service = staticmethod(services.delete_market)

    def get_queryset(self):
        return selectors.list_markets(user=self.request.user)


# --- products -------------------------------------------------------------------------------------------------------


class ProductFilter(django_filters.FilterSet):
    market = django_filters.CharFilter(field_name="markets__code", label="Market code, e.g. EU")
    owner = django_filters.NumberFilter(field_name="owner_id", label="Owner (company id)")

    class Meta:
        model = Product
        fields = ["owner", "market", "code_schema", "product_code", "is_active"]


@_crud_schema("product", ProductSerializer)
class ProductViewSet(ServiceModelViewSet):
    """Products (GTIN, NTIN or PPN) with their markets, national numbers and packaging levels. A user who belongs to
    a company sees only the products it owns."""

    serializer_class = ProductSerializer
    queryset = Product.objects.none()
    filterset_class = ProductFilter
    instance_name = "product"
    create_service = staticmethod(services.create_product)
    update_service = staticmethod(services.update_product)
    delete_service = staticmethod(services.delete_product)

    def get_queryset(self):
        return selectors.list_products(user=self.request.user)

    def service_arguments(self, data: dict) -> dict:
        arguments = {"data": data}
        for name in ("markets", "national_codes", "packaging_levels"):
            if name in data:  # left out (even from a PUT) means "unchanged"; [] means "none"
                arguments[name] = [dict(item) if isinstance(item, dict) else item for item in data.pop(name)]
        return arguments
