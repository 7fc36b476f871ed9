"""URLs of the serial engine's API (mounted under /api/v1/ in the "api-v1" namespace)."""

from django.urls import path

from serialization.api import batches, history, line_reports, views

urlpatterns = [
    path("pools/", views.PoolListCreateView.as_view(), name="pool-list"),
    path("pools/counts/", views.PoolCountsView.as_view(), name="pool-counts"),
    path("pools/<int:pk>/", views.PoolDetailView.as_view(), name="pool-detail"),
    path("pools/<int:pk>/fill/", views.PoolFillView.as_view(), name="pool-fill"),
    path("pools/<int:pk>/allocations/", views.AllocateView.as_view(), name="pool-allocate"),
    path("pools/<int:pk>/imports/", views.ImportCreateView.as_view(), name="pool-import"),
    path("allocations/", views.AllocationListView.as_view(), name="allocation-list"),
    path("allocations/<int:pk>/", views.AllocationDetailView.as_view(), name="allocation-detail"),
    path("allocations/<int:pk>/serials/", views.SerialListView.as_view(), name="allocation-serials"),
    path("allocations/<int:pk>/release/", views.ReleaseView.as_view(), name="allocation-release"),
    path("allocations/<int:pk>/exports/", views.ExportCreateView.as_view(), name="allocation-export"),
    path("exports/", views.ExportListView.as_view(), name="export-list"),
    path("exports/<int:pk>/", views.ExportDetailView.as_view(), name="export-detail"),
    path("exports/<int:pk>/download/", views.ExportDownloadView.as_view(), name="export-download"),
    path("imports/<int:pk>/", views.ImportDetailView.as_view(), name="import-detail"),
    path("serials/lookup/", views.LookupView.as_view(), name="serial-lookup"),
    path("batches/", batches.BatchListCreateView.as_view(), name="batch-list"),
    path("batches/<int:pk>/", batches.BatchDetailView.as_view(), name="batch-detail"),
    path("batches/<int:pk>/transition/", batches.BatchTransitionView.as_view(), name="batch-transition"),
    path("batches/<int:pk>/reconcile/", batches.BatchReconcileView.as_view(), name="batch-reconcile"),
    path(
        "batches/<int:pk>/reconciliations/",
        batches.BatchReconciliationListView.as_view(),
        name="batch-reconciliations",
    ),
    path("batches/<int:pk>/release/", batches.BatchReleaseView.as_view(), name="batch-release"),
    path("orders/", batches.OrderListCreateView.as_view(), name="order-list"),
    path("orders/<int:pk>/", batches.OrderDetailView.as_view(), name="order-detail"),
    path("orders/<int:pk>/serials/", batches.OrderSerialsView.as_view(), name="order-serials"),
    path("orders/<int:pk>/close/", batches.OrderCloseView.as_view(), name="order-close"),
    path("packs/history/", history.PackHistoryView.as_view(), name="pack-history"),
    path("line-reports/", line_reports.LineReportCreateView.as_view(), name="line-report-create"),
    path("line-reports/<str:report_id>/", line_reports.LineReportDetailView.as_view(), name="line-report-detail"),
]
