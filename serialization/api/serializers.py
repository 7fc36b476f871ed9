"""Shapes of the serial engine in the API: input serializers check the shape, services check the rules.

No serializer here has a field for a pool's wrapped key or for a listed serial's extra parameters (AI 91/92).
"""

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from serialization.models import (
    Allocation,
    AllocationRange,
    ExportJob,
    ImportJob,
    Release,
    SerialPool,
)

# --- pools ------------------------------------------------------------------------------------------------------


class PoolSerializer(serializers.ModelSerializer):
    owner_name = serializers.CharField(source="owner.name", read_only=True)
    code = serializers.CharField(read_only=True, help_text="Product code, or extension digit + company prefix (SSCC)")
    assigned = serializers.IntegerField(read_only=True, help_text="Serials handed out (Assigned)")
    available = serializers.IntegerField(read_only=True, help_text="Serials that can still be allocated (Available)")

    class Meta:
        model = SerialPool
        fields = [
            "id",
            "name",
            "owner",
            "owner_name",
            "kind",
            "product",
            "product_code",
            "sscc_prefix",
            "sscc_extension_digit",
            "code",
            "source",
            "alphabet",
            "length",
            "no_leading_zero",
            "randomised",
            "issue_limit",
            "filled",
            "assigned",
            "available",
            "min_available",
            "max_available",
            "max_per_request",
            "created_at",
        ]
        read_only_fields = fields


class PoolFilterSerializer(serializers.Serializer):
    owner = serializers.IntegerField(required=False, help_text="Owner company id")
    kind = serializers.ChoiceField(choices=SerialPool.Kind.choices, required=False)
    source = serializers.ChoiceField(choices=SerialPool.Source.choices, required=False)
    product = serializers.IntegerField(required=False, help_text="Product id")
    product_code = serializers.CharField(required=False, max_length=14)


class PoolCreateSerializer(serializers.Serializer):
    """A generated pool (own generator) of a product or of SSCCs under a company prefix; or an empty list pool."""

    source = serializers.ChoiceField(
        choices=[SerialPool.Source.GENERATOR, *SerialPool.LIST_SOURCES],
        default=SerialPool.Source.GENERATOR,
        help_text="generator: serials made here; any other source: an empty pool that imports fill",
    )
    product = serializers.IntegerField(required=False, help_text="Product id (unit serials)")
    sscc_prefix = serializers.CharField(
        required=False, max_length=12, help_text="Company prefix digits (an SSCC pool; generator only)"
    )
    extension_digit = serializers.CharField(required=False, max_length=1, help_text="SSCC extension digit 0–9")
    name = serializers.CharField(required=False, max_length=200, default="")
    alphabet = serializers.CharField(required=False, max_length=82, help_text="Defaults to the product's market rule")
    length = serializers.IntegerField(required=False, min_value=1, max_value=20)
    no_leading_zero = serializers.BooleanField(default=False)
    randomised = serializers.BooleanField(required=False, allow_null=True, default=None)
    initial_fill = serializers.IntegerField(required=False, min_value=0, default=0)
    min_available = serializers.IntegerField(required=False, min_value=0, allow_null=True)
    max_available = serializers.IntegerField(required=False, min_value=1, allow_null=True)
    max_per_request = serializers.IntegerField(required=False, min_value=1, max_value=2_147_483_647)

    def validate(self, attrs):
        has_product, has_prefix = attrs.get("product") is not None, bool(attrs.get("sscc_prefix"))
        if has_product == has_prefix:
            raise serializers.ValidationError(
                {"product": "Give either a product id (unit serials) or an sscc_prefix (SSCCs), not both."}
            )
        if has_prefix and "extension_digit" not in attrs:
            raise serializers.ValidationError({"extension_digit": "An SSCC pool needs its extension digit, 0–9."})
        if attrs["source"] != SerialPool.Source.GENERATOR:
            if has_prefix:
                raise serializers.ValidationError({"sscc_prefix": "SSCC pools are generated; use source=generator."})
            extra = sorted(
                {"alphabet", "length", "randomised", "initial_fill", "no_leading_zero"} & self.initial_data.keys()
            )
            if extra:
                raise serializers.ValidationError(
                    {extra[0]: "A list pool takes its serials from imports; leave out the generator settings."}
                )
        low, high = attrs.get("min_available"), attrs.get("max_available")
        if low is not None and high is not None and high < low:
            raise serializers.ValidationError({"max_available": "max_available must be at least min_available."})
        return attrs


class FillSerializer(serializers.Serializer):
    quantity = serializers.IntegerField(min_value=1, help_text="Serials to add to the pool's Available count")
    reason = serializers.CharField(max_length=200, default="fill", help_text="Kept in the pool's fill record")


class PoolCountsSerializer(serializers.Serializer):
    kind = serializers.CharField()
    product_code = serializers.CharField()
    sscc_prefix = serializers.CharField()
    sscc_extension_digit = serializers.CharField()
    source = serializers.CharField()
    pools = serializers.IntegerField()
    filled = serializers.IntegerField(source="filled_total")
    assigned = serializers.IntegerField(source="assigned_total")
    available = serializers.IntegerField(source="available_total")


# --- allocations ------------------------------------------------------------------------------------------------


class RangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = AllocationRange
        fields = ["first_index", "count"]
        read_only_fields = fields


class AllocationSerializer(serializers.ModelSerializer):
    code = serializers.CharField(source="pool.code", read_only=True)
    partial = serializers.SerializerMethodField(help_text="True when fewer serials were granted than requested")
    active_quantity = serializers.IntegerField(read_only=True, help_text="Granted minus released")
    ranges = serializers.SerializerMethodField(help_text="Index ranges of the pool held by this allocation")
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    serials_url = serializers.SerializerMethodField()

    class Meta:
        model = Allocation
        fields = [
            "id",
            "pool",
            "code",
            "request_id",
            "purpose",
            "reference",
            "requested_quantity",
            "quantity",
            "partial",
            "allow_partial",
            "released",
            "active_quantity",
            "ranges",
            "requested_by",
            "created_at",
            "serials_url",
        ]
        read_only_fields = fields

    def get_partial(self, allocation: Allocation) -> bool:
        return allocation.quantity < allocation.requested_quantity

    @extend_schema_field(RangeSerializer(many=True))
    def get_ranges(self, allocation: Allocation) -> list[dict]:
        # Sorted in Python: the list endpoint prefetches the ranges, and order_by() would query again.
        ranges = sorted(allocation.ranges.all(), key=lambda r: r.first_index)
        return RangeSerializer(ranges, many=True).data

    def get_serials_url(self, allocation: Allocation) -> str:
        return reverse("api-v1:allocation-serials", args=[allocation.pk])


class AllocationFilterSerializer(serializers.Serializer):
    pool = serializers.IntegerField(required=False)
    purpose = serializers.ChoiceField(choices=Allocation.Purpose.choices, required=False)
    request_id = serializers.CharField(required=False, max_length=100)
    reference = serializers.CharField(required=False, max_length=100)
    product_code = serializers.CharField(required=False, max_length=14)


class AllocateSerializer(serializers.Serializer):
    quantity = serializers.IntegerField(min_value=1, help_text="Serials wanted (at most the pool's max_per_request)")
    request_id = serializers.CharField(
        max_length=100, help_text="Your idempotency key: the same id returns the same serials"
    )
    purpose = serializers.ChoiceField(choices=Allocation.Purpose.choices)
    reference = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)
    allow_partial = serializers.BooleanField(default=False, help_text="Grant what is available if the pool is short")


class ReleaseInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, help_text="Why the serials go back to Available (kept)")
    serials = serializers.ListField(
        child=serializers.CharField(max_length=20),
        required=False,
        max_length=100_000,
        help_text="Release only these serials (SSCCs for an SSCC pool); without it, every uncommissioned one",
    )


class ReleaseSerializer(serializers.ModelSerializer):
    released_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    allocation_active_quantity = serializers.IntegerField(source="allocation.active_quantity", read_only=True)

    class Meta:
        model = Release
        fields = ["id", "allocation", "quantity", "reason", "released_by", "created_at", "allocation_active_quantity"]
        read_only_fields = fields


# --- downloads and exports --------------------------------------------------------------------------------------


class SerialListQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=ExportJob.Format.choices, default=ExportJob.Format.CSV)
    notation = serializers.ChoiceField(choices=ExportJob.Notation.choices, default=ExportJob.Notation.SERIAL)


class ExportCreateSerializer(SerialListQuerySerializer):
    pass


class ExportJobSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(read_only=True, help_text="written / total, 0.0 to 1.0")
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    download_url = serializers.SerializerMethodField(help_text="Where to fetch the file, once the status is done")

    class Meta:
        model = ExportJob
        fields = [
            "id",
            "allocation",
            "format",
            "notation",
            "status",
            "total",
            "written",
            "progress",
            "sha256",
            "error",
            "requested_by",
            "created_at",
            "finished_at",
            "download_url",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_download_url(self, job: ExportJob) -> str | None:
        if job.status != ExportJob.Status.DONE:
            return None
        return reverse("api-v1:export-download", args=[job.pk])


# --- imports ------------------------------------------------------------------------------------------------------


class ImportCreateSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The serial list as delivered (CSV, JSON, SAP ATTP/ICH, TraceLink)")
    layout = serializers.ChoiceField(choices=ImportJob.Layout.choices)


class ImportErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField(allow_null=True)
    serial = serializers.CharField(allow_null=True, allow_blank=True)
    problem = serializers.CharField()


class ImportJobSerializer(serializers.ModelSerializer):
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    errors = ImportErrorSerializer(many=True, read_only=True, help_text="The whole error report, by line number")

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "pool",
            "layout",
            "original_name",
            "status",
            "rows",
            "imported",
            "error_count",
            "requested_by",
            "created_at",
            "finished_at",
            "errors",
        ]
        read_only_fields = fields


# --- lookup -------------------------------------------------------------------------------------------------------


class LookupQuerySerializer(serializers.Serializer):
    product_code = serializers.CharField(required=False, max_length=14, help_text="GTIN/NTIN of a unit serial")
    serial = serializers.CharField(required=False, max_length=20)
    sscc = serializers.CharField(required=False, max_length=18, help_text="An 18-digit SSCC instead")

    def validate(self, attrs):
        unit = bool(attrs.get("product_code")) or bool(attrs.get("serial"))
        if unit == bool(attrs.get("sscc")):
            raise serializers.ValidationError({"serial": "Ask with product_code and serial, or with sscc alone."})
        if unit and not (attrs.get("product_code") and attrs.get("serial")):
            missing = "serial" if attrs.get("product_code") else "product_code"
            raise serializers.ValidationError({missing: f"Give {missing} too: a serial is unique per product code."})
        return attrs


class LookupPoolSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    source = serializers.CharField()


class LookupAllocationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    request_id = serializers.CharField()
    purpose = serializers.CharField()
    reference = serializers.CharField()


class LookupPackSerializer(serializers.Serializer):
    status = serializers.CharField()
    commissioned_at = serializers.DateTimeField()


class LookupResultSerializer(serializers.Serializer):
    product_code = serializers.CharField(allow_blank=True)
    serial = serializers.CharField(help_text="The serial, or the SSCC")
    pool = LookupPoolSerializer()
    index = serializers.IntegerField(help_text="The serial's index in its pool")
    status = serializers.ChoiceField(choices=["available", "assigned"])
    allocation = LookupAllocationSerializer(allow_null=True)
    pack = LookupPackSerializer(allow_null=True, help_text="The commissioned pack, if the serial has one")
