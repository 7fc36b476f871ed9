"""The partner portal: server-rendered pages for a company's users — CMOs above all — that work without JavaScript.

Every page needs a signed-in user whose session passed the second factor (``is_verified``; otherwise the sign-in page
with ``?next=``) and who belongs to a company. Objects come from the scoped selectors (``partners.selectors``), so
another company's product, pool, order or allocation answers the portal's 404 page, exactly like one that does not
exist. Writes go through ``serialization.services``; every download is recorded in the access log by
``start_serial_download`` before its first byte is sent. Requesting serials and downloading them count against the
same rate limits as the API (``audit.limits``: 429 page); a blocked account's download is 403 (``audit.pilferage``).
"""

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe

from audit.exceptions import DomainError, NotFound
from audit.limits import RateLimited, check_rate_limit
from audit.pilferage import ExportBlocked
from partners import selectors
from partners.charts import donut, legend
from partners.forms import (
    PackHistoryForm,
    PoolSearchForm,
    ReportUploadForm,
    RequestSerialsForm,
    new_request_id,
)
from serialization.models import Allocation, ExportJob, LineReport, PackagingOrder
from serialization.outbox_selectors import get_outbox_dashboard
from serialization.services.batches import request_order_serials
from serialization.services.exports import start_serial_download
from serialization.services.line_reports import apply_line_report

TABS = (
    ("pools", "SN/SSCC pool", "portal:pools"),
    ("history", "Pack history", "portal:history"),
    ("orders", "Orders", "portal:orders"),
    ("batches", "Batches", "portal:batches"),
    ("outbox", "Submissions", "portal:outbox"),
)
DOWNLOAD_NOTATIONS = {
    ExportJob.Notation.SERIAL: "serials",
    ExportJob.Notation.ELEMENT_STRING: "GS1 element strings",
}
REPORT_ERRORS_SHOWN = 200


# --- access -----------------------------------------------------------------------------------------------------


def portal_page(view: Callable | None = None, *, perm: str | None = None, doing: str = "") -> Callable:
    """Admit verified company members whose role holds ``perm`` (the model permission the page needs, as in the API
    and the admin); render NotFound raised by the view as the portal's 404 page. ``doing`` names the page's purpose
    in the refusal ("see serial pools")."""
    if view is None:
        return lambda wrapped: portal_page(wrapped, perm=perm, doing=doing)

    @wraps(view)
    @never_cache
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user = request.user
        if not user.is_authenticated or not user.is_verified():
            return redirect_to_login(request.get_full_path(), resolve_url(settings.LOGIN_URL))
        company = selectors.get_portal_company(user=user)
        if company is None:
            return render(request, "portal/no_company.html", status=403)
        if perm and not user.has_perm(perm):
            context = {"doing": doing or "open this page", "perm": perm}
            return render(request, "portal/no_permission.html", context, status=403)
        request.portal_company = company
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            return _render(request, "portal/not_found.html", {"message": exc.message}, tab=None, status=404)

    return wrapper


def _refused(request: HttpRequest, error: RateLimited | ExportBlocked, *, back: str) -> HttpResponse:
    """The page for a request refused by a rate limit (429, with Retry-After) or an export block (403)."""
    if isinstance(error, RateLimited):
        context = {"heading": "Too many requests", "message": str(error.detail), "back": back}
        response = _render(request, "portal/refused.html", context, tab=None, status=429)
        response["Retry-After"] = str(error.wait)
        return response
    context = {"heading": "Downloads blocked", "message": error.message, "back": back}
    return _render(request, "portal/refused.html", context, tab=None, status=403)


def _render(request: HttpRequest, template: str, context: dict, *, tab: str | None, status: int = 200) -> HttpResponse:
    tabs = [(key, label, reverse(url_name), key == tab) for key, label, url_name in TABS]
    context = {"company": request.portal_company, "tabs": tabs, "tab": tab, **context}
    return render(request, template, context, status=status)


@portal_page(perm="serialization.view_serialpool", doing="see serial pools")
@require_safe
def home(request: HttpRequest) -> HttpResponse:
    return redirect("portal:pools")


# --- SN/SSCC pool -------------------------------------------------------------------------------------------------


@portal_page(perm="serialization.view_serialpool", doing="see serial pools")
@require_safe
def pool_list(request: HttpRequest) -> HttpResponse:
    form = PoolSearchForm(request.GET)
    search = form.cleaned_data["q"] if form.is_valid() else ""
    products = selectors.list_portal_products(user=request.user, search=search)
    sscc_ranges = selectors.list_sscc_ranges(user=request.user, search=search)
    context = {
        "form": form,
        "search": search,
        "products": [_charted(product, product.product_code) for product in products],
        "sscc_ranges": [_charted(item, f"SSCC {item.code}") for item in sscc_ranges],
    }
    return _render(request, "portal/pools.html", context, tab="pools")


def _charted(item, label: str) -> dict:
    """A pool-tab row: the item, its counts and their text (formatted here: the tab shows 200 rows), its chart."""
    counts = item.counts
    return {
        "item": item,
        "counts": counts,
        "numbers": {"available": f"{counts.available:,}", "assigned": f"{counts.assigned:,}"},
        "chart": donut(available=counts.available, assigned=counts.assigned, label=label),
        "legend": legend(available=counts.available, assigned=counts.assigned),
    }


@portal_page(perm="serialization.view_serialpool", doing="see serial pools")
@require_safe
def pool_detail(request: HttpRequest, product_code: str) -> HttpResponse:
    found = selectors.get_portal_product(user=request.user, product_code=product_code)
    pools = [
        {
            "pool": pool,
            "chart": donut(available=pool.available, assigned=pool.assigned, label=pool.name, size=96),
        }
        for pool in found.pools
    ]
    context = {"product": _charted(found.product, found.product.product_code), "pools": pools}
    return _render(request, "portal/pool_detail.html", context, tab="pools")


# --- pack history -------------------------------------------------------------------------------------------------


def _history_url(product_code: str, serial: str) -> str:
    query = {"product_code": product_code, "serial": serial} if product_code else {"sscc": serial}
    return f"{reverse('portal:history')}?{urlencode(query)}"


@portal_page(perm="serialization.view_pack", doing="look up pack history")
@require_safe
def history(request: HttpRequest) -> HttpResponse:
    asked = any(request.GET.get(name) for name in ("product_code", "serial", "sscc"))
    form = PackHistoryForm(request.GET if asked else None)
    context: dict = {"form": form}
    if asked and form.is_valid():
        data = form.cleaned_data
        try:
            found = selectors.get_pack_history(
                user=request.user, product_code=data["product_code"], serial=data["serial"], sscc=data["sscc"]
            )
        except DomainError as exc:  # unknown, out of scope, or not a number of any pool here: all read the same
            context["not_found"] = exc.message
        else:
            context.update(
                found=found,
                events=[
                    (event, _history_url(event.parent_product_code, event.parent_serial)) for event in found.events
                ],
                above=[(ref, _history_url(ref.product_code, ref.serial)) for ref in found.above],
                below=[(ref, _history_url(ref.product_code, ref.serial)) for ref in found.below.items],
            )
    return _render(request, "portal/history.html", context, tab="history")


# --- orders -----------------------------------------------------------------------------------------------------


@portal_page(perm="serialization.view_packagingorder", doing="see packaging orders")
@require_safe
def order_list(request: HttpRequest) -> HttpResponse:
    include_closed = request.GET.get("show") == "all"
    orders = [
        {"order": order, "granted": sum(a.quantity - a.released for a in order.allocations.all())}
        for order in selectors.list_portal_orders(user=request.user, include_closed=include_closed)
    ]
    return _render(request, "portal/orders.html", {"orders": orders, "include_closed": include_closed}, tab="orders")


def _render_order(
    request: HttpRequest,
    order: PackagingOrder,
    *,
    request_form: RequestSerialsForm | None = None,
    upload_form: ReportUploadForm | None = None,
    upload: dict | None = None,
) -> HttpResponse:
    if request_form is None:
        request_form = RequestSerialsForm(initial={"request_id": new_request_id("portal"), "quantity": 0})
    if upload_form is None:
        upload_form = ReportUploadForm(initial={"report_id": new_request_id("portal-report")}, order=order)
    allocations = [
        {
            "allocation": allocation,
            "downloads": [
                (label, f"{reverse('portal:allocation-download', args=[allocation.pk])}?notation={notation}")
                for notation, label in DOWNLOAD_NOTATIONS.items()
            ],
        }
        for allocation in order.allocations.all()
    ]
    context = {
        "order": order,
        "is_open": order.status == PackagingOrder.Status.OPEN,
        "allocations": allocations,
        "request_form": request_form,
        "upload_form": upload_form,
        "upload": upload,
        "reports": selectors.list_order_reports(order=order),
    }
    return _render(request, "portal/order_detail.html", context, tab="orders")


@portal_page(perm="serialization.view_packagingorder", doing="see packaging orders")
@require_safe
def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _render_order(request, selectors.get_portal_order(user=request.user, pk=pk))


@portal_page(perm="serialization.add_allocation", doing="request serial numbers")
@require_POST
def order_request_serials(request: HttpRequest, pk: int) -> HttpResponse:
    """Serials for one order. The form's request id was made when it was shown: sending it twice grants once."""
    order = selectors.get_portal_order(user=request.user, pk=pk)
    try:
        check_rate_limit(request=request, scope="allocation")
    except RateLimited as exc:
        return _refused(request, exc, back=reverse("portal:order", args=[order.pk]))
    form = RequestSerialsForm(request.POST)
    if form.is_valid():
        try:
            granted = request_order_serials(
                order=order,
                quantity=form.cleaned_data["quantity"],
                actor=request.user,
                request_id=form.cleaned_data["request_id"],
                sscc_quantities=form.sscc_quantities,
            )
        except DomainError as exc:
            field = exc.field if exc.field in ("quantity",) else None
            form.add_error(field, exc.message)
        else:
            parts = []
            if granted.units is not None:
                parts.append(f"{granted.units.quantity:,} unit serials (allocation {granted.units.pk})")
            parts += [
                f"{a.quantity:,} SSCCs for level {level} (allocation {a.pk})" for level, a in granted.ssccs.items()
            ]
            what = " and ".join(parts)
            if granted.replayed:
                messages.info(request, f"This request was already granted: {what}. Nothing more was allocated.")
            else:
                messages.success(request, f"Granted {what} to order {order.number}.")
            return redirect("portal:order", pk=order.pk)
    return _render_order(request, order, request_form=form)


@portal_page(perm="serialization.add_linereport", doing="upload production reports")
@require_POST
def order_upload_report(request: HttpRequest, pk: int) -> HttpResponse:
    """A production report file for one order, applied all-or-nothing; the result is shown on the order's page."""
    order = selectors.get_portal_order(user=request.user, pk=pk)
    form = ReportUploadForm(request.POST, request.FILES, order=order)
    if not form.is_valid():
        return _render_order(request, order, upload_form=form)
    parsed = form.cleaned_data["report"]
    try:
        report = apply_line_report(
            report_id=parsed.report_id,
            kind=parsed.kind,
            order=order,
            lines=parsed.lines,
            actor=request.user,
            occurred_at=parsed.occurred_at,
        )
    except DomainError as exc:
        form.add_error("file", exc.message)
        return _render_order(request, order, upload_form=form)
    errors = [
        {**error, "file_line": parsed.file_line(error.get("line"))}
        for error in report.result.get("errors", [])[:REPORT_ERRORS_SHOWN]
    ]
    upload = {
        "report": report,
        "parsed": parsed,
        "applied": report.status == LineReport.Status.APPLIED,
        "replayed": getattr(report, "replayed", False),
        "counts": _count_items(report.result.get("counts", {})),
        "errors": errors,
        "error_count": report.result.get("error_count", len(errors)),
        "line_label": "Line in file" if parsed.format == "csv" else "Entry in lines",
    }
    return _render_order(request, order, upload=upload)


def _count_items(counts: dict) -> list[tuple[str, str]]:
    """A report's counts for people: ("units", "1,200"), ("by reason", "damaged 2, sample 1")."""
    items = []
    for name, value in counts.items():
        if isinstance(value, dict):
            text = ", ".join(f"{key} {number:,}" for key, number in value.items()) or "none"
        else:
            text = f"{value:,}" if isinstance(value, int) else str(value)
        items.append((name.replace("_", " "), text))
    return items


@portal_page(perm="serialization.view_allocation", doing="download serial lists")
@require_safe
def allocation_download(request: HttpRequest, pk: int) -> HttpResponse:
    """An allocation's serials as CSV, streamed; recorded in the access log (who, how many, SHA-256) first."""
    allocation: Allocation = selectors.get_portal_allocation(user=request.user, pk=pk)
    notation = request.GET.get("notation") or ExportJob.Notation.SERIAL
    back = (
        reverse("portal:order", args=[allocation.packaging_order_id])
        if allocation.packaging_order_id
        else reverse("portal:orders")
    )
    if notation not in DOWNLOAD_NOTATIONS:
        messages.error(request, f"Unknown notation {notation!r}; download serials or GS1 element strings.")
        return redirect(back)
    try:
        check_rate_limit(request=request, scope="export")
        download = start_serial_download(
            allocation=allocation, format=ExportJob.Format.CSV, notation=notation, user=request.user, request=request
        )
    except (RateLimited, ExportBlocked) as exc:
        return _refused(request, exc, back=back)
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect(back)
    response = StreamingHttpResponse(download.chunks, content_type=download.content_type)
    response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
    response["Content-Length"] = str(download.size)
    response["X-Serial-Count"] = str(download.rows)
    response["X-Content-SHA256"] = download.sha256
    return response


# --- batches ----------------------------------------------------------------------------------------------------


@portal_page(perm="serialization.view_batch", doing="see batches")
@require_safe
def batch_list(request: HttpRequest) -> HttpResponse:
    batches = [
        {
            "batch": batch,
            "open_orders": sum(1 for o in batch.orders.all() if o.status == PackagingOrder.Status.OPEN),
            "orders": len(batch.orders.all()),
        }
        for batch in selectors.list_portal_batches(user=request.user)
    ]
    return _render(request, "portal/batches.html", {"batches": batches}, tab="batches")


# --- submissions to regulators (the outbox) ---------------------------------------------------------------------


def _outbox_context(request: HttpRequest) -> dict:
    # The company's own submissions only (serialization.outbox_selectors): an MAH sees what it reports; a CMO, whose
    # MAHs report its batches, sees none of theirs.
    return {
        **get_outbox_dashboard(user=request.user),
        "panel_url": reverse("portal:outbox-panel"),
        "detail_url_name": None,
    }


@portal_page(perm="serialization.view_submission", doing="see submissions")
@require_safe
def outbox(request: HttpRequest) -> HttpResponse:
    """The company's submissions to regulators by state — pending, late, failed, dead, accepted — updated in place."""
    return _render(request, "portal/outbox.html", _outbox_context(request), tab="outbox")


@portal_page(perm="serialization.view_submission", doing="see submissions")
@require_safe
def outbox_panel(request: HttpRequest) -> HttpResponse:
    """The outbox panel alone, for htmx to swap in every few seconds."""
    return render(request, "portal/_outbox_panel.html", _outbox_context(request))
