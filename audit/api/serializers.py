from rest_framework import serializers

from audit.models import AccessEvent


class AccessEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AccessEvent
        fields = ["id", "created_at", "kind", "user", "username", "ip", "user_agent", "target", "quantity", "details"]
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
