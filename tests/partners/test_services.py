"""Partnerships, serial assignments and returns through ``partners.services``, the object permissions that follow
from them, and the MAH's usage overview — with the exact counts on both sides (the MAH's pool and the CMO's partner
pool) after every step.

The scene helpers here are shared by test_api.py and test_isolation_matrix.py.
"""

import itertools

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from guardian.shortcuts import get_groups_with_perms, get_perms

from audit.exceptions import PermissionDenied
from masterdata.models import CompanyMembership
from masterdata.permissions import (
    company_group_name,
    grant_company_object_permissions,
    revoke_company_object_permissions,
    sync_company_group,
)
from masterdata.services import assign_membership, remove_membership
from partners import selectors, services
from partners.models import Partnership, SerialAssignment
from partners.services import PartnershipInactive, ProductNotInPartnership
from serialization.exceptions import IdempotencyConflict, PoolExhausted
from serialization.models import Allocation, Pack, PartnerSegment, SerialPool
from serialization.services import allocate_serials, create_generated_pool, partner_pool_counts
from tests.factories import make_company, make_membership, make_product, make_user

pytestmark = pytest.mark.django_db

_numbers = itertools.count(1)

PARTNER_PERMISSIONS = [
    f"{action}_{model}" for action in ("add", "change", "view") for model in ("partnership", "serialassignment")
]


# --- the scene ----------------------------------------------------------------------------------------------------


def make_mah(name: str | None = None):
    return make_company(name=name or f"Medi Pharma {next(_numbers)}", is_mah=True)


def make_cmo(name: str | None = None, **flags):
    return make_company(name=name or f"Contract Pack {next(_numbers)}", **{"is_mah": False, "is_cmo": True, **flags})


def make_steward(company, *, username: str | None = None):
    """An MAH's master-data steward who may also run partnerships (the Steward role does not grant partners yet)."""
    user = make_user(username=username, roles=["Steward"], is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="partners", codename__in=PARTNER_PERMISSIONS)
    )
    make_membership(user=user, company=company)
    return user


def make_cmo_user(company, *, username: str | None = None, roles=("CMO user",)):
    user = make_user(username=username, roles=list(roles))
    make_membership(user=user, company=company)
    return user


def make_mah_pool(*, mah, product, actor, fill: int = 1_000) -> SerialPool:
    return create_generated_pool(owner=mah, actor=actor, product=product, randomised=False, initial_fill=fill)


def pool_state(pool: SerialPool) -> dict:
    pool.refresh_from_db()
    return {"filled": pool.filled, "assigned": pool.assigned, "available": pool.available}


def commission(pool: SerialPool, count: int, *, first: int = 0) -> None:
    """Packs at ``count`` indices of ``pool`` from ``first`` on, as a line report would leave them: a partner pool's
    serial is recorded at its index in the MAH pool, where the serial was made."""
    now = timezone.now()
    target, indices = pool, list(range(first, first + count))
    if pool.parent_pool_id is not None:
        segments = list(
            PartnerSegment.objects.filter(pool=pool).values_list("first_index", "count", "parent_first_index")
        )
        target = pool.parent_pool
        indices = [p + (i - f) for i in indices for f, c, p in segments if f <= i < f + c]
    Pack.objects.bulk_create(
        Pack(pool=target, index=i, product_code=pool.product_code, serial=f"T{pool.pk:04d}{i:08d}", commissioned_at=now)
        for i in indices
    )


class Scene:
    """An MAH with two products (a generated pool of 1,000 serials for the first), two CMOs, a partnership with
    CMO A for the first product, a steward of the MAH and a user of each CMO."""

    def __init__(self) -> None:
        self.mah = make_mah()
        self.steward = make_steward(self.mah)
        self.product = make_product(owner=self.mah, name="Amoxicillin 500 mg tablets")
        self.other_product = make_product(owner=self.mah, name="Ibuprofen 400 mg tablets")
        self.pool = make_mah_pool(mah=self.mah, product=self.product, actor=self.steward)
        self.cmo_a = make_cmo()
        self.cmo_b = make_cmo()
        self.user_a = make_cmo_user(self.cmo_a)
        self.user_b = make_cmo_user(self.cmo_b)
        self.partnership = services.create_partnership(
            mah=self.mah, cmo=self.cmo_a, products=[self.product], actor=self.steward
        )

    def assign(self, quantity: int, *, request_id: str | None = None, product=None, partnership=None):
        return services.assign_serials(
            partnership=partnership or self.partnership,
            product=product or self.product,
            quantity=quantity,
            actor=self.steward,
            request_id=request_id or f"assign-{next(_numbers)}",
        )


@pytest.fixture
def scene():
    return Scene()


# --- partnerships -------------------------------------------------------------------------------------------------


def test_create_partnership_grants_view_to_the_cmo_group_holding_its_members(scene):
    group = Group.objects.get(name=company_group_name(scene.cmo_a))

    assert list(group.user_set.all()) == [scene.user_a]
    assert get_perms(group, scene.partnership) == ["view_partnership"]
    assert list(get_groups_with_perms(scene.partnership)) == [group]
    assert scene.user_a.has_perm("partners.view_partnership", scene.partnership)
    assert not scene.user_b.has_perm("partners.view_partnership", scene.partnership)
    assert scene.partnership.created_by == scene.steward
    assert list(scene.partnership.products.all()) == [scene.product]
    assert scene.partnership.history.latest().history_user == scene.steward


def test_create_partnership_refuses_a_company_without_the_mah_or_cmo_role(scene):
    not_a_cmo = make_mah()
    with pytest.raises(ValidationError) as refused:
        services.create_partnership(mah=scene.mah, cmo=not_a_cmo, products=[], actor=scene.steward)
    assert refused.value.message_dict == {
        "cmo": [f"{not_a_cmo} is not a contract manufacturer; tick its CMO role first."]
    }
    with pytest.raises(PermissionDenied):  # nobody to trace the change to
        services.create_partnership(mah=scene.mah, cmo=scene.cmo_b, products=[], actor=None)


def test_create_partnership_refuses_a_cmo_that_is_not_an_mah_as_mah(scene):
    staff = make_user(is_staff=True)  # the operator's staff: no membership, may act for any company

    with pytest.raises(ValidationError) as refused:
        services.create_partnership(mah=scene.cmo_b, cmo=scene.cmo_a, products=[], actor=staff)

    assert refused.value.message_dict == {
        "mah": [f"{scene.cmo_b} is not a marketing authorisation holder; tick its MAH role first."]
    }


def test_create_partnership_refuses_products_of_another_company(scene):
    foreign = make_product(owner=make_mah())

    with pytest.raises(ValidationError) as refused:
        services.create_partnership(
            mah=scene.mah, cmo=scene.cmo_b, products=[scene.product, foreign], actor=scene.steward
        )

    assert refused.value.message_dict == {
        "products": [
            f"A partnership covers only products of {scene.mah}; not {foreign.product_code} ({foreign.owner})."
        ]
    }
    assert not Partnership.objects.filter(cmo=scene.cmo_b).exists()


def test_create_partnership_refuses_a_second_partnership_of_the_same_pair(scene):
    with pytest.raises(ValidationError) as refused:
        services.create_partnership(mah=scene.mah, cmo=scene.cmo_a, products=[], actor=scene.steward)

    assert "already exists" in str(refused.value)


def test_a_user_of_another_company_may_not_create_or_revoke_the_mahs_partnerships(scene):
    with pytest.raises(PermissionDenied):
        services.create_partnership(mah=scene.mah, cmo=scene.cmo_b, products=[], actor=scene.user_b)
    with pytest.raises(PermissionDenied):
        services.revoke_partnership(partnership=scene.partnership, actor=scene.user_a, reason="mine now")

    assert Partnership.objects.get().status == Partnership.Status.ACTIVE


def test_update_partnership_changes_products_and_status_but_never_to_revoked(scene):
    updated = services.update_partnership(
        partnership=scene.partnership,
        actor=scene.steward,
        data={"status": Partnership.Status.SUSPENDED},
        products=[scene.product, scene.other_product],
    )

    assert updated.status == Partnership.Status.SUSPENDED
    assert set(updated.products.all()) == {scene.product, scene.other_product}
    with pytest.raises(ValidationError) as refused:
        services.update_partnership(
            partnership=scene.partnership, actor=scene.steward, data={"status": Partnership.Status.REVOKED}
        )
    assert list(refused.value.message_dict) == ["status"]
    with pytest.raises(ValidationError):
        services.update_partnership(
            partnership=scene.partnership, actor=scene.steward, products=[make_product(owner=make_mah())]
        )
    assert set(Partnership.objects.get().products.all()) == {scene.product, scene.other_product}


def test_revoke_keeps_history_and_refuses_every_later_change(scene):
    revoked = services.revoke_partnership(partnership=scene.partnership, actor=scene.steward, reason="contract ended")

    assert (revoked.status, revoked.revoke_reason) == (Partnership.Status.REVOKED, "contract ended")
    assert revoked.revoked_at is not None
    latest = revoked.history.latest()
    assert (latest.status, latest.history_user, latest.history_change_reason) == (
        "revoked",
        scene.steward,
        "revoked: contract ended",
    )
    assert revoked.history.count() >= 2  # created, revoked (and the m2m changes)
    with pytest.raises(PartnershipInactive):
        services.revoke_partnership(partnership=scene.partnership, actor=scene.steward, reason="again")
    with pytest.raises(PartnershipInactive):
        services.update_partnership(
            partnership=scene.partnership, actor=scene.steward, data={"status": Partnership.Status.ACTIVE}
        )
    with pytest.raises(ValidationError):
        services.revoke_partnership(partnership=scene.partnership, actor=scene.steward, reason="  ")
    # The CMO still sees what happened.
    assert list(selectors.list_partnerships(user=scene.user_a)) == [scene.partnership]


# --- assignments ---------------------------------------------------------------------------------------------------


def test_assign_serials_moves_exact_counts_on_both_sides(scene):
    assignment = scene.assign(300, request_id="po-1")

    partner_pool = assignment.partner_pool
    assert pool_state(scene.pool) == {"filled": 1_000, "assigned": 300, "available": 700}
    assert pool_state(partner_pool) == {"filled": 300, "assigned": 0, "available": 300}
    assert (partner_pool.owner, partner_pool.parent_pool, partner_pool.source) == (
        scene.cmo_a,
        scene.pool,
        SerialPool.Source.PARTNER,
    )
    allocation = assignment.allocation
    assert (allocation.pool, allocation.quantity, allocation.purpose, allocation.reference, allocation.request_id) == (
        scene.pool,
        300,
        Allocation.Purpose.CMO,
        f"partnership {scene.partnership.pk}",
        "po-1",
    )
    assert (assignment.quantity, assignment.product, assignment.created_by) == (300, scene.product, scene.steward)
    assert assignment.history.latest().history_user == scene.steward
    group = Group.objects.get(name=company_group_name(scene.cmo_a))
    assert get_perms(group, partner_pool) == ["view_serialpool"]
    assert get_perms(group, assignment) == ["view_serialassignment"]

    second = scene.assign(200)

    assert second.partner_pool == partner_pool  # one partner pool per CMO and MAH pool
    assert pool_state(scene.pool) == {"filled": 1_000, "assigned": 500, "available": 500}
    assert pool_state(partner_pool) == {"filled": 500, "assigned": 0, "available": 500}


def test_assign_serials_is_idempotent_by_request_id(scene):
    first = scene.assign(100, request_id="retry-me")

    again = scene.assign(100, request_id="retry-me")

    assert again == first
    assert SerialAssignment.objects.count() == 1
    assert pool_state(scene.pool)["assigned"] == 100
    assert pool_state(first.partner_pool)["filled"] == 100
    with pytest.raises(IdempotencyConflict) as conflict:
        scene.assign(101, request_id="retry-me")
    assert conflict.value.field == "request_id"
    assert pool_state(scene.pool)["assigned"] == 100


@pytest.mark.parametrize("status", [Partnership.Status.REVOKED, Partnership.Status.SUSPENDED])
def test_assign_serials_is_refused_unless_the_partnership_is_active(scene, status):
    if status == Partnership.Status.REVOKED:
        services.revoke_partnership(partnership=scene.partnership, actor=scene.steward, reason="ended")
    else:
        services.update_partnership(partnership=scene.partnership, actor=scene.steward, data={"status": status})

    with pytest.raises(PartnershipInactive) as refused:
        scene.assign(10)

    assert refused.value.message == (
        f"Partnership {scene.partnership} is {status.label.lower()}; serials are assigned only under an active "
        "partnership."
    )
    assert refused.value.status_code == 409
    assert pool_state(scene.pool) == {"filled": 1_000, "assigned": 0, "available": 1_000}
    assert not SerialAssignment.objects.exists()
    assert not SerialPool.objects.filter(source=SerialPool.Source.PARTNER).exists()


def test_assign_serials_refuses_a_product_outside_the_partnership(scene):
    make_mah_pool(mah=scene.mah, product=scene.other_product, actor=scene.steward)

    with pytest.raises(ProductNotInPartnership) as refused:
        scene.assign(10, product=scene.other_product)

    assert refused.value.field == "product"
    assert refused.value.message == (
        f"{scene.other_product.product_code} ({scene.other_product.name}) is not one of the products "
        f"{scene.cmo_a} may pack for {scene.mah}; add it to the partnership first."
    )
    assert not Allocation.objects.exists()


def test_assign_serials_names_each_pools_availability_when_short(scene):
    with pytest.raises(PoolExhausted) as short:
        scene.assign(1_001)

    assert short.value.message == (
        f"No pool of {scene.product.product_code} has 1,001 serials available — {scene.pool.name} (Own generator): "
        "1,000. Fill or import serials, or assign fewer."
    )
    assert short.value.details == {
        "requested": 1_001,
        "pools": [{"pool": scene.pool.pk, "name": scene.pool.name, "source": "generator", "available": 1_000}],
    }
    assert pool_state(scene.pool)["assigned"] == 0


def test_assign_serials_without_any_pool_says_so(scene):
    services.update_partnership(
        partnership=scene.partnership, actor=scene.steward, products=[scene.product, scene.other_product]
    )

    with pytest.raises(PoolExhausted) as missing:
        scene.assign(5, product=scene.other_product)

    assert missing.value.message == (
        f"{scene.mah} has no serial pool for {scene.other_product.product_code} ({scene.other_product.name}); "
        "create or import one first."
    )


def test_assign_serials_refuses_a_cmo_user_acting_for_the_mah(scene):
    with pytest.raises(PermissionDenied):
        services.assign_serials(
            partnership=scene.partnership, product=scene.product, quantity=5, actor=scene.user_a, request_id="x"
        )

    assert not Allocation.objects.exists()


# --- returns -------------------------------------------------------------------------------------------------------


def test_return_serials_gives_back_exactly_the_unused_ones(scene):
    partner_pool = scene.assign(100).partner_pool
    # The CMO takes 30 for one of its orders and commissions 10 of them.
    allocate_serials(pool=partner_pool, quantity=30, actor=scene.user_a, request_id="line-1", purpose="packaging_order")
    commission(partner_pool, 10)

    returned = services.return_serials(
        partnership=scene.partnership, product=scene.product, actor=scene.steward, reason="campaign over"
    )

    assert returned == 70
    assert partner_pool_counts(partner_pool=partner_pool) == {
        "filled": 100,
        "assigned": 30,
        "available": 0,
        "returned": 70,
    }
    assert pool_state(scene.pool) == {"filled": 1_000, "assigned": 30, "available": 970}
    [usage] = selectors.list_partner_usage(user=scene.steward)
    assert (usage.assigned, usage.used, usage.returned, usage.remaining) == (100, 10, 70, 20)


def test_return_serials_of_a_quantity_and_more_than_is_unused(scene):
    partner_pool = scene.assign(50).partner_pool

    assert (
        services.return_serials(
            partnership=scene.partnership, product=scene.product, actor=scene.user_a, reason="too many", quantity=20
        )
        == 20
    )
    with pytest.raises(PoolExhausted) as short:
        services.return_serials(
            partnership=scene.partnership, product=scene.product, actor=scene.steward, reason="more", quantity=31
        )

    assert short.value.details == {"available": 30, "requested": 31}
    assert pool_state(partner_pool) == {"filled": 50, "assigned": 20, "available": 30}
    assert pool_state(scene.pool) == {"filled": 1_000, "assigned": 30, "available": 970}


def test_return_serials_works_after_revocation_and_refuses_when_nothing_is_left(scene):
    scene.assign(40)
    services.revoke_partnership(partnership=scene.partnership, actor=scene.steward, reason="ended")

    assert (
        services.return_serials(
            partnership=scene.partnership, product=scene.product, actor=scene.steward, reason="ended"
        )
        == 40
    )
    with pytest.raises(Exception) as nothing:
        services.return_serials(partnership=scene.partnership, product=scene.product, actor=scene.steward, reason="x")

    assert nothing.value.status_code == 409
    assert pool_state(scene.pool)["assigned"] == 0


def test_return_serials_refuses_a_product_never_assigned_and_strangers(scene):
    with pytest.raises(ProductNotInPartnership):
        services.return_serials(partnership=scene.partnership, product=scene.product, actor=scene.steward, reason="x")
    scene.assign(10)
    with pytest.raises(PermissionDenied):
        services.return_serials(partnership=scene.partnership, product=scene.product, actor=scene.user_b, reason="x")
    with pytest.raises(ValidationError):
        services.return_serials(partnership=scene.partnership, product=scene.product, actor=scene.steward, reason="")


# --- object permissions ------------------------------------------------------------------------------------------


def test_the_company_group_follows_every_membership_change(scene):
    group = Group.objects.get(name=company_group_name(scene.cmo_a))
    newcomer = make_cmo_user(scene.cmo_a)  # joins through masterdata.services.assign_membership
    assert set(group.user_set.all()) == {scene.user_a, newcomer}
    assert list(selectors.list_partnerships(user=newcomer)) == [scene.partnership]

    # Moving to another company takes away what the first one was granted.
    assign_membership(user=newcomer, company=scene.cmo_b, actor=scene.steward)
    newcomer = type(newcomer).objects.get(pk=newcomer.pk)  # as the next request loads them
    assert set(group.user_set.all()) == {scene.user_a}
    assert newcomer in Group.objects.get(name=company_group_name(scene.cmo_b)).user_set.all()
    assert list(selectors.list_partnerships(user=newcomer)) == []

    remove_membership(membership=scene.user_a.membership, actor=scene.steward)
    user_a = type(scene.user_a).objects.get(pk=scene.user_a.pk)
    assert list(group.user_set.all()) == []
    assert user_a.is_active is False  # without a membership they would count as the operator's staff


def test_sync_company_group_repairs_a_group_that_drifted(scene):
    # A membership written behind the services' back (a raw import, say) is caught up by the next sync.
    group = Group.objects.get(name=company_group_name(scene.cmo_a))
    stray = make_user(username="stray", roles=["CMO user"])
    CompanyMembership.objects.create(user=stray, company=scene.cmo_a)
    assert stray not in group.user_set.all()
    assert list(selectors.list_partnerships(user=stray)) == []

    scene.user_a.membership.delete()
    with CaptureQueriesContext(connection) as queries:
        sync_company_group(scene.cmo_a)
    assert set(group.user_set.all()) == {stray}
    assert list(selectors.list_partnerships(user=stray)) == [scene.partnership]
    assert len(queries) <= 8


def test_a_grant_reaches_no_one_outside_the_company(scene):
    # Even a grant to another company's group does not show a partnership between others.
    grant_company_object_permissions(company=scene.cmo_b, obj=scene.partnership)
    assert list(selectors.list_partnerships(user=scene.user_b)) == []

    revoke_company_object_permissions(company=scene.cmo_a, obj=scene.partnership)
    assert list(selectors.list_partnerships(user=scene.user_a)) == []
    assert list(selectors.list_partnerships(user=scene.steward)) == [scene.partnership]


def test_a_global_view_permission_does_not_widen_the_scope(scene):
    # The CMO user role holds partners.view_partnership for the model; only the object grant counts.
    assert scene.user_b.has_perm("partners.view_partnership")
    assert list(selectors.list_partnerships(user=scene.user_b)) == []
    assert list(selectors.list_assignments(user=scene.user_b)) == []


def test_partnerships_are_visible_to_the_mah_the_granted_cmo_and_the_operator(scene):
    operator = make_user(is_staff=True)
    other = services.create_partnership(mah=scene.mah, cmo=scene.cmo_b, products=[], actor=scene.steward)

    assert list(selectors.list_partnerships(user=scene.steward)) == sorted(
        [scene.partnership, other], key=lambda p: (p.cmo.name, p.pk)
    )
    assert list(selectors.list_partnerships(user=scene.user_a)) == [scene.partnership]
    assert list(selectors.list_partnerships(user=scene.user_b)) == [other]
    assert set(selectors.list_partnerships(user=operator)) == {scene.partnership, other}
    assert selectors.get_partnership(user=scene.user_a, pk=scene.partnership.pk) == scene.partnership
    with pytest.raises(Exception) as hidden:
        selectors.get_partnership(user=scene.user_b, pk=scene.partnership.pk)
    assert hidden.value.status_code == 404


# --- the MAH's overview ------------------------------------------------------------------------------------------


def test_list_partner_usage_per_cmo_and_product_in_constant_queries(scene):
    services.update_partnership(
        partnership=scene.partnership, actor=scene.steward, products=[scene.product, scene.other_product]
    )
    partnership_b = services.create_partnership(
        mah=scene.mah, cmo=scene.cmo_b, products=[scene.product], actor=scene.steward
    )
    pool_a = scene.assign(100).partner_pool
    scene.assign(50)
    pool_b = scene.assign(200, partnership=partnership_b).partner_pool
    commission(pool_a, 25)
    commission(pool_b, 5)
    services.return_serials(
        partnership=partnership_b, product=scene.product, actor=scene.steward, reason="x", quantity=15
    )

    with CaptureQueriesContext(connection) as queries:
        rows = selectors.list_partner_usage(user=scene.steward)

    assert len(queries) <= 6
    as_tuples = {(r.cmo_id, r.product_code, r.assigned, r.used, r.returned, r.remaining) for r in rows}
    assert as_tuples == {
        (scene.cmo_a.pk, scene.product.product_code, 150, 25, 0, 125),
        (scene.cmo_a.pk, scene.other_product.product_code, 0, 0, 0, 0),
        (scene.cmo_b.pk, scene.product.product_code, 200, 5, 15, 180),
    }
    assert {(r.cmo_id, r.assigned) for r in selectors.list_partner_usage(user=scene.user_a)} == {
        (scene.cmo_a.pk, 150),
        (scene.cmo_a.pk, 0),
    }
    assert [(r.cmo_id, r.assigned) for r in selectors.list_partner_usage(user=scene.user_b)] == [(scene.cmo_b.pk, 200)]
    assert selectors.list_partner_usage(user=make_cmo_user(make_cmo())) == []
