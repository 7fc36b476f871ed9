"""Object permissions that follow from partnerships (django-guardian), and the API permission classes of partners.

Each company has one group, ``company:<pk>``, holding exactly the users with a CompanyMembership of that company
(:func:`sync_company_group`). What an MAH shares with a CMO — the partnership, the partner pools, the assignments,
later orders and batches — is granted to the CMO's group object by object (:func:`grant_partner_object_permissions`),
so every door (API, portal, admin through guardian's object-permission admin) asks the same question. The selectors
intersect these grants with the company rule (``masterdata.selectors``): a grant never reaches a user outside the
company, and a member who has not been synced into the group yet sees nothing of the partner's until they are.
"""

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import models, transaction
from guardian.shortcuts import assign_perm, remove_perm

from audit.api.permissions import ModelPermissions
from masterdata.models import Company, CompanyMembership

COMPANY_GROUP_PREFIX = "company:"


def company_group_name(company: Company) -> str:
    return f"{COMPANY_GROUP_PREFIX}{company.pk}"


def sync_company_group(company: Company) -> Group:
    """The company's group, created if needed, with exactly the company's members (CompanyMembership users) in it.

    Idempotent; three queries whatever the number of members. Call it after memberships change."""
    with transaction.atomic():
        group, _ = Group.objects.get_or_create(name=company_group_name(company))
        through = get_user_model().groups.through
        members = set(CompanyMembership.objects.filter(company=company).values_list("user_id", flat=True))
        in_group = set(through.objects.filter(group=group).values_list("user_id", flat=True))
        if in_group - members:
            through.objects.filter(group=group, user_id__in=in_group - members).delete()
        if members - in_group:
            through.objects.bulk_create(
                [through(group_id=group.pk, user_id=user_id) for user_id in sorted(members - in_group)],
                ignore_conflicts=True,
            )
    return group


def _codenames(obj: models.Model, actions: Iterable[str]) -> list[str]:
    opts = obj._meta
    return [f"{opts.app_label}.{action}_{opts.model_name}" for action in actions]


def grant_partner_object_permissions(
    *, company: Company, obj: models.Model, actions: Iterable[str] = ("view",)
) -> Group:
    """Let the members of ``company`` (through its group) do ``actions`` on ``obj`` — by default see it.

    For what an MAH shares with a CMO: the partnership, a partner pool, an assignment, an order or batch run by the
    CMO. Idempotent (guardian keeps one row per group, permission and object)."""
    group = sync_company_group(company)
    for perm in _codenames(obj, actions):
        assign_perm(perm, group, obj)
    return group


def revoke_partner_object_permissions(
    *, company: Company, obj: models.Model, actions: Iterable[str] = ("view",)
) -> None:
    """Take back what :func:`grant_partner_object_permissions` gave (the group itself stays)."""
    group = Group.objects.filter(name=company_group_name(company)).first()
    if group is None:
        return
    for perm in _codenames(obj, actions):
        remove_perm(perm, group, obj)


# --- API ----------------------------------------------------------------------------------------------------------


class ChangePermissions(ModelPermissions):
    """For workflow actions that change an existing row (revoke a partnership, take serials back): POST needs the
    model's ``change_`` permission, not ``add_``."""

    perms_map = {**ModelPermissions.perms_map, "POST": ["%(app_label)s.change_%(model_name)s"]}
