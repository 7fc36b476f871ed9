from django.urls import path
from rest_framework.routers import SimpleRouter

from audit.api import views

router = SimpleRouter()
router.register("access-events", views.AccessEventViewSet, basename="access-event")
router.register("incidents", views.IncidentViewSet, basename="incident")

urlpatterns = [
    path("me/", views.CurrentUserView.as_view(), name="me"),
    *router.urls,
]
