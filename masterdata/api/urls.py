from rest_framework.routers import DefaultRouter

from masterdata.api import views

router = DefaultRouter()
router.register("companies", views.CompanyViewSet, basename="company")
router.register("locations", views.LocationViewSet, basename="location")
router.register("markets", views.MarketViewSet, basename="market")
router.register("products", views.ProductViewSet, basename="product")

urlpatterns = router.urls
