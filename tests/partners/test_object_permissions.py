"""What an MAH shares with a CMO reaches the CMO's users through django-guardian object permissions on the CMO's
company group — the partnership, the partner pool, the assignment, and an MAH batch and order run on the CMO's line —
and through nothing else: take the grant away and every door answers as if the object did not exist."""

import pytest
from django.urls import reverse
from guardian.shortcuts import get_group_perms

from masterdata.permissions import company_group_name, revoke_company_object_permissions
from partners import services as partner_services
from serialization.models import PackagingOrder
from serialization.selectors import list_batches, list_orders, list_pools
from serialization.services import create_generated_pool
from serialization.services.batches import create_batch, create_packaging_order
from tests.factories import make_company, make_location, make_membership, make_product, make_user
from tests.serialization.test_services import ensure_eu_market

pytestmark = pytest.mark.django_db


class Plant:
    def __init__(self) -> None:
        ensure_eu_market()
        self.mah = make_company(name="MAH", is_mah=True, is_cmo=False)
        self.steward = make_user(username="mah-steward", roles=("Steward",))
        make_membership(user=self.steward, company=self.mah)
        self.product = make_product(owner=self.mah, markets=("EU",))
        create_generated_pool(owner=self.mah, actor=self.steward, product=self.product, initial_fill=1_000)
        self.cmo = make_company(name="CMO A", is_mah=False, is_cmo=True)
        self.cmo_user = make_user(username="cmo-a", roles=("CMO user",))
        make_membership(user=self.cmo_user, company=self.cmo)
        site = make_location(company=self.cmo, kind="site")
        self.line = make_location(company=self.cmo, kind="line", parent=site, gln=site.gln, gln_extension="1")
        self.partnership = partner_services.create_partnership(
            mah=self.mah, cmo=self.cmo, products=[self.product], actor=self.steward
        )
        self.assignment = partner_services.assign_serials(
            partnership=self.partnership, product=self.product, quantity=100, actor=self.steward, request_id="a-1"
        )
        self.batch = create_batch(product=self.product, lot="LOT-CMO-1", expiry="281200", actor=self.steward)


@pytest.fixture
def plant():
    return Plant()


def test_an_order_on_the_cmo_line_grants_its_group_the_order_and_the_batch(plant):
    order = create_packaging_order(
        batch=plant.batch, line=plant.line, number="CMO-PO-1", planned_quantity=10, actor=plant.steward
    )

    group = plant.cmo_user.groups.get(name=company_group_name(plant.cmo))
    assert sorted(get_group_perms(group, order)) == ["change_packagingorder", "view_packagingorder"]
    assert list(get_group_perms(group, plant.batch)) == ["view_batch"]
    assert list(get_group_perms(group, plant.assignment.partner_pool)) == ["view_serialpool"]
    assert list(list_orders(user=plant.cmo_user)) == [order]
    assert list(list_batches(user=plant.cmo_user)) == [plant.batch]


def test_an_order_on_the_cmo_line_without_a_grant_is_not_visible_to_the_cmo(plant):
    # Written behind the services' back: running on the CMO's line alone shows the CMO nothing of the MAH's.
    PackagingOrder.objects.create(number="CMO-PO-RAW", batch=plant.batch, line=plant.line, planned_quantity=10)

    assert list(list_orders(user=plant.cmo_user)) == []
    assert list(list_batches(user=plant.cmo_user)) == []
    assert [o.number for o in list_orders(user=plant.steward)] == ["CMO-PO-RAW"]  # the MAH owns it


def test_taking_the_grants_back_answers_404_on_every_door(plant, make_api_client, make_verified_client):
    order = create_packaging_order(
        batch=plant.batch, line=plant.line, number="CMO-PO-1", planned_quantity=10, actor=plant.steward
    )
    partner_pool = plant.assignment.partner_pool
    api, portal = make_api_client(plant.cmo_user), make_verified_client(plant.cmo_user)
    urls = [
        reverse("api-v1:order-detail", args=[order.pk]),
        reverse("api-v1:batch-detail", args=[plant.batch.pk]),
        reverse("api-v1:pool-detail", args=[partner_pool.pk]),
    ]
    assert [api.get(url).status_code for url in urls] == [200, 200, 200]
    assert portal.get(reverse("portal:order", args=[order.pk])).status_code == 200

    revoke_company_object_permissions(company=plant.cmo, obj=order, actions=("view", "change"))
    revoke_company_object_permissions(company=plant.cmo, obj=plant.batch)
    revoke_company_object_permissions(company=plant.cmo, obj=partner_pool)

    assert [api.get(url).status_code for url in urls] == [404, 404, 404]
    assert portal.get(reverse("portal:order", args=[order.pk])).status_code == 404
    assert list(list_pools(user=plant.cmo_user)) == []
    assert list(list_pools(user=plant.steward)) != []  # the MAH still sees its own pool


# --- the role's model permissions, on top of the object scope ---------------------------------------------------


def test_the_portal_asks_for_the_role_permission_of_each_page(plant, make_verified_client):
    order = create_packaging_order(
        batch=plant.batch, line=plant.line, number="CMO-PO-1", planned_quantity=10, actor=plant.steward
    )
    # A member of the CMO whose role only reads (an auditor): pages open, actions are refused.
    reader = make_user(username="cmo-auditor", roles=("Auditor",))
    make_membership(user=reader, company=plant.cmo)
    no_role = make_user(username="cmo-no-role", roles=())
    make_membership(user=no_role, company=plant.cmo)
    reader_client, no_role_client = make_verified_client(reader), make_verified_client(no_role)
    request_url = reverse("portal:order-request-serials", args=[order.pk])

    assert reader_client.get(reverse("portal:pools")).status_code == 200
    assert reader_client.get(reverse("portal:order", args=[order.pk])).status_code == 200
    refused = reader_client.post(request_url, {"quantity": 5, "cases": 0, "pallets": 0, "request_id": "r-1"})
    assert refused.status_code == 403
    assert "may not request serial numbers" in refused.content.decode()
    assert "serialization.add_allocation" in refused.content.decode()
    assert order.allocations.count() == 0

    page = no_role_client.get(reverse("portal:pools"))
    assert page.status_code == 403
    assert "may not see serial pools" in page.content.decode()

    allowed = make_verified_client(plant.cmo_user).post(
        request_url, {"quantity": 5, "cases": 0, "pallets": 0, "request_id": "r-2"}
    )
    assert allowed.status_code == 302
    assert order.allocations.get().quantity == 5
