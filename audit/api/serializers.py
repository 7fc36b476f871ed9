from rest_framework import serializers

from audit.models import AccessEvent, Incident


class AccessEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AccessEvent
        fields = [
            "id",
            "created_at",
            "kind",
            "user",
            "username",
            "door",
            "ip",
            "user_agent",
            "api_token",
            "target",
            "quantity",
            "counted_serials",
            "details",
        ]
        read_only_fields = fields


class AccessEventFilterSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=AccessEvent.Kind.choices, required=False)
    username = serializers.CharField(required=False, max_length=150)
    created_after = serializers.DateTimeField(required=False, help_text="Events at or after this time.")
    created_before = serializers.DateTimeField(required=False, help_text="Events before this time.")


class CurrentUserSerializer(serializers.Serializer):
    username = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())
    authenticated_by = serializers.ChoiceField(choices=["api_token", "session"])
    token_name = serializers.CharField(allow_null=True)
    token_prefix = serializers.CharField(allow_null=True)
    token_expires_at = serializers.DateTimeField(allow_null=True)


class IncidentLinkSerializer(serializers.Serializer):
    object_type = serializers.CharField(help_text="Model label, e.g. serialization.batch")
    object_id = serializers.CharField()


class IncidentNoteSerializer(serializers.Serializer):
    author = serializers.CharField(source="author.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    text = serializers.CharField()


class IncidentSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", allow_null=True, default=None)
    raised_by = serializers.CharField(source="raised_by.username", allow_null=True, default=None)
    links = IncidentLinkSerializer(many=True)
    notes = IncidentNoteSerializer(many=True)

    class Meta:
        model = Incident
        fields = [
            "id",
            "created_at",
            "kind",
            "severity",
            "status",
            "title",
            "details",
            "subject_type",
            "subject_id",
            "links",
            "owner",
            "raised_by",
            "notes",
            "resolved_at",
            "closed_at",
        ]
        read_only_fields = fields


class IncidentFilterSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Incident.Kind.choices, required=False)
    severity = serializers.ChoiceField(choices=Incident.Severity.choices, required=False)
    status = serializers.ChoiceField(choices=Incident.Status.choices, required=False)
    owner = serializers.CharField(required=False, max_length=150, help_text="Username of the owner.")
    created_after = serializers.DateTimeField(required=False, help_text="Raised at or after this time.")
    created_before = serializers.DateTimeField(required=False, help_text="Raised before this time.")
