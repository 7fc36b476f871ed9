"""Least-privilege roles as Django groups.

Each role is a list of grants per app label and action, not per model, so a model added to ``serialization`` next
month is covered by the next ``migrate`` without touching this file. Rules that hold for every role:

- nobody gets ``delete_``: regulated records are never hard-deleted by a user (superusers aside);
- history models (simple-history) are only ever viewable: history is written by the system, not by people.

``seed_roles`` makes the groups match these definitions exactly (it also removes permissions added by hand), runs
after every ``migrate`` (``AuditConfig.ready``) and from ``manage.py seed_roles``.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from django.apps import apps as global_apps
from django.contrib.auth import get_permission_codename
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, models, router, transaction
from simple_history.models import HistoricalChanges

ADD, CHANGE, VIEW = "add", "change", "view"
GRANTABLE_ACTIONS = frozenset({ADD, CHANGE, VIEW})


class Role(models.TextChoices):
    STEWARD = "Steward", "Master-data steward"
    QA = "QA", "Quality assurance"
    LINE_SYSTEM = "Line system", "Packaging line system (API account)"
    CMO_USER = "CMO user", "Contract manufacturer user"
    AUDITOR = "Auditor", "Auditor / inspector (read-only)"


@dataclass(frozen=True)
class Grant:
    """``actions`` on every model of ``app_label`` (or only on ``model_names``), plus explicit custom ``codenames``."""

    app_label: str
    actions: frozenset[str]
    model_names: frozenset[str] | None = None
    codenames: frozenset[str] = frozenset()


def grant(app_label: str, *actions: str, models: Iterable[str] | None = None, codenames: Iterable[str] = ()) -> Grant:
    return Grant(app_label, frozenset(actions), frozenset(models) if models is not None else None, frozenset(codenames))


ROLE_GRANTS: dict[str, tuple[Grant, ...]] = {
    Role.STEWARD: (
        grant("masterdata", ADD, CHANGE, VIEW),
        grant("serialization", ADD, CHANGE, VIEW),
        grant("partners", ADD, CHANGE, VIEW),  # the MAH's stewards set up partnerships and assign serials
        # Stewards review the access log and lift export blocks of the pilferage rule, with a reason.
        grant("audit", VIEW, models=["accessevent", "incident", "exportblock"], codenames=["lift_exportblock"]),
    ),
    Role.QA: (
        grant("masterdata", VIEW),
        grant("serialization", VIEW, CHANGE, codenames=["release_batch"]),
        # QA works the incidents (reconciliation discrepancies) through to resolution.
        grant("audit", VIEW, CHANGE, models=["incident"]),
        # QA places and releases legal holds (with reasons) and sees what purges removed.
        grant("audit", ADD, CHANGE, VIEW, models=["legalhold"]),
        grant("audit", VIEW, models=["purgerecord"]),
    ),
    Role.LINE_SYSTEM: (
        grant("masterdata", VIEW),
        grant("serialization", ADD, VIEW),
    ),
    Role.CMO_USER: (
        grant("serialization", VIEW),
        # In the portal a CMO user draws serials for its orders and uploads its lines' reports.
        grant("serialization", ADD, models=["allocation", "linereport"]),
        grant("partners", VIEW),
    ),
    Role.AUDITOR: tuple(grant(label, VIEW) for label in ("masterdata", "serialization", "partners", "audit")),
}


def _check_grants() -> None:
    for role, grants in ROLE_GRANTS.items():
        for g in grants:
            if not g.actions <= GRANTABLE_ACTIONS or any(c.startswith("delete_") for c in g.codenames):
                raise ImproperlyConfigured(
                    f"Role {role!r} may only be granted {sorted(GRANTABLE_ACTIONS)}, never delete."
                )


_check_grants()


def role_permissions(role: str) -> set[str]:
    """The permissions of ``role`` for the models installed now, as ``"app_label.codename"`` strings."""
    perms: set[str] = set()
    for g in ROLE_GRANTS[role]:
        try:
            app_config = global_apps.get_app_config(g.app_label)
        except LookupError:  # an app not installed in this deployment
            continue
        for model in app_config.get_models():
            opts = model._meta
            if g.model_names is not None and opts.model_name not in g.model_names:
                continue
            actions = {VIEW} & g.actions if issubclass(model, HistoricalChanges) else g.actions
            perms.update(f"{opts.app_label}.{get_permission_codename(action, opts)}" for action in actions)
        perms.update(f"{g.app_label}.{codename}" for codename in g.codenames)
    return perms


def seed_roles(*, using: str = DEFAULT_DB_ALIAS) -> dict[str, int]:
    """Create or update every role group so it holds exactly its permissions; returns the count per role.

    Idempotent: a second run changes nothing. Missing permissions are created first, so this works whatever order
    the apps' own post_migrate handlers ran in.
    """
    if not router.allow_migrate_model(using, Group):
        return {}
    app_labels = {g.app_label for grants in ROLE_GRANTS.values() for g in grants}
    for label in sorted(app_labels):
        try:
            create_permissions(global_apps.get_app_config(label), verbosity=0, using=using)
        except LookupError:
            continue
    wanted = {role: role_permissions(role) for role in ROLE_GRANTS}
    existing = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in Permission.objects.using(using)
        .filter(content_type__app_label__in=app_labels)
        .values_list("pk", "content_type__app_label", "codename")
    }
    counts = {}
    with transaction.atomic(using=using):
        for role, perms in wanted.items():
            missing = perms - existing.keys()
            if missing:
                raise ImproperlyConfigured(f"Role {role!r} names permissions that do not exist: {sorted(missing)}.")
            group, _ = Group.objects.using(using).get_or_create(name=role)
            group.permissions.set([existing[p] for p in perms])
            counts[str(role)] = len(perms)
    return counts


def seed_roles_after_migrate(sender, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    seed_roles(using=using)
