import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from partners.models import Partnership, SerialAssignment
from partners.selectors import list_partnerships
from serialization.selectors import list_orders
from serialization.services.partner_pools import partner_pool_counts

pytestmark = pytest.mark.django_db


def test_demo_partnership_gives_the_demo_cmo_user_serials_and_an_order_and_loading_twice_changes_nothing():
    call_command("load_demo", password="demo-password-for-tests-9")
    call_command("load_demo_pools")
    call_command("load_demo_partners")
    call_command("load_demo_partners")

    partnership = Partnership.objects.get()
    assert (partnership.mah.name, partnership.cmo.name) == ("Acme Pharma", "Contract Pack GmbH")
    assignment = SerialAssignment.objects.get()
    assert partner_pool_counts(partner_pool=assignment.partner_pool) == {
        "filled": 5_000,
        "assigned": 0,
        "available": 5_000,
        "returned": 0,
    }
    cmo_user = get_user_model().objects.get(username="cmo")
    assert list(list_partnerships(user=cmo_user)) == [partnership]
    assert [order.number for order in list_orders(user=cmo_user)] == ["CMO-PO-2001"]
