"""The serial engine's API: pools, allocations, downloads, exports, release, lookup, imports."""

import csv
import hashlib
import io
import json

import pytest
from django.core.management import call_command

from audit.models import AccessEvent
from masterdata import gs1
from serialization.models import Allocation, ExportJob, ListedSerial, Pack, SerialPool
from serialization.services import allocate_serials, create_generated_pool, create_list_pool, pool_permutation
from tests.factories import make_company, make_membership, make_product, make_user

pytestmark = pytest.mark.django_db

# --- helpers ------------------------------------------------------------------------------------------------------


def generated_pool(*, owner=None, markets=("US",), fill=1_000, **kwargs) -> SerialPool:
    product = make_product(owner=owner, markets=markets)
    return create_generated_pool(owner=product.owner, actor=make_user(), product=product, initial_fill=fill, **kwargs)


def list_pool(serials, *, owner=None, markets=("RU",)) -> SerialPool:
    product = make_product(owner=owner, markets=markets)
    pool = create_list_pool(owner=product.owner, actor=make_user(), product=product, source=SerialPool.Source.FILE)
    ListedSerial.objects.bulk_create(
        ListedSerial(pool=pool, ordinal=i, product_code=pool.product_code, serial=s, parameters={"91": "K9x1"})
        for i, s in enumerate(serials)
    )
    SerialPool.objects.filter(pk=pool.pk).update(filled=len(serials))  # what an import does to the counter
    pool.refresh_from_db()
    return pool


def allocate(pool, quantity, request_id="r1"):
    return allocate_serials(pool=pool, quantity=quantity, actor=None, request_id=request_id, purpose="batch")


@pytest.fixture
def steward(make_api_client):
    return make_api_client(make_user(roles=("Steward",)))


@pytest.fixture
def line(make_api_client):
    return make_api_client(make_user(roles=("Line system",)))


def error(response) -> dict:
    return response.json()["error"]


# --- pools ------------------------------------------------------------------------------------------------------


def test_pool_list_shows_counts_and_never_the_key(steward):
    pool = generated_pool(markets=("EU",), fill=1_000)
    allocate(pool, 300)

    response = steward.get("/api/v1/pools/")

    assert response.status_code == 200
    (row,) = response.json()["results"]
    assert {k: row[k] for k in ("id", "filled", "assigned", "available", "source", "kind", "randomised")} == {
        "id": pool.pk,
        "filled": 1_000,
        "assigned": 300,
        "available": 700,
        "source": "generator",
        "kind": "sgtin",
        "randomised": True,
    }
    assert row["issue_limit"] == 36**12 // 10_000  # EU: 10⁻⁴ of [0-9A-Z]×12, as the pool stored it
    assert row["issue_limit"] == pool.issue_limit
    assert (row["alphabet"], row["length"], row["code"]) == (pool.alphabet, 12, pool.product_code)
    assert "encrypted_key" not in row
    assert pool.encrypted_key not in response.content.decode()


def test_pool_list_query_count_does_not_grow_with_pools(steward, django_assert_max_num_queries):
    for _ in range(2):
        generated_pool(fill=10)
    steward.get("/api/v1/pools/")  # the token's first use writes its "used" record once

    with django_assert_max_num_queries(7):
        first = steward.get("/api/v1/pools/")
    for _ in range(4):
        generated_pool(fill=10)
    with django_assert_max_num_queries(7):
        second = steward.get("/api/v1/pools/")

    assert (first.json()["count"], second.json()["count"]) == (2, 6)


def test_pool_list_is_scoped_to_the_users_company(make_api_client):
    mine, theirs = make_company(), make_company()
    own = generated_pool(owner=mine, fill=10)
    other = generated_pool(owner=theirs, fill=10)
    user = make_user(roles=("Steward",))
    make_membership(user=user, company=mine)
    client = make_api_client(user)

    assert [row["id"] for row in client.get("/api/v1/pools/").json()["results"]] == [own.pk]
    response = client.get(f"/api/v1/pools/{other.pk}/")
    assert response.status_code == 404
    assert error(response)["message"] == f"No serial pool with id {other.pk} is visible to you."
    assert client.post(f"/api/v1/pools/{other.pk}/fill/", {"quantity": 5}).status_code == 404


def test_pool_list_filters_by_source(steward):
    generated = generated_pool(fill=10)
    listed = list_pool(["A1", "A2"])

    assert [r["id"] for r in steward.get("/api/v1/pools/?source=file").json()["results"]] == [listed.pk]
    assert [r["id"] for r in steward.get("/api/v1/pools/?source=generator").json()["results"]] == [generated.pk]
    assert error(steward.get("/api/v1/pools/?source=nonsense"))["fields"]["source"] == [
        '"nonsense" is not a valid choice.'
    ]


def test_pool_counts_per_product_code_and_source(steward):
    generated = generated_pool(fill=100)
    allocate(generated, 40)
    listed = list_pool(["A1", "A2", "A3"])

    response = steward.get("/api/v1/pools/counts/")

    rows = {(r["product_code"], r["source"]): r for r in response.json()}
    assert rows[(generated.product_code, "generator")] == {
        "kind": "sgtin",
        "product_code": generated.product_code,
        "sscc_prefix": "",
        "sscc_extension_digit": "",
        "source": "generator",
        "pools": 1,
        "filled": 100,
        "assigned": 40,
        "available": 60,
    }
    assert (rows[(listed.product_code, "file")]["filled"], rows[(listed.product_code, "file")]["available"]) == (3, 3)


def test_create_generated_pool_for_a_product(steward):
    product = make_product(markets=("EU",))

    response = steward.post(
        "/api/v1/pools/", {"product": product.pk, "initial_fill": 500, "min_available": 100, "max_available": 900}
    )

    assert response.status_code == 201, response.content
    body = response.json()
    pool = SerialPool.objects.get(pk=body["id"])
    assert (body["product_code"], body["source"], body["randomised"], body["filled"]) == (
        product.product_code,
        "generator",
        True,
        500,
    )
    assert (pool.min_available, pool.max_available, pool.owner) == (100, 900, product.owner)
    assert pool.encrypted_key and pool.encrypted_key not in response.content.decode()


def test_create_sscc_pool(steward):
    company = make_company()
    prefix = company.prefixes.get()

    response = steward.post("/api/v1/pools/", {"sscc_prefix": prefix.prefix, "extension_digit": "1", "initial_fill": 5})

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["kind"], body["sscc_prefix"], body["sscc_extension_digit"], body["length"]) == (
        "sscc",
        prefix.prefix,
        "1",
        16 - len(prefix.prefix),
    )
    assert body["code"] == f"1{prefix.prefix}"


def test_create_list_pool(steward):
    product = make_product(markets=("RU",))

    response = steward.post("/api/v1/pools/", {"product": product.pk, "source": "sap_attp"})

    assert response.status_code == 201, response.content
    assert (response.json()["source"], response.json()["filled"]) == ("sap_attp", 0)


def test_create_pool_refuses_unclear_or_invisible_input(make_api_client, steward):
    product = make_product()
    both = steward.post("/api/v1/pools/", {"product": product.pk, "sscc_prefix": "9521234", "extension_digit": "1"})
    assert both.status_code == 400
    assert error(both)["fields"] == {
        "product": ["Give either a product id (unit serials) or an sscc_prefix (SSCCs), not both."]
    }

    user = make_user(roles=("Steward",))
    make_membership(user=user, company=make_company())
    hidden = make_api_client(user).post("/api/v1/pools/", {"product": product.pk})
    assert hidden.status_code == 400
    assert error(hidden)["fields"] == {"product": [f"No product with id {product.pk} is visible to you."]}

    generated_pool_for = steward.post("/api/v1/pools/", {"product": product.pk})
    assert generated_pool_for.status_code == 201
    again = steward.post("/api/v1/pools/", {"product": product.pk})
    assert again.status_code == 400
    assert "already has a generated pool" in error(again)["message"]


def test_create_pool_needs_add_permission(make_api_client):
    auditor = make_api_client(make_user(roles=("Auditor",)))

    response = auditor.post("/api/v1/pools/", {"product": make_product().pk})

    assert response.status_code == 403


def test_fill_pool(steward):
    pool = generated_pool(fill=100)

    response = steward.post(f"/api/v1/pools/{pool.pk}/fill/", {"quantity": 250, "reason": "new order"})

    assert response.status_code == 200
    assert (response.json()["filled"], response.json()["available"]) == (350, 350)
    assert pool.fills.first().reason == "new order"


def test_fill_beyond_the_eu_bound_is_refused_with_the_limit(steward):
    pool = generated_pool(markets=("EU",), alphabet="0123456789", length=6, fill=90)  # bound: 100 of 10⁶

    response = steward.post(f"/api/v1/pools/{pool.pk}/fill/", {"quantity": 11})

    assert response.status_code == 400
    body = error(response)
    assert body["code"] == "issue_limit_exceeded"
    assert body["details"] == {"limit": 100, "filled": 90, "max_fill": 10}
    assert body["fields"]["quantity"] == [body["message"]]
    assert "can hold at most 100 serials" in body["message"]


# --- allocations ------------------------------------------------------------------------------------------------


def test_allocate_then_replay_then_conflict(line):
    pool = generated_pool(fill=1_000)
    url = f"/api/v1/pools/{pool.pk}/allocations/"
    request = {"quantity": 100, "request_id": "ord-1", "purpose": "packaging_order", "reference": "PO-7"}

    created = line.post(url, request)
    replayed = line.post(url, request)
    conflict = line.post(url, {**request, "quantity": 99})

    assert created.status_code == 201, created.content
    body = created.json()
    assert {k: body[k] for k in ("pool", "request_id", "requested_quantity", "quantity", "partial", "ranges")} == {
        "pool": pool.pk,
        "request_id": "ord-1",
        "requested_quantity": 100,
        "quantity": 100,
        "partial": False,
        "ranges": [{"first_index": 0, "count": 100}],
    }
    assert body["serials_url"] == f"/api/v1/allocations/{body['id']}/serials/"
    assert (replayed.status_code, replayed.json()) == (200, body)
    assert conflict.status_code == 409
    assert error(conflict)["code"] == "idempotency_conflict"
    assert "Request id 'ord-1' was already used on this pool with other parameters" in error(conflict)["message"]
    assert Allocation.objects.count() == 1


def test_allocate_from_an_exhausted_pool_says_how_many_are_available(line):
    pool = generated_pool(fill=50)
    url = f"/api/v1/pools/{pool.pk}/allocations/"

    short = line.post(url, {"quantity": 80, "request_id": "a", "purpose": "batch"})
    partial = line.post(url, {"quantity": 80, "request_id": "b", "purpose": "batch", "allow_partial": True})
    empty = line.post(url, {"quantity": 1, "request_id": "c", "purpose": "batch", "allow_partial": True})

    assert short.status_code == 409
    assert error(short)["code"] == "pool_exhausted"
    assert error(short)["details"]["available"] == 50
    assert (partial.status_code, partial.json()["quantity"], partial.json()["partial"]) == (201, 50, True)
    assert (empty.status_code, error(empty)["details"]["available"]) == (409, 0)


def test_allocate_over_the_per_request_maximum_is_a_400(line):
    pool = generated_pool(fill=100, max_per_request=10)

    response = line.post(
        f"/api/v1/pools/{pool.pk}/allocations/", {"quantity": 11, "request_id": "x", "purpose": "batch"}
    )

    assert response.status_code == 400
    assert error(response)["code"] == "request_too_large"
    assert error(response)["details"]["max_per_request"] == 10


def test_allocate_input_errors_name_the_field(line):
    pool = generated_pool(fill=10)

    response = line.post(f"/api/v1/pools/{pool.pk}/allocations/", {"quantity": 0, "purpose": "lunch"})

    assert response.status_code == 400
    assert set(error(response)["fields"]) == {"quantity", "request_id", "purpose"}


def test_allocate_needs_add_allocation(make_api_client):
    pool = generated_pool(fill=10)
    auditor = make_api_client(make_user(roles=("Auditor",)))

    response = auditor.post(
        f"/api/v1/pools/{pool.pk}/allocations/", {"quantity": 1, "request_id": "x", "purpose": "batch"}
    )

    assert response.status_code == 403


def test_allocation_list_and_detail(steward, django_assert_max_num_queries):
    pool = generated_pool(fill=1_000)
    for n in range(5):
        allocate(pool, 10, f"r{n}")
    steward.get("/api/v1/allocations/")

    with django_assert_max_num_queries(8):
        response = steward.get("/api/v1/allocations/")

    results = response.json()["results"]
    assert [r["request_id"] for r in results] == ["r4", "r3", "r2", "r1", "r0"]
    assert results[0]["ranges"] == [{"first_index": 40, "count": 10}]
    detail = steward.get(f"/api/v1/allocations/{results[0]['id']}/")
    assert detail.json() == results[0]
    assert [r["request_id"] for r in steward.get("/api/v1/allocations/?request_id=r2").json()["results"]] == ["r2"]


# --- download -------------------------------------------------------------------------------------------------------


def test_download_streams_csv_and_records_the_access(line):
    pool = generated_pool(markets=("EU",), fill=500)
    allocation = allocate(pool, 500)

    response = line.get(f"/api/v1/allocations/{allocation.pk}/serials/?format=csv&notation=serial")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="allocation-{allocation.pk}-serial.csv"'
    body = b"".join(response.streaming_content)
    rows = list(csv.reader(io.StringIO(body.decode())))
    event = AccessEvent.objects.get(kind="download")
    assert [rows[0], rows[2]] == [  # the stamp: who, when, which download (serialization.services.exports.file_stamp)
        [f"# requested_by: {line.api_token.user.username}"],
        [f"# download_id: {event.details['download_id']}"],
    ]
    assert rows[1][0].startswith("# requested_at: 20") and rows[1][0].endswith("Z")
    assert rows[3] == ["serial"]
    assert [r[0] for r in rows[4:]] == pool_permutation(pool).serials(0, 500)
    assert response["X-Serial-Count"] == "500"
    assert response["Content-Length"] == str(len(body))
    sha256 = hashlib.sha256(body).hexdigest()
    assert response["X-Content-SHA256"] == sha256
    assert (event.username, event.target, event.quantity) == (
        line.api_token.user.username,
        f"allocation {allocation.pk}",
        500,
    )
    assert event.details == {
        "format": "csv",
        "notation": "serial",
        "sha256": sha256,
        "pool": pool.pk,
        "download_id": event.details["download_id"],
    }


def test_download_digital_links_as_json(line):
    pool = generated_pool(fill=20)
    allocation = allocate(pool, 20)

    response = line.get(f"/api/v1/allocations/{allocation.pk}/serials/?format=json&notation=digital_link")

    body = json.loads(b"".join(response.streaming_content))
    assert body["serials"] == [
        gs1.build_digital_link({"01": pool.product_code, "21": s}) for s in pool_permutation(pool).serials(0, 20)
    ]
    assert body["allocation"]["id"] == allocation.pk


def test_download_never_includes_extra_parameters(line):
    pool = list_pool(["S1", "S2"])
    allocation = allocate(pool, 2)

    response = line.get(f"/api/v1/allocations/{allocation.pk}/serials/?format=txt")

    lines = b"".join(response.streaming_content).splitlines()
    assert [row for row in lines if not row.startswith(b"# ")] == [b"S1", b"S2"]  # after the stamp
    assert response["Content-Type"] == "text/plain; charset=utf-8"


def test_download_over_the_stream_limit_answers_409(line, settings):
    settings.SERIAL_STREAM_MAX = 100
    pool = generated_pool(fill=101)
    allocation = allocate(pool, 101)

    response = line.get(f"/api/v1/allocations/{allocation.pk}/serials/", HTTP_ACCEPT="text/csv")

    assert response.status_code == 409
    assert response["Content-Type"] == "application/json"
    assert error(response)["code"] == "too_large_to_stream"
    assert error(response)["details"] == {"quantity": 101, "stream_max": 100}
    assert not AccessEvent.objects.filter(kind="download").exists()


def test_download_of_another_companys_allocation_is_404(make_api_client):
    allocation = allocate(generated_pool(fill=10), 10)
    user = make_user(roles=("Line system",))
    make_membership(user=user, company=make_company())

    response = make_api_client(user).get(f"/api/v1/allocations/{allocation.pk}/serials/")

    assert response.status_code == 404
    assert not AccessEvent.objects.filter(kind="download").exists()


def test_download_with_a_bad_format_names_the_field(line):
    allocation = allocate(generated_pool(fill=10), 10)

    response = line.get(f"/api/v1/allocations/{allocation.pk}/serials/?format=xlsx")

    assert response.status_code == 400
    assert error(response)["fields"] == {"format": ['"xlsx" is not a valid choice.']}


# --- exports ------------------------------------------------------------------------------------------------------


def test_export_job_runs_and_its_file_downloads(line, django_capture_on_commit_callbacks, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    pool = generated_pool(fill=1_000)
    allocation = allocate(pool, 1_000)

    with django_capture_on_commit_callbacks(execute=True):
        created = line.post(f"/api/v1/allocations/{allocation.pk}/exports/", {"format": "txt", "notation": "serial"})

    assert created.status_code == 202, created.content
    job_id = created.json()["id"]
    assert created["Location"] == f"/api/v1/exports/{job_id}/"
    assert (created.json()["status"], created.json()["download_url"]) == ("pending", None)
    status = line.get(f"/api/v1/exports/{job_id}/").json()
    assert {k: status[k] for k in ("status", "total", "written", "progress", "download_url")} == {
        "status": "done",
        "total": 1_000,
        "written": 1_000,
        "progress": 1.0,
        "download_url": f"/api/v1/exports/{job_id}/download/",
    }

    download = line.get(status["download_url"])

    assert download.status_code == 200
    data = b"".join(download.streaming_content)
    assert data.decode().splitlines()[3:] == pool_permutation(pool).serials(0, 1_000)  # after the 3-line stamp
    assert hashlib.sha256(data).hexdigest() == status["sha256"] == download["X-Content-SHA256"]
    event = AccessEvent.objects.get(kind="download")
    assert (event.quantity, event.details["export_job"], event.details["sha256"]) == (1_000, job_id, status["sha256"])
    assert AccessEvent.objects.get(kind="export").quantity == 1_000


def test_export_download_before_it_is_done_is_409(line):
    allocation = allocate(generated_pool(fill=10), 10)
    job = ExportJob.objects.create(allocation=allocation, total=10)

    response = line.get(f"/api/v1/exports/{job.pk}/download/")

    assert response.status_code == 409
    assert error(response)["code"] == "export_not_ready"
    assert error(response)["message"] == (
        f"Export {job.pk} is pending, so it has no file yet; poll its status and download it when it is done."
    )


def test_export_list_query_count_does_not_grow_with_jobs(line, django_assert_max_num_queries):
    pool = generated_pool(fill=100)
    for n in range(6):
        ExportJob.objects.create(allocation=allocate(pool, 10, f"r{n}"), total=10, requested_by=line.api_token.user)
    line.get("/api/v1/exports/")

    with django_assert_max_num_queries(7):
        response = line.get("/api/v1/exports/")

    assert [job["requested_by"] for job in response.json()["results"]] == [line.api_token.user.username] * 6


def test_exports_are_scoped(make_api_client):
    allocation = allocate(generated_pool(fill=10), 10)
    job = ExportJob.objects.create(allocation=allocation, total=10)
    user = make_user(roles=("Line system",))
    make_membership(user=user, company=make_company())
    client = make_api_client(user)

    assert client.get(f"/api/v1/exports/{job.pk}/").status_code == 404
    assert client.get("/api/v1/exports/").json()["count"] == 0
    assert client.post(f"/api/v1/allocations/{allocation.pk}/exports/", {}).status_code == 404


# --- release ------------------------------------------------------------------------------------------------------


def test_release_everything_unused(line):
    pool = generated_pool(fill=100)
    allocation = allocate(pool, 30)

    response = line.post(f"/api/v1/allocations/{allocation.pk}/release/", {"reason": "order cancelled"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["quantity"], body["reason"], body["allocation_active_quantity"]) == (30, "order cancelled", 0)
    assert body["released_by"] == line.api_token.user.username
    pool.refresh_from_db()
    assert (pool.available, pool.assigned) == (100, 0)


def test_release_named_serials(line):
    pool = generated_pool(markets=("EU",), fill=100)
    allocation = allocate(pool, 30)
    serials = pool_permutation(pool).serials(0, 30)

    response = line.post(
        f"/api/v1/allocations/{allocation.pk}/release/",
        {"reason": "damaged labels", "serials": [serials[3], serials[4]]},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["quantity"] == 2
    allocation.refresh_from_db()
    assert list(allocation.ranges.order_by("first_index").values_list("first_index", "count")) == [(0, 3), (5, 25)]


def test_release_refuses_unknown_and_commissioned_serials(line):
    pool = generated_pool(markets=("EU",), fill=100)
    allocation = allocate(pool, 10)
    serials = pool_permutation(pool).serials(0, 10)
    Pack.objects.create(
        pool=pool, index=2, product_code=pool.product_code, serial=serials[2], commissioned_at="2026-01-01T00:00Z"
    )
    url = f"/api/v1/allocations/{allocation.pk}/release/"

    unknown = line.post(url, {"reason": "x", "serials": ["NOTASERIAL"]}, format="json")
    commissioned = line.post(url, {"reason": "x", "serials": [serials[2], serials[3]]}, format="json")
    no_reason = line.post(url, {}, format="json")

    assert unknown.status_code == 400
    assert error(unknown)["fields"] == {"serials": [f"Serial 'NOTASERIAL' is not in pool {pool}; check the serial."]}
    assert commissioned.status_code == 409
    assert error(commissioned)["details"] == {"commissioned": 1}
    assert error(no_reason)["fields"] == {"reason": ["This field is required."]}


# --- lookup -------------------------------------------------------------------------------------------------------


def test_lookup_of_an_assigned_and_an_available_serial(line):
    pool = generated_pool(markets=("EU",), fill=100)
    allocation = allocate(pool, 10, "ord-9")
    serials = pool_permutation(pool).serials(0, 20)

    assigned = line.get("/api/v1/serials/lookup/", {"product_code": pool.product_code, "serial": serials[7]})
    available = line.get("/api/v1/serials/lookup/", {"product_code": pool.product_code, "serial": serials[15]})

    assert assigned.status_code == 200
    assert assigned.json() == {
        "product_code": pool.product_code,
        "serial": serials[7],
        "pool": {"id": pool.pk, "name": pool.name, "kind": "sgtin", "source": "generator"},
        "index": 7,
        "status": "assigned",
        "allocation": {"id": allocation.pk, "request_id": "ord-9", "purpose": "batch", "reference": ""},
        "pack": None,
    }
    assert (available.json()["status"], available.json()["index"], available.json()["allocation"]) == (
        "available",
        15,
        None,
    )


def test_lookup_of_an_sscc(line):
    company = make_company()
    pool = create_generated_pool(
        owner=company, actor=make_user(), sscc_prefix=company.prefixes.get(), extension_digit="0", initial_fill=10
    )
    allocate(pool, 5)
    sscc = gs1.sscc_from_parts("0", pool.sscc_prefix, pool_permutation(pool).serial_at(3))

    response = line.get("/api/v1/serials/lookup/", {"sscc": sscc})

    assert (response.status_code, response.json()["index"], response.json()["status"]) == (200, 3, "assigned")


def test_lookup_outside_the_scope_looks_like_an_unknown_serial(make_api_client, line):
    pool = generated_pool(markets=("EU",), fill=10)
    serial = pool_permutation(pool).serial_at(1)
    user = make_user(roles=("Line system",))
    make_membership(user=user, company=make_company())

    hidden = make_api_client(user).get("/api/v1/serials/lookup/", {"product_code": pool.product_code, "serial": serial})
    unknown = line.get("/api/v1/serials/lookup/", {"product_code": pool.product_code, "serial": "ZZZZZZZZZZZ"})

    assert (hidden.status_code, unknown.status_code) == (404, 404)
    assert error(hidden)["code"] == error(unknown)["code"] == "unknown_serial"
    assert error(line.get("/api/v1/serials/lookup/", {"serial": "1"}))["fields"] == {
        "product_code": ["Give product_code too: a serial is unique per product code."]
    }


# --- imports ------------------------------------------------------------------------------------------------------


def test_import_upload_starts_a_job_and_reports_status(steward, django_capture_on_commit_callbacks, tmp_path, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.MEDIA_ROOT = tmp_path
    pool = list_pool([], markets=("US",))
    upload = SimpleUploadedFile("serials.csv", b"AAA0001\nAAA0002\n", content_type="text/csv")

    with django_capture_on_commit_callbacks(execute=True):
        response = steward.post(
            f"/api/v1/pools/{pool.pk}/imports/", {"file": upload, "layout": "csv"}, format="multipart"
        )

    assert response.status_code == 202, response.content
    assert (response.json()["status"], response.json()["original_name"]) == ("pending", "serials.csv")
    job = steward.get(f"/api/v1/imports/{response.json()['id']}/").json()
    assert {k: job[k] for k in ("pool", "status", "rows", "imported", "error_count", "errors")} == {
        "pool": pool.pk,
        "status": "done",
        "rows": 2,
        "imported": 2,
        "error_count": 0,
        "errors": [],
    }
    assert steward.get(f"/api/v1/pools/{pool.pk}/").json()["available"] == 2


def test_import_with_errors_reports_them_by_line(steward, django_capture_on_commit_callbacks, tmp_path, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.MEDIA_ROOT = tmp_path
    pool = list_pool([], markets=("US",))
    upload = SimpleUploadedFile("serials.csv", b"AAA0001\nAA~01\nAAA0001\n", content_type="text/csv")

    with django_capture_on_commit_callbacks(execute=True):
        response = steward.post(
            f"/api/v1/pools/{pool.pk}/imports/", {"file": upload, "layout": "csv"}, format="multipart"
        )

    job = steward.get(f"/api/v1/imports/{response.json()['id']}/").json()
    assert (job["status"], job["imported"]) == ("rejected", 0)
    assert [(e["line"], e["serial"]) for e in job["errors"]] == [(2, "AA~01"), (3, "AAA0001")]
    assert (
        job["errors"][1]["problem"] == "Duplicate in the file: this serial is on line 1 and on line 3 — keep it once."
    )


def test_import_upload_without_a_file_names_the_field(steward):
    pool = list_pool([])

    response = steward.post(f"/api/v1/pools/{pool.pk}/imports/", {"layout": "csv"}, format="multipart")

    assert response.status_code == 400
    assert error(response)["fields"] == {"file": ["No file was submitted."]}


def test_import_of_another_companys_pool_is_404(make_api_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    pool = list_pool([])
    user = make_user(roles=("Steward",))
    make_membership(user=user, company=make_company())
    upload = SimpleUploadedFile("serials.csv", b"serial\nA1\n")

    response = make_api_client(user).post(
        f"/api/v1/pools/{pool.pk}/imports/", {"file": upload, "layout": "csv"}, format="multipart"
    )

    assert response.status_code == 404


# --- schema -------------------------------------------------------------------------------------------------------


def test_openapi_schema_generates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))

    schema = (tmp_path / "schema.yml").read_text()
    assert "/api/v1/allocations/{id}/serials/" in schema
    assert "encrypted_key" not in schema
