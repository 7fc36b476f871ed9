"""Backups an operator can trust, and the restore that checks them before loading anything.

An archive is one tar file holding:

- ``database.pgdump`` (``pg_dump`` custom format, PostgreSQL) or ``database.sqlite3`` (SQLite's online backup API):
  one consistent snapshot of the whole database;
- ``media/…``: the media folder (exports, imports, EPCIS documents, submissions);
- ``manifest.json``: the SHA-256 and size of every other file, the row count of every table, the state of every serial
  pool, the audit-chain head, the applied migrations and the creation time — all read from the *same* snapshot as
  the dump (PostgreSQL: ``pg_dump --snapshot`` shares the exported snapshot of the transaction that reads them;
  SQLite: the copy is made inside the transaction that reads them, which holds the write lock).

``restore_archive`` refuses an archive whose files do not match the manifest, and a database that is not empty; it
loads, then compares what it loaded with the manifest. ``verify_archive`` does the same into a scratch database (a
temporary SQLite file, or a PostgreSQL database it creates and drops) and reports every check.

Domain apps add their own state to the manifest with ``register_state`` (the serial pools: ``serialization``), so
``audit`` imports no domain app.
"""

import getpass
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from audit import chain
from audit.exceptions import DomainError
from audit.models import AccessEvent
from audit.services import audit_chain_head, record_access

ARCHIVE_FORMAT = 1
MANIFEST = "manifest.json"
DATABASE_FILES = {"postgresql": "database.pgdump", "sqlite": "database.sqlite3"}
MEDIA_DIR = "media"
_CHUNK = 1024 * 1024


class BackupError(DomainError):
    """A backup, restore or verification that cannot go on; the message names the problem and what to do."""

    code = "backup_error"


class ArchiveTampered(BackupError):
    code = "archive_tampered"


# --- state of a database -------------------------------------------------------------------------------------------

_state_providers: dict[str, Callable[[str], dict]] = {}


def register_state(name: str, provider: Callable[[str], dict]) -> None:
    """Add ``provider(using) -> dict`` to every manifest under ``name``; a restore must reproduce it exactly."""
    _state_providers[name] = provider


@dataclass(frozen=True)
class DatabaseState:
    """What a backup promises and a restore must reproduce."""

    tables: dict[str, int]
    state: dict[str, dict]
    audit_chain: dict
    migrations: dict[str, list[str]]


def read_state(using: str = DEFAULT_DB_ALIAS) -> DatabaseState:
    """Rows per table, the registered states (pools), the audit-chain head and the applied migrations of ``using``.

    Read-only, so it can run inside a backup's snapshot and on a freshly restored copy alike.
    """
    connection = connections[using]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        names = sorted(connection.introspection.table_names(cursor))
        tables = {}
        for name in names:
            cursor.execute(f"SELECT COUNT(*) FROM {quote(name)}")  # noqa: S608 — a table name from introspection
            tables[name] = cursor.fetchone()[0]
    applied: dict[str, list[str]] = {}
    for app, name in sorted(MigrationRecorder(connection).applied_migrations()):
        applied.setdefault(app, []).append(name)
    return DatabaseState(
        tables=tables,
        state={name: provider(using) for name, provider in sorted(_state_providers.items())},
        audit_chain=chain.chain_head(using=using),
        migrations=applied,
    )


# --- making an archive -----------------------------------------------------------------------------------------------


@dataclass
class BackupResult:
    path: Path
    manifest: dict
    manifest_sha256: str

    @property
    def rows(self) -> int:
        return sum(self.manifest["tables"].values())


def default_archive_path() -> Path:
    return Path(settings.BACKUP_DIR) / f"backup-{timezone.now():%Y%m%dT%H%M%SZ}.tar"


def make_backup(*, path: Path | None = None, using: str = DEFAULT_DB_ALIAS, actor=None) -> BackupResult:
    """Write one consistent archive of the database ``using`` and the media folder to ``path`` (mode 0600: it holds
    every serial, password hash and second-factor secret of the system). Recorded in the access log as an export."""
    connection = connections[using]
    if connection.in_atomic_block:
        raise BackupError("A backup takes its own snapshot transaction: run it outside any transaction.")
    engine = connection.vendor
    if engine not in DATABASE_FILES:
        raise BackupError(f"Backups support PostgreSQL and SQLite; this database is {engine}.")
    path = Path(path or default_archive_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    # Seal the audit chain first (a write), so the snapshot's head covers everything written until now.
    audit_chain_head(using=using)
    with tempfile.TemporaryDirectory(prefix="backup-") as work:
        work_dir = Path(work)
        database_file = work_dir / DATABASE_FILES[engine]
        if engine == "postgresql":
            state, details = _snapshot_postgresql(connection, database_file)
        else:
            state, details = _snapshot_sqlite(connection, database_file)
        media = _copy_media(work_dir / MEDIA_DIR)
        files = {DATABASE_FILES[engine]: _file_entry(database_file)}
        for media_file in sorted(p for p in (work_dir / MEDIA_DIR).rglob("*") if p.is_file()):
            files[media_file.relative_to(work_dir).as_posix()] = _file_entry(media_file)
        manifest = {
            "format": ARCHIVE_FORMAT,
            "created_at": timezone.now().isoformat(),
            "engine": engine,
            **details,
            "database_file": DATABASE_FILES[engine],
            "files": files,
            "tables": state.tables,
            "state": state.state,
            "audit_chain": state.audit_chain,
            "migrations": state.migrations,
            "media": media,
        }
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        (work_dir / MANIFEST).write_bytes(manifest_bytes)
        partial = path.with_name(path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
            tar.add(work_dir / MANIFEST, arcname=MANIFEST)
            for name in files:
                tar.add(work_dir / name, arcname=name)
        partial.replace(path)  # a crash leaves a .partial file, never a truncated archive under the real name
    manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    result = BackupResult(path=path, manifest=manifest, manifest_sha256=manifest_sha256)
    record_access(
        kind=AccessEvent.Kind.EXPORT,
        user=actor,
        username="" if actor is not None else getpass.getuser(),
        target=f"backup {path.name}",
        quantity=result.rows,
        details={"manifest_sha256": manifest_sha256, "bytes": path.stat().st_size, "files": len(files)},
    )
    return result


def _snapshot_postgresql(connection, database_file: Path) -> tuple[DatabaseState, dict]:
    server_major = connection.pg_version // 10000
    pg_dump = find_pg_tool("pg_dump", server_major=server_major)
    dump_major = _tool_major(pg_dump)
    if dump_major < server_major:
        raise BackupError(
            f"{pg_dump} is version {dump_major} but the server runs PostgreSQL {server_major}: pg_dump must be at "
            f"least the server's version. Install postgresql-client-{server_major} or set PG_BIN_DIR to its folder."
        )
    connection.ensure_connection()
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        # The first statement of the transaction: everything below, pg_dump included, sees this one snapshot.
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SELECT pg_export_snapshot()")
        (snapshot,) = cursor.fetchone()
        state = read_state(connection.alias)
        _run(
            [pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--file={database_file}", "--no-password"],
            connection,
            what="pg_dump",
        )
    return state, {"server_version": _server_version(connection), "pg_dump_major": dump_major}


def _snapshot_sqlite(connection, database_file: Path) -> tuple[DatabaseState, dict]:
    connection.ensure_connection()
    target = sqlite3.connect(database_file)
    try:
        # pages=-1: the whole database in one step, under one read lock, so the copy is one consistent snapshot
        # (writers wait or, in WAL mode, carry on past it). SQLite refuses to copy from a connection in a write
        # transaction, so the manifest is read from the copy itself, which is exactly what the archive holds.
        connection.connection.backup(target, pages=-1)
    finally:
        target.close()
    with _database_alias(database_file) as alias:
        state = read_state(alias)
    return state, {"server_version": sqlite3.sqlite_version}


def _copy_media(target: Path) -> dict:
    """Copy the media folder into ``target``. Copied after the snapshot: it may hold a file the database does not
    reference yet (written since), never miss one the snapshot references (files are written before their row)."""
    target.mkdir()
    if not isinstance(default_storage, FileSystemStorage):
        return {"included": False, "why": f"files live in {type(default_storage).__name__}: back that store up itself"}
    root = Path(settings.MEDIA_ROOT)
    count = size = 0
    if root.is_dir():
        for source in sorted(root.rglob("*")):
            if source.is_file() and not source.is_symlink():
                destination = target / source.relative_to(root)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination)
                count += 1
                size += source.stat().st_size
    return {"included": True, "files": count, "bytes": size}


def _file_entry(path: Path) -> dict:
    return {"sha256": _sha256_of(path), "bytes": path.stat().st_size}


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- PostgreSQL tools ------------------------------------------------------------------------------------------------


def find_pg_tool(name: str, *, server_major: int) -> str:
    """``pg_dump`` / ``pg_restore`` matching the server: PG_BIN_DIR if set, else Debian's per-version folder, else
    the one on PATH."""
    candidates = []
    if getattr(settings, "PG_BIN_DIR", ""):
        candidates.append(Path(settings.PG_BIN_DIR) / name)
    candidates.append(Path(f"/usr/lib/postgresql/{server_major}/bin/{name}"))
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise BackupError(
        f"{name} was not found: install the PostgreSQL {server_major} client tools (postgresql-client-{server_major}) "
        "or set PG_BIN_DIR to the folder holding them."
    )


def _tool_major(tool: str) -> int:
    output = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout  # noqa: S603
    match = re.search(r"\)\s*(\d+)", output) or re.search(r"(\d+)\.\d+", output)
    if match is None:
        raise BackupError(f"Cannot read the version of {tool} from {output.strip()!r}.")
    return int(match.group(1))


def _server_version(connection) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]


def _pg_environment(settings_dict: dict, *, database: str | None = None) -> dict[str, str]:
    """libpq variables for a client tool: the password travels in the environment, never on a command line."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    values = {
        "PGHOST": settings_dict.get("HOST"),
        "PGPORT": settings_dict.get("PORT"),
        "PGUSER": settings_dict.get("USER"),
        "PGPASSWORD": settings_dict.get("PASSWORD"),
        "PGDATABASE": database or settings_dict.get("NAME"),
        "PGSSLMODE": settings_dict.get("OPTIONS", {}).get("sslmode"),
    }
    env.update({key: str(value) for key, value in values.items() if value})
    return env


def _run(command: list[str], connection, *, what: str, database: str | None = None) -> None:
    completed = subprocess.run(  # noqa: S603 — a fixed tool with arguments built here, no shell
        command, env=_pg_environment(connection.settings_dict, database=database), capture_output=True, text=True
    )
    if completed.returncode != 0:
        raise BackupError(f"{what} failed (exit {completed.returncode}): {completed.stderr.strip()[-2000:]}")


# --- reading an archive ----------------------------------------------------------------------------------------------


@dataclass
class OpenedArchive:
    """An archive whose every file matched its manifest, extracted into ``folder``."""

    folder: Path
    manifest: dict
    manifest_sha256: str

    @property
    def database_file(self) -> Path:
        return self.folder / self.manifest["database_file"]


@contextmanager
def open_archive(path: Path, *, expect_manifest_sha256: str = "") -> Iterator[OpenedArchive]:
    """Extract ``path`` into a temporary folder, checking every file against the manifest first: a missing, extra,
    resized or altered file (or a manifest that is not the one expected) raises ArchiveTampered and nothing is used."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"No archive at {path}.")
    with tempfile.TemporaryDirectory(prefix="restore-") as work:
        folder = Path(work)
        with _open_tar(path) as tar:
            members = _checked_members(tar, path)
            if MANIFEST not in members:
                raise ArchiveTampered(f"{path} has no {MANIFEST}: it is not a backup archive of this system.")
            manifest_bytes = tar.extractfile(members[MANIFEST]).read()
            manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
            if expect_manifest_sha256 and manifest_sha256 != expect_manifest_sha256.strip().lower():
                raise ArchiveTampered(
                    f"The manifest's SHA-256 is {manifest_sha256}, not {expect_manifest_sha256} as expected: the "
                    "archive is not the one the backup made."
                )
            manifest = _parse_manifest(manifest_bytes, path)
            listed = manifest["files"]
            unlisted = sorted(set(members) - set(listed) - {MANIFEST})
            missing = sorted(set(listed) - set(members))
            if unlisted or missing:
                raise ArchiveTampered(
                    "The archive does not hold what its manifest lists: "
                    + "; ".join(
                        part
                        for part in (
                            f"missing {', '.join(missing)}" if missing else "",
                            f"not in the manifest: {', '.join(unlisted)}" if unlisted else "",
                        )
                        if part
                    )
                    + ". Nothing was restored."
                )
            for name, expected in listed.items():
                _extract_checked(tar, members[name], folder / name, expected)
        yield OpenedArchive(folder=folder, manifest=manifest, manifest_sha256=manifest_sha256)


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")  # the caller's with-block closes it
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveTampered(f"{path} is not a backup archive (not a readable tar file: {exc}).") from exc


def _checked_members(tar: tarfile.TarFile, path: Path) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        name = PurePosixPath(member.name)
        if not member.isfile() or name.is_absolute() or ".." in name.parts or member.name in members:
            raise ArchiveTampered(
                f"{path} holds {member.name!r}, which no backup writes (only plain files with relative names): refused."
            )
        members[member.name] = member
    return members


def _parse_manifest(data: bytes, path: Path) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ArchiveTampered(f"The manifest of {path} is not valid JSON ({exc}): refused.") from exc
    required = {"format", "engine", "database_file", "files", "tables", "state", "audit_chain", "migrations"}
    if not isinstance(manifest, dict) or not required <= manifest.keys():
        raise ArchiveTampered(f"The manifest of {path} lacks {', '.join(sorted(required - set(manifest or {})))}.")
    if manifest["format"] != ARCHIVE_FORMAT:
        raise BackupError(f"Archive format {manifest['format']} is not the format {ARCHIVE_FORMAT} this version reads.")
    if manifest["database_file"] not in manifest["files"]:
        raise ArchiveTampered(f"The manifest of {path} does not list its database file {manifest['database_file']}.")
    return manifest


def _extract_checked(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, expected: dict) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    source = tar.extractfile(member)
    with target.open("wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if digest.hexdigest() != expected.get("sha256") or size != expected.get("bytes"):
        raise ArchiveTampered(
            f"{member.name} does not match the manifest (SHA-256 {digest.hexdigest()}, {size} bytes; the manifest "
            f"says {expected.get('sha256')}, {expected.get('bytes')} bytes): the archive was altered or damaged. "
            "Nothing was restored."
        )


# --- loading a database ----------------------------------------------------------------------------------------------


def check_empty(using: str) -> None:
    connection = connections[using]
    with connection.cursor() as cursor:
        tables = sorted(connection.introspection.table_names(cursor))
    if tables:
        raise BackupError(
            f"The database {connection.settings_dict['NAME']} is not empty: it has {len(tables)} tables (e.g. "
            f"{', '.join(tables[:3])}). A restore loads into an empty database only: create a new one (createdb, or a "
            "new SQLite file) and point DATABASE_URL at it. Nothing was restored."
        )


def load_database(archive: OpenedArchive, using: str) -> None:
    """Load the archive's database into the empty database ``using``."""
    connection = connections[using]
    engine = archive.manifest["engine"]
    if engine != connection.vendor:
        raise BackupError(
            f"The archive holds a {engine} database; the target is {connection.vendor}. Restore into the same engine."
        )
    check_empty(using)
    if engine == "sqlite":
        connection.ensure_connection()
        source = sqlite3.connect(archive.database_file)
        try:
            source.backup(connection.connection)
        finally:
            source.close()
        return
    restore_major = _tool_major(pg_restore := find_pg_tool("pg_restore", server_major=connection.pg_version // 10000))
    if restore_major < archive.manifest.get("pg_dump_major", 0):
        raise BackupError(
            f"The archive was written by pg_dump {archive.manifest['pg_dump_major']}; {pg_restore} is version "
            f"{restore_major} and cannot read it. Install a newer client or set PG_BIN_DIR."
        )
    _run(
        [
            pg_restore,
            "--no-owner",
            "--no-privileges",
            "--single-transaction",  # all or nothing: a failure leaves the database empty
            "--exit-on-error",
            f"--dbname={connection.settings_dict['NAME']}",
            "--no-password",
            str(archive.database_file),
        ],
        connection,
        what="pg_restore",
    )


def restore_media(archive: OpenedArchive, *, media_root: Path, check_only: bool = False) -> int:
    """Copy the archive's media into ``media_root``; refuses (before anything is copied) to overwrite a different
    file. Returns how many files were written."""
    prefix = f"{MEDIA_DIR}/"
    names = [name for name in archive.manifest["files"] if name.startswith(prefix)]
    conflicts = []
    for name in names:
        target = media_root / name[len(prefix) :]
        if target.exists() and _sha256_of(target) != archive.manifest["files"][name]["sha256"]:
            conflicts.append(str(target))
    if conflicts:
        raise BackupError(
            f"{len(conflicts)} media file(s) exist with other content, e.g. {conflicts[0]}: restore into an empty "
            "media folder (MEDIA_ROOT). Nothing was restored."
        )
    if check_only:
        return 0
    for name in names:
        target = media_root / name[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(archive.folder / name, target)
    return len(names)


# --- comparing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One line of a verification: what, what the manifest says, what the database holds, whether they agree."""

    what: str
    expected: str
    found: str

    @property
    def ok(self) -> bool:
        return self.expected == self.found


@dataclass
class Verification:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def table(self) -> str:
        """The checks as a fixed-width table, mismatches marked."""
        rows = [("check", "archive", "restored", "result")]
        rows += [(c.what, _cell(c.expected), _cell(c.found), "ok" if c.ok else "MISMATCH") for c in self.checks]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join(
            f"{what:<{widths[0]}}  {expected:>{widths[1]}}  {found:>{widths[2]}}  {result}"
            for what, expected, found, result in rows
        )


def _cell(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[: limit // 2 - 1]}…{text[-(limit // 2) + 1 :]}"


def compare(manifest: dict, state: DatabaseState) -> Verification:
    """Every table's row count, every registered state (per pool), the audit-chain head and the migrations of a
    restored database against the manifest."""
    verification = Verification()
    for name in sorted(set(manifest["tables"]) | set(state.tables)):
        verification.checks.append(
            Check(f"rows {name}", _text(manifest["tables"].get(name)), _text(state.tables.get(name)))
        )
    for name in sorted(set(manifest["state"]) | set(state.state)):
        expected, found = manifest["state"].get(name) or {}, state.state.get(name) or {}
        for key in sorted(set(expected) | set(found), key=str):
            verification.checks.append(
                Check(f"{name} {key}", _canonical(expected.get(key)), _canonical(found.get(key)))
            )
    for key in ("sequence", "hash"):
        verification.checks.append(
            Check(
                f"audit chain head {key}",
                _text(manifest["audit_chain"].get(key)),
                _text(state.audit_chain.get(key)),
            )
        )
    verification.checks.append(
        Check("migrations applied", _canonical(manifest["migrations"]), _canonical(state.migrations))
    )
    return verification


def _text(value) -> str:
    return "—" if value is None else str(value)


def _canonical(value) -> str:
    """One comparable cell for a JSON value: scalars as they are, a flat object as ``key=value …`` (a pool's
    counters), anything bigger as a fingerprint of its sorted JSON (equal values, equal fingerprints)."""
    if value is None:
        return "—"
    if isinstance(value, bool | int | float | str):
        return str(value)
    if isinstance(value, dict) and all(isinstance(v, bool | int | float | str) for v in value.values()):
        return " ".join(f"{key}={value[key]}" for key in sorted(value))
    return "sha256:" + hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- restore and verify ----------------------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    manifest: dict
    verification: Verification
    media_files: int


def restore_archive(
    *, path: Path, using: str = DEFAULT_DB_ALIAS, expect_manifest_sha256: str = "", media_root: Path | None = None
) -> RestoreResult:
    """Check ``path`` against its manifest, load it into the empty database ``using`` and the media folder, then
    compare the loaded database with the manifest. Refuses a tampered archive or a non-empty database before
    changing anything; raises BackupError if the loaded database does not match."""
    media_root = Path(media_root or settings.MEDIA_ROOT)
    with open_archive(path, expect_manifest_sha256=expect_manifest_sha256) as archive:
        check_empty(using)
        restore_media(archive, media_root=media_root, check_only=True)
        load_database(archive, using)
        media_files = restore_media(archive, media_root=media_root)
        verification = compare(archive.manifest, read_state(using))
    result = RestoreResult(manifest=archive.manifest, verification=verification, media_files=media_files)
    if not verification.ok:
        raise BackupError(
            "The restored database does not match the archive's manifest:\n"
            + Verification(verification.failures).table()
        )
    return result


@dataclass
class VerifyResult:
    manifest: dict
    manifest_sha256: str
    verification: Verification
    scratch: str


def verify_archive(*, path: Path, expect_manifest_sha256: str = "", verify_chain: bool = True) -> VerifyResult:
    """Restore ``path`` into a scratch database (a temporary SQLite file, or a PostgreSQL database created and dropped
    here) and compare it with the manifest; with ``verify_chain`` the restored audit chain is also verified link by
    link. The live database is never touched."""
    with open_archive(path, expect_manifest_sha256=expect_manifest_sha256) as archive:
        engine = archive.manifest["engine"]
        with scratch_database(engine) as alias:
            load_database(archive, alias)
            verification = compare(archive.manifest, read_state(alias))
            if verify_chain:
                report = chain.verify_chain(using=alias)
                verification.checks.append(
                    Check(
                        "audit chain verifies end to end",
                        "yes",
                        "yes" if report.ok else f"no: {report.problem_count} problem(s)",
                    )
                )
            scratch = connections[alias].settings_dict["NAME"]
    return VerifyResult(
        manifest=archive.manifest,
        manifest_sha256=archive.manifest_sha256,
        verification=verification,
        scratch=str(scratch),
    )


@contextmanager
def scratch_database(engine: str) -> Iterator[str]:
    """A connection alias to a new, empty database of ``engine`` that is removed afterwards."""
    default = connections[DEFAULT_DB_ALIAS]
    if engine != default.vendor:
        raise BackupError(
            f"The archive holds a {engine} database; this installation runs {default.vendor}. Verify it where "
            f"{engine} runs (DATABASE_URL)."
        )
    with tempfile.TemporaryDirectory(prefix="verify-") as work:
        if engine == "sqlite":
            with _database_alias(Path(work) / "scratch.sqlite3") as alias:
                yield alias
            return
        name = f"{default.settings_dict['NAME']}_verify_{uuid.uuid4().hex[:8]}"
        _admin_sql(default, f'CREATE DATABASE "{name}"')
        try:
            with _database_alias(name) as alias:
                yield alias
        finally:
            _admin_sql(default, f'DROP DATABASE IF EXISTS "{name}"')


@contextmanager
def _database_alias(name: str | Path) -> Iterator[str]:
    """A temporary connection alias to database ``name`` on the default database's engine and server."""
    default = connections[DEFAULT_DB_ALIAS]
    alias = f"backup_{uuid.uuid4().hex[:8]}"
    connections.settings[alias] = {**default.settings_dict, "NAME": str(name)}
    try:
        # Connected at once, so a database that cannot be reached is reported here, before any work on it (and
        # Django's test cases, which refuse lazy connections to aliases they do not know, let it through).
        connections[alias].connect()
        yield alias
    finally:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]


def _admin_sql(connection, statement: str) -> None:
    """CREATE/DROP DATABASE, which cannot run in a transaction: through psql on the live database's server."""
    psql = find_pg_tool("psql", server_major=connection.pg_version // 10000)
    _run([psql, "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--command", statement], connection, what="psql")


def manifest_summary(manifest: dict) -> str:
    tables = manifest["tables"]
    return (
        f"{manifest['engine']} {manifest.get('server_version', '')}, made {manifest['created_at']}: "
        f"{len(tables)} tables, {sum(tables.values()):,} rows, {len(manifest['files'])} files, audit chain head "
        f"#{manifest['audit_chain'].get('sequence')}"
    )
