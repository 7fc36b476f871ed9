"""The steward's admin for pools, allocations, export and import jobs."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from audit.models import AccessEvent
from serialization.models import Allocation, CaptureJob, ExportJob, ImportJob, ListedSerial, SerialPool
from serialization.services import allocate_serials, create_generated_pool, create_list_pool
from serialization.services.exports import run_export
from tests.factories import make_company, make_membership, make_product, make_user

pytestmark = pytest.mark.django_db


def generated_pool(*, owner=None, markets=("US",), fill=1_000, **kwargs) -> SerialPool:
    product = make_product(owner=owner, markets=markets)
    return create_generated_pool(owner=product.owner, actor=make_user(), product=product, initial_fill=fill, **kwargs)


def list_pool(serials=(), *, markets=("RU",)) -> SerialPool:
    product = make_product(markets=markets)
    pool = create_list_pool(owner=product.owner, actor=make_user(), product=product, source=SerialPool.Source.FILE)
    ListedSerial.objects.bulk_create(
        ListedSerial(pool=pool, ordinal=i, product_code=pool.product_code, serial=s, parameters={"92": "C" * 44})
        for i, s in enumerate(serials)
    )
    SerialPool.objects.filter(pk=pool.pk).update(filled=len(serials))
    pool.refresh_from_db()
    return pool


def allocate(pool, quantity, request_id="r1"):
    return allocate_serials(pool=pool, quantity=quantity, actor=None, request_id=request_id, purpose="batch")


@pytest.fixture
def steward(make_verified_client):
    return make_verified_client(make_user(is_staff=True, roles=("Steward",)))


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- pools ------------------------------------------------------------------------------------------------------


def test_pool_changelist_shows_counts(steward):
    pool = generated_pool(markets=("EU",), fill=1_000)
    allocate(pool, 250)

    response = steward.get(reverse("admin:serialization_serialpool_changelist"))

    assert response.status_code == 200
    row = next(r for r in response.context["cl"].result_list if r.pk == pool.pk)
    assert (row.filled, row.available, row.assigned) == (1_000, 750, 250)
    html = response.text
    assert pool.product_code in html
    for header in ("Filled", "Available", "Assigned", "Issue limit"):
        assert header in html
    assert ">750<" in html and ">250<" in html


def test_pool_page_shows_read_only_counters_and_never_the_key(steward):
    pool = generated_pool(markets=("EU",), fill=1_000)
    allocate(pool, 10)

    change = steward.get(reverse("admin:serialization_serialpool_change", args=[pool.pk]))
    history = steward.get(reverse("admin:serialization_serialpool_history", args=[pool.pk]))

    assert change.status_code == history.status_code == 200
    form_fields = change.context["adminform"].form.fields
    assert set(form_fields) == {"name", "min_available", "max_available", "max_per_request"}
    assert "Fill pool" in change.text
    assert "Import serials" not in change.text  # a generated pool is filled, not imported into
    for page in (change, history):
        assert pool.encrypted_key not in page.text
        assert "encrypted" not in page.text.lower()


def test_editing_a_pool_writes_only_the_edited_fields(steward):
    pool = generated_pool(fill=100)
    allocate(pool, 40)
    data = {"name": "Renamed", "min_available": "10", "max_available": "90", "max_per_request": "500"}

    response = steward.post(reverse("admin:serialization_serialpool_change", args=[pool.pk]), data)

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    pool.refresh_from_db()
    assert (pool.name, pool.min_available, pool.max_available, pool.max_per_request) == ("Renamed", 10, 90, 500)
    assert (pool.filled, pool.next_index, pool.free) == (100, 40, 0)
    assert pool.history.first().history_user is not None


def test_fill_pool_from_the_admin(steward):
    pool = generated_pool(fill=100)
    url = reverse("admin:serialization_serialpool_fill", args=[pool.pk])

    assert steward.get(url).status_code == 200
    response = steward.post(url, {"quantity": "400", "reason": "line start"})

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:serialization_serialpool_change", args=[pool.pk])
    pool.refresh_from_db()
    assert (pool.filled, pool.fills.first().reason) == (500, "line start")
    assert texts(response) == [f"Added 400 serials to “{pool}”: 500 available."]
    assert LogEntry.objects.get(object_id=str(pool.pk)).get_change_message() == "Filled 400 serials."


def test_fill_beyond_the_issue_limit_shows_the_error(steward):
    pool = generated_pool(markets=("EU",), alphabet="0123456789", length=6, fill=95)  # at most 100 of 10⁶

    response = steward.post(
        reverse("admin:serialization_serialpool_fill", args=[pool.pk]), {"quantity": "6", "reason": "more"}
    )

    assert response.status_code == 200
    assert response.context["form"].errors["quantity"] == [
        f"{pool} can hold at most 100 serials (the market's guess bound allows); it has 95, so at most 5 more can be "
        "filled. Fill fewer, or create a pool with a longer format."
    ]
    assert "can hold at most 100 serials (the market&#x27;s guess bound allows)" in response.text
    pool.refresh_from_db()
    assert pool.filled == 95


def test_fill_needs_permission(make_verified_client):
    pool = generated_pool(fill=10)
    auditor = make_verified_client(make_user(is_staff=True, roles=("Auditor",)))

    response = auditor.post(reverse("admin:serialization_serialpool_fill", args=[pool.pk]), {"quantity": "5"})

    assert response.status_code == 403
    pool.refresh_from_db()
    assert pool.filled == 10


def test_admin_scopes_pools_to_the_company(make_verified_client):
    mine, theirs = make_company(), make_company()
    own = generated_pool(owner=mine, fill=10)
    other = generated_pool(owner=theirs, fill=10)
    user = make_user(is_staff=True, roles=("Steward",))
    make_membership(user=user, company=mine)
    client = make_verified_client(user)

    listed = client.get(reverse("admin:serialization_serialpool_changelist")).context["cl"].result_list
    assert [pool.pk for pool in listed] == [own.pk]
    assert client.get(reverse("admin:serialization_serialpool_fill", args=[other.pk])).status_code == 404


def test_add_pool_through_the_service(steward):
    product = make_product(markets=("EU",))

    response = steward.post(
        reverse("admin:serialization_serialpool_add"),
        {"source": "generator", "product": product.pk, "randomised": "unknown", "initial_fill": "1000"},
    )

    assert response.status_code == 302, response.context["form"].errors
    pool = SerialPool.objects.get(product_code=product.product_code)
    assert (pool.randomised, pool.filled, pool.alphabet, pool.length) == (
        True,
        1_000,
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        12,
    )
    assert pool.encrypted_key


def test_add_pool_shows_service_errors_on_the_form(steward):
    product = make_product(markets=("EU",))

    response = steward.post(
        reverse("admin:serialization_serialpool_add"),
        {"source": "generator", "product": product.pk, "randomised": "false", "initial_fill": "0"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["randomised"] == [
        f"Market EU requires randomised serials for {product.product_code}; create a randomised pool."
    ]
    assert not SerialPool.objects.exists()


def test_import_link_and_form_on_a_list_pool(steward):
    pool = list_pool(["A1"])

    change = steward.get(reverse("admin:serialization_serialpool_change", args=[pool.pk]))
    form = steward.get(reverse("admin:serialization_serialpool_import", args=[pool.pk]))

    assert "Import serials" in change.text and "Fill pool" not in change.text
    assert form.status_code == 200
    assert 'enctype="multipart/form-data"' in form.text
    assert "C" * 44 not in change.text


def test_import_serials_starts_a_job(steward, django_capture_on_commit_callbacks, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    pool = list_pool(markets=("US",))
    upload = SimpleUploadedFile("list.csv", b"B0001\nB0002\n", content_type="text/csv")

    with django_capture_on_commit_callbacks(execute=True):
        response = steward.post(
            reverse("admin:serialization_serialpool_import", args=[pool.pk]), {"file": upload, "layout": "csv"}
        )

    job = ImportJob.objects.get(pool=pool)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:serialization_importjob_change", args=[job.pk])
    assert texts(response) == [f"Import {job.pk} of list.csv started; its status and error report are on this page."]
    assert (job.status, job.imported) == ("done", 2)
    pool.refresh_from_db()
    assert pool.available == 2


def test_import_of_an_empty_file_shows_the_error(steward):
    pool = list_pool(markets=("US",))

    response = steward.post(
        reverse("admin:serialization_serialpool_import", args=[pool.pk]),
        {"file": SimpleUploadedFile("empty.csv", b""), "layout": "csv"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["file"] == ["The submitted file is empty."]
    assert not ImportJob.objects.exists()


# --- allocations --------------------------------------------------------------------------------------------------


def test_allocation_pages_are_read_only_with_ranges_and_releases(steward):
    pool = generated_pool(fill=100)
    allocation = allocate(pool, 30, "ord-5")

    changelist = steward.get(reverse("admin:serialization_allocation_changelist"))
    detail = steward.get(reverse("admin:serialization_allocation_change", args=[allocation.pk]))

    assert "ord-5" in changelist.text
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.text
    assert "index ranges held" in detail.text.lower()
    assert steward.get(reverse("admin:serialization_allocation_add")).status_code == 403


def test_release_unused_asks_for_a_reason_then_releases(steward):
    pool = generated_pool(fill=100)
    first, second = allocate(pool, 30, "a"), allocate(pool, 20, "b")
    url = reverse("admin:serialization_allocation_changelist")
    selected = {"action": "release_unused", "_selected_action": [first.pk, second.pk]}

    asked = steward.post(url, selected)
    missing = steward.post(url, {**selected, "apply": "1", "reason": ""})
    done = steward.post(url, {**selected, "apply": "1", "reason": "order closed"})

    assert asked.status_code == 200
    assert asked.templates[0].name == "admin/serialization/allocation/release_unused.html"
    assert missing.status_code == 200
    assert missing.context["form"].errors == {"reason": ["This field is required."]}
    assert done.status_code == 302
    assert texts(done)[-1] == "Released 50 serials back to Available."
    assert list(Allocation.objects.order_by("pk").values_list("released", flat=True)) == [30, 20]
    assert set(first.releases.values_list("reason", flat=True)) == {"order closed"}
    pool.refresh_from_db()
    assert pool.available == 100


def test_release_unused_is_not_offered_without_permission(make_verified_client):
    allocate(generated_pool(fill=10), 5)
    auditor = make_verified_client(make_user(is_staff=True, roles=("Auditor",)))

    response = auditor.get(reverse("admin:serialization_allocation_changelist"))

    assert response.status_code == 200
    assert "release_unused" not in response.text


# --- export and import jobs ----------------------------------------------------------------------------------------


def test_export_jobs_list_and_download_records_the_access(steward, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    allocation = allocate(generated_pool(fill=50), 50)
    job = ExportJob.objects.create(allocation=allocation, format="txt", notation="serial", total=50)
    run_export(job_id=job.pk)

    changelist = steward.get(reverse("admin:serialization_exportjob_changelist"))
    detail = steward.get(reverse("admin:serialization_exportjob_change", args=[job.pk]))
    download = steward.get(reverse("admin:serialization_exportjob_download", args=[job.pk]))

    assert changelist.status_code == detail.status_code == download.status_code == 200
    assert "100%" in changelist.text
    assert "Download (50 serials)" in detail.text
    assert len(b"".join(download.streaming_content).splitlines()) == 3 + 50  # the stamp, then the serials
    assert AccessEvent.objects.get(kind="download").quantity == 50


def test_import_job_page_shows_the_error_report(steward):
    pool = list_pool()
    job = ImportJob.objects.create(
        pool=pool,
        layout="csv",
        file="imports/x.csv",
        original_name="x.csv",
        status="rejected",
        rows=3,
        errors=[{"line": 2, "serial": "A<1", "problem": "character '<' is not allowed"}],
        error_count=1,
    )

    changelist = steward.get(reverse("admin:serialization_importjob_changelist"))
    detail = steward.get(reverse("admin:serialization_importjob_change", args=[job.pk]))

    assert changelist.status_code == detail.status_code == 200
    assert "x.csv" in changelist.text
    assert "<td>2</td><td>A&lt;1</td><td>character &#x27;&lt;&#x27; is not allowed</td>" in detail.text


def test_capture_job_pages_show_each_refused_event_to_the_sender_s_company_only(make_verified_client):
    sender_company, other_company = make_company(), make_company()
    line_system = make_user(roles=("Line system",))
    make_membership(user=line_system, company=sender_company)
    job = CaptureJob.objects.create(
        status=CaptureJob.Status.FAILED,
        document="epcis/capture/abc.json",
        document_format="json",
        document_sha256="ab" * 32,
        event_count=2,
        applied_count=0,
        error_count=1,
        errors=[{"type": "epcisException:ValidationException", "status": 422, "detail": "event 2: serial <X> unknown"}],
        events=[{"index": 1, "status": "rolled_back"}, {"index": 2, "status": "refused"}],
        company=sender_company,
        created_by=line_system,
    )
    clients = {}
    for company in (sender_company, other_company):
        steward = make_user(is_staff=True, roles=("Steward",))
        make_membership(user=steward, company=company)
        clients[company] = make_verified_client(steward)
    own, other = clients[sender_company], clients[other_company]

    changelist = own.get(reverse("admin:serialization_capturejob_changelist"))
    detail = own.get(reverse("admin:serialization_capturejob_change", args=[job.pk]))

    assert changelist.status_code == detail.status_code == 200
    assert [row.pk for row in changelist.context["cl"].result_list] == [job.pk]
    assert "event 2: serial &lt;X&gt; unknown" in detail.text  # the problem, escaped
    assert "&quot;rolled_back&quot;" in detail.text
    assert "Save" not in detail.text  # read-only: what a line sent is not edited
    assert list(other.get(reverse("admin:serialization_capturejob_changelist")).context["cl"].result_list) == []
    assert other.get(reverse("admin:serialization_capturejob_change", args=[job.pk])).status_code == 302  # not found
