"""Pack history: the selector (pool history, timeline, hierarchy above and below), its API and its admin page."""

import datetime as dt
import itertools

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from masterdata import gs1
from serialization import selectors
from serialization.exceptions import UnknownSerial
from serialization.models import (
    Allocation,
    Batch,
    LineReport,
    Pack,
    PackagingOrder,
    PackEvent,
    PoolFill,
    SerialPool,
)
from serialization.services import (
    allocate_serials,
    create_generated_pool,
    create_list_pool,
    pool_permutation,
    release_serials,
    start_import,
)
from tests.factories import make_company, make_location, make_membership, make_product, make_user

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 3, 3, 8, 0, tzinfo=dt.UTC)
_report_numbers = itertools.count(1)


# --- packs, events and reports built directly with bulk_create: the rows the line-report services leave -----------


class Plant:
    """One MAH with a unit pool, an SSCC pool, a batch, a packaging order and the allocations for it."""

    def __init__(self, *, units: int = 2_000, ssccs: int = 200, order_number: str = "PO-0042") -> None:
        self.company = make_company()
        self.steward = make_user(username=f"steward-{self.company.pk}")
        product = make_product(owner=self.company, markets=("US",))
        self.unit_pool = create_generated_pool(
            owner=self.company, actor=self.steward, product=product, initial_fill=units
        )
        self.sscc_pool = create_generated_pool(
            owner=self.company,
            actor=self.steward,
            sscc_prefix=self.company.prefixes.get(),
            extension_digit="3",
            initial_fill=ssccs,
        )
        self.batch = Batch.objects.create(product=product, lot="LOT-7", expiry="270600")
        line = make_location(company=self.company, kind="line")
        self.order = PackagingOrder.objects.create(
            number=order_number, batch=self.batch, line=line, planned_quantity=500
        )
        self.unit_allocation = self._allocate(self.unit_pool, units, "po-0042-units")
        self.sscc_allocation = self._allocate(self.sscc_pool, ssccs, "po-0042-ssccs")
        self.next_unit = self.next_sscc = 0

    def _allocate(self, pool, quantity, request_id) -> Allocation:
        allocation = allocate_serials(
            pool=pool,
            quantity=quantity,
            actor=self.steward,
            request_id=request_id,
            purpose=Allocation.Purpose.PACKAGING_ORDER,
            reference="PO-0042",
        )
        Allocation.objects.filter(pk=allocation.pk).update(packaging_order=self.order)
        return allocation

    def sscc(self, index: int) -> str:
        body = self.sscc_pool.sscc_extension_digit + self.sscc_pool.sscc_prefix
        body += pool_permutation(self.sscc_pool).serial_at(index)
        return body + gs1.check_digit(body)

    def units(self, count: int, *, parent: Pack | None = None, **fields) -> list[Pack]:
        first, self.next_unit = self.next_unit, self.next_unit + count
        serials = pool_permutation(self.unit_pool).serials(first, count)
        return Pack.objects.bulk_create(
            self._pack(self.unit_pool, first + i, self.unit_pool.product_code, serial, 0, parent, **fields)
            for i, serial in enumerate(serials)
        )

    def containers(self, count: int, *, level: int, parent: Pack | None = None) -> list[Pack]:
        first, self.next_sscc = self.next_sscc, self.next_sscc + count
        return Pack.objects.bulk_create(
            self._pack(self.sscc_pool, index, "", self.sscc(index), level, parent)
            for index in range(first, first + count)
        )

    def _pack(self, pool, index, product_code, serial, level, parent, **fields) -> Pack:
        status = Pack.Status.PACKED if parent is not None else Pack.Status.COMMISSIONED
        return Pack(
            pool=pool,
            index=index,
            product_code=product_code,
            serial=serial,
            level=level,
            batch=self.batch,
            order=self.order,
            parent=parent,
            commissioned_at=T0,
            **{"status": status, **fields},
        )

    def pallet(self, *, cases: int, units_per_case: int) -> tuple[Pack, list[Pack], list[Pack]]:
        (pallet,) = self.containers(1, level=3)
        case_rows = self.containers(cases, level=2, parent=pallet)
        unit_rows = [unit for case in case_rows for unit in self.units(units_per_case, parent=case)]
        return pallet, case_rows, unit_rows

    def report(self, kind: str, *, by) -> LineReport:
        return LineReport.objects.create(
            report_id=f"L3-{next(_report_numbers):05d}",
            kind=kind,
            order=self.order,
            fingerprint="0" * 64,
            status=LineReport.Status.APPLIED,
            submitted_by=by,
        )


@pytest.fixture
def plant():
    return Plant()


def history_of(pack: Pack, user=None):
    user = user or make_user(is_superuser=True)
    if pack.product_code:
        return selectors.get_pack_history(user=user, product_code=pack.product_code, serial=pack.serial)
    return selectors.get_pack_history(user=user, sscc=pack.serial)


# --- hierarchy ----------------------------------------------------------------------------------------------------


def test_unit_in_a_case_on_a_pallet_lists_the_case_then_the_pallet_above(plant):
    pallet, cases, units = plant.pallet(cases=2, units_per_case=3)

    history = history_of(units[4])  # the second unit of the second case

    assert [(ref.serial, ref.level_name, ref.depth) for ref in history.above] == [
        (cases[1].serial, "case", 1),
        (pallet.serial, "pallet", 2),
    ]
    assert [ref.parent_serial for ref in history.above] == [pallet.serial, ""]
    assert history.below == selectors.PackTree(counts={}, total=0, items=(), truncated=False)


def test_pallet_counts_its_cases_and_units_and_lists_each_case_before_its_units(plant):
    pallet, cases, units = plant.pallet(cases=2, units_per_case=20)

    history = history_of(pallet)

    assert history.above == ()
    assert history.below.counts == {"cases": 2, "units": 40}
    assert (history.below.total, history.below.truncated) == (42, False)
    expected = [(cases[0].serial, 1, pallet.serial)]
    expected += [(u.serial, 2, cases[0].serial) for u in units[:20]]
    expected += [(cases[1].serial, 1, pallet.serial)]
    expected += [(u.serial, 2, cases[1].serial) for u in units[20:]]
    assert [(ref.serial, ref.depth, ref.parent_serial) for ref in history.below.items] == expected
    assert {ref.product_code for ref in history.below.items[1:21]} == {plant.unit_pool.product_code}


def test_case_counts_only_its_own_units(plant):
    pallet, cases, units = plant.pallet(cases=3, units_per_case=4)

    history = history_of(cases[2])

    assert history.below.counts == {"units": 4}
    assert [ref.serial for ref in history.below.items] == [u.serial for u in units[8:]]
    assert [ref.serial for ref in history.above] == [pallet.serial]


def test_a_large_tree_lists_the_first_packs_but_counts_all(plant, monkeypatch):
    monkeypatch.setattr(selectors, "BELOW_LIST_LIMIT", 10)
    pallet, cases, units = plant.pallet(cases=3, units_per_case=5)

    tree = history_of(pallet).below

    assert (tree.counts, tree.total, tree.truncated) == ({"cases": 3, "units": 15}, 18, True)
    # Upper levels first: every case is listed, then the first units in order.
    assert [ref.serial for ref in tree.items] == [
        cases[0].serial,
        *[u.serial for u in units[:5]],
        cases[1].serial,
        *[u.serial for u in units[5:7]],
        cases[2].serial,
    ]


# --- timeline -----------------------------------------------------------------------------------------------------


def test_timeline_runs_in_time_order_with_containers_reasons_reports_and_users(plant):
    case_x, case_y = plant.containers(2, level=2)
    (unit,) = plant.units(1, parent=case_y, status=Pack.Status.SHIPPED)
    line_a, line_b = make_user(username="line-a"), make_user(username="line-b")
    steps = [
        (PackEvent.Action.COMMISSIONED, None, line_a, LineReport.Kind.COMMISSIONING),
        (PackEvent.Action.PACKED, case_x, line_a, LineReport.Kind.AGGREGATION),
        (PackEvent.Action.UNPACKED, case_x, line_b, LineReport.Kind.UNPACKING),
        (PackEvent.Action.PACKED, case_y, line_b, LineReport.Kind.AGGREGATION),
        (PackEvent.Action.SHIPPED, None, line_a, LineReport.Kind.SHIPPING),
    ]
    events = [
        PackEvent(
            pack=unit,
            report=plant.report(kind, by=user),
            action=action,
            parent=parent,
            occurred_at=T0 + dt.timedelta(minutes=10 * i),
        )
        for i, (action, parent, user, kind) in enumerate(steps)
    ]
    PackEvent.objects.bulk_create(reversed(events))  # stored out of order: the history sorts by time

    history = history_of(unit)

    assert [(e.action, e.parent_serial, e.report_id, e.report_kind, e.user) for e in history.events] == [
        ("commissioned", "", events[0].report.report_id, "commissioning", "line-a"),
        ("packed", case_x.serial, events[1].report.report_id, "aggregation", "line-a"),
        ("unpacked", case_x.serial, events[2].report.report_id, "unpacking", "line-b"),
        ("packed", case_y.serial, events[3].report.report_id, "aggregation", "line-b"),
        ("shipped", "", events[4].report.report_id, "shipping", "line-a"),
    ]
    assert [e.occurred_at for e in history.events] == [T0 + dt.timedelta(minutes=m) for m in (0, 10, 20, 30, 40)]
    assert history.pack.status == "shipped"
    assert [ref.serial for ref in history.above] == [case_y.serial]


def test_decommissioned_unit_shows_its_reason_and_eu_hub_state(plant):
    (unit,) = plant.units(1, status=Pack.Status.DECOMMISSIONED, reason="damaged", eu_state="Destroyed")
    PackEvent.objects.create(
        pack=unit,
        report=plant.report(LineReport.Kind.DECOMMISSIONING, by=plant.steward),
        action=PackEvent.Action.DECOMMISSIONED,
        reason="damaged",
        occurred_at=T0,
    )

    history = history_of(unit)

    assert history.pack == selectors.PackState(
        level=0,
        status="decommissioned",
        reason="damaged",
        eu_state="Destroyed",
        batch_lot="LOT-7",
        batch_expiry="270600",
        order="PO-0042",
        commissioned_at=T0,
        updated_at=Pack.objects.get(pk=unit.pk).updated_at,
    )
    ((event),) = history.events
    assert (event.action, event.reason, event.user) == ("decommissioned", "damaged", plant.steward.username)


# --- pool history -------------------------------------------------------------------------------------------------


def test_pool_history_names_the_fill_the_allocation_and_its_order(plant):
    (unit,) = plant.units(1)
    release_serials(allocation=plant.unit_allocation, actor=plant.steward, reason="order closed")

    pool = history_of(unit).pool

    assert (pool.pool_id, pool.pool_name, pool.pool_source, pool.pool_kind) == (
        plant.unit_pool.pk,
        plant.unit_pool.name,
        "generator",
        "sgtin",
    )
    assert (pool.index, pool.status, pool.released_to_available) == (0, "assigned", False)
    assert pool.origin == selectors.PoolOrigin(
        how="generated",
        fill_quantity=2_000,
        fill_reason="initial fill",
        filled_at=PoolFill.objects.get(pool=plant.unit_pool).created_at,  # aware on both backends, as the ORM reads it
        filled_by=plant.steward.username,
        import_job_id=None,
        import_file="",
        import_layout="",
    )
    allocation = pool.allocation
    assert (allocation.id, allocation.request_id, allocation.purpose, allocation.reference) == (
        plant.unit_allocation.pk,
        "po-0042-units",
        "packaging_order",
        "PO-0042",
    )
    assert (allocation.packaging_order, allocation.requested_by, allocation.quantity, allocation.created_at) == (
        "PO-0042",
        plant.steward.username,
        2_000,
        Allocation.objects.get(pk=plant.unit_allocation.pk).created_at,
    )
    # Closing the order gave back every serial but the commissioned one, which stays held.
    assert [(r.quantity, r.reason, r.released_by) for r in allocation.releases] == [
        (1_999, "order closed", plant.steward.username)
    ]


def test_a_released_serial_is_available_again_and_says_so(plant):
    release_serials(allocation=plant.unit_allocation, actor=plant.steward, reason="order closed")
    serial = pool_permutation(plant.unit_pool).serial_at(7)

    history = selectors.get_pack_history(user=plant.steward, product_code=plant.unit_pool.product_code, serial=serial)

    assert (history.pool.status, history.pool.released_to_available, history.pool.allocation) == (
        "available",
        True,
        None,
    )
    assert (history.pack, history.events, history.above, history.below.total) == (None, (), (), 0)


def test_list_pool_serial_names_its_import(settings, tmp_path, django_capture_on_commit_callbacks):
    settings.MEDIA_ROOT = tmp_path / "media"
    product = make_product(markets=("EU",))
    actor = make_user(username="importer")
    pool = create_list_pool(owner=product.owner, actor=actor, product=product, source=SerialPool.Source.FILE)
    upload = SimpleUploadedFile("eu-serials.csv", b"A1B2C3\nD4E5F6\n", content_type="text/csv")
    with django_capture_on_commit_callbacks(execute=True):
        job = start_import(pool=pool, layout="csv", uploaded_file=upload, actor=actor)

    history = selectors.get_pack_history(user=actor, product_code=product.product_code, serial="D4E5F6")

    assert (history.pool.pool_source, history.pool.index, history.pool.status) == ("file", 1, "available")
    origin = history.pool.origin
    assert (origin.how, origin.import_job_id, origin.import_file, origin.import_layout) == (
        "imported",
        job.pk,
        "eu-serials.csv",
        "csv",
    )
    assert (origin.fill_quantity, origin.filled_by) == (2, "importer")
    assert history.pack is None


# --- scope and errors ---------------------------------------------------------------------------------------------


def test_unknown_serial_raises_the_lookups_message(plant):
    with pytest.raises(UnknownSerial) as raised:
        selectors.get_pack_history(user=plant.steward, product_code=plant.unit_pool.product_code, serial="NOPE")

    assert raised.value.message == (
        f"Serial 'NOPE' of {plant.unit_pool.product_code} is in no pool: it was never generated or imported here. "
        "Check the product code and the serial."
    )


def test_another_companys_user_is_told_exactly_what_an_unknown_serial_gets(plant):
    (unit,) = plant.units(1)
    outsider = make_user()
    make_membership(user=outsider, company=make_company())

    with pytest.raises(UnknownSerial) as hidden:
        history_of(unit, user=outsider)
    with pytest.raises(UnknownSerial) as unknown:
        selectors.get_pack_history(user=outsider, product_code=unit.product_code, serial="NOPE")

    assert hidden.value.message == unknown.value.message.replace("'NOPE'", repr(unit.serial))
    assert hidden.value.status_code == 404

    pallet, _, _ = plant.pallet(cases=1, units_per_case=1)
    with pytest.raises(UnknownSerial):
        history_of(pallet, user=outsider)


def test_a_member_of_the_owner_sees_its_packs(plant):
    pallet, _, units = plant.pallet(cases=1, units_per_case=2)
    member = make_user()
    make_membership(user=member, company=plant.company)

    history = history_of(pallet, user=member)

    assert history.below.counts == {"cases": 1, "units": 2}
    assert [ref.serial for ref in history_of(units[0], user=member).above][-1] == pallet.serial


def test_containers_of_another_company_are_left_out_of_the_hierarchy(plant):
    other = Plant(order_number="PO-0043")
    (foreign_pallet,) = other.containers(1, level=3)
    (case,) = plant.containers(1, level=2, parent=foreign_pallet)
    (unit,) = plant.units(1, parent=case)
    member = make_user()
    make_membership(user=member, company=plant.company)

    assert [ref.serial for ref in history_of(unit, user=member).above] == [case.serial]
    assert [ref.serial for ref in history_of(unit).above] == [case.serial, foreign_pallet.serial]


# --- query count --------------------------------------------------------------------------------------------------

MAX_QUERIES = 5


@pytest.mark.parametrize(
    ("cases", "units_per_case"),
    [(1, 3), (12, 30)],
    ids=["small", "large"],
)
def test_query_count_does_not_grow_with_the_tree(plant, django_assert_max_num_queries, cases, units_per_case):
    member = make_user()
    make_membership(user=member, company=plant.company)
    pallet, case_rows, units = plant.pallet(cases=cases, units_per_case=units_per_case)
    (lone_case,) = plant.containers(1, level=2)
    loose = plant.units(units_per_case * 2, parent=lone_case)  # a 2-level tree: case → units
    counted = {}
    for label, pack in [("pallet", pallet), ("case", case_rows[-1]), ("unit", units[-1]), ("2-level", lone_case)]:
        member = type(member).objects.get(pk=member.pk)  # a new request: nothing cached on the user
        with django_assert_max_num_queries(MAX_QUERIES), CaptureQueriesContext(connection) as queries:
            history = history_of(pack, user=member)
        counted[label] = len(queries)
    assert history.below.total == len(loose)
    # The same for both sizes and every level: membership, pack (with pool, batch, order and the scope check), pool
    # history (fill and allocation range with the allocation, requester, order), events, and one statement for the
    # hierarchy above and below.
    assert counted == {"pallet": 5, "case": 5, "unit": 5, "2-level": 5}


# --- API ----------------------------------------------------------------------------------------------------------


def test_api_returns_the_whole_history_as_json(plant, make_api_client):
    pallet, cases, units = plant.pallet(cases=2, units_per_case=2)
    client = make_api_client(make_user(roles=("Auditor",)))

    response = client.get("/api/v1/packs/history/", {"sscc": cases[0].serial})

    assert response.status_code == 200
    body = response.json()
    assert (body["product_code"], body["serial"]) == ("", cases[0].serial)
    assert body["pack"]["status"] == "packed" and body["pack"]["level"] == 2
    assert body["pool"]["allocation"]["reference"] == "PO-0042"
    assert body["pool"]["allocation"]["packaging_order"] == "PO-0042"
    assert [(a["serial"], a["level_name"]) for a in body["above"]] == [(pallet.serial, "pallet")]
    assert body["below"]["counts"] == {"units": 2}
    assert [item["serial"] for item in body["below"]["items"]] == [u.serial for u in units[:2]]
    assert set(body["below"]["items"][0]) == {
        "product_code",
        "serial",
        "level",
        "level_name",
        "status",
        "depth",
        "parent_serial",
    }

    unit = client.get(
        "/api/v1/packs/history/", {"product_code": units[0].product_code, "serial": units[0].serial}
    ).json()
    assert [a["serial"] for a in unit["above"]] == [cases[0].serial, pallet.serial]


def test_api_answers_404_outside_the_company_and_400_for_a_half_query(plant, make_api_client):
    (unit,) = plant.units(1)
    outsider = make_user(roles=("Steward",))
    make_membership(user=outsider, company=make_company())
    client = make_api_client(outsider)

    hidden = client.get("/api/v1/packs/history/", {"product_code": unit.product_code, "serial": unit.serial})
    half = client.get("/api/v1/packs/history/", {"product_code": unit.product_code})

    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "unknown_serial"
    assert "never generated or imported here" in hidden.json()["error"]["message"]
    assert half.status_code == 400
    assert "serial" in half.json()["error"]["fields"]


def test_api_needs_the_view_pack_permission(plant, make_api_client):
    (unit,) = plant.units(1)
    client = make_api_client(make_user())

    response = client.get("/api/v1/packs/history/", {"product_code": unit.product_code, "serial": unit.serial})

    assert response.status_code == 403


# --- admin --------------------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client_verified(make_verified_client):
    return make_verified_client(make_user(is_staff=True, roles=("Auditor",)))


def test_admin_page_shows_the_timeline_and_the_hierarchy(plant, admin_client_verified):
    pallet, cases, units = plant.pallet(cases=2, units_per_case=2)
    PackEvent.objects.create(
        pack=cases[1],
        report=plant.report(LineReport.Kind.AGGREGATION, by=make_user(username="line-7")),
        action=PackEvent.Action.PACKED,
        parent=pallet,
        occurred_at=T0,
    )
    url = reverse("admin:serialization_pack_changelist")

    response = admin_client_verified.get(url, {"sscc": cases[1].serial})

    assert response.status_code == 200
    assert response.context["history"].serial == cases[1].serial
    html = response.text
    assert "Pack history" in html and "Timeline" in html and "line-7" in html
    assert f'href="{url}?sscc={pallet.serial}"' in html  # the pallet above, and the event's container
    assert f"{url}?product_code={units[3].product_code}&amp;serial={units[3].serial}" in html
    assert "1 pallets" not in html and "2 units" in html
    assert "PO-0042" in html and "LOT-7" in html


def test_admin_page_reports_an_unknown_serial_on_the_form(plant, admin_client_verified):
    url = reverse("admin:serialization_pack_changelist")

    response = admin_client_verified.get(url, {"product_code": plant.unit_pool.product_code, "serial": "NOPE"})

    assert response.status_code == 200
    assert response.context["history"] is None
    assert response.context["form"].errors["serial"] == [
        f"Serial 'NOPE' of {plant.unit_pool.product_code} is in no pool: it was never generated or imported here. "
        "Check the product code and the serial."
    ]


def test_admin_page_is_linked_from_the_app_list_and_a_packs_page_redirects_to_it(plant, admin_client_verified):
    (unit,) = plant.units(1)
    url = reverse("admin:serialization_pack_changelist")

    index = admin_client_verified.get(reverse("admin:app_list", args=["serialization"]))
    change = admin_client_verified.get(reverse("admin:serialization_pack_change", args=[unit.pk]))

    assert f'href="{url}"' in index.text
    assert change.status_code == 302
    assert change.url == f"{url}?product_code={unit.product_code}&serial={unit.serial}"


def test_admin_page_needs_the_second_factor(plant, client):
    client.force_login(make_user(is_staff=True, is_superuser=True))

    response = client.get(reverse("admin:serialization_pack_changelist"))

    assert response.status_code == 302
