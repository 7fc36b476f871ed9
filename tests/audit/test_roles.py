import io

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from simple_history.models import HistoricalChanges

from audit.roles import ROLE_GRANTS, Role, role_permissions, seed_roles
from tests.factories import make_user

pytestmark = pytest.mark.django_db

# The auditor reads the audit trail, the chain behind it, and each incident's notes and linked objects.
AUDIT_CHAIN_AND_INCIDENT_VIEWS = {
    "audit.view_audittrail",
    "audit.view_chainhead",
    "audit.view_chainlayout",
    "audit.view_chainlink",
    "audit.view_incidentlink",
    "audit.view_incidentnote",
}

# Export blocks of the pilferage rule (audit.pilferage): stewards see and lift them, the auditor reads them.
STEWARD_EXPORT_BLOCKS = {"audit.view_exportblock", "audit.lift_exportblock"}
AUDITOR_EXPORT_BLOCKS = {"audit.view_exportblock", "audit.view_historicalexportblock"}

# Legal holds and purge records (audit.retention): QA places and releases holds, the auditor reads both.
QA_RETENTION = {"audit.add_legalhold", "audit.change_legalhold", "audit.view_legalhold", "audit.view_purgerecord"}
AUDITOR_RETENTION = {
    "audit.view_legalhold",
    "audit.view_historicallegalhold",
    "audit.view_purgerecord",
    "audit.view_historicalpurgerecord",
}


def group_permissions() -> dict[str, set[str]]:
    return {
        group.name: {
            f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")
        }
        for group in Group.objects.prefetch_related("permissions")
    }


def codenames(app_label: str, *actions: str) -> set[str]:
    """Every ``<action>_<model>`` permission of an app's current models (history models: view only)."""
    result = set()
    for model in apps.get_app_config(app_label).get_models():
        is_history = issubclass(model, HistoricalChanges)
        for action in actions:
            if not is_history or action == "view":
                result.add(f"{app_label}.{action}_{model._meta.model_name}")
    return result


def test_roles_on_audit_models_are_exact():
    audit = {role: {p for p in role_permissions(role) if p.startswith("audit.")} for role in Role}

    assert audit == {
        Role.STEWARD: {"audit.view_accessevent", "audit.view_incident", *STEWARD_EXPORT_BLOCKS},
        Role.QA: {"audit.view_incident", "audit.change_incident", *QA_RETENTION},
        Role.LINE_SYSTEM: set(),
        Role.CMO_USER: set(),
        Role.AUDITOR: {
            "audit.view_accessevent",
            "audit.view_apitoken",
            "audit.view_incident",
            "audit.view_historicalincident",
            *AUDIT_CHAIN_AND_INCIDENT_VIEWS,
            *AUDITOR_EXPORT_BLOCKS,
            *AUDITOR_RETENTION,
        },
    }


def test_roles_cover_every_current_model_of_their_apps():
    assert role_permissions(Role.STEWARD) == (
        codenames("masterdata", "add", "change", "view")
        | codenames("serialization", "add", "change", "view")
        | codenames("partners", "add", "change", "view")
        | {"audit.view_accessevent", "audit.view_incident"}
        | STEWARD_EXPORT_BLOCKS
    )
    assert role_permissions(Role.QA) == (
        codenames("masterdata", "view")
        | codenames("serialization", "view", "change")
        | {"serialization.release_batch", "audit.view_incident", "audit.change_incident"}
        | QA_RETENTION
    )
    assert role_permissions(Role.LINE_SYSTEM) == codenames("masterdata", "view") | codenames(
        "serialization", "add", "view"
    )
    assert role_permissions(Role.CMO_USER) == (
        codenames("serialization", "view")
        | {"serialization.add_allocation", "serialization.add_linereport"}
        | codenames("partners", "view")
    )
    assert role_permissions(Role.AUDITOR) == (
        codenames("masterdata", "view")
        | codenames("serialization", "view")
        | codenames("partners", "view")
        | {"audit.view_accessevent", "audit.view_apitoken", "audit.view_incident", "audit.view_historicalincident"}
        | AUDIT_CHAIN_AND_INCIDENT_VIEWS
        | AUDITOR_EXPORT_BLOCKS
        | AUDITOR_RETENTION
    )


def test_history_models_are_never_writable_by_a_role():
    history_models = [m for m in apps.get_models() if issubclass(m, HistoricalChanges)]
    for role in Role:
        for model in history_models:
            opts = model._meta
            assert f"{opts.app_label}.add_{opts.model_name}" not in role_permissions(role)
            assert f"{opts.app_label}.change_{opts.model_name}" not in role_permissions(role)


def test_groups_in_the_database_hold_exactly_the_role_permissions_and_no_delete():
    seeded = group_permissions()

    assert {name: seeded[name] for name in ROLE_GRANTS} == {str(role): role_permissions(role) for role in Role}
    assert not [p for perms in seeded.values() for p in perms if p.split(".", 1)[1].startswith("delete_")]


def test_seeding_twice_changes_nothing():
    seed_roles()
    before = group_permissions()
    group_ids = sorted(Group.objects.values_list("pk", flat=True))

    counts = seed_roles()

    assert group_permissions() == before
    assert sorted(Group.objects.values_list("pk", flat=True)) == group_ids
    assert counts == {str(role): len(role_permissions(role)) for role in Role}


def test_seeding_removes_permissions_added_by_hand():
    qa = Group.objects.get(name=Role.QA)
    qa.permissions.add(Permission.objects.get(content_type__app_label="audit", codename="delete_accessevent"))

    seed_roles()

    assert group_permissions()[Role.QA] == role_permissions(Role.QA)


def test_make_user_puts_the_user_in_its_role_groups():
    user = make_user(roles=[Role.AUDITOR, Role.QA])

    assert sorted(user.groups.values_list("name", flat=True)) == ["Auditor", "QA"]
    assert user.has_perm("audit.view_accessevent")
    assert not user.has_perm("audit.delete_accessevent")


def test_seed_roles_command_reports_each_role():
    out = io.StringIO()

    call_command("seed_roles", stdout=out)

    assert out.getvalue().splitlines() == [f"{role}: {len(role_permissions(role))} permissions" for role in Role]
