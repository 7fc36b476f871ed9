"""Getting the numbers out: serial chunks, notations, file writers, export jobs and their access records."""

import csv
import hashlib
import io
import json
import tracemalloc

import numpy as np
import pytest
from django.core.files.storage import default_storage

from audit.models import AccessEvent
from masterdata import gs1
from serialization.exceptions import ExportNotReady, NotationUnavailable, TooLargeToStream
from serialization.models import ExportJob, ListedSerial, SerialPool
from serialization.services import allocate_serials, create_generated_pool, create_list_pool, pool_permutation
from serialization.services.exports import (
    create_export,
    open_export_download,
    run_export,
    start_serial_download,
)
from serialization.services.materialise import (
    indices_of_serials,
    iter_serial_chunks,
    stream_serials,
    write_serials,
)
from tests.factories import make_company, make_product, make_user

pytestmark = pytest.mark.django_db

# Serials of GS1 set 82 that each need some escaping somewhere: "(" in element strings, reserved characters in a
# Digital Link, "," and '"' in CSV, '"' in JSON; plus plain ones of unequal length.
AWKWARD = ["PLAIN1", "AB(12", "A/B%x", 'Q"1,2', "short", "X" * 20, "a&b=c?d", "semi;colon:", "1", "P-._"]


def generated_pool(*, markets=("US",), fill=1_000, **kwargs) -> SerialPool:
    product = make_product(markets=markets)
    return create_generated_pool(owner=product.owner, actor=make_user(), product=product, initial_fill=fill, **kwargs)


def sscc_pool(*, fill=1_000, randomised=False) -> SerialPool:
    company = make_company()
    prefix = company.prefixes.get()
    return create_generated_pool(
        owner=company,
        actor=make_user(),
        sscc_prefix=prefix,
        extension_digit="3",
        randomised=randomised,
        initial_fill=fill,
    )


def list_pool(serials) -> SerialPool:
    product = make_product(markets=("RU",))
    pool = create_list_pool(owner=product.owner, actor=make_user(), product=product, source=SerialPool.Source.FILE)
    ListedSerial.objects.bulk_create(
        ListedSerial(pool=pool, ordinal=i, product_code=pool.product_code, serial=s, parameters={"91": "K9x1"})
        for i, s in enumerate(serials)
    )
    # What an import does to the counter (the import service is tested on its own).
    SerialPool.objects.filter(pk=pool.pk).update(filled=len(serials))
    pool.refresh_from_db()
    return pool


def allocate(pool, quantity, request_id="r1"):
    return allocate_serials(pool=pool, quantity=quantity, actor=None, request_id=request_id, purpose="batch")


def chunks_as_list(allocation, **kwargs) -> list[str]:
    return [value.decode() for chunk in iter_serial_chunks(allocation, **kwargs) for value in chunk.tolist()]


def document(allocation, *, format, notation) -> bytes:
    out = io.BytesIO()
    write_serials(allocation, format=format, notation=notation, out=out)
    return out.getvalue()


def values_of(data: bytes, format: str) -> list[str]:
    text = data.decode()
    if format == "csv":
        return [row[0] for row in csv.reader(io.StringIO(text))][1:]
    if format == "json":
        return json.loads(text)["serials"]
    return text.splitlines()


# --- chunks -------------------------------------------------------------------------------------------------------


def test_generated_chunks_are_the_scalar_serials_in_index_order():
    pool = generated_pool(markets=("EU",), fill=2_000)
    allocate(pool, 700, "first")
    allocation = allocate(pool, 1_000, "second")  # indices 700..1699
    permutation = pool_permutation(pool)

    assert chunks_as_list(allocation, chunk_size=300) == [permutation.serial_at(i) for i in range(700, 1_700)]
    assert [len(chunk) for chunk in iter_serial_chunks(allocation, chunk_size=300)] == [300, 300, 300, 100]


def test_chunks_follow_every_range_of_a_fragmented_allocation():
    pool = generated_pool(fill=100, randomised=False)
    first = allocate(pool, 10, "a")
    allocate(pool, 10, "b")
    from serialization.services import release_serials

    release_serials(allocation=first, actor=None, reason="order closed", indices=[2, 3, 4, 7])
    allocation = allocate(pool, 6, "c")  # the 4 released indices first, then 20 and 21

    assert chunks_as_list(allocation) == [f"{i:012d}" for i in (2, 3, 4, 7, 20, 21)]


def test_sscc_chunks_are_full_sscc_with_check_digit():
    pool = sscc_pool(fill=500, randomised=True)
    allocation = allocate(pool, 500)
    permutation = pool_permutation(pool)

    expected = [gs1.sscc_from_parts("3", pool.sscc_prefix, permutation.serial_at(i)) for i in range(500)]
    assert chunks_as_list(allocation, chunk_size=128) == expected
    assert all(gs1.validate_sscc(sscc) for sscc in expected)


def test_list_pool_chunks_are_the_listed_serials_by_ordinal():
    pool = list_pool(AWKWARD)
    allocation = allocate(pool, len(AWKWARD))

    assert chunks_as_list(allocation, chunk_size=3) == AWKWARD


# --- notations and formats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["csv", "json", "txt"])
def test_fast_notations_equal_the_gs1_module_for_serials_needing_escapes(format):
    pool = list_pool(AWKWARD)
    allocation = allocate(pool, len(AWKWARD))
    gtin = pool.product_code

    assert values_of(document(allocation, format=format, notation="serial"), format) == AWKWARD
    assert values_of(document(allocation, format=format, notation="element_string"), format) == [
        gs1.build_element_string({"01": gtin, "21": serial}) for serial in AWKWARD
    ]
    assert values_of(document(allocation, format=format, notation="digital_link"), format) == [
        gs1.build_digital_link({"01": gtin, "21": serial}) for serial in AWKWARD
    ]


@pytest.mark.parametrize("format", ["csv", "json", "txt"])
def test_fast_notations_equal_the_gs1_module_for_generated_serials(format):
    pool = generated_pool(markets=("EU",), fill=3_000)
    allocation = allocate(pool, 3_000)
    serials = pool_permutation(pool).serials(0, 3_000)
    gtin = pool.product_code

    assert values_of(document(allocation, format=format, notation="element_string"), format) == [
        gs1.build_element_string({"01": gtin, "21": s}) for s in serials
    ]
    assert values_of(document(allocation, format=format, notation="digital_link"), format) == [
        gs1.build_digital_link({"01": gtin, "21": s}) for s in serials
    ]


def test_sscc_notations_equal_the_gs1_module():
    pool = sscc_pool(fill=50)
    allocation = allocate(pool, 50)
    ssccs = chunks_as_list(allocation)

    assert values_of(document(allocation, format="txt", notation="serial"), "txt") == ssccs
    assert values_of(document(allocation, format="txt", notation="element_string"), "txt") == [
        gs1.build_element_string({"00": s}) for s in ssccs
    ]
    assert values_of(document(allocation, format="csv", notation="digital_link"), "csv") == [
        gs1.build_digital_link({"00": s}) for s in ssccs
    ]
    assert document(allocation, format="csv", notation="serial").startswith(b"sscc\n")


def test_csv_rows_are_what_the_csv_module_writes():
    pool = list_pool(AWKWARD)
    allocation = allocate(pool, len(AWKWARD))
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(["serial"])
    writer.writerows([serial] for serial in AWKWARD)

    assert document(allocation, format="csv", notation="serial").decode() == expected.getvalue()


def test_json_document_names_the_allocation_and_never_the_extra_parameters():
    pool = list_pool(AWKWARD)
    allocation = allocate(pool, len(AWKWARD), "line-7")

    data = document(allocation, format="json", notation="serial")
    body = json.loads(data)

    assert body["allocation"] == {
        "id": allocation.pk,
        "request_id": "line-7",
        "pool": pool.pk,
        "kind": "sgtin",
        "product_code": pool.product_code,
        "sscc_prefix": None,
        "purpose": "batch",
        "reference": "",
        "quantity": len(AWKWARD),
    }
    assert body["notation"] == "serial"
    assert body["serials"] == AWKWARD
    assert b"K9x1" not in data  # AI 91 stored with every listed serial


def test_empty_json_array_is_valid():
    pool = list_pool(["A1"])
    allocation = allocate(pool, 1)
    from serialization.services import release_serials

    release_serials(allocation=allocation, actor=None, reason="cancelled")

    assert json.loads(document(allocation, format="json", notation="serial"))["serials"] == []


def test_write_serials_returns_rows_and_the_sha256_of_the_bytes():
    pool = generated_pool(fill=1_000)
    allocation = allocate(pool, 1_000)
    out = io.BytesIO()
    seen = []

    rows, sha256 = write_serials(allocation, format="txt", notation="serial", out=out, progress=seen.append)

    assert rows == 1_000
    assert sha256 == hashlib.sha256(out.getvalue()).hexdigest()
    assert seen == [1_000]
    assert b"".join(stream_serials(allocation, format="txt", notation="serial")) == out.getvalue()


def test_element_string_of_a_non_gtin_product_code_is_refused():
    pool = generated_pool(fill=10)
    SerialPool.objects.filter(pk=pool.pk).update(product_code="110375286414")  # a PPN
    pool.refresh_from_db()
    allocation = allocate(pool, 10)

    with pytest.raises(NotationUnavailable, match="Product code 110375286414 is not a GTIN/NTIN"):
        document(allocation, format="csv", notation="element_string")
    assert values_of(document(allocation, format="csv", notation="serial"), "csv")[0].isdigit()


def test_indices_of_serials_maps_back_for_every_kind_of_pool():
    generated = generated_pool(markets=("EU",), fill=100)
    serials = pool_permutation(generated).serials(0, 100)
    assert indices_of_serials(generated, [serials[42], serials[7]]) == [42, 7]

    listed = list_pool(AWKWARD)
    assert indices_of_serials(listed, ["A/B%x", "PLAIN1"]) == [2, 0]

    sscc = sscc_pool(fill=20)
    allocation = allocate(sscc, 20)
    assert indices_of_serials(sscc, chunks_as_list(allocation)[5:7]) == [5, 6]

    with pytest.raises(Exception, match="Serial 'nope' is not in pool"):
        indices_of_serials(listed, ["nope"])


def test_writing_500k_serials_keeps_memory_flat():
    pool = generated_pool(markets=("EU",), fill=500_000)
    allocation = allocate(pool, 500_000)

    class Sink:
        size = 0

        def write(self, data):
            self.size += len(data)

    sink = Sink()
    tracemalloc.start()
    try:
        rows, _ = write_serials(allocation, format="json", notation="digital_link", out=sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert rows == 500_000
    assert sink.size > 500_000 * 55  # 28 MB written in all
    assert peak < 20 * 1024 * 1024, f"peak {peak / 2**20:.1f} MB"


# --- streamed downloads and export jobs ------------------------------------------------------------------------------


def test_streamed_download_records_the_access_before_sending(rf):
    user = make_user(roles=("Line system",))
    pool = generated_pool(fill=100)
    allocation = allocate(pool, 100)
    request = rf.get("/", HTTP_USER_AGENT="line-7")
    request.user = user

    download = start_serial_download(allocation=allocation, format="csv", notation="serial", user=user, request=request)

    event = AccessEvent.objects.get()
    assert (event.kind, event.user, event.target, event.quantity) == (
        "download",
        user,
        f"allocation {allocation.pk}",
        100,
    )
    body = b"".join(download.chunks)
    assert event.details == {
        "format": "csv",
        "notation": "serial",
        "sha256": download.sha256,
        "pool": pool.pk,
        "download_id": event.details["download_id"],
    }
    assert hashlib.sha256(body).hexdigest() == download.sha256
    assert len(body) == download.size
    assert event.user_agent == "line-7"


def test_streamed_download_above_the_limit_asks_for_an_export(settings):
    settings.SERIAL_STREAM_MAX = 99
    pool = generated_pool(fill=100)
    allocation = allocate(pool, 100)

    with pytest.raises(TooLargeToStream) as caught:
        start_serial_download(allocation=allocation, format="csv", notation="serial", user=None)

    assert caught.value.status_code == 409
    assert caught.value.details == {"quantity": 100, "stream_max": 99}
    assert f"POST /api/v1/allocations/{allocation.pk}/exports/" in caught.value.message
    assert not AccessEvent.objects.exists()


def test_export_job_writes_the_file_with_progress_and_checksum(django_capture_on_commit_callbacks, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    user = make_user(roles=("Steward",))
    pool = generated_pool(markets=("EU",), fill=300_000)
    allocation = allocate(pool, 300_000)

    with django_capture_on_commit_callbacks(execute=True):
        job = create_export(allocation=allocation, format="csv", notation="element_string", actor=user)
    assert job.status == "pending"  # the instance returned before the worker ran
    job.refresh_from_db()

    assert (job.status, job.total, job.written, job.error) == ("done", 300_000, 300_000, "")
    with default_storage.open(job.file.name, "rb") as handle:
        data = handle.read()
    assert hashlib.sha256(data).hexdigest() == job.sha256
    lines = data.decode().splitlines()
    assert lines[:3] == [  # the stamp: who asked, when, which export
        f"# requested_by: {user.username}",
        f"# requested_at: {job.created_at:%Y-%m-%dT%H:%M:%SZ}",
        f"# export_id: {job.pk}",
    ]
    assert lines[3] == "element_string"
    assert lines[4] == f"(01){pool.product_code}(21){pool_permutation(pool).serial_at(0)}"
    assert len(lines) == 300_004
    assert job.finished_at is not None
    export_event = AccessEvent.objects.get(kind="export")
    assert (export_event.user, export_event.quantity) == (user, 300_000)
    assert export_event.details == {"format": "csv", "notation": "element_string", "export_job": job.pk}


def test_export_progress_is_saved_per_chunk(monkeypatch, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    pool = generated_pool(fill=450_000)
    allocation = allocate(pool, 450_000)
    job = ExportJob.objects.create(allocation=allocation, format="txt", notation="serial", total=450_000)
    seen = []
    from serialization.services import exports

    def spy_write(*args, progress, **kwargs):
        return write_serials(*args, progress=lambda n: (seen.append(n), progress(n)), **kwargs)

    monkeypatch.setattr(exports, "write_serials", spy_write)
    run_export(job_id=job.pk)

    assert seen == [262_144, 450_000]
    job.refresh_from_db()
    assert (job.status, job.written) == ("done", 450_000)


def test_export_run_twice_does_nothing_the_second_time(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    pool = generated_pool(fill=10)
    allocation = allocate(pool, 10)
    job = ExportJob.objects.create(allocation=allocation, format="txt", notation="serial", total=10)

    first = run_export(job_id=job.pk)
    second = run_export(job_id=job.pk)

    assert (first.status, second.status, second.file.name) == ("done", "done", first.file.name)


def test_export_failure_is_kept_on_the_job(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    pool = generated_pool(fill=10)
    SerialPool.objects.filter(pk=pool.pk).update(product_code="110375286414")
    allocation = allocate(pool, 10)
    job = ExportJob.objects.create(allocation=allocation, format="txt", notation="digital_link", total=10)

    job = run_export(job_id=job.pk)

    assert job.status == "failed"
    assert job.error.startswith("Product code 110375286414 is not a GTIN/NTIN")


def test_export_download_records_the_access_and_refuses_unfinished_jobs(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    user = make_user(roles=("Steward",))
    pool = generated_pool(fill=10)
    allocation = allocate(pool, 10)
    job = ExportJob.objects.create(allocation=allocation, format="json", notation="serial", total=10)

    with pytest.raises(ExportNotReady, match=f"Export {job.pk} is pending, so it has no file yet"):
        open_export_download(job=job, user=user)

    job = run_export(job_id=job.pk)
    download = open_export_download(job=job, user=user)
    data = download.file.read()
    download.file.close()

    assert json.loads(data)["serials"] == pool_permutation(pool).serials(0, 10)
    event = AccessEvent.objects.get(kind="download")
    assert (event.user, event.quantity, event.target) == (user, 10, f"allocation {allocation.pk}")
    assert event.details == {"format": "json", "notation": "serial", "sha256": job.sha256, "export_job": job.pk}
    assert hashlib.sha256(data).hexdigest() == job.sha256


def test_chunks_of_a_generated_pool_are_fixed_width_bytes():
    pool = generated_pool(fill=10)
    allocation = allocate(pool, 10)

    (chunk,) = iter_serial_chunks(allocation)

    assert chunk.dtype == np.dtype("S12")
