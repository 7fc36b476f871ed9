"""Disaster recovery: ``manage.py backup`` → wipe → ``manage.py restore`` gives back every table's rows, every pool's
state and the audit-chain head, on the engine the suite runs on (SQLite by default, PostgreSQL with DATABASE_URL: CI
runs both); a tampered archive or a non-empty database is refused before anything changes; ``verify_backup`` restores
into a scratch database and exits non-zero on any mismatch."""

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import connection

from audit import backup, retention
from audit.models import AccessEvent
from audit.services import audit_chain_head
from serialization.models import Allocation, Batch, LineReport, Pack, PackEvent, SerialPool
from serialization.services import allocate_serials
from serialization.services.batches import update_batch
from tests.serialization.test_line_reports import Line

# Committed data: pg_dump and SQLite's backup see only what other connections could see. serialized_rollback puts the
# seeded rows (markets, roles) back after each test's flush.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(autouse=True)
def _folders(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.BACKUP_DIR = tmp_path / "backups"


@pytest.fixture
def plant() -> Line:
    """Master data, a randomised pool and an SSCC pool with allocations, a batch with packs in a case, pack events,
    line reports, history rows (the batch edited with a reason), a legal hold and an export file in the media folder."""
    line = Line(units=8, ssccs=2)
    line.batch.markets.set(line.product.markets.all())
    line.commission(units=range(6), containers={0: 2})
    line.aggregate(0, units=range(4))
    update_batch(batch=line.batch, actor=line.user, manufactured_on=None, reason="")
    retention.place_hold(
        target_type="serialization.batch", target_id=str(line.batch.pk), reason="Inspection", actor=line.user
    )
    export = Path(settings.MEDIA_ROOT) / "exports" / "allocation-1.csv"
    export.parent.mkdir(parents=True)
    export.write_text("serial\nA1\nA2\n")
    audit_chain_head()
    return line


@pytest.fixture
def rebuild_if_wiped():
    """A failed restore must not leave the test database without tables for the tests that follow."""
    yield
    with connection.cursor() as cursor:
        if "django_migrations" not in connection.introspection.table_names(cursor):
            call_command("migrate", verbosity=0)


def wipe_database() -> None:
    """Drop every table: what a lost disk leaves of the database."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("DROP SCHEMA public CASCADE")
            cursor.execute("CREATE SCHEMA public")
        else:
            cursor.execute("PRAGMA foreign_keys = OFF")
            for table in connection.introspection.table_names(cursor):
                cursor.execute(f'DROP TABLE "{table}"')
            cursor.execute("PRAGMA foreign_keys = ON")


def take_backup(tmp_path) -> backup.BackupResult:
    return backup.make_backup(path=tmp_path / "backups" / "archive.tar")


def test_backup_wipe_restore_gives_back_every_table_the_pools_and_the_chain_head(plant, tmp_path, rebuild_if_wiped):
    before = backup.read_state()
    assert before.tables["serialization_pack"] == 7 and before.tables["serialization_packevent"] == 11
    assert before.tables["serialization_historicalbatch"] >= 2 and before.audit_chain["sequence"] > 0
    pools = {str(plant.unit_pool.pk), str(plant.sscc_pool.pk)}
    assert pools <= before.state["pools"].keys() and before.state["pools"]["totals"]["conserved"] is True

    result = take_backup(tmp_path)
    manifest = result.manifest
    assert (manifest["tables"], manifest["state"], manifest["audit_chain"]) == (
        before.tables,
        before.state,
        before.audit_chain,
    )
    assert manifest["migrations"] == before.migrations
    assert set(manifest["files"]) == {manifest["database_file"], "media/exports/allocation-1.csv"}
    assert result.path.stat().st_mode & 0o777 == 0o600

    wipe_database()
    (Path(settings.MEDIA_ROOT) / "exports" / "allocation-1.csv").unlink()
    with connection.cursor() as cursor:
        assert connection.introspection.table_names(cursor) == []

    call_command("restore", str(result.path), "--expect-sha256", result.manifest_sha256)

    ContentType.objects.clear_cache()
    after = backup.read_state()
    assert after.tables == before.tables  # every table, row for row
    assert after.state == before.state  # every pool's counters and range sums
    assert after.audit_chain == before.audit_chain
    assert after.migrations == before.migrations
    assert (Path(settings.MEDIA_ROOT) / "exports" / "allocation-1.csv").read_text() == "serial\nA1\nA2\n"
    # The restored database carries on where the original stopped: sequences and pool cursors came back too.
    pool = SerialPool.objects.get(pk=plant.unit_pool.pk)
    allocation = allocate_serials(pool=pool, quantity=2, actor=plant.user, request_id="after-restore", purpose="system")
    assert allocation.ranges.get().first_index == before.state["pools"][str(pool.pk)]["next"]
    assert Allocation.objects.filter(pk__lt=allocation.pk).count() == before.tables["serialization_allocation"]
    assert Pack.objects.filter(batch=plant.batch).count() == 7
    assert PackEvent.objects.count() == 11 and LineReport.objects.count() == 2
    assert retention.deletion_refusal(Batch.objects.get(pk=plant.batch.pk)).hold is not None


def test_backup_is_recorded_in_the_access_log(plant, tmp_path):
    result = take_backup(tmp_path)
    event = AccessEvent.objects.get(kind=AccessEvent.Kind.EXPORT, target="backup archive.tar")
    assert event.details["manifest_sha256"] == result.manifest_sha256
    assert event.quantity == result.rows
    # The log row is written after the snapshot: the archive describes the database as it was before it.
    assert result.manifest["tables"]["audit_accessevent"] == AccessEvent.objects.count() - 1


def test_restore_refuses_a_database_that_is_not_empty(plant, tmp_path):
    result = take_backup(tmp_path)
    rows = backup.read_state().tables
    with pytest.raises(CommandError, match=r"is not empty: it has \d+ tables .* Nothing was restored\."):
        call_command("restore", str(result.path))
    assert backup.read_state().tables == rows


def test_verify_backup_compares_a_scratch_restore_and_exits_non_zero_on_a_mismatch(plant, tmp_path, capsys):
    result = take_backup(tmp_path)
    call_command("verify_backup", str(result.path))
    out = capsys.readouterr().out
    assert f"Manifest SHA-256: {result.manifest_sha256}" in out
    assert "rows serialization_pack" in out and "MISMATCH" not in out
    head = next(line for line in out.splitlines() if line.startswith("audit chain head sequence"))
    assert head.split()[-3:] == [str(result.manifest["audit_chain"]["sequence"])] * 2 + ["ok"]
    assert next(line for line in out.splitlines() if line.startswith("audit chain verifies")).endswith("yes  ok")
    assert re.search(r"All \d+ checks match \(took \d+\.\d s\)\.", out)

    # A manifest that promises one pack more than the dump holds: every file still matches its hash.
    edited = rewrite(result.path, tmp_path / "edited.tar", manifest=lambda m: m["tables"].update(serialization_pack=8))
    with pytest.raises(CommandError, match=r"1 of \d+ checks do not match the manifest: rows serialization_pack"):
        call_command("verify_backup", str(edited))
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("rows serialization_pack "))
    assert row.split() == ["rows", "serialization_pack", "8", "7", "MISMATCH"]


# --- tampering ------------------------------------------------------------------------------------------------------


def rewrite(source: Path, target: Path, *, change=None, manifest=None, extra: dict | None = None) -> Path:
    """A copy of archive ``source`` with a member's bytes changed, the manifest edited, or members added."""
    with tarfile.open(source) as tar, tarfile.open(target, "w") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()
            if member.name == backup.MANIFEST and manifest is not None:
                document = json.loads(data)
                manifest(document)
                data = json.dumps(document).encode()
            elif change is not None:
                data = change(member.name, data)
            add(out, member.name, data)
        for name, data in (extra or {}).items():
            add(out, name, data)
    return target


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def flip_last_byte(name: str, data: bytes) -> bytes:
    if not name.startswith("database."):
        return data
    return data[:-1] + bytes([data[-1] ^ 0xFF])


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            {"change": flip_last_byte},
            r"database\.(pgdump|sqlite3) does not match the manifest \(SHA-256 [0-9a-f]{64}, \d+ bytes; the manifest "
            r"says [0-9a-f]{64}, \d+ bytes\): the archive was altered or damaged\. Nothing was restored\.",
        ),
        (
            {"change": lambda name, data: data + b"x" if name.startswith("media/") else data},
            r"media/exports/allocation-1\.csv does not match the manifest",
        ),
        (
            {"extra": {"media/exports/planted.csv": b"serial\nEVIL\n"}},
            r"not in the manifest: media/exports/planted\.csv\. Nothing was restored\.",
        ),
        ({"extra": {"../outside.txt": b"x"}}, r"holds '\.\./outside\.txt', which no backup writes"),
        (
            {"manifest": lambda m: m["files"].pop("media/exports/allocation-1.csv")},
            r"not in the manifest: media/exports/allocation-1\.csv",
        ),
        (
            {"manifest": lambda m: m["files"].update({"media/gone.csv": {"sha256": "0" * 64, "bytes": 1}})},
            r"missing media/gone\.csv",
        ),
    ],
)
def test_tampered_archives_are_refused_before_anything_is_restored(plant, tmp_path, tamper, message):
    result = take_backup(tmp_path)
    tampered = rewrite(result.path, tmp_path / "tampered.tar", **tamper)
    rows = backup.read_state().tables

    for command in ("restore", "verify_backup"):
        with pytest.raises(CommandError, match=message):
            call_command(command, str(tampered))
    assert backup.read_state().tables == rows


def test_an_edited_manifest_is_refused_when_its_checksum_is_given(plant, tmp_path):
    result = take_backup(tmp_path)
    edited = rewrite(result.path, tmp_path / "edited.tar", manifest=lambda m: m["tables"].update(auth_user=99))
    with tarfile.open(edited) as tar:
        edited_sha = hashlib.sha256(tar.extractfile(backup.MANIFEST).read()).hexdigest()
    with pytest.raises(
        CommandError,
        match=f"The manifest's SHA-256 is {edited_sha}, not {result.manifest_sha256} as expected: the archive is not "
        "the one the backup made.",
    ):
        call_command("verify_backup", str(edited), "--expect-sha256", result.manifest_sha256)


def test_a_file_that_is_no_archive_is_refused(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar file at all" * 100)
    with pytest.raises(CommandError, match=r"junk\.tar is not a backup archive"):
        call_command("restore", str(junk))
    with pytest.raises(CommandError, match=r"No archive at .*missing\.tar"):
        call_command("verify_backup", str(tmp_path / "missing.tar"))
