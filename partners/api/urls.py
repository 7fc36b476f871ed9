"""URLs of the partners API (mounted under /api/v1/ in the "api-v1" namespace)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from partners.api import views

router = SimpleRouter()
router.register("partnerships", views.PartnershipViewSet, basename="partnership")

urlpatterns = [
    *router.urls,
    path(
        "partnerships/<int:pk>/assignments/",
        views.AssignmentListCreateView.as_view(),
        name="partnership-assignments",
    ),
    path("partnerships/<int:pk>/returns/", views.ReturnView.as_view(), name="partnership-returns"),
    path("partner-usage/", views.PartnerUsageView.as_view(), name="partner-usage"),
]
