"""The partner portal's pages, mounted at /portal/ (config/urls.py)."""

from django.urls import path

from partners import views

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("pools/", views.pool_list, name="pools"),
    path("pools/<str:product_code>/", views.pool_detail, name="pool"),
    path("history/", views.history, name="history"),
    path("orders/", views.order_list, name="orders"),
    path("orders/<int:pk>/", views.order_detail, name="order"),
    path("orders/<int:pk>/request-serials/", views.order_request_serials, name="order-request-serials"),
    path("orders/<int:pk>/reports/", views.order_upload_report, name="order-upload-report"),
    path("allocations/<int:pk>/serials.csv", views.allocation_download, name="allocation-download"),
    path("batches/", views.batch_list, name="batches"),
    path("submissions/", views.outbox, name="outbox"),
    path("submissions/panel/", views.outbox_panel, name="outbox-panel"),
]
