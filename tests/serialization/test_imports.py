"""Serial list imports: all or nothing, every problem reported by line, set-based on PostgreSQL (COPY) and SQLite.

Run on both databases: ``pytest tests/serialization/test_imports.py`` and with
``DATABASE_URL=postgres://postgres@127.0.0.1:5432/backoffice_imp``; the concurrency tests and the pool triggers need
PostgreSQL (SQLite ignores row locks and has no such triggers) and are skipped with the reason on SQLite.
"""

import io
import threading
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, connection, connections, transaction

from audit.exceptions import DomainError
from serialization.exceptions import InvalidPoolDefinition
from serialization.models import ImportJob, ListedSerial, PoolFill, SerialPool
from serialization.services import allocate_serials, create_generated_pool, create_list_pool
from serialization.services.imports import import_serials, run_import_job, start_import
from tests.factories import make_company, make_product, make_user

FIXTURES = Path(__file__).parent / "fixtures"
GTIN = "09524321000019"  # prefix 9524321, item reference 000001 — the GTIN every fixture file names
OTHER_GTIN = "09524321000026"
CRYPTO_CODE = "Qk3v9ZpL2mX8tR4wY7nC1bH6sD0fG5jK9eT2uV8aB3cD"  # 44 characters

pytestmark = pytest.mark.django_db


@pytest.fixture
def actor():
    return make_user()


@pytest.fixture
def owner():
    return make_company(prefixes=["9524321"])


@pytest.fixture
def product(owner):
    return make_product(owner=owner, product_code=GTIN)


@pytest.fixture
def pool(owner, product, actor):
    return create_list_pool(owner=owner, actor=actor, product=product, source=SerialPool.Source.FILE)


@pytest.fixture
def ru_pool(owner, actor):
    product = make_product(owner=owner, product_code=GTIN, markets=["RU"])
    return create_list_pool(owner=owner, actor=actor, product=product, source=SerialPool.Source.TRACELINK)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def run(pool, text, actor, layout="csv"):
    data = text.encode() if isinstance(text, str) else text
    return import_serials(pool=pool, layout=layout, stream=io.BytesIO(data), actor=actor)


def listed(pool):
    return list(ListedSerial.objects.filter(pool=pool).order_by("ordinal").values_list("ordinal", "serial"))


def problems(result):
    return [(entry["line"], entry["serial"], entry["problem"]) for entry in result.errors]


# --- a good import ---------------------------------------------------------------------------------------------


def test_import_inserts_serials_at_dense_ordinals_and_records_the_fill(pool, actor):
    result = run(pool, "A1B2C3\nD4E5F6\nG7H8J9\n", actor)

    assert (result.status, result.rows, result.imported, result.first_ordinal) == ("done", 3, 3, 0)
    assert result.errors == [] and result.error_count == 0
    assert listed(pool) == [(0, "A1B2C3"), (1, "D4E5F6"), (2, "G7H8J9")]
    assert set(ListedSerial.objects.filter(pool=pool).values_list("product_code", flat=True)) == {GTIN}
    pool.refresh_from_db()
    assert (pool.filled, pool.available, pool.assigned) == (3, 3, 0)
    fill = PoolFill.objects.get(pool=pool)
    assert (fill.quantity, fill.filled_after, fill.actor, fill.reason) == (3, 3, actor, "import of 3 serials")


def test_second_import_continues_the_ordinals(pool, actor):
    run(pool, "A1B2C3\nD4E5F6\n", actor)
    result = run(pool, "serial\nK1L2M3\nN4P5Q6\nR7S8T9\n", actor)

    assert (result.status, result.imported, result.first_ordinal) == ("done", 3, 2)
    assert listed(pool) == [(0, "A1B2C3"), (1, "D4E5F6"), (2, "K1L2M3"), (3, "N4P5Q6"), (4, "R7S8T9")]
    pool.refresh_from_db()
    assert pool.filled == 5
    assert list(PoolFill.objects.filter(pool=pool).order_by("pk").values_list("quantity", "filled_after")) == [
        (2, 2),
        (3, 5),
    ]


def test_parameters_are_stored_with_each_serial(ru_pool, actor):
    other = "Zx8cV7bN6mL5kJ4hG3fD2sA1qW9eR8tY7uI6oP5aS4dF"
    csv_text = f'serial,91,92\nRUa7Kq2Lm9Xz4,AB12,{CRYPTO_CODE}\nRUb3Hs8Nq1Vw6,C"D4,"{other}"\n'
    result = run(ru_pool, csv_text, actor)

    assert result.status == "done", result.errors
    rows = ListedSerial.objects.filter(pool=ru_pool).order_by("ordinal").values_list("serial", "parameters")
    assert list(rows) == [
        ("RUa7Kq2Lm9Xz4", {"91": "AB12", "92": CRYPTO_CODE}),
        ("RUb3Hs8Nq1Vw6", {"91": 'C"D4', "92": other}),
    ]


def test_csv_with_gtin_column_and_semantics_of_blank_lines_and_spaces(pool, actor):
    result = run(pool, "gtin,serial\n\n9524321000019, S1 \n09524321000019,S2\n", actor)

    assert result.status == "done", result.errors
    assert listed(pool) == [(0, "S1"), (1, "S2")]


@pytest.mark.parametrize(
    "text",
    [
        "serial\nP1\nP2\nP3\n",  # one bare serial per line: read as one column, without csv.reader
        "Serial\r\nP1\r\nP2\r\nP3",  # CRLF, no final line break
        "serial\nP1\nP2\nP3\n\n\n",  # blank lines at the end
        "serial\nP1\n\nP2\nP3\n",  # a blank line inside: csv.reader, which skips it
        'serial\n"P1"\nP2\n P3 \n',  # quoted and padded cells: csv.reader
    ],
)
def test_plain_and_quoted_csv_read_alike(pool, actor, text):
    result = run(pool, text, actor)

    assert (result.status, result.rows) == ("done", 3), result.errors
    assert listed(pool) == [(0, "P1"), (1, "P2"), (2, "P3")]


@pytest.mark.parametrize("text", ["P1\n\nP2\nP 3\n", "serial\nP1\nP2\nP 3\n", "P1\nP2\n21\nP 3"])
def test_lines_are_counted_alike_with_and_without_csv_reader(pool, actor, text):
    result = run(pool, text, actor)

    assert [(line, serial) for line, serial, _ in problems(result)] == [(4, "P 3")]


@pytest.mark.parametrize("text", ["".join(f"M{n}\n" for n in range(6)), "".join(f'"M{n}"\n' for n in range(6))])
def test_a_file_over_the_row_limit_is_refused_at_the_first_row_too_many(pool, actor, settings, text):
    settings.SERIAL_IMPORT_MAX_ROWS = 4

    result = run(pool, text, actor)

    assert problems(result) == [(5, "", "Line 5: the file has more than 4 serials — split it into smaller files.")]
    assert ListedSerial.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("serials", "in_serial_order"),
    [
        (["Z9", "A1", "M5", "B2"], ["A1", "B2", "M5", "Z9"]),
        (["RU7B", "RU7", "RU7A1", "RU7A", "RU70"], ["RU7", "RU70", "RU7A", "RU7A1", "RU7B"]),  # a common prefix
    ],
)
def test_postgres_writes_rows_in_serial_order_but_they_keep_their_file_position(pool, actor, serials, in_serial_order):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): the sorted COPY")

    result = run(pool, "serial\n" + "\n".join(serials) + "\n", actor)

    assert result.status == "done"
    assert listed(pool) == list(enumerate(serials))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT serial, ordinal FROM {ListedSerial._meta.db_table} ORDER BY ctid"  # noqa: S608 - a model's table
        )
        by_position_in_the_table = cursor.fetchall()
    assert by_position_in_the_table == [(serial, serials.index(serial)) for serial in in_serial_order]


# --- each problem, with its line ---------------------------------------------------------------------------------


def test_character_outside_set_82_is_named_with_its_position(pool, actor):
    result = run(pool, "GOOD1\nAB C\nX€Y~\n", actor)

    assert result.status == "rejected"
    allowed = "use only A–Z, a–z, 0–9 and !\"%&'()*+,-./:;<=>?_."
    assert problems(result) == [
        (2, "AB C", f"Serial has ' ' (U+0020) at position 3, not in GS1 character set 82 — {allowed}"),
        (
            3,
            "X€Y~",
            "Serial has '€' (U+20AC) at position 2, '~' (U+007E) at position 4, not in GS1 character set 82 — "
            + allowed,
        ),
    ]
    assert result.error_count == 2


@pytest.mark.parametrize(
    ("item", "serial"),
    [
        ("B\\ud800", "B\ud800"),  # a lone surrogate: no encoding takes it
        ("C\\u0000", "C\x00"),  # NUL: PostgreSQL's text types refuse it
        ("D\\\\", "D\\"),  # a backslash: COPY's escape character
        ("E" * 21, "E" * 21),  # longer than the column
    ],
)
def test_a_serial_no_database_could_store_is_reported_not_failed(pool, actor, item, serial):
    result = run(pool, f'{{"serials": ["A1", "{item}"]}}', actor, layout="json")

    assert (result.status, [(line, value) for line, value, _ in problems(result)]) == ("rejected", [(1, serial)])
    assert ListedSerial.objects.count() == 0


def test_serial_longer_than_20_characters_is_rejected(pool, actor):
    result = run(pool, "SHORT\n" + "A" * 21 + "\n", actor)

    assert problems(result) == [(2, "A" * 21, "Serial has 21 characters; GS1 allows at most 20 (AI 21).")]


def test_empty_serial_is_rejected(pool, actor):
    result = run(pool, 'serial\nA1\n""\nA2\n', actor)

    assert problems(result) == [(3, "", "Empty serial — give 1 to 20 characters of GS1 character set 82.")]


def test_duplicate_within_the_file_cites_both_lines(pool, actor):
    result = run(pool, "serial\nA1\nB2\nC3\nA1\n", actor)

    assert problems(result) == [
        (5, "A1", "Duplicate in the file: this serial is on line 2 and on line 5 — keep it once.")
    ]


def test_wrong_product_code_in_a_row_is_rejected(pool, actor):
    result = run(pool, f"gtin,serial\n{GTIN},A1\n{OTHER_GTIN},A2\n12345,A3\n", actor)

    assert problems(result) == [
        (
            3,
            "A2",
            f"Product code {OTHER_GTIN} is not this pool's product code {GTIN} — remove the row, or import it into "
            f"a pool of {OTHER_GTIN}.",
        ),
        (
            4,
            "A3",
            f"Product code 12345 is not this pool's product code {GTIN} — remove the row, or import it into a pool "
            "of 12345.",
        ),
    ]


def test_serial_already_in_another_list_pool_of_the_product_code_is_rejected(owner, product, pool, actor):
    assert run(pool, "A1\nB2\nC3\n", actor).status == "done"
    other = create_list_pool(owner=owner, actor=actor, product=product, source=SerialPool.Source.SAP_ATTP, name="ATTP")

    result = run(other, "Z9\nB2\nY8\n", actor)

    assert result.status == "rejected"
    assert problems(result) == [
        (
            2,
            "B2",
            f"Serial already exists for product code {GTIN}: pool '{pool.name}' holds it at index 1 — a product "
            "code + serial pair is never used twice; remove the row.",
        )
    ]
    assert ListedSerial.objects.filter(pool=other).count() == 0


def test_serial_already_in_the_same_pool_is_rejected(pool, actor):
    run(pool, "A1\nB2\n", actor)

    result = run(pool, "C3\nA1\n", actor)

    assert problems(result) == [
        (
            2,
            "A1",
            f"Serial already exists for product code {GTIN}: this pool holds it at index 0 — a product code + serial "
            "pair is never used twice; remove the row.",
        )
    ]
    pool.refresh_from_db()
    assert pool.filled == 2


def test_serial_in_the_generated_pools_domain_is_rejected(owner, product, pool, actor):
    generated = create_generated_pool(
        owner=owner, actor=actor, product=product, alphabet="0123456789", length=12, randomised=True
    )

    result = run(pool, "ABC123\n000000000042\n12345678901\n", actor)

    assert problems(result) == [
        (
            2,
            "000000000042",
            f"Serial lies in the range of generated pool '{generated.name}' (12 characters from 0–9): its generator "
            "has issued this serial or could issue it later, which would give the product code the same serial "
            "twice — remove it, or have the list made in another length or alphabet.",
        )
    ]


def test_generated_pool_without_leading_zero_leaves_those_serials_importable(owner, product, pool, actor):
    create_generated_pool(
        owner=owner, actor=actor, product=product, alphabet="0123456789", length=12, no_leading_zero=True
    )

    result = run(pool, "012345678901\n", actor)

    assert result.status == "done", result.errors


def test_market_parameters_are_required_and_checked(ru_pool, actor):
    csv_text = (
        "serial,91,92\n"
        f"RU0000000001,AB12,{CRYPTO_CODE}\n"
        "RU0000000002,,\n"
        f"RU0000000003,AB1,{CRYPTO_CODE}\n"
        f"RU0000000004,AB12,{CRYPTO_CODE[:-1]}é\n"
        f"RU0000000005,,{CRYPTO_CODE}\n"
    )
    result = run(ru_pool, csv_text, actor)

    assert problems(result) == [
        (
            3,
            "RU0000000002",
            "AI (91) crypto key and AI (92) crypto code missing — market RU requires AI 91 and 92 with every serial "
            "of this product; add them to the row.",
        ),
        (4, "RU0000000003", "AI (91) crypto key has 3 characters; it must have exactly 4."),
        (
            5,
            "RU0000000004",
            "AI (92) crypto code has 'é' (U+00E9) at position 44, which is not in GS1 character set 82.",
        ),
        (
            6,
            "RU0000000005",
            "AI (91) crypto key missing — market RU requires AI 91 and 92 with every serial of this product; add "
            "them to the row.",
        ),
    ]


def test_one_bad_line_among_good_ones_imports_nothing(pool, actor):
    run(pool, "FIRST1\n", actor)
    before = ListedSerial.objects.count()
    good = [f"S{n:08d}" for n in range(500)]
    text = "\n".join([*good[:250], "BAD SERIAL", *good[250:]]) + "\n"

    result = run(pool, text, actor)

    assert (result.status, result.rows, result.imported, result.error_count) == ("rejected", 501, 0, 1)
    assert problems(result)[0][:2] == (251, "BAD SERIAL")
    assert ListedSerial.objects.count() == before
    pool.refresh_from_db()
    assert pool.filled == 1
    assert PoolFill.objects.filter(pool=pool).count() == 1


def test_the_report_keeps_the_first_thousand_problems_and_counts_all(pool, actor):
    text = "".join(f"BAD {n}\n" for n in range(1500))

    result = run(pool, text, actor)

    assert result.error_count == 1500
    assert len(result.errors) == 1000
    assert [entry["line"] for entry in result.errors] == list(range(1, 1001))


def test_every_kind_of_problem_lands_in_one_report_sorted_by_line(pool, product, owner, actor):
    run(pool, "TAKEN1\n", actor)

    result = run(pool, "serial\nTAKEN1\nOK1\nOK1\nBAD!~\n", actor)

    assert [(line, serial) for line, serial, _ in problems(result)] == [(2, "TAKEN1"), (4, "OK1"), (5, "BAD!~")]


# --- layouts -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "fixture", "serials"),
    [
        ("csv", "serials_plain.csv", ["K7Q2M9X4P1", "H3W8N5R2T6", "B9C4F7J1L8"]),
        ("csv", "serials_with_header.csv", ["A1B2C3D4E5", "F6G7H8J9K0", "L1M2N3P4Q5"]),
        ("json", "serials.json", ["JS0000001A", "JS0000002B", "JS0000003C"]),
        ("sap_attp", "sap_attp_serial_numbers.xml", ["AT7Q2M9X4P", "AT3W8N5R2T", "AT9C4F7J1L"]),
        ("sap_ich", "sap_ich_serial_number_response.xml", ["IC4K8P2W6Z", "IC7T3R9M1Q", "IC2N6H5D8V"]),
        ("tracelink", "tracelink_serial_numbers_response.xml", ["TL1RFXVHNPA1", "TL4R2FANWAG", "TL2FWA6AVK76"]),
    ],
)
def test_each_layouts_sample_imports(pool, actor, layout, fixture, serials):
    result = run(pool, (FIXTURES / fixture).read_bytes(), actor, layout=layout)

    assert result.status == "done", result.errors
    assert listed(pool) == list(enumerate(serials))


def test_tracelink_russian_code_request_report_imports_crypto_codes(ru_pool, actor):
    data = (FIXTURES / "tracelink_ru_code_request_report.xml").read_bytes()

    result = run(ru_pool, data, actor, layout="tracelink")

    assert result.status == "done", result.errors
    rows = ListedSerial.objects.filter(pool=ru_pool).order_by("ordinal").values_list("serial", "parameters")
    assert list(rows) == [
        ("RUa7Kq2Lm9Xz4", {"91": "AB12", "92": CRYPTO_CODE}),
        ("RUb3Hs8Nq1Vw6", {"91": "CD34", "92": "Zx8cV7bN6mL5kJ4hG3fD2sA1qW9eR8tY7uI6oP5aS4dF"}),
    ]


def test_xml_serials_report_the_line_of_their_element_and_a_foreign_gtin(pool, actor):
    xml = (
        "<?xml version='1.0'?>\n"
        "<SNResponse>\n"
        f"  <ObjectKey><Name>GTIN</Name><Value>{GTIN}</Value></ObjectKey>\n"
        "  <SerialNumberList>\n"
        "    <SerialNo>GOOD1</SerialNo>\n"
        f"    <SerialNo>01{OTHER_GTIN}21WRONG1</SerialNo>\n"
        "    <SerialNo>urn:epc:id:sgtin:9524321.000001.X%2</SerialNo>\n"
        "  </SerialNumberList>\n"
        "</SNResponse>\n"
    )
    result = run(pool, xml, actor, layout="tracelink")

    assert [(line, serial) for line, serial, _ in problems(result)] == [
        (6, "WRONG1"),
        (7, "urn:epc:id:sgtin:9524321.000001.X%2"),
    ]
    assert problems(result)[0][2].startswith(f"Product code {OTHER_GTIN} is not this pool's product code {GTIN}")


def test_json_reports_the_line_each_serial_is_on(pool, actor):
    text = '{\n  "product_code": "09524321000019",\n  "serials": [\n    "OK1",\n    "B A D",\n    42\n  ]\n}\n'

    result = run(pool, text, actor, layout="json")

    assert [(line, serial) for line, serial, _ in problems(result)] == [(5, "B A D"), (6, "")]
    assert problems(result)[1][2] == 'item is int; give a serial string or {"serial": "…"}'


def test_json_objects_carry_parameters(ru_pool, actor):
    text = f'{{"serials": [{{"serial": "RU1", "91": "AB12", "92": "{CRYPTO_CODE}"}}]}}'

    result = run(ru_pool, text, actor, layout="json")

    assert result.status == "done", result.errors
    assert ListedSerial.objects.get(pool=ru_pool).parameters == {"91": "AB12", "92": CRYPTO_CODE}


def test_malformed_json_names_the_line(pool, actor):
    result = run(pool, '{"serials": [\n  "A1",\n  "A2"\n  "A3"\n]}', actor, layout="json")

    assert problems(result) == [(4, "", "Line 4, column 3: expected ',' or ']' in the serials list (found '\"').")]
    assert ListedSerial.objects.count() == 0


def test_malformed_xml_gives_a_clear_report(pool, actor):
    xml = "<SNResponse>\n  <SerialNumberList>\n    <SerialNo>A1</SerialNo>\n    <SerialNo>A2</Serial>\n</SNResponse>"

    result = run(pool, xml, actor, layout="tracelink")

    assert result.status == "rejected"
    assert problems(result) == [
        (
            4,
            "",
            "Line 4, column 26: the XML is malformed (Opening and ending tag mismatch: SerialNo line 4 and Serial).",
        )
    ]
    assert ListedSerial.objects.count() == 0


def test_xml_with_entity_expansion_is_refused_safely(pool, actor):
    entities = "\n".join(f' <!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10))
    xml = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol0 "lol">\n'
        + entities
        + "\n]>\n<SNResponse><SerialNumberList><SerialNo>&lol9;</SerialNo></SerialNumberList></SNResponse>\n"
    )
    started = time.monotonic()

    result = run(pool, xml, actor, layout="tracelink")

    assert time.monotonic() - started < 2
    assert problems(result) == [
        (
            None,
            "",
            "The file declares a DOCTYPE before its first element (line 14): serial lists never need one (a DTD or "
            "entities) and such files are refused for safety — export the file again without it.",
        )
    ]
    assert ListedSerial.objects.count() == 0


def test_xml_without_serials_says_what_was_expected(pool, actor):
    result = run(pool, "<Envelope><Body/></Envelope>", actor, layout="sap_ich")

    assert problems(result) == [
        (
            None,
            "",
            "No serials found: a SAP ICH file lists them in <SerialNumber> elements of a serial number response "
            "that names the <GTIN>.",
        )
    ]


def test_csv_with_unknown_column_is_refused(pool, actor):
    result = run(pool, "serial,lot\nA1,L1\n", actor)

    assert problems(result) == [
        (
            1,
            "",
            "Line 1: column 2 is named 'lot', which this layout does not know — use serial, gtin (or product_code), "
            "91, 92, or remove the column.",
        )
    ]


def test_file_that_is_not_utf8_is_refused_with_its_line(pool, actor):
    result = run(pool, b'{"serials": [\n"A1",\n"\xff"]}', actor, layout="json")

    assert problems(result) == [
        (3, "", "Line 3: byte 0xFF is not UTF-8 text — save the file as UTF-8 and upload it again.")
    ]


def test_csv_with_bom_and_windows_line_ends_reads_lines_as_written(pool, actor):
    result = run(pool, "\ufeffSerial\r\nW1\r\nW 2\r\n".encode(), actor)

    assert [(line, serial) for line, serial, _ in problems(result)] == [(3, "W 2")]


def test_quoted_line_break_in_a_serial_is_named_and_later_lines_stay_right(owner, product, pool, actor):
    create_generated_pool(owner=owner, actor=actor, product=product, alphabet="0123456789", length=12)

    result = run(pool, 'serial\n"AB\nCD"\nOK1\n000000000042\n', actor)

    assert [(line, serial) for line, serial, _ in problems(result)] == [(2, "AB\nCD"), (5, "000000000042")]
    assert problems(result)[0][2].startswith("Serial has '\\n' (U+000A) at position 3, not in GS1 character set 82")


def test_empty_file_is_rejected(pool, actor):
    assert problems(run(pool, "", actor)) == [(None, "", "The file holds no serials.")]


# --- the job around it -------------------------------------------------------------------------------------------


def test_start_import_stores_the_file_and_runs_the_job_after_commit(pool, actor, django_capture_on_commit_callbacks):
    upload = SimpleUploadedFile("attp export.csv", b"serial\nJOB1\nJOB2\n", content_type="text/csv")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job = start_import(pool=pool, layout="csv", uploaded_file=upload, actor=actor)
        assert ImportJob.objects.get(pk=job.pk).status == "pending"

    assert len(callbacks) == 1
    job.refresh_from_db()
    assert (job.status, job.rows, job.imported, job.errors, job.error_count) == ("done", 2, 2, [], 0)
    assert job.original_name == "attp export.csv"
    assert job.file.name.startswith("imports/") and job.file.name.endswith(".csv")
    assert job.finished_at is not None and job.requested_by == actor
    assert listed(pool) == [(0, "JOB1"), (1, "JOB2")]
    assert PoolFill.objects.get(pool=pool).reason == f"import of 2 serials (job {job.pk}: attp export.csv)"


def test_job_with_a_bad_file_is_rejected_with_the_report_not_an_error(pool, actor, django_capture_on_commit_callbacks):
    upload = SimpleUploadedFile("broken.xml", b"<SNResponse>\n<SerialNo>A1</SerialNo>\n<SerialNo>")

    with django_capture_on_commit_callbacks(execute=True):
        job = start_import(pool=pool, layout="tracelink", uploaded_file=upload, actor=actor)

    job.refresh_from_db()
    assert job.status == "rejected"
    assert job.error_count == 1
    assert job.errors[0]["line"] == 3
    assert job.errors[0]["problem"].startswith("Line 3, column 11: the XML is malformed (")


def test_running_a_job_twice_imports_once(pool, actor):
    job = ImportJob.objects.create(pool=pool, layout="csv", requested_by=actor)
    job.file.save("again.csv", SimpleUploadedFile("again.csv", b"R1\nR2\n"))

    assert run_import_job(job.pk).status == "done"
    assert run_import_job(job.pk).status == "done"

    assert ListedSerial.objects.filter(pool=pool).count() == 2
    assert PoolFill.objects.filter(pool=pool).count() == 1


def test_job_that_hits_an_internal_error_is_failed_and_imports_nothing(pool, actor, monkeypatch, caplog):
    from serialization.services import imports

    def broken_copy(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(imports, "_insert_rows", broken_copy)
    job = ImportJob.objects.create(pool=pool, layout="csv", requested_by=actor)
    job.file.save("f.csv", SimpleUploadedFile("f.csv", b"F1\n"))

    job = run_import_job(job.pk)

    assert (job.status, job.error_count) == ("failed", 1)
    assert job.errors == [
        {
            "line": None,
            "serial": "",
            "problem": "The import stopped on an internal error; nothing was imported. Try again, or tell support.",
        }
    ]
    assert ListedSerial.objects.count() == 0
    assert "serial import job" in caplog.text


def test_start_import_refuses_a_generated_pool(owner, product, actor):
    generated = create_generated_pool(owner=owner, actor=actor, product=product, randomised=True)

    with pytest.raises(InvalidPoolDefinition) as caught:
        start_import(pool=generated, layout="csv", uploaded_file=SimpleUploadedFile("a.csv", b"A1\n"), actor=actor)

    assert caught.value.message == (
        f"{generated} is a own generator pool; serial lists are imported into list pools only — create a list pool "
        f"for {GTIN} and import into it."
    )
    assert ImportJob.objects.count() == 0


def test_start_import_refuses_an_unknown_layout(pool, actor):
    with pytest.raises(DomainError) as caught:
        start_import(pool=pool, layout="xlsx", uploaded_file=SimpleUploadedFile("a.xlsx", b"A1"), actor=actor)

    assert caught.value.message == "Unknown import layout 'xlsx' — use one of csv, json, sap_attp, sap_ich, tracelink."
    assert caught.value.field == "layout"


# --- PostgreSQL ----------------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_imports_with_copy_and_reports_clashes_through_a_temp_table(pool, actor, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): the COPY path")
    import psycopg

    statements = []
    real_copy = psycopg.Cursor.copy

    def recording_copy(self, statement, *args, **kwargs):
        statements.append(str(statement))
        return real_copy(self, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", recording_copy)

    assert run(pool, "C1\nC2\n", actor).status == "done"
    assert run(pool, "C3\nC2\n", actor).status == "rejected"

    table = '"serialization_listedserial" (serial, ordinal, pool_id, product_code, parameters)'
    assert statements == [
        f"COPY {table} FROM STDIN",
        f"COPY {table} FROM STDIN",
        'COPY "serial_import_rows" (idx, serial) FROM STDIN',
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_imports_into_one_pool_never_interleave_ordinals(pool, actor):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): SQLite ignores row locks")
    files = {name: "".join(f"{name}{n:06d}\n" for n in range(3000)) for name in ("P", "Q", "R", "S")}
    results, failures = {}, []

    def work(name):
        try:
            results[name] = run(pool, files[name], actor)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(name,)) for name in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert {result.status for result in results.values()} == {"done"}
    rows = listed(pool)
    assert [ordinal for ordinal, _ in rows] == list(range(12000))
    for name, result in results.items():
        block = rows[result.first_ordinal : result.first_ordinal + 3000]
        assert [serial for _, serial in block] == [f"{name}{n:06d}" for n in range(3000)]
    pool.refresh_from_db()
    assert pool.filled == 12000


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_allocations_from_a_pool_go_on_while_an_import_into_it_writes(pool, actor, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): SQLite ignores row locks and serialises writers")
    from serialization.services import imports

    assert run(pool, "".join(f"F{n:05d}\n" for n in range(1000)), actor).status == "done"
    pool.refresh_from_db()
    written, allocated = threading.Event(), threading.Event()
    events, failures, outcome = [], [], {}
    real_insert_rows = imports._insert_rows

    def insert_rows_then_hold(*args, **kwargs):
        real_insert_rows(*args, **kwargs)
        events.append("import wrote its rows")
        written.set()
        # The import's transaction now holds what it holds during its write. An allocation that had to wait for
        # it would wait for this event in vain: the wait runs out and the order of events below says so.
        allocated.wait(timeout=30)
        events.append("import goes on to commit")

    monkeypatch.setattr(imports, "_insert_rows", insert_rows_then_hold)

    def import_large():
        try:
            outcome["import"] = run(pool, "".join(f"L{n:07d}\n" for n in range(200_000)), actor)
            events.append("import committed")
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            connections.close_all()

    def allocate():
        try:
            written.wait(timeout=60)
            outcome["allocation"] = allocate_serials(
                pool=pool, quantity=10, actor=actor, request_id="during-import", purpose="batch"
            )
            events.append("allocation committed")
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            allocated.set()
            connections.close_all()

    threads = [threading.Thread(target=import_large), threading.Thread(target=allocate)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert events == [
        "import wrote its rows",
        "allocation committed",
        "import goes on to commit",
        "import committed",
    ]
    assert (outcome["import"].status, outcome["import"].first_ordinal) == ("done", 1000)
    assert [(r.first_index, r.count) for r in outcome["allocation"].ranges.all()] == [(0, 10)]
    pool.refresh_from_db()
    assert (pool.filled, pool.next_index, pool.available) == (201_000, 10, 200_990)
    assert ListedSerial.objects.filter(pool=pool).count() == 201_000


@pytest.mark.postgres
def test_postgres_refuses_listed_serials_of_a_pool_that_does_not_exist(pool):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): the trigger that stands for the foreign key")
    missing = SerialPool.objects.order_by("-pk").values_list("pk", flat=True).first() + 1
    rows = [ListedSerial(pool_id=pool.pk, ordinal=0, product_code=GTIN, serial="K1")]

    with pytest.raises(IntegrityError, match="listed_serial_pool_exists"), transaction.atomic():
        ListedSerial.objects.bulk_create(
            [*rows, ListedSerial(pool_id=missing, ordinal=0, product_code=GTIN, serial="K2")]
        )
    ListedSerial.objects.bulk_create(rows)
    with pytest.raises(IntegrityError, match="listed_serial_pool_exists"), transaction.atomic():
        ListedSerial.objects.filter(pool=pool).update(pool_id=missing)

    assert list(ListedSerial.objects.values_list("pool_id", "serial")) == [(pool.pk, "K1")]


@pytest.mark.postgres
def test_postgres_refuses_to_delete_a_pool_that_holds_listed_serials(owner, product, pool, actor):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): the trigger that stands for the foreign key")
    empty = create_list_pool(owner=owner, actor=actor, product=product, source=SerialPool.Source.API, name="empty")
    ListedSerial.objects.create(pool=pool, ordinal=0, product_code=GTIN, serial="K1")
    table = SerialPool._meta.db_table

    refused = pytest.raises(IntegrityError, match="listed_serial_pool_exists")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [pool.pk])  # noqa: S608 - a model's table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [empty.pk])  # noqa: S608 - a model's table

    assert set(SerialPool.objects.values_list("pk", flat=True)) == {pool.pk}


@pytest.mark.postgres
def test_postgres_checks_run_while_the_rows_stream_and_a_problem_stops_the_copy(pool, actor, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): the checks that run during the COPY")
    from serialization.services import imports

    monkeypatch.setattr(imports, "_COPY_CHUNK", 2)
    monkeypatch.setattr(imports, "_CHECK_AFTER_ROWS", 4)
    sent = []
    real_copy_chunks = imports._copy_chunks

    def counted_copy_chunks(*args, **kwargs):
        for chunk, rows in real_copy_chunks(*args, **kwargs):
            sent.append(rows)
            yield chunk, rows

    monkeypatch.setattr(imports, "_copy_chunks", counted_copy_chunks)

    result = run(pool, "".join(f"S{n:03d}\n" for n in range(20)) + "S005\n", actor)

    assert problems(result) == [
        (21, "S005", "Duplicate in the file: this serial is on line 6 and on line 21 — keep it once.")
    ]
    assert sent == [2, 2]  # the checks ran once 4 of the 21 rows were on their way, and ended the COPY there
    assert ListedSerial.objects.count() == 0
    pool.refresh_from_db()
    assert pool.filled == 0
