"""Company groups and the object permissions granted to them (django-guardian).

Each company has one group, ``company:<pk>``, holding exactly the users with a CompanyMembership of that company
(:func:`sync_company_group`, called by the membership services). What one company shares with another — an MAH's
partnership, partner pools and assignments with a CMO, an MAH batch and order run on a CMO's line — is granted to
the receiving company's group object by object (:func:`grant_company_object_permissions`), so every door (API,
portal, admin) asks the same question through :func:`granted_pks`. The selectors intersect these grants with the
company rule (``masterdata.selectors``): a grant never reaches a user outside the company.

This lives in masterdata because companies and memberships do; ``serialization`` and ``partners`` both grant.
"""

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection, models, transaction
from django.db.models.expressions import RawSQL
from guardian.models import GroupObjectPermission
from guardian.shortcuts import assign_perm, remove_perm

from masterdata.models import Company, CompanyMembership

COMPANY_GROUP_PREFIX = "company:"


def company_group_name(company: Company) -> str:
    return f"{COMPANY_GROUP_PREFIX}{company.pk}"


def sync_company_group(company: Company) -> Group:
    """The company's group, created if needed, with exactly the company's members (CompanyMembership users) in it.

    Idempotent; three queries whatever the number of members. The membership services call it on every change."""
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


def grant_company_object_permissions(
    *, company: Company, obj: models.Model, actions: Iterable[str] = ("view",)
) -> Group:
    """Let the members of ``company`` (through its group) do ``actions`` on ``obj`` — by default see it.

    Idempotent (guardian keeps one row per group, permission and object)."""
    group = sync_company_group(company)
    for perm in _codenames(obj, actions):
        assign_perm(perm, group, obj)
    return group


def revoke_company_object_permissions(
    *, company: Company, obj: models.Model, actions: Iterable[str] = ("view",)
) -> None:
    """Take back what :func:`grant_company_object_permissions` gave (the group itself stays)."""
    group = Group.objects.filter(name=company_group_name(company)).first()
    if group is None:
        return
    for perm in _codenames(obj, actions):
        remove_perm(perm, group, obj)


def granted_pks_sql(model: type[models.Model], *, user, action: str = "view") -> tuple[str, list]:
    """SQL selecting the pks of the ``model`` rows on which ``user`` holds the object permission ``action`` through a
    group (a company grant), with its parameters. Model-level permissions never widen it and superusers get no
    shortcut: the caller's company rule decides for its own objects.

    Guardian's group object permissions read directly — what ``get_objects_for_user(accept_global_perms=False,
    with_superuser=False)`` answers for group grants, without its queries: the shortcut looks up the permission and
    the user's groups first (queries and ~5 ms of Python per call), and scoped selectors ask up to three times per
    request. Written as SQL rather than a queryset because the pack history embeds it in raw statements and must
    answer in milliseconds; compiling the equivalent queryset alone took about a millisecond."""
    opts = model._meta
    quote = connection.ops.quote_name
    groups = get_user_model()._meta.get_field("groups")
    # object_pk is text (guardian's generic grants serve every model): compared as the model's key type.
    key = opts.pk.target_field if opts.pk.is_relation else opts.pk
    sql = (
        f"SELECT CAST(grant_.object_pk AS {key.cast_db_type(connection)}) "  # noqa: S608 - names from _meta
        f"FROM {quote(GroupObjectPermission._meta.db_table)} grant_ "
        f"JOIN {quote(Permission._meta.db_table)} grant_perm ON grant_perm.id = grant_.permission_id "
        f"JOIN {quote(groups.m2m_db_table())} grant_member "
        f"ON grant_member.{quote(groups.m2m_reverse_name())} = grant_.group_id "
        "WHERE grant_.content_type_id = %s AND grant_perm.codename = %s "
        f"AND grant_member.{quote(groups.m2m_column_name())} = %s"
    )
    content_type = ContentType.objects.get_for_model(model)  # cached per process by Django
    return sql, [content_type.pk, f"{action}_{opts.model_name}", user.pk]


def granted_pks(model: type[models.Model], *, user, action: str = "view") -> RawSQL:
    """:func:`granted_pks_sql` as a subquery for querysets: ``filter(pk__in=granted_pks(Model, user=user))``."""
    return RawSQL(*granted_pks_sql(model, user=user, action=action))  # noqa: S611 - values are parameters
