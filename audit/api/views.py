from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import selectors
from audit.api.serializers import (
    AccessEventFilterSerializer,
    AccessEventSerializer,
    CurrentUserSerializer,
    IncidentFilterSerializer,
    IncidentSerializer,
)
from audit.models import AccessEvent, ApiToken, Incident


class CurrentUserView(APIView):
    """Who the API thinks you are: lets a system account check its key without touching any data."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=CurrentUserSerializer)
    def get(self, request):
        token = request.auth if isinstance(request.auth, ApiToken) else None
        data = {
            "username": request.user.get_username(),
            "roles": sorted(request.user.groups.values_list("name", flat=True)),
            "authenticated_by": "api_token" if token else "session",
            "token_name": token.name if token else None,
            "token_prefix": token.key_prefix if token else None,
            "token_expires_at": token.expires_at if token else None,
        }
        return Response(CurrentUserSerializer(data).data)


@extend_schema_view(list=extend_schema(parameters=[AccessEventFilterSerializer]))
class AccessEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The access log (sign-ins, token use, downloads, exports), newest first. Needs ``audit.view_accessevent``."""

    serializer_class = AccessEventSerializer
    queryset = AccessEvent.objects.none()  # for ModelPermissions and the schema; rows come from the selector

    def get_queryset(self):
        filters = AccessEventFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return selectors.list_access_events(user=self.request.user, filters=filters.validated_data)


@extend_schema_view(list=extend_schema(parameters=[IncidentFilterSerializer]))
class IncidentViewSet(viewsets.ReadOnlyModelViewSet):
    """Incidents (reconciliation discrepancies, submission failures, audit-chain breaks, security anomalies, manual
    reports), newest first, with notes and linked objects. Needs ``audit.view_incident`` (steward, QA, auditor)."""

    serializer_class = IncidentSerializer
    queryset = Incident.objects.none()  # for ModelPermissions and the schema; rows come from the selector

    def get_queryset(self):
        filters = IncidentFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return selectors.list_incidents(user=self.request.user, filters=filters.validated_data)
