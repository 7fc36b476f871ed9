"""EPCIS export of a 1,000,000-unit batch, streamed, beside a build-the-whole-document baseline in the same run.

Target (issue 6): the EPCIS document of a 1,000,000-unit batch is written with constant memory, < 100 MB resident.

What runs, per backend (a scratch database created and dropped by the bench):
  1. fixtures through the services: a product (EU) with unit, case and pallet levels, its generated unit pool, its
     owner's SSCC pool, a site and a line, ``create_batch``, ``create_packaging_order`` and ``request_order_serials``
     for --units unit serials and the case and pallet SSCCs (the real FF1 serials are the packs' serials);
  2. what the lines would have reported, written set-based: the packs with ``COPY`` (PostgreSQL; ``executemany`` on
     SQLite) — --units units packed --per-case to a case, --per-pallet cases to a pallet — then four LineReports
     (commissioning, units into cases, cases onto pallets, shipping the pallets) and their PackEvent rows with one
     ``INSERT … SELECT`` each from the pack table; then ANALYZE;
  3. measured, each in a fresh child process (``--child``) so its peak resident memory (``VmHWM``) is its own:
     ``write_epcis_document`` of the batch into a file, for EPCIS 2.0 JSON-LD and 1.2 XML (2.0 XML with
     ``--all-syntaxes``): seconds, EPCs/s, file size, the process's resident memory before the export and its peak;
  4. the baseline in the same run, also in a child: the same events, but the whole document built in memory (every
     event a dict with its EPC list) and serialised with one ``json.dumps`` — how a document is usually made;
  5. checks: the streamed JSON-LD parsed back (events and EPCs counted, first and last EPCs compared with the packs);
     then each streamed document validated as an export job does before offering its file (``validate_epcis_document``:
     the XSD for XML, the official JSON schema for JSON-LD, both read as a stream), each in a child process of its
     own, with its seconds and peak resident memory — the job's worker holds the larger of writing and validating.

Run:  .venv/bin/python bench/bench_epcis_export.py [--units 1000000] [--backend postgres|sqlite|all]
      (SQLite defaults to 100,000 units: the demo database, not the production one)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    add_backend_argument,
    line,
    machine,
    make_bench_pool,
    run_backends,
    scratch_database,
    secs,
    timed,
    verdict,
)

TARGET_MB = 100
SQLITE_DEFAULT_UNITS = 100_000
NULL = "\\N"  # COPY text format
PACK_COLUMNS = (
    'pool_id, "index", product_code, serial, level, batch_id, order_id, parent_id, status, reason, eu_state, '
    "commissioned_at, updated_at"
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=None, help="units (default 1,000,000; 100,000 on SQLite)")
    parser.add_argument("--per-case", type=int, default=100, help="units per case (default 100)")
    parser.add_argument("--per-pallet", type=int, default=50, help="cases per pallet (default 50)")
    parser.add_argument("--all-syntaxes", action="store_true", help="also measure EPCIS 2.0 XML")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    add_backend_argument(parser)
    parser.set_defaults(backend="postgres")
    return parser.parse_args(argv)


# --- memory of this process ------------------------------------------------------------------------------------------


def status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for row in status:
            if row.startswith(field + ":"):
                return int(row.split()[1])
    raise LookupError(field)


def mb(kb: float) -> str:
    return f"{kb / 1024:,.1f} MB"


# --- fixtures and production data ------------------------------------------------------------------------------------


def make_plant(units: int, per_case: int, per_pallet: int):
    from django.contrib.auth import get_user_model

    from masterdata import gs1
    from masterdata.models import CompanyPrefix, Location, PackagingLevel
    from serialization.services import create_generated_pool
    from serialization.services.batches import create_batch, create_packaging_order, request_order_serials

    cases, pallets = -(-units // per_case), -(-units // per_case // per_pallet)
    unit_pool = make_bench_pool(fill=units, max_per_request=max(units, 1))
    product, owner = unit_pool.product, unit_pool.owner
    PackagingLevel.objects.bulk_create(
        [
            PackagingLevel(product=product, level=0, quantity=1),
            PackagingLevel(product=product, level=2, quantity=per_case, uses_sscc=True),
            PackagingLevel(product=product, level=3, quantity=per_pallet, uses_sscc=True),
        ]
    )
    actor = get_user_model().objects.get(username="bench-steward")
    prefix = CompanyPrefix.objects.get(company=owner)
    sscc_pool = create_generated_pool(
        owner=owner, actor=actor, sscc_prefix=prefix, extension_digit="0", initial_fill=cases + pallets
    )

    def gln(reference: int) -> str:
        body = prefix.prefix + str(reference).zfill(12 - len(prefix.prefix))
        return body + gs1.check_digit(body)

    site = Location.objects.create(company=owner, kind="site", name="Bench site", gln=gln(1))
    packaging_line = Location.objects.create(company=owner, kind="line", name="Bench line", gln=gln(2), parent=site)
    batch = create_batch(
        product=product, lot="EPCIS-1", expiry="281200", site=site, lines=[packaging_line], actor=actor
    )
    order = create_packaging_order(
        batch=batch, line=packaging_line, number="PO-EPCIS-1", planned_quantity=units, actor=actor
    )
    granted = request_order_serials(
        order=order, quantity=units, actor=actor, request_id="bench-epcis", sscc_quantities={2: cases, 3: pallets}
    )
    return batch, order, unit_pool, sscc_pool, granted


def _serials(allocation) -> list[str]:
    from serialization.services.materialise import iter_serial_chunks

    return [value.decode() for chunk in iter_serial_chunks(allocation) for value in chunk.tolist()]


def _indices(allocation) -> list[int]:
    return [
        i
        for first, count in allocation.ranges.order_by("first_index").values_list("first_index", "count")
        for i in range(first, first + count)
    ]


def write_packs(*, batch, order, unit_pool, sscc_pool, granted, units: int, per_case: int, per_pallet: int) -> int:
    """Pallets, then cases (each on a pallet), then units (each in a case), all shipped: parents first, so each level
    can point at the ids of the one above. PostgreSQL loads with foreign-key triggers off (every reference is valid
    by construction, as in bench_pack_history)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from serialization.models import Pack

    now = timezone.now().isoformat()
    postgres = connection.vendor == "postgresql"

    def insert(rows: list[tuple]) -> None:
        # (pool, index, product_code, serial, level, parent)
        with transaction.atomic(), connection.cursor() as cursor:
            if postgres:
                cursor.execute("SET LOCAL session_replication_role = replica")
                text = "".join(
                    f"{pool}\t{index}\t{code}\t{serial}\t{level}\t{batch.pk}\t{order.pk}\t"
                    f"{NULL if parent is None else parent}\tshipped\t\tActive\t{now}\t{now}\n"
                    for pool, index, code, serial, level, parent in rows
                )
                with cursor.copy(f"COPY serialization_pack ({PACK_COLUMNS}) FROM STDIN") as copy:
                    copy.write(text)
            else:
                cursor.executemany(
                    f"INSERT INTO serialization_pack ({PACK_COLUMNS}) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'shipped', '', 'Active', %s, %s)",
                    [(*row[:5], batch.pk, order.pk, row[5], now, now) for row in rows],
                )

    def ids_of(level: int) -> list[int]:
        return list(Pack.objects.filter(order=order, level=level).order_by("index").values_list("pk", flat=True))

    cases, pallets = -(-units // per_case), -(-units // per_case // per_pallet)
    insert(
        [
            (sscc_pool.pk, i, "", s, 3, None)
            for i, s in zip(_indices(granted.ssccs[3]), _serials(granted.ssccs[3]), strict=True)
        ]
    )
    pallet_ids = ids_of(3)
    insert(
        [
            (sscc_pool.pk, i, "", s, 2, pallet_ids[n // per_pallet])
            for n, (i, s) in enumerate(zip(_indices(granted.ssccs[2]), _serials(granted.ssccs[2]), strict=True))
        ]
    )
    case_ids = ids_of(2)
    code, indices, serials = unit_pool.product_code, _indices(granted.units), _serials(granted.units)
    chunk = 200_000
    for start in range(0, units, chunk):
        stop = min(start + chunk, units)
        insert([(unit_pool.pk, indices[n], code, serials[n], 0, case_ids[n // per_case]) for n in range(start, stop)])
    return pallets + cases + units


def write_events(*, batch, order, line_user) -> dict[str, int]:
    """The four reports a line would have sent, and their events, each with one INSERT … SELECT from the packs."""
    import datetime as dt

    from django.db import connection, transaction

    from serialization.models import LineReport

    t0 = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)
    steps = [
        ("commissioning", "commissioned", "TRUE", "NULL"),
        ("aggregation", "packed", "level = 0", "parent_id"),
        ("aggregation", "packed", "level = 2", "parent_id"),
        ("shipping", "shipped", "TRUE", "CASE WHEN level = 3 THEN NULL ELSE parent_id END"),
    ]
    counts = {}
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
        for n, (kind, action, where, parent) in enumerate(steps):
            report = LineReport.objects.create(
                report_id=f"EPCIS-BENCH-{n + 1}",
                kind=kind,
                order=order,
                fingerprint="0" * 64,
                status=LineReport.Status.APPLIED,
                submitted_by=line_user,
            )
            cursor.execute(
                "INSERT INTO serialization_packevent (pack_id, report_id, action, reason, occurred_at, parent_id) "
                f"SELECT id, %s, %s, '', %s, {parent} FROM serialization_pack WHERE batch_id = %s AND {where} "
                "ORDER BY level DESC, id",
                [report.pk, action, t0 + dt.timedelta(minutes=30 * n), batch.pk],
            )
            counts[f"{kind}:{action}:{n}"] = cursor.rowcount
    return counts


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE serialization_pack")
            cursor.execute("VACUUM ANALYZE serialization_packevent")
        else:
            cursor.execute("ANALYZE")


# --- the measured runs, each in a child process ------------------------------------------------------------------------


def child(spec: str) -> int:
    """In a fresh interpreter: set Django up against the scratch database, then run one export; print its figures."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from serialization.epcis.events import EpcisScope, EventSource
    from serialization.epcis.validation import validate_epcis_document
    from serialization.epcis.writer import write_epcis_document

    mode, batch_id, version, syntax, path = spec.split(",")
    scope = EpcisScope(batch_id=int(batch_id))
    before_kb = status_kb("VmRSS")
    start = time.perf_counter()
    if mode == "stream":
        with open(path, "wb") as out:
            written = [0]
            events = write_epcis_document(
                out, scope=scope, version=version, syntax=syntax, progress=lambda n: written.__setitem__(0, n)
            )
        epcs = written[0]
    elif mode == "validate":
        problems = validate_epcis_document(Path(path), version=version, syntax=syntax)
        events, epcs = len(problems), problems[:3]  # what a validation run reports: its problems
    elif mode == "validate-whole":
        problems = validate_whole_json(Path(path))
        events, epcs = len(problems), problems[:3]
    else:
        events, epcs = build_whole_document(EventSource(scope), path)
    seconds = time.perf_counter() - start
    print(
        "RESULT "
        + json.dumps(
            {
                "seconds": seconds,
                "events": events,
                "epcs": epcs,
                "bytes": os.path.getsize(path),
                "rss_before_kb": before_kb,
                "peak_kb": status_kb("VmHWM"),
            }
        ),
        flush=True,
    )
    return 0


def build_whole_document(source, path: str) -> tuple[int, int]:
    """The baseline: every event as a dict holding its whole EPC list, the document as one dict, one json.dumps."""
    from datetime import UTC, datetime

    from serialization.epcis.writer import JSONLD_CONTEXT, format_time

    events = []
    for event in source.events():
        h = event.header
        record = {
            "type": h.event_type,
            "eventTime": format_time(h.event_time),
            "eventTimeZoneOffset": "+00:00",
            "eventID": h.event_id,
            "action": h.action,
            "bizStep": h.biz_step,
        }
        if h.disposition:
            record["disposition"] = h.disposition
        if h.parent_epc:
            record["parentID"] = h.parent_epc
        record["childEPCs" if h.parent_epc else "epcList"] = list(event.epcs)
        if h.read_point:
            record["readPoint"] = {"id": h.read_point}
        if h.biz_location:
            record["bizLocation"] = {"id": h.biz_location}
        if h.lot:
            record["ilmd"] = {"cbvmda:lotNumber": h.lot, "cbvmda:itemExpirationDate": h.expiry.isoformat()}
        events.append(record)
    document = {
        "@context": [JSONLD_CONTEXT],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": format_time(datetime.now(UTC)),
        "epcisBody": {"eventList": events},
    }
    Path(path).write_text(json.dumps(document))
    return len(events), sum(len(e.get("epcList", e.get("childEPCs", []))) for e in events)


def validate_whole_json(path: Path) -> list[str]:
    """The validation baseline: the JSON-LD loaded whole and checked against the schema as one tree, as the validator
    did before it streamed."""
    from serialization.epcis.validation import JSON_SCHEMA_FILE, _json_problem, _json_validators, standards_dir

    document_validator, _ = _json_validators(standards_dir() / JSON_SCHEMA_FILE)
    with path.open("rb") as handle:
        document = json.load(handle)
    return [_json_problem(error) for error in document_validator.iter_errors(document)]


def measure(mode: str, batch_id: int, version: str, syntax: str, path: Path) -> dict:
    spec = f"{mode},{batch_id},{version},{syntax},{path}"
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", spec],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    for row in result.stdout.splitlines():
        if row.startswith("RESULT "):
            return json.loads(row[len("RESULT ") :])
    raise RuntimeError(f"the {mode} child failed:\n{result.stdout}\n{result.stderr}")


# --- checks ---------------------------------------------------------------------------------------------------------------


def check_json(path: Path, *, expected_events: int, expected_epcs: int, first_epc: str, last_epc: str) -> bool:
    with path.open("rb") as handle:
        document = json.load(handle)
    events = document["epcisBody"]["eventList"]
    epcs = [epc for event in events for epc in event.get("epcList", event.get("childEPCs", []))]
    return (
        len(events) == expected_events
        and len(epcs) == expected_epcs
        and epcs[0] == first_epc
        and (epcs[-1] == last_epc)
    )


def run(args) -> int:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from masterdata import gs1
    from serialization.epcis.events import EpcisScope, EventSource
    from serialization.models import Pack

    postgres = connection.vendor == "postgresql"
    units = args.units or (1_000_000 if postgres else SQLITE_DEFAULT_UNITS)
    setup_seconds, plant = timed(lambda: make_plant(units, args.per_case, args.per_pallet))
    batch, order, unit_pool, sscc_pool, granted = plant
    write_seconds, packs = timed(
        lambda: write_packs(
            batch=batch,
            order=order,
            unit_pool=unit_pool,
            sscc_pool=sscc_pool,
            granted=granted,
            units=units,
            per_case=args.per_case,
            per_pallet=args.per_pallet,
        )
    )
    line_user = get_user_model().objects.create_user(username="bench-line")
    event_seconds, event_counts = timed(lambda: write_events(batch=batch, order=order, line_user=line_user))
    analyze()
    print(
        f"  setup through the services {secs(setup_seconds)}; {packs:,} packs written in {secs(write_seconds)} "
        f"({'COPY' if postgres else 'executemany'}); {sum(event_counts.values()):,} pack events in "
        f"{secs(event_seconds)} (INSERT … SELECT)",
        flush=True,
    )

    source = EventSource(EpcisScope(batch_id=batch.pk))
    cases = -(-units // args.per_case)
    pallets = -(-cases // args.per_pallet)
    expected_events = 2 + cases + pallets + 1  # commissioning (units, containers), one per parent, one shipping
    expected_epcs = packs + (units + cases) + pallets
    first_unit = Pack.objects.filter(batch=batch, level=0).order_by("pk").values_list("serial", flat=True).first()
    last_pallet = Pack.objects.filter(batch=batch, level=3).order_by("pk").values_list("serial", flat=True).last()
    first_epc = gs1.sgtin_urn(unit_pool.product_code, first_unit, unit_pool.product.company_prefix_length)
    last_epc = gs1.sscc_urn(last_pallet, len(sscc_pool.sscc_prefix))
    counted = source.total_epcs == expected_epcs

    formats = [("2.0", "json"), ("1.2", "xml")] + ([("2.0", "xml")] if args.all_syntaxes else [])
    ok = counted
    with tempfile.TemporaryDirectory(prefix="bench-epcis-") as scratch:
        results = {}
        for version, syntax in formats:
            path = Path(scratch) / f"stream-{version}.{syntax}"
            results[(version, syntax)] = (measure("stream", batch.pk, version, syntax, path), path)
        baseline_path = Path(scratch) / "whole.json"
        baseline = measure("whole", batch.pk, "2.0", "json", baseline_path)

        for (version, syntax), (figures, _) in results.items():
            right = figures["events"] == expected_events and figures["epcs"] == expected_epcs
            ok &= right
            print(
                f"  EPCIS {version} {syntax}: {figures['events']:,} events, {figures['epcs']:,} EPCs, "
                f"{figures['bytes'] / 1e6:,.1f} MB in {secs(figures['seconds'])} "
                f"({figures['epcs'] / figures['seconds']:,.0f} EPCs/s); resident {mb(figures['rss_before_kb'])} "
                f"before, peak {mb(figures['peak_kb'])} (+{mb(figures['peak_kb'] - figures['rss_before_kb'])}); "
                f"counts {verdict(right)}",
                flush=True,
            )
        print(
            f"  baseline (whole document in memory, one json.dumps): {baseline['events']:,} events, "
            f"{baseline['epcs']:,} EPCs in {secs(baseline['seconds'])}; resident {mb(baseline['rss_before_kb'])} "
            f"before, peak {mb(baseline['peak_kb'])} (+{mb(baseline['peak_kb'] - baseline['rss_before_kb'])})",
            flush=True,
        )

        json_path = results[("2.0", "json")][1]
        parsed = check_json(
            json_path,
            expected_events=expected_events,
            expected_epcs=expected_epcs,
            first_epc=first_epc,
            last_epc=last_epc,
        )
        print(f"  streamed JSON-LD parsed back: events, EPCs, first and last EPC {verdict(parsed)}", flush=True)
        for (version, syntax), (_, path) in results.items():
            checked = measure("validate", batch.pk, version, syntax, path)
            valid = checked["events"] == 0
            ok &= valid
            print(
                f"  EPCIS {version} {syntax} validated against the official "
                f"{'JSON schema' if syntax == 'json' else 'XSD'} as a stream in {secs(checked['seconds'])}: "
                f"{verdict(valid)} {checked['epcs'] or ''}; resident {mb(checked['rss_before_kb'])} before, peak "
                f"{mb(checked['peak_kb'])} (+{mb(checked['peak_kb'] - checked['rss_before_kb'])})",
                flush=True,
            )
            if syntax == "json":
                whole = measure("validate-whole", batch.pk, version, syntax, path)
                print(
                    f"  validation baseline (the JSON-LD loaded whole, checked as one tree) in "
                    f"{secs(whole['seconds'])}: {whole['events']} problems; peak {mb(whole['peak_kb'])} "
                    f"(+{mb(whole['peak_kb'] - whole['rss_before_kb'])})",
                    flush=True,
                )
                line(
                    f"EPCIS 2.0 json of {units:,} units, validation peak",
                    mb(checked["peak_kb"]),
                    mb(whole["peak_kb"]),
                    whole["peak_kb"] / checked["peak_kb"],
                    f"< {TARGET_MB} MB peak",
                    checked["peak_kb"] < TARGET_MB * 1024,
                )
        ok &= parsed

    stream_peaks = [figures["peak_kb"] for figures, _ in results.values()]
    worst = max(stream_peaks)
    target = f"< {TARGET_MB} MB peak"
    for (version, syntax), (figures, _) in results.items():
        line(
            f"EPCIS {version} {syntax} of {units:,} units, peak RSS",
            mb(figures["peak_kb"]),
            mb(baseline["peak_kb"]),
            baseline["peak_kb"] / figures["peak_kb"],
            target,
            figures["peak_kb"] < TARGET_MB * 1024,
        )
    stream = results[("2.0", "json")][0]
    growth = stream["peak_kb"] - stream["rss_before_kb"]
    baseline_growth = baseline["peak_kb"] - baseline["rss_before_kb"]
    line(
        f"EPCIS 2.0 json of {units:,} units, RSS growth",
        mb(growth),
        mb(baseline_growth),
        baseline_growth / max(growth, 1),
    )
    line(
        f"EPCIS 2.0 json of {units:,} units, time",
        secs(stream["seconds"]),
        secs(baseline["seconds"]),
        baseline["seconds"] / stream["seconds"],
    )
    print(f"  total EPCs counted up front: {source.total_epcs:,} (expected {expected_epcs:,}) {verdict(counted)}")
    print(f"  checks: {verdict(ok)}; worst streaming peak {mb(worst)}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        return child(args.child)
    if args.backend == "all":
        return run_backends(Path(__file__), sys.argv[1:] if argv is None else argv)
    with scratch_database(args.backend, env={"SERIAL_MAX_PER_REQUEST": "1000000"}) as database:
        print(f"  {database}\n  {machine()}", flush=True)
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
