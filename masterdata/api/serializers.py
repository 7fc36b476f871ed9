"""Shapes of master data in the API. Serializers check the shape of input; the services check the rules (through
the models' ``full_clean``), so the API, the admin and scripts enforce the same rules with the same messages."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.settings import api_settings

from masterdata import selectors
from masterdata.models import (
    Company,
    CompanyPrefix,
    Location,
    Market,
    PackagingLevel,
    Product,
    ProductNationalCode,
)


def flatten_errors(detail, prefix: str = "") -> dict:
    """``{"national_codes": [{}, {"value": ["…"]}]}`` → ``{"national_codes.1.value": ["…"]}``: every error keyed by
    the path of the field it is about, the same keys the services use for nested rows."""
    if isinstance(detail, dict):
        flat = {}
        for key, value in detail.items():
            if prefix and key == api_settings.NON_FIELD_ERRORS_KEY:
                path = prefix
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flatten_errors(value, path))
        return flat
    if isinstance(detail, list) and any(isinstance(item, dict | list) for item in detail):
        flat = {}
        for index, item in enumerate(detail):
            if item:
                flat.update(flatten_errors(item, f"{prefix}.{index}"))
        return flat
    return {prefix or api_settings.NON_FIELD_ERRORS_KEY: detail if isinstance(detail, list) else [detail]}


class FlatErrorsMixin:
    """Report nested validation errors under dotted field paths (the common error shape has one level of fields)."""

    def run_validation(self, data=empty):
        try:
            return super().run_validation(data)
        except serializers.ValidationError as exc:
            if self.parent is not None:
                raise
            raise serializers.ValidationError(flatten_errors(exc.detail)) from exc


class ScopedQuerysetsMixin:
    """Limit the choices of related fields to what the requesting user may see (others would answer 404)."""

    scoped_fields: dict[str, str] = {}  # field name → selector name

    def get_fields(self):
        fields = super().get_fields()
        request = self.context.get("request")
        user = getattr(request, "user", None)
        for name, selector in self.scoped_fields.items():
            field = fields.get(name)
            if user is not None and field is not None and not field.read_only:
                getattr(field, "child_relation", field).queryset = getattr(selectors, selector)(user=user)
        return fields


# --- companies ------------------------------------------------------------------------------------------------------


class CompanyPrefixSerializer(serializers.ModelSerializer):
    class Meta:
        model = CompanyPrefix
        fields = ["id", "prefix", "length"]
        read_only_fields = ["id", "length"]
        # Uniqueness is checked by the service, which knows which prefixes already belong to this company.
        extra_kwargs = {"prefix": {"validators": []}}


class CompanySerializer(FlatErrorsMixin, serializers.ModelSerializer):
    prefixes = CompanyPrefixSerializer(
        many=True, required=False, help_text="All GS1 company prefixes of the company; leave out to keep them unchanged"
    )
    roles = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Company
        fields = [
            "id",
            "name",
            "is_mah",
            "is_cmo",
            "is_3pl",
            "is_wholesaler",
            "roles",
            "country",
            "gln",
            "prefixes",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]


# --- locations ------------------------------------------------------------------------------------------------------


class LocationSerializer(FlatErrorsMixin, ScopedQuerysetsMixin, serializers.ModelSerializer):
    scoped_fields = {"company": "list_companies", "parent": "list_locations"}

    sgln = serializers.CharField(
        read_only=True, help_text="EPC URN urn:epc:id:sgln:…, derived from the GLN, its company prefix and extension"
    )

    class Meta:
        model = Location
        fields = [
            "id",
            "company",
            "kind",
            "name",
            "parent",
            "gln",
            "gln_extension",
            "sgln",
            "address",
            "country",
            "is_active",
        ]
        read_only_fields = ["id"]
        validators = []  # the unique rules are checked by the service (full_clean) with their own messages


# --- markets --------------------------------------------------------------------------------------------------------


class MarketSerializer(FlatErrorsMixin, serializers.ModelSerializer):
    extra_serial_parameters = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(Market.EXTRA_SERIAL_PARAMETERS)),
        required=False,
        help_text='Extra per-serial AIs required, e.g. ["91", "92"] for Russia',
    )

    class Meta:
        model = Market
        fields = [
            "id",
            "code",
            "name",
            "serial_alphabet",
            "serial_length",
            "randomisation_required",
            "max_guess_probability",
            "national_number_ai",
            "extra_serial_parameters",
            "aggregation_required",
            "retention_years_after_expiry",
            "retention_years_after_release",
            "reporting_format",
        ]
        read_only_fields = ["id"]


# --- products -------------------------------------------------------------------------------------------------------


_NATIONAL_AIS = [(ai, label) for ai, label in Market.NationalNumberAI.choices if ai]


# The same AIs as Market.national_number_ai minus "none": documented inline so the schema has one enum component
# for the AI set instead of two names for it.
@extend_schema_field({"type": "string", "enum": [ai for ai, _ in _NATIONAL_AIS]})
class NationalNumberAIField(serializers.ChoiceField):
    pass


class ProductNationalCodeSerializer(serializers.ModelSerializer):
    market = serializers.SlugRelatedField(slug_field="code", queryset=Market.objects.all(), help_text="Market code")
    ai = NationalNumberAIField(choices=_NATIONAL_AIS, help_text="710 PZN, 711 CIP, 712 CN, 713 DRN, 714 AIM, 715 NDC")

    class Meta:
        model = ProductNationalCode
        fields = ["id", "market", "ai", "value"]
        read_only_fields = ["id"]


class PackagingLevelSerializer(serializers.ModelSerializer):
    class Meta:
        model = PackagingLevel
        fields = ["id", "level", "gtin", "quantity", "uses_sscc"]
        read_only_fields = ["id"]
        extra_kwargs = {"gtin": {"validators": []}}  # uniqueness is checked by the service


class ProductSerializer(FlatErrorsMixin, ScopedQuerysetsMixin, serializers.ModelSerializer):
    scoped_fields = {"owner": "list_companies"}

    markets = serializers.SlugRelatedField(
        many=True,
        slug_field="code",
        queryset=Market.objects.all(),
        required=False,
        help_text='Market codes, e.g. ["EU"]',
    )
    national_codes = ProductNationalCodeSerializer(
        many=True,
        required=False,
        help_text="All national numbers (AI 710–715) per market; leave out to keep them unchanged",
    )
    packaging_levels = PackagingLevelSerializer(
        many=True,
        required=False,
        help_text="All packaging levels (unit, bundle, case, pallet); leave out to keep them unchanged",
    )

    class Meta:
        model = Product
        fields = [
            "id",
            "owner",
            "code_schema",
            "product_code",
            "company_prefix_length",
            "name",
            "common_name",
            "dosage_form",
            "strength",
            "pack_size",
            "pack_type",
            "markets",
            "national_codes",
            "packaging_levels",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
