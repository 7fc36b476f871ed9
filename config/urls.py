"""URL wiring only: each app owns its own URL modules."""

from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_replace
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
    # Redoc writes <style> elements without the nonce and runs its search in a worker made from a blob: this page
    # alone allows both (CSP drops 'unsafe-inline' where a nonce is listed, so style-src is replaced, not extended).
    path(
        "redoc/",
        csp_replace({"style-src": [SELF, UNSAFE_INLINE], "worker-src": [SELF, "blob:"]})(
            SpectacularRedocView.as_view(url_name="api-v1:schema")
        ),
        name="redoc",
    ),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("accounts/", include("audit.urls")),
    path("admin/", admin.site.urls),
    path("portal/", include("partners.urls")),
    path("api/v1/", include((api_v1, "api-v1"))),
]
