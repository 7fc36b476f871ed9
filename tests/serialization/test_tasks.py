"""django-q2 entry points: replenishment (and its schedule) and export jobs."""

import io

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from audit.models import Incident
from serialization import tasks
from serialization.models import ExportJob, ListedSerial, PoolFill, SerialPool
from serialization.services import allocate_serials, create_generated_pool, create_list_pool
from serialization.services.replenishment import REASON
from tests.factories import make_product, make_user

pytestmark = pytest.mark.django_db


def generated_pool(*, markets=("US",), fill=1_000, **kwargs) -> SerialPool:
    product = make_product(markets=markets)
    return create_generated_pool(owner=product.owner, actor=make_user(), product=product, initial_fill=fill, **kwargs)


def list_pool(count: int, **limits) -> SerialPool:
    product = make_product(markets=("RU",))
    pool = create_list_pool(owner=product.owner, actor=make_user(), product=product, source=SerialPool.Source.SAP_ATTP)
    ListedSerial.objects.bulk_create(
        ListedSerial(pool=pool, ordinal=i, product_code=pool.product_code, serial=f"L{i:05d}") for i in range(count)
    )
    SerialPool.objects.filter(pk=pool.pk).update(filled=count, **limits)
    pool.refresh_from_db()
    return pool


def allocate(pool, quantity, request_id="r1"):
    return allocate_serials(pool=pool, quantity=quantity, actor=None, request_id=request_id, purpose="batch")


def test_replenishment_refills_a_generated_pool_up_to_its_maximum():
    pool = generated_pool(fill=1_000, min_available=300, max_available=2_000)
    allocate(pool, 800)  # 200 available, under the minimum

    summary = tasks.replenish_pools()

    pool.refresh_from_db()
    assert (pool.filled, pool.available, pool.assigned) == (2_800, 2_000, 800)
    fill = PoolFill.objects.filter(pool=pool).first()
    assert (fill.quantity, fill.reason, fill.actor) == (1_800, REASON, None)
    assert summary == "1 pools under their minimum: 1800 serials filled, 0 alerts"
    assert not Incident.objects.exists()


def test_replenishment_leaves_pools_at_or_above_their_minimum_alone():
    at_minimum = generated_pool(fill=300, min_available=300, max_available=900)
    without_thresholds = generated_pool(fill=10)
    allocate(without_thresholds, 10)

    assert tasks.replenish_pools() == "0 pools under their minimum: 0 serials filled, 0 alerts"

    at_minimum.refresh_from_db()
    without_thresholds.refresh_from_db()
    assert (at_minimum.filled, without_thresholds.filled) == (300, 10)


def test_replenishment_stops_at_the_issue_limit_and_raises_one_incident():
    # EU bound on 10⁶ numeric serials: at most 100 may ever be issued.
    pool = generated_pool(markets=("EU",), alphabet="0123456789", length=6, fill=60, min_available=50, max_available=80)
    allocate(pool, 25)  # 35 available: wants +45 to reach 80, the limit allows +40

    tasks.replenish_pools()
    pool.refresh_from_db()
    assert (pool.filled, pool.available) == (100, 75)

    allocate(pool, 30, "r2")  # 45 available, nothing left to fill: the same problem again
    tasks.replenish_pools()

    pool.refresh_from_db()
    assert (pool.filled, pool.available) == (100, 45)
    incident = Incident.objects.get()
    assert (incident.kind, incident.severity, incident.subject_type, incident.subject_id) == (
        "serial_supply",
        "medium",
        "serialization.serialpool",
        str(pool.pk),
    )
    assert incident.title == f"Serial pool cannot be replenished: {pool.product_code}"
    assert incident.details["message"] == (
        f"Generated pool {pool} ({pool.product_code}) cannot be refilled to 80 available: the market's guess bound "
        "caps it at 100 serials and 100 are filled. Create a pool with a longer format."
    )


def test_replenishment_alerts_for_a_list_pool_under_its_minimum(caplog):
    pool = list_pool(10, min_available=50)

    tasks.replenish_pools()

    incident = Incident.objects.get()
    assert incident.title == f"Serial pool below minimum: import needed: {pool.product_code}"
    assert incident.details == {
        "pool": pool.pk,
        "identifier": pool.product_code,
        "available": 10,
        "message": f"List pool {pool} ({pool.product_code}) has 10 serials available, below its minimum of 50. "
        "Import more serials from SAP ATTP.",
    }
    pool.refresh_from_db()
    assert pool.filled == 10
    assert "below its minimum of 50" in caplog.text


def test_replenish_pools_command_reports_each_pool():
    pool = generated_pool(fill=10, min_available=20, max_available=30)
    out = io.StringIO()

    call_command("replenish_pools", stdout=out)

    assert out.getvalue() == f"pool {pool.pk}: 10 available, filled 20\n"


def test_replenishment_is_scheduled_every_15_minutes():
    schedule = Schedule.objects.get(name="serialization: replenish pools")

    assert (schedule.func, schedule.schedule_type, schedule.minutes, schedule.repeats) == (
        "serialization.tasks.replenish_pools",
        Schedule.MINUTES,
        15,
        -1,
    )


def test_run_export_task(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    allocation = allocate(generated_pool(fill=20), 20)
    job = ExportJob.objects.create(allocation=allocation, format="csv", notation="serial", total=20)

    assert tasks.run_export(job.pk) == f"export {job.pk}: done, 20 of 20 serials"
