"""granted_pks: the object grants a company's group holds, read straight from guardian's table."""

import pytest
from django.contrib.auth.models import Permission
from guardian.shortcuts import assign_perm, get_objects_for_user

from masterdata.models import Location
from masterdata.permissions import grant_company_object_permissions, granted_pks, revoke_company_object_permissions
from tests.factories import make_company, make_location, make_membership, make_user

pytestmark = pytest.mark.django_db


def granted(user, action="view"):
    return set(
        Location.objects.filter(pk__in=granted_pks(Location, user=user, action=action)).values_list("pk", flat=True)
    )


@pytest.fixture
def shared():
    """A site of the MAH shared with the CMO's group, another kept back, and a member of each company."""
    mah, cmo = make_company(), make_company()
    shared_site, kept_site = make_location(company=mah), make_location(company=mah)
    grant_company_object_permissions(company=cmo, obj=shared_site)
    cmo_member, mah_member = make_user(), make_user()
    make_membership(user=cmo_member, company=cmo)
    make_membership(user=mah_member, company=mah)
    return shared_site, kept_site, cmo, cmo_member, mah_member


def test_a_member_sees_exactly_what_its_company_was_granted(shared):
    shared_site, _, _, cmo_member, mah_member = shared

    assert granted(cmo_member) == {shared_site.pk}
    assert granted(mah_member) == set()
    assert granted(cmo_member, action="change") == set()  # a view grant does not allow changes
    # The same answer guardian's shortcut gives for group grants.
    assert granted(cmo_member) == set(
        get_objects_for_user(
            cmo_member, "masterdata.view_location", Location, accept_global_perms=False, with_superuser=False
        ).values_list("pk", flat=True)
    )


def test_a_revoked_grant_is_gone_and_a_new_member_gets_the_grants(shared):
    shared_site, _, cmo, cmo_member, _ = shared
    newcomer = make_user()
    make_membership(user=newcomer, company=cmo)

    assert granted(newcomer) == {shared_site.pk}
    revoke_company_object_permissions(company=cmo, obj=shared_site)
    assert granted(cmo_member) == granted(newcomer) == set()


def test_model_permissions_user_grants_and_superusers_never_widen_it(shared):
    _, kept_site, _, cmo_member, _ = shared
    cmo_member.user_permissions.add(Permission.objects.get(codename="view_location"))
    assign_perm("masterdata.view_location", cmo_member, kept_site)  # a grant to the user, not to its company
    boss = make_user(is_superuser=True)

    assert kept_site.pk not in granted(cmo_member)
    assert granted(boss) == set()
