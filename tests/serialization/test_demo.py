import pytest
from django.core.management import call_command

from serialization.models import Allocation, ListedSerial, SerialPool

pytestmark = pytest.mark.django_db


def test_demo_pools_cover_each_source_and_loading_twice_changes_nothing():
    call_command("load_demo", password="demo-password-for-tests-9")
    call_command("load_demo_pools")
    call_command("load_demo_pools")

    pools = {(p.product_code or p.sscc_prefix): p for p in SerialPool.objects.all()}
    assert set(pools) == {"09521234543213", "00312345678906", "09521234543220", "9521234"}
    eu = pools["09521234543213"]
    assert (eu.randomised, eu.filled, eu.assigned, eu.available) == (True, 1_000_000, 10_000, 990_000)
    assert eu.issue_limit == 473_838_133_832_161  # floor(36^12 × 10^-4): the EU guess bound
    assert (pools["00312345678906"].randomised, pools["00312345678906"].filled) == (False, 100_000)
    ru = pools["09521234543220"]
    assert (ru.source, ru.filled) == (SerialPool.Source.FILE, 2_000)
    listed = ListedSerial.objects.filter(pool=ru)
    assert listed.count() == 2_000
    assert all(len(p["91"]) == 4 and len(p["92"]) == 44 for p in listed.values_list("parameters", flat=True))
    assert Allocation.objects.get().request_id == "demo-PO-1001"
    assert pools["9521234"].kind == SerialPool.Kind.SSCC
