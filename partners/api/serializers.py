"""Shapes of partnerships, serial assignments and partner usage in the API. Serializers check the shape of input;
``partners.services`` checks the rules, so the API and the admin answer with the same messages."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from masterdata import selectors as masterdata_selectors
from masterdata.models import Company
from partners.models import Partnership, SerialAssignment
from partners.services import EDITABLE_STATUSES


# The statuses as an enum wrapped in allOf: a bare enum on a property named "status" shares drf-spectacular's enum
# naming with the engine's statuses (batches, orders, jobs) and makes the schema build warn.
@extend_schema_field(
    {
        "allOf": [{"type": "string", "enum": list(Partnership.Status.values)}],
        "description": "active, suspended or revoked (revoked only through the revoke action)",
    }
)
class PartnershipStatusField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=Partnership.Status.choices, **kwargs)


class PartnershipSerializer(serializers.ModelSerializer):
    """A partnership. ``mah`` must be a company you can see (your own, for an MAH's user); ``cmo`` any company with
    the CMO role; ``products`` products of the MAH. MAH and CMO are fixed once created; revoke with the revoke
    action."""

    mah = serializers.PrimaryKeyRelatedField(queryset=Company.objects.none())
    cmo = serializers.PrimaryKeyRelatedField(queryset=Company.objects.filter(is_cmo=True))
    mah_name = serializers.CharField(source="mah.name", read_only=True)
    cmo_name = serializers.CharField(source="cmo.name", read_only=True)
    status = PartnershipStatusField(default=Partnership.Status.ACTIVE)
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)

    class Meta:
        model = Partnership
        fields = [
            "id",
            "mah",
            "mah_name",
            "cmo",
            "cmo_name",
            "status",
            "products",
            "markets",
            "started_on",
            "revoked_at",
            "revoke_reason",
            "created_by",
            "created_at",
        ]
        read_only_fields = ["id", "revoked_at", "revoke_reason", "created_at"]
        extra_kwargs = {"products": {"required": False}, "markets": {"required": False}}
        validators = []  # (mah, cmo) uniqueness is the service's full_clean, with its message

    def get_fields(self):
        fields = super().get_fields()
        request = self.context.get("request")
        user = getattr(request, "user", None)
        if user is not None:
            if not fields["mah"].read_only:
                fields["mah"].queryset = masterdata_selectors.list_companies(user=user, filters={"is_mah": True})
            fields["products"].child_relation.queryset = masterdata_selectors.list_products(user=user)
            fields["markets"].child_relation.queryset = masterdata_selectors.list_markets(user=user)
        return fields

    def validate_status(self, value: str) -> str:
        if value not in EDITABLE_STATUSES:
            raise serializers.ValidationError("Set active or suspended here; revoke with POST …/revoke/ {reason}.")
        return value


class PartnershipUpdateSerializer(PartnershipSerializer):
    mah = serializers.PrimaryKeyRelatedField(read_only=True)
    cmo = serializers.PrimaryKeyRelatedField(read_only=True)


class RevokeSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=1000, help_text="Why the partnership ends; kept in the record")


class SerialAssignmentSerializer(serializers.ModelSerializer):
    product_code = serializers.CharField(source="product.product_code", read_only=True)
    allocation = serializers.PrimaryKeyRelatedField(read_only=True, help_text="The allocation from the MAH's pool")
    partner_pool = serializers.PrimaryKeyRelatedField(read_only=True, help_text="The CMO's partner pool")
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)

    class Meta:
        model = SerialAssignment
        fields = [
            "id",
            "partnership",
            "product",
            "product_code",
            "quantity",
            "request_id",
            "allocation",
            "partner_pool",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields


class AssignSerializer(serializers.Serializer):
    product = serializers.IntegerField(min_value=1, help_text="Id of a product of the partnership")
    quantity = serializers.IntegerField(min_value=1)
    request_id = serializers.CharField(max_length=100, help_text="Your idempotency key: a retry gets the first result")


class ReturnSerializer(serializers.Serializer):
    product = serializers.IntegerField(min_value=1, help_text="Id of a product assigned under the partnership")
    reason = serializers.CharField(max_length=500, help_text="Why the serials come back; kept in the record")
    quantity = serializers.IntegerField(
        min_value=1, required=False, help_text="How many; leave out to return every unused serial"
    )


class ReturnResultSerializer(serializers.Serializer):
    partnership = serializers.IntegerField()
    product = serializers.IntegerField()
    returned = serializers.IntegerField(help_text="Serials handed back to the MAH by this request")


class PartnerUsageSerializer(serializers.Serializer):
    partnership = serializers.IntegerField(source="partnership_id")
    partnership_status = serializers.CharField()
    mah = serializers.IntegerField(source="mah_id")
    mah_name = serializers.CharField()
    cmo = serializers.IntegerField(source="cmo_id")
    cmo_name = serializers.CharField()
    product = serializers.IntegerField(source="product_id")
    product_code = serializers.CharField()
    product_name = serializers.CharField()
    in_partnership = serializers.BooleanField(help_text="False for a product taken out of the partnership since")
    assigned = serializers.IntegerField(help_text="Serials the MAH assigned to the CMO")
    used = serializers.IntegerField(help_text="Of them, commissioned at the CMO")
    returned = serializers.IntegerField(help_text="Of them, handed back unused")
    remaining = serializers.IntegerField(help_text="assigned − used − returned: still with the CMO")


class PartnerUsageFilterSerializer(serializers.Serializer):
    mah = serializers.IntegerField(required=False, min_value=1)
    cmo = serializers.IntegerField(required=False, min_value=1)
    status = PartnershipStatusField(required=False)
