"""The steward's admin for the serial engine: pools with their counts, fill and import, allocations and releases,
export and import jobs.

Every write goes through ``serialization.services`` (the admin never moves a counter itself), rows are scoped by the
same selectors as the API, and no page shows a pool's wrapped key or a listed serial's extra parameters. Pools are
saved with ``update_fields`` only: a full save would write back counters read before a concurrent allocation.
"""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from simple_history.admin import SimpleHistoryAdmin
from simple_history.template_utils import HistoricalRecordContextHelper

from audit.exceptions import DomainError
from audit.limits import RateLimited, check_rate_limit
from audit.pilferage import ExportBlocked
from audit.retention import deletion_refusal
from masterdata import selectors as masterdata_selectors
from masterdata.models import CompanyPrefix
from masterdata.selectors import scope_to_company
from serialization import selectors
from serialization.models import (
    Allocation,
    AllocationRange,
    Batch,
    CaptureJob,
    EpcisExportJob,
    ExportJob,
    ImportJob,
    LineReport,
    Pack,
    PackagingOrder,
    Reconciliation,
    Release,
    SerialPool,
)
from serialization.retention import batch_keep_until
from serialization.services import create_generated_pool, create_list_pool, fill_pool, release_serials
from serialization.services.batches import (
    EDITABLE_FIELDS,
    PLANNED_ONLY_FIELDS,
    REASON_MAX,
    check_batch_fields,
    close_packaging_order,
    create_batch,
    needs_reason,
    transition_batch,
    update_batch,
)
from serialization.services.epcis_exports import create_epcis_export, open_epcis_download, scope_epcis_exports
from serialization.services.exports import open_export_download
from serialization.services.imports import start_import
from serialization.services.reconciliation import reconcile_batch, release_batch

SECRET_FIELDS = frozenset({"encrypted_key"})


class _NoSecretsHistoryHelper(HistoricalRecordContextHelper):
    """History diffs without the wrapped pool key (history rows keep it; the page must not show it)."""

    def context_for_delta_changes(self, delta):
        return [change for change in super().context_for_delta_changes(delta) if change["field"] not in SECRET_FIELDS]


def _add_service_error(form: forms.Form, exc: Exception) -> None:
    """Show a service's DomainError or model ValidationError on the form field it names (or above the form)."""
    if isinstance(exc, DomainError):
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            for message in errors:
                form.add_error(field if field in form.fields else None, message)
        return
    form.add_error(None, exc)


# --- pools ------------------------------------------------------------------------------------------------------


class PoolCreationForm(forms.Form):
    """A new pool: generated (own generator, for a product or SSCCs under a prefix) or an empty list pool."""

    source = forms.ChoiceField(
        choices=[(SerialPool.Source.GENERATOR, SerialPool.Source.GENERATOR.label)]
        + [(s, SerialPool.Source(s).label) for s in SerialPool.LIST_SOURCES],
        initial=SerialPool.Source.GENERATOR,
    )
    product = forms.ModelChoiceField(queryset=None, required=False, help_text="For unit serials")
    sscc_prefix = forms.ModelChoiceField(
        queryset=None, required=False, label="SSCC company prefix", help_text="For SSCCs (generated pools only)"
    )
    extension_digit = forms.RegexField(regex=r"^\d$", required=False, label="SSCC extension digit")
    name = forms.CharField(max_length=200, required=False, help_text="Defaults to the product code and name")
    alphabet = forms.CharField(max_length=82, required=False, help_text="Defaults to the product's market rule")
    length = forms.IntegerField(min_value=1, max_value=20, required=False, help_text="Defaults to the market rule")
    no_leading_zero = forms.BooleanField(required=False)
    randomised = forms.NullBooleanField(
        widget=forms.Select(choices=[("unknown", "As the markets require"), ("true", "Yes"), ("false", "No")]),
        required=False,
    )
    initial_fill = forms.IntegerField(min_value=0, initial=0, required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["product"].queryset = masterdata_selectors.list_products(user=user)
        self.fields["sscc_prefix"].queryset = CompanyPrefix.objects.filter(
            company__in=masterdata_selectors.list_companies(user=user)
        ).select_related("company")

    def clean(self):
        data = super().clean()
        product, prefix = data.get("product"), data.get("sscc_prefix")
        if (product is None) == (prefix is None):
            raise ValidationError("Choose a product (unit serials) or an SSCC company prefix, not both.")
        if prefix is not None and data.get("source") != SerialPool.Source.GENERATOR:
            self.add_error("source", "SSCC pools are generated: choose “Own generator”.")
        if prefix is not None and not data.get("extension_digit"):
            self.add_error("extension_digit", "An SSCC pool needs its extension digit, 0–9.")
        return data

    def create(self, *, actor) -> SerialPool:
        data = self.cleaned_data
        product, prefix = data["product"], data["sscc_prefix"]
        owner = product.owner if product is not None else prefix.company
        if data["source"] != SerialPool.Source.GENERATOR:
            return create_list_pool(owner=owner, actor=actor, product=product, source=data["source"], name=data["name"])
        return create_generated_pool(
            owner=owner,
            actor=actor,
            product=product,
            sscc_prefix=prefix,
            extension_digit=data["extension_digit"] or None,
            name=data["name"],
            alphabet=data["alphabet"] or None,
            length=data["length"],
            no_leading_zero=data["no_leading_zero"],
            randomised=data["randomised"],
            initial_fill=data["initial_fill"] or 0,
        )


class FillPoolForm(forms.Form):
    quantity = forms.IntegerField(min_value=1, help_text="Serials to add to the pool's Available count")
    reason = forms.CharField(max_length=200, initial="fill", help_text="Kept in the pool's fill record")


class ImportSerialsForm(forms.Form):
    file = forms.FileField(help_text="The serial list as delivered")
    layout = forms.ChoiceField(choices=ImportJob.Layout.choices)


@admin.register(SerialPool)
class SerialPoolAdmin(SimpleHistoryAdmin):
    list_display = [
        "name",
        "code",
        "kind",
        "source",
        "format",
        "randomised",
        "filled",
        "available_count",
        "assigned_count",
        "issue_limit",
    ]
    list_filter = ["kind", "source", "randomised"]
    search_fields = ["name", "product_code", "sscc_prefix"]
    list_select_related = ["owner"]
    editable = ["name", "min_available", "max_available", "max_per_request"]
    fieldsets = [
        (None, {"fields": ["name", "owner", "kind", "product", "code", "source", "created_by", "created_at"]}),
        ("Number format", {"fields": ["alphabet", "length", "no_leading_zero", "randomised", "issue_limit"]}),
        ("Counts", {"fields": ["filled", "assigned_count", "available_count", "next_index", "free"]}),
        ("Limits and replenishment", {"fields": ["max_per_request", "min_available", "max_available"]}),
    ]
    change_form_template = "admin/serialization/serialpool/change_form.html"

    def get_queryset(self, request):
        return selectors.scope_pools(super().get_queryset(request), user=request.user)

    def get_readonly_fields(self, request, obj=None):
        every = [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]
        return [field for field in every if field not in self.editable]

    @admin.display(description="format")
    def format(self, pool: SerialPool) -> str:
        return f"{pool.length} × {pool.alphabet[:12]}{'…' if len(pool.alphabet) > 12 else ''}"

    @admin.display(description="available")
    def available_count(self, pool: SerialPool) -> int:
        return pool.available

    @admin.display(description="assigned")
    def assigned_count(self, pool: SerialPool) -> int:
        return pool.assigned

    def save_model(self, request, obj, form, change):
        changed = [field for field in form.changed_data if field in self.editable]
        if change and changed:
            obj._history_user = request.user
            obj.save(update_fields=changed)

    def get_historical_record_context_helper(self, request, historical_record):
        return _NoSecretsHistoryHelper(self.model, historical_record)

    def revert_disabled(self, request, obj=None) -> bool:
        return True  # a reverted pool would carry settings from before its fills and allocations

    def get_urls(self):
        return [
            path(
                "<path:object_id>/fill/",
                self.admin_site.admin_view(self.fill_view),
                name="serialization_serialpool_fill",
            ),
            path(
                "<path:object_id>/import/",
                self.admin_site.admin_view(self.import_view),
                name="serialization_serialpool_import",
            ),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PoolCreationForm(request.POST or None, user=request.user)
        if request.method == "POST" and form.is_valid():
            try:
                pool = form.create(actor=request.user)
            except (DomainError, ValidationError) as exc:
                _add_service_error(form, exc)
            else:
                self.log_addition(request, pool, [{"added": {}}])
                self.message_user(request, f"Created pool “{pool}”.", messages.SUCCESS)
                return redirect(reverse("admin:serialization_serialpool_change", args=[pool.pk]))
        return self._form_page(request, form, None, "Add serial pool", "admin/serialization/serialpool/add.html")

    def fill_view(self, request, object_id):
        pool = self._pool_or_404(request, object_id)
        if not request.user.has_perm("serialization.add_poolfill"):
            raise PermissionDenied
        form = FillPoolForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            quantity = form.cleaned_data["quantity"]
            try:
                fill_pool(pool=pool, quantity=quantity, actor=request.user, reason=form.cleaned_data["reason"])
            except DomainError as exc:
                _add_service_error(form, exc)
            else:
                self.log_change(request, pool, f"Filled {quantity} serials.")
                self.message_user(
                    request, f"Added {quantity:,} serials to “{pool}”: {pool.available:,} available.", messages.SUCCESS
                )
                return redirect(reverse("admin:serialization_serialpool_change", args=[pool.pk]))
        return self._form_page(request, form, pool, f"Fill {pool}", "admin/serialization/serialpool/fill.html")

    def import_view(self, request, object_id):
        pool = self._pool_or_404(request, object_id)
        if not request.user.has_perm("serialization.add_importjob"):
            raise PermissionDenied
        form = ImportSerialsForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = start_import(
                    pool=pool,
                    layout=form.cleaned_data["layout"],
                    uploaded_file=form.cleaned_data["file"],
                    actor=request.user,
                )
            except DomainError as exc:
                _add_service_error(form, exc)
            else:
                self.message_user(
                    request,
                    f"Import {job.pk} of {job.original_name or 'the file'} started; its status and error report are "
                    "on this page.",
                    messages.SUCCESS,
                )
                return redirect(reverse("admin:serialization_importjob_change", args=[job.pk]))
        return self._form_page(
            request, form, pool, f"Import serials into {pool}", "admin/serialization/serialpool/import.html"
        )

    def _pool_or_404(self, request, object_id) -> SerialPool:
        pool = self.get_object(request, object_id)
        if pool is None:
            raise Http404(f"No serial pool with id {object_id} is visible to you.")
        return pool

    def _form_page(self, request, form, pool, title, template):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": pool,
            "form": form,
            "title": title,
            "has_view_permission": self.has_view_permission(request, pool),
        }
        return TemplateResponse(request, template, context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        user = request.user
        context.update(
            {
                "can_fill": obj is not None and obj.is_generated and user.has_perm("serialization.add_poolfill"),
                "can_import": obj is not None and not obj.is_generated and user.has_perm("serialization.add_importjob"),
            }
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a pool's serials may have been issued: never deleted


# --- allocations --------------------------------------------------------------------------------------------------


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class AllocationRangeInline(_ReadOnlyInline):
    model = AllocationRange
    fields = ["first_index", "count", "last_index"]
    readonly_fields = fields
    verbose_name_plural = "index ranges held"

    @admin.display(description="last index")
    def last_index(self, row: AllocationRange) -> int:
        return row.first_index + row.count - 1


class ReleaseInline(_ReadOnlyInline):
    model = Release
    fields = ["created_at", "quantity", "reason", "released_by"]
    readonly_fields = fields


class ReleaseUnusedForm(forms.Form):
    reason = forms.CharField(
        max_length=500, widget=forms.Textarea(attrs={"rows": 3}), help_text="Kept with the release, e.g. “order closed”"
    )


@admin.register(Allocation)
class AllocationAdmin(SimpleHistoryAdmin):
    list_display = [
        "id",
        "pool",
        "request_id",
        "purpose",
        "reference",
        "requested_quantity",
        "quantity",
        "released",
        "active",
        "requested_by",
        "created_at",
    ]
    list_filter = ["purpose", "allow_partial", "created_at"]
    search_fields = ["request_id", "reference", "pool__product_code", "pool__name"]
    list_select_related = ["pool", "requested_by"]
    fields = [
        "pool",
        "request_id",
        "purpose",
        "reference",
        "requested_quantity",
        "quantity",
        "allow_partial",
        "released",
        "active",
        "requested_by",
        "created_at",
    ]
    readonly_fields = fields
    inlines = [AllocationRangeInline, ReleaseInline]
    actions = ["release_unused"]

    def get_queryset(self, request):
        return selectors.scope_allocations(super().get_queryset(request), user=request.user)

    @admin.display(description="active")
    def active(self, allocation: Allocation) -> int:
        return allocation.active_quantity

    def has_add_permission(self, request) -> bool:
        return False  # allocations are requested through the API (or by the services), never typed in

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_release_permission(self, request) -> bool:
        return request.user.has_perm("serialization.add_release")

    @admin.action(description="Release unused serials of the selected allocations", permissions=["release"])
    def release_unused(self, request, queryset):
        form = ReleaseUnusedForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason, released = form.cleaned_data["reason"], 0
            for allocation in queryset.order_by("pk"):
                try:
                    release = release_serials(allocation=allocation, actor=request.user, reason=reason)
                except DomainError as exc:
                    self.message_user(request, f"Allocation {allocation.pk}: {exc.message}", messages.WARNING)
                else:
                    released += release.quantity
                    self.log_change(request, allocation, f"Released {release.quantity} serials: {reason}")
            self.message_user(request, f"Released {released:,} serials back to Available.", messages.SUCCESS)
            return HttpResponseRedirect(request.get_full_path())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Release unused serials",
            "form": form,
            "objects": queryset.order_by("pk"),
            "action": "release_unused",
            "submit_label": "Release unused serials",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/serialization/allocation/release_unused.html", context)


# --- export and import jobs ----------------------------------------------------------------------------------------


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ExportJob)
class ExportJobAdmin(_ReadOnlyAdmin):
    list_display = [
        "id",
        "allocation",
        "format",
        "notation",
        "status",
        "progress_percent",
        "requested_by",
        "created_at",
    ]
    list_filter = ["status", "format", "notation"]
    list_select_related = ["allocation", "allocation__pool", "requested_by"]
    fields = [
        "allocation",
        "format",
        "notation",
        "status",
        "total",
        "written",
        "progress_percent",
        "sha256",
        "error",
        "download",
        "requested_by",
        "created_at",
        "finished_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return selectors.list_exports(user=request.user)

    @admin.display(description="progress")
    def progress_percent(self, job: ExportJob) -> str:
        return f"{job.progress:.0%}"

    @admin.display(description="file")
    def download(self, job: ExportJob) -> str:
        if job.status != ExportJob.Status.DONE:
            return "—"
        url = reverse("admin:serialization_exportjob_download", args=[job.pk])
        return format_html('<a href="{}">Download ({} serials)</a>', url, job.written)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="serialization_exportjob_download",
            ),
            *super().get_urls(),
        ]

    def download_view(self, request, object_id):
        job = self.get_object(request, object_id)
        if job is None or not self.has_view_permission(request, job):
            raise Http404(f"No export with id {object_id} is visible to you.")
        back = reverse("admin:serialization_exportjob_change", args=[job.pk])
        try:
            check_rate_limit(request=request, scope="export")
            download = open_export_download(job=job, user=request.user, request=request)
        except (RateLimited, ExportBlocked) as exc:
            limited = isinstance(exc, RateLimited)
            context = {
                **self.admin_site.each_context(request),
                "title": "Too many downloads" if limited else "Downloads blocked",
                "message": str(exc.detail) if limited else exc.message,
                "back": back,
            }
            response = TemplateResponse(
                request, "admin/serial_download_refused.html", context, status=429 if limited else 403
            )
            if limited:
                response["Retry-After"] = str(exc.wait)
            return response
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return redirect(back)
        return FileResponse(
            download.file, as_attachment=True, filename=download.filename, content_type=download.content_type
        )


@admin.register(EpcisExportJob)
class EpcisExportJobAdmin(_ReadOnlyAdmin):
    """EPCIS documents written in the background (queued from the batch list or the API), with their files."""

    list_display = ["id", "scope", "version", "syntax", "status", "progress_percent", "requested_by", "created_at"]
    list_filter = ["status", "version", "syntax"]
    list_select_related = ["batch", "order", "shipping_report", "requested_by"]
    fields = [
        "scope",
        "version",
        "syntax",
        "status",
        "total",
        "written",
        "progress_percent",
        "events",
        "validated",
        "sha256",
        "error",
        "download",
        "requested_by",
        "created_at",
        "finished_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return scope_epcis_exports(super().get_queryset(request), user=request.user)

    @admin.display(description="of")
    def scope(self, job: EpcisExportJob) -> str:
        if job.batch_id:
            return f"batch {job.batch}"
        if job.order_id:
            return f"order {job.order}"
        return f"shipment {job.shipping_report.report_id}"

    @admin.display(description="progress")
    def progress_percent(self, job: EpcisExportJob) -> str:
        return f"{job.progress:.0%}"

    @admin.display(description="file")
    def download(self, job: EpcisExportJob) -> str:
        if job.status != EpcisExportJob.Status.DONE:
            return "—"
        url = reverse("admin:serialization_epcisexportjob_download", args=[job.pk])
        return format_html('<a href="{}">Download ({} events, {} EPCs)</a>', url, job.events, job.written)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="serialization_epcisexportjob_download",
            ),
            *super().get_urls(),
        ]

    def download_view(self, request, object_id):
        job = self.get_object(request, object_id)
        if job is None or not self.has_view_permission(request, job):
            raise Http404(f"No EPCIS export with id {object_id} is visible to you.")
        try:
            check_rate_limit(request=request, scope="export")
            download = open_epcis_download(job=job, user=request.user, request=request)
        except (RateLimited, DomainError) as exc:
            self.message_user(request, str(exc.detail) if isinstance(exc, RateLimited) else exc.message, messages.ERROR)
            return redirect(reverse("admin:serialization_epcisexportjob_change", args=[job.pk]))
        return FileResponse(
            download.file, as_attachment=True, filename=download.filename, content_type=download.content_type
        )


@admin.register(CaptureJob)
class CaptureJobAdmin(_ReadOnlyAdmin):
    """EPCIS documents posted to the capture interface and what became of each event — where a steward looks when a
    line or partner system says its events were refused. The document itself is not offered here: it names
    serials, and serial lists leave only through the recorded exports."""

    list_display = [
        "id",
        "status",
        "document_format",
        "error_behaviour",
        "event_count",
        "applied_count",
        "error_count",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", "document_format", "error_behaviour"]
    list_select_related = ["created_by", "company"]
    search_fields = ["document_sha256", "created_by__username"]
    fields = [
        "status",
        "document_format",
        "error_behaviour",
        "document_sha256",
        "company",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "event_count",
        "applied_count",
        "error_count",
        "problems",
        "outcomes",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        return selectors.scope_capture_jobs(super().get_queryset(request), user=request.user)

    @admin.display(description="errors")
    def problems(self, job: CaptureJob):
        return _json_block(job.errors)

    @admin.display(description="events")
    def outcomes(self, job: CaptureJob):
        return _json_block(job.events)


def _json_block(value, limit: int = 100_000):
    """A stored JSON value as indented text, cut at ``limit`` characters (a document may hold thousands of events)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return format_html("<pre>{}</pre>", text if len(text) <= limit else f"{text[:limit]}\n…")


@admin.register(ImportJob)
class ImportJobAdmin(_ReadOnlyAdmin):
    REPORT_ROWS = 1000

    list_display = ["id", "pool", "layout", "original_name", "status", "rows", "imported", "error_count", "created_at"]
    list_filter = ["status", "layout"]
    list_select_related = ["pool", "requested_by"]
    fields = [
        "pool",
        "layout",
        "original_name",
        "status",
        "rows",
        "imported",
        "error_count",
        "error_report",
        "requested_by",
        "created_at",
        "finished_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        queryset = selectors.list_imports(user=request.user)
        # The changelist shows only the count; the report itself is read on the job's page.
        return queryset if request.resolver_match.url_name.endswith("_change") else queryset.defer("errors")

    @admin.display(description="error report")
    def error_report(self, job: ImportJob) -> str:
        if not job.errors:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((e.get("line", ""), e.get("serial", ""), e.get("problem", "")) for e in job.errors[: self.REPORT_ROWS]),
        )
        more = len(job.errors) - self.REPORT_ROWS
        tail = format_html("<p>… and {} more (GET /api/v1/imports/{}/ has the whole report).</p>", more, job.pk)
        return format_html(
            "<table><thead><tr><th>line</th><th>serial</th><th>problem</th></tr></thead><tbody>{}</tbody></table>{}",
            rows,
            tail if more > 0 else "",
        )


# --- pack history ---------------------------------------------------------------------------------------------------


class PackHistorySearchForm(forms.Form):
    product_code = forms.CharField(max_length=14, required=False, help_text="GTIN/NTIN of a unit")
    serial = forms.CharField(max_length=20, required=False)
    sscc = forms.CharField(max_length=18, required=False, label="or SSCC", help_text="18 digits, of a case or pallet")

    def clean(self):
        data = super().clean()
        unit = bool(data.get("product_code") or data.get("serial"))
        if unit == bool(data.get("sscc")):
            raise ValidationError("Search by product code and serial, or by SSCC alone.")
        if unit and not (data.get("product_code") and data.get("serial")):
            missing = "serial" if data.get("product_code") else "product_code"
            self.add_error(missing, "Give the product code and the serial: a serial is unique per product code.")
        return data


def pack_history_url(product_code: str, serial: str) -> str:
    query = {"product_code": product_code, "serial": serial} if product_code else {"sscc": serial}
    return f"{reverse('admin:serialization_pack_changelist')}?{urlencode(query)}"


@admin.register(Pack)
class PackHistoryAdmin(admin.ModelAdmin):
    """“Packs” in the Serialization app list opens the pack history: search a serial or SSCC and see where its number
    came from, what happened to the pack, what it sits in and what it holds. There is deliberately no list of packs
    (at billions of rows a paged list and its count serve nobody); a pack's change page redirects to its history."""

    def get_queryset(self, request):
        return selectors.scope_packs(super().get_queryset(request), user=request.user)

    def has_add_permission(self, request) -> bool:
        return False  # packs come from line reports

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = PackHistorySearchForm(request.GET or None)
        history = None
        if form.is_bound and form.is_valid():
            query = {name: value for name, value in form.cleaned_data.items() if value}
            try:
                history = selectors.get_pack_history(user=request.user, **query)
            except DomainError as exc:
                _add_service_error(form, exc)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Pack history",
            "form": form,
            "history": history,
        }
        if history is not None:
            context.update(
                level=selectors.level_name(history.pack.level) if history.pack else "",
                above=[(ref, pack_history_url(ref.product_code, ref.serial)) for ref in history.above],
                below=[(ref, pack_history_url(ref.product_code, ref.serial)) for ref in history.below.items],
                events=[
                    (event, pack_history_url(event.parent_product_code, event.parent_serial))
                    for event in history.events
                ],
            )
        return TemplateResponse(request, "admin/serialization/pack_history.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        pack = self.get_object(request, object_id)
        if pack is None or not self.has_view_permission(request, pack):
            raise Http404(f"No pack with id {object_id} is visible to you.")
        return redirect(pack_history_url(pack.product_code, pack.serial))


# --- batches, packaging orders, line reports, reconciliations --------------------------------------------------------


class BatchAdminForm(forms.ModelForm):
    """A batch's details, checked like the services check them. From its release on, a change needs a reason."""

    change_reason = forms.CharField(
        max_length=REASON_MAX,
        required=False,
        label="Reason for the change",
        help_text="Required once the batch was released; kept in the batch history.",
    )

    class Meta:
        model = Batch
        fields = ["product", "lot", "expiry", "manufactured_on", "site", "lines", "markets"]

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        if user is not None and "product" in self.fields:
            self.fields["product"].queryset = masterdata_selectors.list_products(user=user)
        for name in ("lot", "expiry"):
            if name in self.fields:
                self.fields[name].strip = False  # kept exactly as given, as printed
        if user is not None and "site" in self.fields:
            self.fields["site"].queryset = masterdata_selectors.list_locations(user=user, filters={"kind": "site"})
        if user is not None and "lines" in self.fields:
            self.fields["lines"].queryset = masterdata_selectors.list_locations(user=user, filters={"kind": "line"})

    def clean(self):
        data = super().clean()
        batch = self.instance
        if batch.pk and needs_reason(batch) and not (data.get("change_reason") or "").strip():
            self.add_error("change_reason", "This batch was released: say why it changes (kept in its history).")
        product = data.get("product") or (batch.product if batch.product_id else None)
        errors = check_batch_fields(
            product=product,
            lot=data.get("lot", batch.lot),
            expiry=data.get("expiry", batch.expiry),
            manufactured_on=data.get("manufactured_on", batch.manufactured_on),
            site=data.get("site", batch.site if batch.site_id else None),
            lines=data.get("lines") or [],
            markets=data.get("markets") or [],
        )
        for name, messages_ in errors.items():
            for message in messages_:
                self.add_error(name if name in self.fields else None, message)
        return data


class BatchReleaseForm(forms.Form):
    password = forms.CharField(strip=False, widget=forms.PasswordInput, help_text="Your own password, again")
    otp_code = forms.CharField(
        label="Authenticator code", max_length=32, help_text="The code your authenticator app shows now"
    )
    reason = forms.CharField(
        max_length=REASON_MAX,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Kept with the release and in history",
    )


@admin.register(Batch)
class BatchAdmin(SimpleHistoryAdmin):
    form = BatchAdminForm
    list_display = [
        "lot",
        "product_code",
        "product",
        "expiry",
        "status",
        "latest_reconciliation",
        "released_at",
        "keep_until_now",
    ]
    list_filter = ["status"]
    search_fields = ["lot", "product__product_code", "product__name"]
    list_select_related = ["product"]
    actions = [
        "complete_batches",
        "reconcile_batches",
        "release_selected_batch",
        "export_epcis_json",
        "export_epcis_1_2_xml",
    ]
    always_read_only = [
        "status",
        "released_at",
        "released_by",
        "release_reason",
        "retention",
        "created_by",
        "created_at",
    ]

    def get_queryset(self, request):
        # Markets prefetched: the keep-until column is computed from them for every row of the list.
        queryset = super().get_queryset(request).prefetch_related("markets")
        return selectors.with_latest_reconciliation(selectors.scope_batches(queryset, user=request.user))

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change, **kwargs)
        user = request.user

        class ScopedForm(form_class):
            def __init__(self, *args, **inner):
                super().__init__(*args, user=user, **inner)

        return ScopedForm

    def get_fields(self, request, obj=None):
        fields = ["product", "lot", "expiry", "manufactured_on", "site", "lines", "markets"]
        return fields + (["change_reason", *self.always_read_only] if obj is not None else [])

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        fixed = ["product"] + (["lot", "expiry"] if obj.status != Batch.Status.PLANNED else [])
        return fixed + self.always_read_only

    @admin.display(description="product code", ordering="product__product_code")
    def product_code(self, batch: Batch) -> str:
        return batch.product.product_code

    @admin.display(description="latest reconciliation")
    def latest_reconciliation(self, batch: Batch) -> str:
        pk = getattr(batch, "latest_reconciliation_id", None)
        if pk is None:
            return "—"
        url = reverse("admin:serialization_reconciliation_change", args=[pk])
        verdict = "passed" if batch.latest_reconciliation_passed else "FAILED"
        at = f"{batch.latest_reconciliation_at:%Y-%m-%d %H:%M}"
        return format_html('<a href="{}">{} ({})</a>', url, verdict, at)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            created = create_batch(
                product=data["product"],
                lot=data["lot"],
                expiry=data["expiry"],
                manufactured_on=data.get("manufactured_on"),
                site=data.get("site"),
                lines=data.get("lines") or [],
                markets=data.get("markets") or [],
                actor=request.user,
            )
            obj.pk, obj._state.adding, obj.status = created.pk, False, created.status
            return
        changes = {name: data[name] for name in form.changed_data if name in (*EDITABLE_FIELDS, *PLANNED_ONLY_FIELDS)}
        update_batch(batch=obj, actor=request.user, reason=data.get("change_reason", ""), **changes)

    def save_related(self, request, form, formsets, change):
        # Lines and markets were written by the service (with the history row and its reason); no form.save_m2m().
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def revert_disabled(self, request, obj=None) -> bool:
        return True  # a revert would bypass the status rules and the reason a released batch needs

    @admin.display(description="keep until")
    def keep_until_now(self, batch: Batch) -> str:
        return f"{batch_keep_until(batch).date or 'not known yet'}"

    @admin.display(description="retention")
    def retention(self, batch: Batch) -> str:
        # Deleting is refused until this date passes, and while a legal hold is in force (audit.retention).
        keep = batch_keep_until(batch)
        text = f"Kept until {keep.date} ({keep.because})." if keep.date else f"Kept: {keep.because}."
        refusal = deletion_refusal(batch)
        if refusal is not None and refusal.hold is not None:
            text += f" {refusal.message}"
        return text

    @admin.action(description="Mark the selected batches as completed", permissions=["change"])
    def complete_batches(self, request, queryset):
        for batch in queryset.order_by("pk"):
            try:
                transition_batch(batch=batch, status=Batch.Status.COMPLETED, actor=request.user)
            except DomainError as exc:
                self.message_user(request, f"Batch {batch.lot}: {exc.message}", messages.WARNING)
            else:
                self.log_change(request, batch, "Completed.")
                self.message_user(request, f"Batch {batch.lot} is completed.", messages.SUCCESS)

    @admin.action(description="Reconcile the selected batches", permissions=["change"])
    def reconcile_batches(self, request, queryset):
        for batch in queryset.order_by("pk"):
            try:
                reconciliation = reconcile_batch(batch=batch, actor=request.user)
            except DomainError as exc:
                self.message_user(request, f"Batch {batch.lot}: {exc.message}", messages.WARNING)
                continue
            self.log_change(request, batch, f"Reconciliation {reconciliation.pk}.")
            if reconciliation.passed:
                self.message_user(
                    request, f"Batch {batch.lot}: reconciliation passed; it is reconciled.", messages.SUCCESS
                )
            else:
                self.message_user(
                    request,
                    f"Batch {batch.lot}: reconciliation failed with {len(reconciliation.discrepancies)} "
                    f"discrepancies; incident {reconciliation.incident_id} was raised.",
                    messages.ERROR,
                )

    @admin.action(description="Export EPCIS document (2.0 JSON-LD)", permissions=["export_epcis"])
    def export_epcis_json(self, request, queryset):
        self._export_epcis(request, queryset, version="2.0", syntax="json")

    @admin.action(description="Export EPCIS document (1.2 XML, US DSCSA)", permissions=["export_epcis"])
    def export_epcis_1_2_xml(self, request, queryset):
        self._export_epcis(request, queryset, version="1.2", syntax="xml")

    def has_export_epcis_permission(self, request) -> bool:
        return request.user.has_perm("serialization.add_epcisexportjob")

    def _export_epcis(self, request, queryset, *, version: str, syntax: str) -> None:
        for batch in queryset.select_related("product").order_by("pk"):
            try:
                job = create_epcis_export(
                    batch=batch, version=version, syntax=syntax, actor=request.user, request=request
                )
            except DomainError as exc:
                self.message_user(request, f"Batch {batch.lot}: {exc.message}", messages.WARNING)
                continue
            url = reverse("admin:serialization_epcisexportjob_change", args=[job.pk])
            self.message_user(
                request,
                format_html(
                    'Batch {}: EPCIS export {} is being written; <a href="{}">follow it here</a>.',
                    batch.lot,
                    job.pk,
                    url,
                ),
                messages.SUCCESS,
            )

    @admin.action(description="Release the selected batch (electronic signature)", permissions=["change"])
    def release_selected_batch(self, request, queryset):
        batches = list(queryset.select_related("product")[:2])
        if len(batches) != 1:
            self.message_user(request, "Release one batch at a time: a signature applies to one batch.", messages.ERROR)
            return None
        (batch,) = batches
        form = BatchReleaseForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            try:
                release_batch(batch=batch, actor=request.user, request=request, **form.cleaned_data)
            except DomainError as exc:
                _add_service_error(form, exc)
            else:
                self.log_change(request, batch, f"Released: {form.cleaned_data['reason']}")
                self.message_user(request, f"Batch {batch.lot} is released.", messages.SUCCESS)
                return HttpResponseRedirect(request.get_full_path())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Release batch {batch.lot}",
            "form": form,
            "batch": batch,
            "reconciliation": batch.reconciliations.order_by("-performed_at", "-pk").first(),
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/serialization/batch/release.html", context)


class OrderAllocationInline(_ReadOnlyInline):
    model = Allocation
    fk_name = "packaging_order"
    fields = ["pool", "request_id", "quantity", "released", "active", "created_at"]
    readonly_fields = fields
    verbose_name_plural = "allocations (serials given to this order)"

    @admin.display(description="active")
    def active(self, allocation: Allocation) -> int:
        return allocation.active_quantity


class CloseOrderForm(forms.Form):
    reason = forms.CharField(
        max_length=REASON_MAX,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Kept with the order and the released serials, e.g. “run finished”",
    )


@admin.register(PackagingOrder)
class PackagingOrderAdmin(SimpleHistoryAdmin):
    list_display = ["number", "batch", "line", "planned_quantity", "status", "closed_at", "closed_by"]
    list_filter = ["status"]
    search_fields = ["number", "batch__lot", "batch__product__product_code"]
    list_select_related = ["batch__product", "line", "closed_by"]
    fields = ["number", "batch", "line", "planned_quantity", "status", "closed_at", "closed_by", "created_by"]
    readonly_fields = fields
    inlines = [OrderAllocationInline]
    actions = ["close_orders"]

    def get_queryset(self, request):
        return selectors.scope_orders(super().get_queryset(request), user=request.user)

    def has_add_permission(self, request) -> bool:
        return False  # orders come through the API (ERP), which gives them their serials

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def revert_disabled(self, request, obj=None) -> bool:
        return True

    @admin.action(description="Close the selected orders (unused serials go back to Available)", permissions=["change"])
    def close_orders(self, request, queryset):
        orders = list(queryset.select_related("batch").order_by("pk"))
        form = CloseOrderForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason, released = form.cleaned_data["reason"], 0
            for order in orders:
                try:
                    closed = close_packaging_order(order=order, actor=request.user, reason=reason)
                except DomainError as exc:
                    self.message_user(request, f"Order {order.number}: {exc.message}", messages.WARNING)
                else:
                    released += closed.released
                    self.log_change(request, order, f"Closed: {reason}")
            self.message_user(request, f"{released:,} unused serials went back to Available.", messages.SUCCESS)
            return HttpResponseRedirect(request.get_full_path())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Close packaging orders",
            "form": form,
            "objects": orders,
            "action": "close_orders",
            "submit_label": "Close the orders",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/serialization/batch/close_orders.html", context)


@admin.register(LineReport)
class LineReportAdmin(_ReadOnlyAdmin):
    list_display = ["report_id", "kind", "order", "status", "lines", "submitted_by", "received_at"]
    list_filter = ["kind", "status"]
    search_fields = ["report_id", "order__number"]
    list_select_related = ["order", "submitted_by"]
    fields = ["report_id", "kind", "order", "status", "lines", "fingerprint", "outcome", "submitted_by", "received_at"]
    readonly_fields = fields

    def get_queryset(self, request):
        return scope_to_company(
            super().get_queryset(request), user=request.user, company_field="order__batch__product__owner_id"
        )

    @admin.display(description="result")
    def outcome(self, report: LineReport):
        return _json_block(report.result)


@admin.register(Reconciliation)
class ReconciliationAdmin(_ReadOnlyAdmin):
    REPORT_ROWS = 500

    list_display = ["id", "batch", "passed", "discrepancy_count", "incident", "performed_by", "performed_at"]
    list_filter = ["passed"]
    search_fields = ["batch__lot", "batch__product__product_code"]
    list_select_related = ["batch__product", "incident", "performed_by"]
    fields = ["batch", "passed", "incident", "performed_by", "performed_at", "balance", "discrepancy_report"]
    readonly_fields = fields

    def get_queryset(self, request):
        return scope_to_company(
            super().get_queryset(request), user=request.user, company_field="batch__product__owner_id"
        )

    @admin.display(description="discrepancies")
    def discrepancy_count(self, reconciliation: Reconciliation) -> int:
        return len(reconciliation.discrepancies)

    @admin.display(description="counts")
    def balance(self, reconciliation: Reconciliation):
        counts = reconciliation.counts or {}
        rows = [("batch", counts.get("batch", {}))] + [(o.get("order"), o) for o in counts.get("orders", [])]
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    label,
                    row.get("assigned", 0),
                    row.get("commissioned", 0),
                    ", ".join(f"{k} {v}" for k, v in row.get("decommissioned", {}).items()) or "0",
                    row.get("returned", 0),
                    row.get("unaggregated_units", 0),
                )
                for label, row in rows
            ),
        )
        note = (
            "Aggregation required by " + ", ".join(counts.get("aggregation_markets", []))
            if counts.get("aggregation_required")
            else "No market of the batch requires aggregation."
        )
        return format_html(
            "<table><thead><tr><th>order</th><th>assigned</th><th>commissioned</th><th>decommissioned</th>"
            "<th>returned</th><th>unaggregated units</th></tr></thead><tbody>{}</tbody></table><p>{}</p>",
            body,
            note,
        )

    @admin.display(description="discrepancies")
    def discrepancy_report(self, reconciliation: Reconciliation):
        found = reconciliation.discrepancies or []
        if not found:
            return "None: every serial is accounted for."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    d.get("order") or "(batch)",
                    d.get("kind", ""),
                    d.get("expected", ""),
                    d.get("found", ""),
                    d.get("detail", ""),
                    ", ".join(d.get("examples", [])),
                )
                for d in found[: self.REPORT_ROWS]
            ),
        )
        return format_html(
            "<table><thead><tr><th>order</th><th>kind</th><th>expected</th><th>found</th><th>detail</th>"
            "<th>example serials</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )


# The outbox's admin (endpoints, submissions, the dashboard) lives in its own module; importing it registers it.
from serialization import outbox_admin  # noqa: E402, F401
