"""The foreign keys of Pack and PackEvent on PostgreSQL are statement-level triggers (migration 0010): each must still
refuse what a foreign key refuses — a row naming a missing pool, batch, order, parent, pack or report; deleting or
truncating what rows still name — and hold still the columns that never change."""

import datetime

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from serialization.models import Batch, LineReport, Pack, PackagingOrder, PackEvent, SerialPool
from tests.factories import make_location
from tests.serialization.test_models import make_pool_row

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture(autouse=True)
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): the triggers that stand for the foreign keys")


class Scene:
    def __init__(self) -> None:
        self.pool = make_pool_row()
        owner, product = self.pool.owner, self.pool.product
        self.batch = Batch.objects.create(product=product, lot="L1", expiry="281200")
        line = make_location(company=owner, kind="line", name="Line 1")
        self.order = PackagingOrder.objects.create(number="PO-1", batch=self.batch, line=line, planned_quantity=10)
        self.report = LineReport.objects.create(
            report_id="r-1", kind="commissioning", order=self.order, status="applied"
        )
        self.now = timezone.now()
        self.case = self.pack(index=1, serial="000000000001", level=2)
        self.unit = self.pack(index=2, serial="000000000002", parent=self.case)
        self.event = PackEvent.objects.create(
            pack=self.unit, report=self.report, action="commissioned", occurred_at=self.now
        )

    def pack(self, **fields) -> Pack:
        defaults = {"pool": self.pool, "batch": self.batch, "order": self.order, "commissioned_at": self.now}
        return Pack.objects.create(product_code=self.pool.product_code, **(defaults | fields))


@pytest.fixture
def scene():
    return Scene()


def refused(constraint: str):
    return pytest.raises(IntegrityError, match=constraint)


def _missing(model) -> int:
    return (model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1000


@pytest.mark.parametrize(
    ("field", "model", "constraint"),
    [
        ("pool_id", SerialPool, "pack_pool"),
        ("batch_id", Batch, "pack_batch"),
        ("order_id", PackagingOrder, "pack_order"),
        ("parent_id", Pack, "pack_parent"),
    ],
)
def test_a_pack_naming_a_missing_row_is_refused(scene, field, model, constraint):
    with refused(constraint), transaction.atomic():
        Pack.objects.bulk_create(
            [
                Pack(
                    pool=scene.pool,
                    index=10,
                    product_code=scene.pool.product_code,
                    serial="A10",
                    commissioned_at=scene.now,
                ),
                Pack(
                    pool=scene.pool,
                    index=11,
                    product_code=scene.pool.product_code,
                    serial="A11",
                    commissioned_at=scene.now,
                    **{field: _missing(model)},
                ),
            ]
        )
    assert Pack.objects.count() == 2


def test_a_parent_in_the_same_statement_is_found(scene):
    # A report may commission a case and the units inside it at once.
    case_id = _missing(Pack)
    Pack.objects.bulk_create(
        [
            Pack(
                id=case_id,
                pool=scene.pool,
                index=20,
                product_code="",
                serial="SSCC20",
                level=2,
                commissioned_at=scene.now,
            ),
            Pack(
                pool=scene.pool,
                index=21,
                product_code=scene.pool.product_code,
                serial="A21",
                parent_id=case_id,
                commissioned_at=scene.now,
            ),
        ]
    )
    assert Pack.objects.get(serial="A21").parent_id == case_id


def test_moving_a_pack_into_a_missing_parent_is_refused_and_its_origin_is_fixed(scene):
    with refused("pack_parent"), transaction.atomic():
        Pack.objects.filter(pk=scene.unit.pk).update(parent_id=_missing(Pack))
    with refused("pack_origin_unchanged"), transaction.atomic():
        Pack.objects.filter(pk=scene.unit.pk).update(order_id=None)
    Pack.objects.filter(pk=scene.unit.pk).update(parent=None, status="commissioned")  # unpacking is allowed
    assert Pack.objects.get(pk=scene.unit.pk).parent_id is None


@pytest.mark.parametrize(
    ("field", "model", "constraint"),
    [
        ("pack_id", Pack, "pack_event_pack"),
        ("report_id", LineReport, "pack_event_report"),
        ("parent_id", Pack, "pack_event_parent"),
    ],
)
def test_an_event_naming_a_missing_row_is_refused(scene, field, model, constraint):
    fields = {"pack_id": scene.unit.pk, "report_id": scene.report.pk} | {field: _missing(model)}
    with refused(constraint), transaction.atomic():
        PackEvent.objects.create(action="packed", occurred_at=scene.now, **fields)
    with refused("pack_event_unchanged"), transaction.atomic():
        PackEvent.objects.filter(pk=scene.event.pk).update(pack_id=scene.case.pk)
    assert PackEvent.objects.count() == 1


@pytest.mark.parametrize(
    ("what", "constraint"),
    [
        ("pool", "pack_pool"),
        ("batch", "pack_batch"),
        ("order", "pack_order"),
        ("case", "pack_parent"),
        ("unit", "pack_event_pack"),
        ("report", "pack_event_report"),
    ],
)
def test_deleting_a_row_that_packs_or_events_name_is_refused(scene, what, constraint):
    # Past its retention, so the retention triggers let the delete through to the reference checks.
    Batch.objects.filter(pk=scene.batch.pk).update(keep_until=datetime.date(2000, 1, 1))
    obj = getattr(scene, what)
    table = obj._meta.db_table
    with refused(constraint), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [obj.pk])  # noqa: S608 - a model's table
    assert type(obj).objects.filter(pk=obj.pk).exists()


def test_truncating_packs_that_events_name_is_refused(scene):
    with refused("pack_event_pack"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Pack._meta.db_table}")
    assert Pack.objects.count() == 2
