"""The tamper-evident chain over history rows: linking, sealing, verifying, and breaks made with raw SQL.

Every break is made the way an intruder with database access would make it — raw SQL behind the application's back —
and must be found, located (table, row id, sequence) and raised as an audit-chain incident.
"""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.utils import timezone
from django_q.models import Schedule

from audit import chain, services, tasks
from audit.models import CHAIN_GENESIS_HASH, ChainHead, ChainLayout, ChainLink, Incident
from masterdata.models import Company
from masterdata.services import update_company
from tests.factories import make_company, make_product, make_user

pytestmark = pytest.mark.django_db


def history_row_count() -> int:
    return sum(model._base_manager.count() for model in chain.history_models())


def sealed_chain() -> list[tuple[int, str, int, str]]:
    return list(
        ChainLink.objects.filter(sequence__isnull=False)
        .order_by("sequence")
        .values_list("sequence", "history_label", "history_id", "hash")
    )


def run_sql(sql: str, params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def qn(name: str) -> str:
    return connection.ops.quote_name(name)


# Raw SQL behind the application's back; only names from _meta are spliced in, every value is a parameter.


def update_row(model, row_id: int, column: str, value) -> int:
    table, pk = qn(model._meta.db_table), qn(model._meta.pk.column)
    return run_sql(f"UPDATE {table} SET {qn(column)} = %s WHERE {pk} = %s", [value, row_id])  # noqa: S608


def delete_row(model, row_id: int) -> int:
    table, pk = qn(model._meta.db_table), qn(model._meta.pk.column)
    return run_sql(f"DELETE FROM {table} WHERE {pk} = %s", [row_id])  # noqa: S608


def copy_row(model, row_id: int) -> int:
    """Insert a copy of history row ``row_id`` with a new id; returns the new id."""
    table, pk = qn(model._meta.db_table), qn(model._meta.pk.column)
    columns = ", ".join(qn(f.column) for f in model._meta.concrete_fields if not f.primary_key)
    run_sql(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} WHERE {pk} = %s", [row_id])  # noqa: S608
    return model._base_manager.order_by("-pk").values_list("pk", flat=True).first()


def product_markets_history():
    return apps.get_model("masterdata", "historicalproduct_markets")


def company_history_row(company: Company):
    return company.history.order_by("-history_id").first()


def expect_break(*, kind: str, label: str, row_id: int, sequence: int | None) -> Incident:
    """Run the command; it must exit non-zero naming the break, and the break must be raised as an incident."""
    with pytest.raises(CommandError) as failure:
        call_command("verify_audit_chain")
    where = f"table {label}, row {row_id}, " + (f"sequence {sequence}" if sequence is not None else "no sequence")
    assert f"[{kind}] {where}:" in str(failure.value)
    incident = Incident.objects.get(kind=Incident.Kind.AUDIT_CHAIN)
    assert incident.severity == Incident.Severity.CRITICAL
    assert incident.status == Incident.Status.OPEN
    assert {"kind": kind, "table": label, "row_id": row_id, "sequence": sequence} in [
        {key: p[key] for key in ("kind", "table", "row_id", "sequence")} for p in incident.details["problems"]
    ]
    assert (label, str(row_id)) in set(incident.links.values_list("object_type", "object_id"))
    return incident


# --- Linking and sealing ----------------------------------------------------------------------------------------------


def test_every_history_row_gets_one_link_in_its_own_transaction():
    product = make_product(markets=["EU", "US"])  # product, its markets (m2m history), its company and prefix

    assert history_row_count() == ChainLink.objects.count() > 0
    m2m = product_markets_history()
    assert set(
        ChainLink.objects.filter(history_label=m2m._meta.label_lower).values_list("history_id", flat=True)
    ) == set(m2m.objects.filter(history__id=product.pk).values_list("pk", flat=True))
    assert m2m.objects.filter(history__id=product.pk).count() == 2


def test_a_rolled_back_write_leaves_neither_history_nor_link():
    links_before = ChainLink.objects.count()

    with pytest.raises(RuntimeError), transaction.atomic():
        make_company()
        raise RuntimeError("rolled back")

    assert ChainLink.objects.count() == links_before
    assert history_row_count() == links_before


def test_commit_seals_its_links_in_order_with_each_hash_over_the_previous(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        make_company(name="Chained Ltd")

    assert len(callbacks) == 1  # one seal per transaction, however many history rows it wrote
    links = sealed_chain()
    assert [sequence for sequence, *_ in links] == list(range(1, ChainLink.objects.count() + 1))
    previous = CHAIN_GENESIS_HASH
    for _, label, row_id, stored in links:
        model = chain._history_model(label)
        columns = chain._columns(model)
        values = model._base_manager.filter(pk=row_id).values_list(*columns).get()
        assert stored == chain.chain_hash(previous, chain.canonical_content(label, row_id, columns, values))
        previous = stored
    assert services.audit_chain_head() == {"sequence": len(links), "hash": previous}


def test_sealing_twice_seals_nothing_new():
    make_company()
    first = chain.seal_chain()

    assert first == ChainLink.objects.count()
    assert chain.seal_chain() == 0
    assert not ChainLink.objects.filter(sequence__isnull=True).exists()


def test_audit_chain_head_seals_pending_links_first_and_is_genesis_when_empty():
    assert services.audit_chain_head() == {"sequence": 0, "hash": CHAIN_GENESIS_HASH}

    make_company()

    head = services.audit_chain_head()
    last = ChainLink.objects.order_by("-sequence").first()
    assert head == {"sequence": ChainLink.objects.count(), "hash": last.hash}


def test_bulk_history_create_links_the_rows_it_writes():
    companies = [make_company() for _ in range(3)]
    chain.seal_chain()

    rows = chain.bulk_history_create(Company, companies, default_change_reason="bulk import")

    assert len(rows) == 3
    linked = ChainLink.objects.filter(history_label="masterdata.historicalcompany", history_id__in=[r.pk for r in rows])
    assert linked.count() == 3
    report = chain.verify_chain()
    assert report.ok, report.problems


def test_a_column_added_later_does_not_break_links_sealed_before(monkeypatch):
    company = make_company()
    current = chain._columns
    # Seal as if the history table had one column fewer when these rows were written (a field added since).
    monkeypatch.setattr(chain, "_columns", lambda model: [c for c in current(model) if c != "country"])
    chain.seal_chain()
    monkeypatch.setattr(chain, "_columns", current)
    update_company(company=company, actor=None, reason="renamed", data={"name": "Renamed Ltd"})

    report = chain.verify_chain()

    assert report.ok, report.problems
    assert ChainLayout.objects.filter(history_label="masterdata.historicalcompany").count() == 2


# --- Verifying: the untouched chain ---------------------------------------------------------------------------------


def test_verify_command_passes_on_an_untouched_chain_and_records_the_verification(capsys):
    make_product(markets=["EU"])

    call_command("verify_audit_chain")

    links = ChainLink.objects.count()
    assert f"Audit chain verified: {links} links over" in capsys.readouterr().out
    head = ChainHead.objects.get()
    assert (head.verified_ok, head.verified_sequence, head.sequence) == (True, links, links)
    assert not Incident.objects.exists()


def test_verification_reads_the_chain_page_by_page():
    for _ in range(4):
        make_company()

    report = chain.verify_chain(batch_size=3)  # pages of three links: every boundary is crossed

    assert report.ok, report.problems
    assert report.links_checked == ChainLink.objects.count() > 6


# --- Verifying: breaks made behind the application's back ------------------------------------------------------------


def test_history_row_edited_with_raw_sql_is_located_and_raised():
    company = make_company(name="Honest Pharma")
    make_company()
    chain.seal_chain()
    row = company_history_row(company)
    sequence = ChainLink.objects.get(history_label="masterdata.historicalcompany", history_id=row.pk).sequence

    assert update_row(type(row), row.pk, "name", "Shady Pharma") == 1

    incident = expect_break(kind="edited", label="masterdata.historicalcompany", row_id=row.pk, sequence=sequence)
    assert incident.title == (
        f"Audit chain broken: masterdata.historicalcompany row {row.pk} (link #{sequence}) was changed after it was "
        "written (or its link was altered)"
    )
    assert incident.details["problem_count"] == 1  # the links after it still verify against its stored hash


def test_history_row_deleted_with_raw_sql_is_located_and_raised():
    company = make_company()
    chain.seal_chain()
    row = company_history_row(company)
    sequence = ChainLink.objects.get(history_label="masterdata.historicalcompany", history_id=row.pk).sequence

    assert delete_row(type(row), row.pk) == 1

    expect_break(kind="deleted", label="masterdata.historicalcompany", row_id=row.pk, sequence=sequence)


def test_history_row_inserted_with_raw_sql_is_located_and_raised():
    company = make_company()
    chain.seal_chain()
    model = type(company_history_row(company))
    forged_id = copy_row(model, company_history_row(company).pk)
    # Dated a year back, so it passes for an old row (the grace for rows committed a moment ago does not cover it).
    model._base_manager.filter(pk=forged_id).update(history_date=datetime(2025, 1, 1, tzinfo=UTC))

    expect_break(kind="unlinked", label="masterdata.historicalcompany", row_id=forged_id, sequence=None)


def test_a_row_committed_a_moment_ago_without_its_link_waits_for_the_next_run(monkeypatch):
    company = make_company()
    chain.seal_chain()
    forged_id = copy_row(type(company_history_row(company)), company_history_row(company).pk)
    model = type(company_history_row(company))
    model._base_manager.filter(pk=forged_id).update(history_date=timezone.now())

    assert chain.verify_chain().ok  # a writer outside a transaction commits its row a moment before the link

    monkeypatch.setattr(chain, "UNLINKED_GRACE", timedelta(0))
    assert [(p.kind, p.row_id) for p in chain.verify_chain().problems] == [("unlinked", forged_id)]


def test_link_deleted_from_the_middle_leaves_a_gap_that_is_reported(monkeypatch):
    monkeypatch.setattr(chain, "UNLINKED_GRACE", timedelta(0))
    for _ in range(3):
        make_company()
    chain.seal_chain()
    victim = ChainLink.objects.get(sequence=3)

    ChainLink.objects.filter(pk=victim.pk).delete()  # the row it protected now looks inserted too

    with pytest.raises(CommandError) as failure:
        call_command("verify_audit_chain")
    message = str(failure.value)
    assert "[gap] table" in message and "links #3–#3 are missing from the chain" in message
    assert f"[unlinked] table {victim.history_label}, row {victim.history_id}, no sequence" in message


def test_links_cut_from_the_end_no_longer_reach_the_head():
    for _ in range(2):
        make_company()
    chain.seal_chain()
    last = ChainHead.objects.get().sequence

    cut = ChainLink.objects.get(sequence=last)
    ChainLink.objects.filter(pk=cut.pk).delete()

    report = chain.verify_chain()

    assert not report.ok
    truncated = [p for p in report.problems if p.kind == "truncated"]
    assert [p.message for p in truncated] == [
        f"the chain ends at #{last - 1} but its head says #{last}: links were removed from the end or the head "
        "was altered"
    ]


def test_a_rewritten_head_is_reported():
    make_company()
    chain.seal_chain()
    head = ChainHead.objects.get()

    ChainHead.objects.filter(pk=1).update(hash="f" * 64)

    assert [p.message for p in chain.verify_chain().problems] == [
        f"the head's hash is not the hash of link #{head.sequence}: the head or the last link was altered"
    ]


def test_a_row_sealed_over_a_column_dropped_since_is_reported_unreadable():
    company = make_company()
    chain.seal_chain()
    row = company_history_row(company)
    layout = ChainLink.objects.get(history_label="masterdata.historicalcompany", history_id=row.pk).layout
    ChainLayout.objects.filter(pk=layout.pk).update(columns=[*layout.columns, "vanished_column"])

    problems = chain.verify_chain().problems

    assert {(p.kind, p.table) for p in problems} == {("unreadable", "masterdata.historicalcompany")}
    assert "a column was dropped since" in problems[0].message


def test_many_to_many_history_row_edited_is_detected():
    product = make_product(markets=["EU"])
    chain.seal_chain()
    m2m = product_markets_history()
    row = m2m.objects.get(history__id=product.pk)
    other_market = type(row.market).objects.exclude(pk=row.market_id).first()

    update_row(m2m, row.pk, "market_id", other_market.pk)

    report = chain.verify_chain()
    assert [(p.kind, p.table, p.row_id) for p in report.problems] == [("edited", m2m._meta.label_lower, row.pk)]


def test_the_same_break_found_again_keeps_one_open_incident():
    company = make_company()
    chain.seal_chain()
    row = company_history_row(company)
    delete_row(type(row), row.pk)

    for _ in range(2):
        with pytest.raises(CommandError):
            call_command("verify_audit_chain")

    assert Incident.objects.filter(kind=Incident.Kind.AUDIT_CHAIN).count() == 1
    assert ChainHead.objects.get().verified_ok is False


# --- The scheduled tasks --------------------------------------------------------------------------------------------


def test_schedules_seal_every_minute_and_verify_every_hour():
    schedules = {s.name: (s.func, s.schedule_type, s.minutes, s.repeats) for s in Schedule.objects.all()}

    assert schedules["audit: seal chain"] == ("audit.tasks.seal_audit_chain", Schedule.MINUTES, 1, -1)
    assert schedules["audit: verify chain"][:2] == ("audit.tasks.verify_audit_chain", Schedule.HOURLY)


def test_scheduled_verification_raises_an_incident_for_a_break():
    company = make_company()
    assert tasks.verify_audit_chain().startswith("Audit chain verified:")
    row = company_history_row(company)
    update_row(type(row), row.pk, "history_change_reason", "backdated")

    result = tasks.verify_audit_chain()

    incident = Incident.objects.get(kind=Incident.Kind.AUDIT_CHAIN)
    assert result.startswith("Audit chain BROKEN: 1 problem in")
    assert result.endswith(f"Incident {incident.pk}.")


def test_seal_task_seals_what_commits_left_pending():
    make_company()

    assert tasks.seal_audit_chain() == f"{ChainLink.objects.count()} links sealed"


# --- A database from before the chain --------------------------------------------------------------------------------


def test_rows_of_a_database_from_before_the_chain_are_adopted_once():
    make_company()
    rows = history_row_count()
    ChainLink.objects.all().delete()  # as if the chain did not exist when these rows were written
    ChainHead.objects.all().delete()

    assert chain.adopt_existing_history() == rows
    assert ChainHead.objects.get().sequence == rows
    assert chain.verify_chain().ok
    assert chain.adopt_existing_history() == 0


def test_adoption_never_legitimises_rows_once_the_chain_started():
    make_company()
    chain.seal_chain()
    ChainLink.objects.all().delete()  # an intruder wipes the links, hoping the next migrate re-adopts everything

    assert chain.adopt_existing_history() == 0
    assert not chain.verify_chain().ok


# --- PostgreSQL: real parallel connections ---------------------------------------------------------------------------


# Committed transactions, as in production. serialized_rollback, like tests/audit/test_backup.py: the flush after
# these tests then does not re-seed the roles, which would clash with the next serialized test's restore.
on_real_connections = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def _needs_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip(
            "Needs PostgreSQL: SQLite serialises writers, so parallel sealing proves nothing there. "
            "Run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db>"
        )


@pytest.mark.postgres
@on_real_connections
@pytest.mark.usefixtures("_needs_postgresql")
def test_parallel_writers_build_one_unbroken_chain():
    threads, rounds = 8, 6
    companies = [make_company(name=f"Parallel {i}") for i in range(threads)]
    barrier = threading.Barrier(threads)
    errors = []

    def writer(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            for r in range(rounds):
                with transaction.atomic():  # each commit seals (or leaves its links to the sealer holding the head)
                    update_company(
                        company=companies[i], actor=None, reason=f"round {r}", data={"name": f"Parallel {i}.{r}"}
                    )
                if r % 2:
                    chain.seal_chain(wait=True)  # blocking sealers race the non-blocking ones
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    pool = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)

    assert not any(t.is_alive() for t in pool), "a writer hung (deadlock?)"
    assert not errors, errors
    chain.seal_chain()
    links = ChainLink.objects.count()
    assert links == history_row_count()
    assert list(ChainLink.objects.order_by("sequence").values_list("sequence", flat=True)) == list(range(1, links + 1))
    report = chain.verify_chain()
    assert report.ok, report.problems
    assert report.links_checked == links


@pytest.mark.postgres
@on_real_connections
@pytest.mark.usefixtures("_needs_postgresql")
def test_one_statement_allocation_links_its_history_row_in_the_same_statement():
    from serialization.services import allocate_serials, create_generated_pool
    from serialization.services import allocation as allocation_module
    from tests.serialization.test_concurrency import ensure_markets

    ensure_markets()
    user = make_user()
    product = make_product(markets=["EU"])
    pool = create_generated_pool(owner=product.owner, actor=user, product=product, initial_fill=1000)

    assert allocation_module._one_statement_path_available()  # the chain's receiver does not turn it off
    allocation = allocate_serials(pool=pool, quantity=10, actor=user, request_id="one-statement", purpose="batch")

    history = allocation.history.get()
    assert ChainLink.objects.filter(history_label="serialization.historicalallocation", history_id=history.pk).exists()
    report = chain.verify_chain()
    assert report.ok, report.problems
