"""The steward's admin for the outbox: endpoints per market, submissions with their attempts and answers, a
dashboard that updates in place, and the actions that resubmit (with a reason).

Imported by ``serialization.admin`` so the admin site registers these beside the serial engine's pages. Writes go
through ``serialization.services.outbox``; rows are scoped by ``serialization.outbox_selectors``. A document
download is a hand-out of serials: it is counted and recorded by ``audit.pilferage.serial_handout`` first.
"""

import os

from django import forms
from django.contrib import admin, messages
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from audit.exceptions import DomainError
from audit.pilferage import ExportBlocked, serial_handout
from masterdata import selectors as masterdata_selectors
from serialization import outbox_selectors
from serialization.models import Batch, LineReport
from serialization.outbox_models import Endpoint, Submission
from serialization.reports import ReportRefused
from serialization.selectors import scope_batches
from serialization.services import outbox

# --- endpoints ----------------------------------------------------------------------------------------------------


@admin.register(Endpoint)
class EndpointAdmin(SimpleHistoryAdmin):
    list_display = ["name", "market", "kind", "target", "auth_kind", "credential_env", "credential", "is_active"]
    list_filter = ["kind", "is_active", "market"]
    list_select_related = ["market"]
    fields = [
        "name",
        "market",
        "kind",
        "url",
        "folder",
        "auth_kind",
        "username",
        "api_key_header",
        "credential_env",
        "credential",
        "timeout_seconds",
        "is_active",
    ]
    readonly_fields = ["credential"]

    @admin.display(description="credential")
    def credential(self, endpoint: Endpoint) -> str:
        """Whether the named variable is set where this page runs (workers need it too); never its value."""
        if endpoint.auth_kind == Endpoint.AuthKind.NONE:
            return "none needed"
        if not endpoint.credential_env:
            return "no variable named"
        return "set here" if os.environ.get(endpoint.credential_env) else f"{endpoint.credential_env} is not set here"

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # submissions keep pointing at the endpoint they went to: deactivate it instead


# --- submissions ----------------------------------------------------------------------------------------------------


class SubmissionCreationForm(forms.Form):
    """Build, validate and queue a market's report for a batch (or a US shipment)."""

    batch = forms.ModelChoiceField(queryset=None)
    market = forms.ModelChoiceField(queryset=None)
    shipping_report = forms.CharField(
        required=False, help_text="For a shipment (US DSCSA): the report id of its shipping report"
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        batches = scope_batches(Batch.objects.all(), user=user)
        self.fields["batch"].queryset = batches.select_related("product")
        self.fields["market"].queryset = masterdata_selectors.list_markets(user=user)

    def clean(self):
        data = super().clean()
        report_id = (data.get("shipping_report") or "").strip()
        data["shipping_report"] = None
        batch = data.get("batch")
        if report_id and batch is not None:
            # Looked up among the batch's own shipments only: another company's report id finds nothing.
            report = LineReport.objects.filter(
                report_id=report_id, kind=LineReport.Kind.SHIPPING, order__batch=batch
            ).first()
            if report is None:
                self.add_error("shipping_report", f"Batch {batch.lot} has no shipping report {report_id!r}.")
            data["shipping_report"] = report
        return data


class SubmissionChangeForm(forms.ModelForm):
    """The one thing a steward may change on a submission — where it goes — and only with a reason."""

    change_reason = forms.CharField(
        max_length=outbox.REASON_MAX,
        label="Reason for the change",
        help_text="Required: kept in the submission's history.",
    )

    class Meta:
        model = Submission
        fields = ["endpoint"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "endpoint" in self.fields:
            self.fields["endpoint"].queryset = Endpoint.objects.filter(market=self.instance.market_id)


class SubmissionReadOnlyForm(forms.ModelForm):
    """An accepted (or sending) submission: nothing to change, so no reason to ask for."""

    class Meta:
        model = Submission
        fields: list[str] = []


class ResubmitForm(forms.Form):
    reason = forms.CharField(
        max_length=outbox.REASON_MAX,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why it goes again, e.g. “hub back after maintenance”; kept in each submission's history",
    )


@admin.register(Submission)
class SubmissionAdmin(SimpleHistoryAdmin):
    form = SubmissionChangeForm
    change_list_template = "admin/serialization/submission/change_list.html"
    list_display = [
        "id",
        "market",
        "kind",
        "batch_lot",
        "status_label",
        "attempts",
        "next_attempt_at",
        "response_status",
        "updated_at",
    ]
    list_filter = ["status", "market", "kind"]
    search_fields = ["batch__lot", "batch__product__product_code", "sha256"]
    list_select_related = ["market", "batch"]
    actions = ["resubmit_as_is", "rebuild_and_resubmit"]
    readonly = [
        "market",
        "company",
        "batch",
        "shipping_report",
        "kind",
        "status_label",
        "attempts",
        "next_attempt_at",
        "last_attempt_at",
        "last_error",
        "response_status",
        "response_body",
        "finished_at",
        "incident",
        "document",
        "content_type",
        "sha256",
        "size",
        "items",
        "created_by",
        "created_at",
        "updated_at",
    ]

    def get_queryset(self, request):
        return outbox_selectors.scope_submissions(super().get_queryset(request), user=request.user)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["batch", "market", "shipping_report"]
        editable = ["endpoint", "change_reason"] if self._endpoint_editable(request, obj) else ["endpoint"]
        return [*editable, *self.readonly]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None and not self._endpoint_editable(request, obj):
            kwargs["form"] = SubmissionReadOnlyForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return self.readonly if self._endpoint_editable(request, obj) else ["endpoint", *self.readonly]

    def _endpoint_editable(self, request, obj: Submission) -> bool:
        return self.has_change_permission(request, obj) and obj.status not in (
            Submission.Status.ACCEPTED,
            Submission.Status.SENDING,
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a regulated record: what was sent, when, and what came back

    def revert_disabled(self, request, obj=None) -> bool:
        return True  # reverting would rewrite what was sent; resubmit instead

    @admin.display(description="batch", ordering="batch__lot")
    def batch_lot(self, submission: Submission) -> str:
        return submission.batch.lot

    @admin.display(description="status", ordering="status")
    def status_label(self, submission: Submission) -> str:
        return submission.get_status_display()

    @admin.display(description="document")
    def document(self, submission: Submission) -> str:
        url = reverse("admin:serialization_submission_document", args=[submission.pk])
        return format_html(
            '<a href="{}">Download</a> ({} bytes, {} serials, SHA-256 {})',
            url,
            submission.size,
            submission.items,
            submission.sha256,
        )

    # --- adding: build, validate, queue ---

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise Http404("You may not create submissions.")
        form = SubmissionCreationForm(request.POST or None, user=request.user)
        problems = []
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                submission = outbox.create_submission(
                    market=data["market"],
                    batch=data["batch"],
                    shipping_report=data["shipping_report"],
                    actor=request.user,
                    request=request,
                )
            except ReportRefused as exc:
                problems = exc.problems
                form.add_error(None, exc.message)
            except DomainError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                self.log_addition(request, submission, "Built, validated and queued.")
                self.message_user(
                    request,
                    f"Submission {submission.pk} to {submission.market.code} passed every check and is queued.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:serialization_submission_change", args=[submission.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Send a market report",
            "form": form,
            "problems": problems,
        }
        return TemplateResponse(request, "admin/serialization/submission/add.html", context)

    def save_model(self, request, obj, form, change):
        if "endpoint" in form.changed_data:
            outbox.change_submission_endpoint(
                submission=obj,
                endpoint=form.cleaned_data["endpoint"],
                actor=request.user,
                reason=form.cleaned_data["change_reason"],
            )

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    # --- actions ---

    @admin.action(description="Resubmit the selected submissions as they are", permissions=["change"])
    def resubmit_as_is(self, request, queryset):
        return self._resubmit(request, queryset, rebuild=False)

    @admin.action(
        description="Rebuild the selected submissions from current master data and resubmit", permissions=["change"]
    )
    def rebuild_and_resubmit(self, request, queryset):
        return self._resubmit(request, queryset, rebuild=True)

    def _resubmit(self, request, queryset, *, rebuild: bool):
        form = ResubmitForm(request.POST if "apply" in request.POST else None)
        action = "rebuild_and_resubmit" if rebuild else "resubmit_as_is"
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"]
            for submission in queryset.order_by("pk"):
                try:
                    outbox.resubmit_submission(
                        submission=submission, actor=request.user, reason=reason, rebuild=rebuild, request=request
                    )
                except ReportRefused as exc:
                    problems = "; ".join(p.message for p in exc.problems)
                    self.message_user(request, f"Submission {submission.pk}: {problems}", messages.ERROR)
                except DomainError as exc:
                    self.message_user(request, f"Submission {submission.pk}: {exc.message}", messages.WARNING)
                else:
                    self.log_change(request, submission, f"Resubmitted{' (rebuilt)' if rebuild else ''}: {reason}")
                    self.message_user(request, f"Submission {submission.pk} is queued again.", messages.SUCCESS)
            return HttpResponseRedirect(request.get_full_path())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Rebuild and resubmit" if rebuild else "Resubmit",
            "form": form,
            "objects": queryset.select_related("market", "batch").order_by("pk"),
            "action": action,
            "rebuild": rebuild,
            "submit_label": "Rebuild and resubmit" if rebuild else "Resubmit",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/serialization/submission/resubmit.html", context)

    # --- dashboard and download ---

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("dashboard/", view(self.dashboard_view), name="serialization_submission_dashboard"),
            path("dashboard/panel/", view(self.dashboard_panel_view), name="serialization_submission_dashboard_panel"),
            path("<path:object_id>/document/", view(self.document_view), name="serialization_submission_document"),
            *super().get_urls(),
        ]

    def _dashboard(self, request, template: str) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise Http404("You may not see submissions.")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Outbox dashboard",
            **outbox_selectors.get_outbox_dashboard(user=request.user),
            "has_add_permission": self.has_add_permission(request),
            "panel_url": reverse("admin:serialization_submission_dashboard_panel"),
            "detail_url_name": "admin:serialization_submission_change",
        }
        return TemplateResponse(request, template, context)

    def dashboard_view(self, request):
        return self._dashboard(request, "admin/serialization/outbox_dashboard.html")

    def dashboard_panel_view(self, request):
        return self._dashboard(request, "portal/_outbox_panel.html")

    def document_view(self, request, object_id):
        submission = self.get_object(request, object_id)
        if submission is None or not self.has_view_permission(request, submission):
            raise Http404(f"No submission with id {object_id} is visible to you.")
        try:
            with serial_handout(user=request.user, request=request, counted=submission.items) as handout:
                handle = default_storage.open(submission.file.name, "rb")
                handout.record(
                    kind="download",
                    target=f"submission {submission.pk}",
                    quantity=submission.items,
                    details={"sha256": submission.sha256, "market": submission.market.code, "kind": submission.kind},
                )
        except ExportBlocked as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:serialization_submission_change", args=[submission.pk]))
        return FileResponse(
            handle,
            as_attachment=True,
            filename=submission.file.name.rsplit("/", 1)[-1],
            content_type=submission.content_type,
        )
