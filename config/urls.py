"""URL wiring only: each app owns its own URL modules."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

api_v1 = [
    path("", include("audit.api.urls")),
    path("", include("masterdata.api.urls")),
    path("", include("serialization.api.urls")),
    path("", include("partners.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-v1:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-v1:schema"), name="redoc"),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("accounts/", include("audit.urls")),
    path("admin/", admin.site.urls),
    path("portal/", include("partners.urls")),
    path("api/v1/", include((api_v1, "api-v1"))),
]
