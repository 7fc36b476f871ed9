"""Pack history over the API: ``GET /api/v1/packs/history/?product_code=…&serial=…`` or ``?sscc=…``.

The view is a thin shell around ``serialization.selectors.get_pack_history`` (which the partner portal reuses):
the query is validated like the serial lookup's, the answer is the selector's PackHistory as JSON. Reading needs
``serialization.view_pack``; a serial in another company's pool is 404, worded like one that does not exist.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response

from serialization import selectors
from serialization.api.serializers import LookupQuerySerializer
from serialization.models import Pack, PackEvent, SerialPool

# Enumerations are described in help texts rather than ChoiceFields: their field names ("status", "action") carry
# other choice sets elsewhere in the API, and the schema must name each enum once.
LEVELS = ", ".join(f"{number} {name}" for number, name in sorted(selectors.LEVEL_NAMES.items()))
PACK_STATUSES = ", ".join(Pack.Status.values)


class PoolOriginSerializer(serializers.Serializer):
    how = serializers.ChoiceField(choices=["generated", "imported"])
    fill_quantity = serializers.IntegerField(allow_null=True, help_text="Serials the fill (or import) brought in")
    fill_reason = serializers.CharField(allow_blank=True)
    filled_at = serializers.DateTimeField(allow_null=True)
    filled_by = serializers.CharField(allow_blank=True)
    import_job_id = serializers.IntegerField(allow_null=True, help_text="The import job, for an imported serial")
    import_file = serializers.CharField(allow_blank=True)
    import_layout = serializers.CharField(allow_blank=True)


class ReleaseEntrySerializer(serializers.Serializer):
    quantity = serializers.IntegerField()
    reason = serializers.CharField()
    released_by = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class AllocationEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    request_id = serializers.CharField()
    purpose = serializers.CharField()
    reference = serializers.CharField(allow_blank=True)
    packaging_order = serializers.CharField(allow_blank=True, help_text="Packaging order number, if any")
    requested_by = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    quantity = serializers.IntegerField()
    released = serializers.IntegerField()
    releases = ReleaseEntrySerializer(
        many=True, help_text="Unused serials of this allocation given back (not this one)"
    )


class PoolHistorySerializer(serializers.Serializer):
    pool_id = serializers.IntegerField()
    pool_name = serializers.CharField()
    pool_kind = serializers.CharField(help_text=", ".join(SerialPool.Kind.values))
    pool_source = serializers.CharField(help_text=", ".join(SerialPool.Source.values))
    index = serializers.IntegerField(help_text="The serial's index in its pool")
    status = serializers.CharField(help_text="available or assigned")
    origin = PoolOriginSerializer()
    allocation = AllocationEntrySerializer(allow_null=True, help_text="The allocation holding the serial")
    released_to_available = serializers.BooleanField(help_text="Handed out once, then released back to Available")


class PackStateSerializer(serializers.Serializer):
    level = serializers.IntegerField(help_text=LEVELS)
    status = serializers.CharField(help_text=PACK_STATUSES)
    reason = serializers.CharField(allow_blank=True, help_text="Why it was decommissioned")
    eu_state = serializers.CharField(allow_blank=True, help_text="EU hub state")
    batch_lot = serializers.CharField(allow_blank=True)
    batch_expiry = serializers.CharField(allow_blank=True, help_text="YYMMDD exactly as printed")
    order = serializers.CharField(allow_blank=True, help_text="Packaging order number")
    commissioned_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class PackTimelineEntrySerializer(serializers.Serializer):
    occurred_at = serializers.DateTimeField()
    action = serializers.CharField(help_text=", ".join(PackEvent.Action.values))
    parent_product_code = serializers.CharField(allow_blank=True)
    parent_serial = serializers.CharField(allow_blank=True, help_text="SSCC of the container packed into/unpacked from")
    reason = serializers.CharField(allow_blank=True)
    report_id = serializers.CharField()
    report_kind = serializers.CharField()
    user = serializers.CharField(allow_blank=True, help_text="Who submitted the report")


class PackRefSerializer(serializers.Serializer):
    product_code = serializers.CharField(allow_blank=True, help_text="Empty for an SSCC")
    serial = serializers.CharField(help_text="The serial, or the SSCC")
    level = serializers.IntegerField(help_text=LEVELS)
    level_name = serializers.CharField()
    status = serializers.CharField(help_text=PACK_STATUSES)
    depth = serializers.IntegerField(help_text="Steps from the pack asked about")
    parent_serial = serializers.CharField(allow_blank=True)


class PackTreeSerializer(serializers.Serializer):
    counts = serializers.DictField(child=serializers.IntegerField(), help_text='Exact, per level: {"cases": 2, …}')
    total = serializers.IntegerField()
    items = PackRefSerializer(
        many=True,
        help_text=f"At most {selectors.BELOW_LIST_LIMIT:,}, upper levels first, each container before its contents",
    )
    truncated = serializers.BooleanField(help_text="More packs below than listed")


class PackHistorySerializer(serializers.Serializer):
    product_code = serializers.CharField(allow_blank=True)
    serial = serializers.CharField(help_text="The serial, or the SSCC")
    pool = PoolHistorySerializer()
    pack = PackStateSerializer(allow_null=True, help_text="Null while the serial was never commissioned")
    events = PackTimelineEntrySerializer(many=True, help_text="The pack's events, oldest first")
    above = PackRefSerializer(many=True, help_text="Containers above, nearest first")
    below = PackTreeSerializer()


class PackHistoryView(generics.GenericAPIView):
    serializer_class = PackHistorySerializer
    queryset = Pack.objects.none()  # ModelPermissions: serialization.view_pack
    pagination_class = None

    @extend_schema(
        summary="A serial's or SSCC's pool history, pack history and hierarchy",
        parameters=[LookupQuerySerializer],
        responses={
            200: PackHistorySerializer,
            400: OpenApiResponse(description='Invalid query: {"error": {"code", "message", "fields"}}'),
            404: OpenApiResponse(description="The serial is in no pool visible to you"),
        },
    )
    def get(self, request):
        query = LookupQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        history = selectors.get_pack_history(user=request.user, **query.validated_data)
        return Response(PackHistorySerializer(history).data)
