"""The API permission classes of partners. The company groups and object permissions that partnerships grant live
in ``masterdata.permissions`` (both partners and serialization grant through them)."""

from audit.api.permissions import ModelPermissions

# --- API ----------------------------------------------------------------------------------------------------------


class ChangePermissions(ModelPermissions):
    """For workflow actions that change an existing row (revoke a partnership, take serials back): POST needs the
    model's ``change_`` permission, not ``add_``."""

    perms_map = {**ModelPermissions.perms_map, "POST": ["%(app_label)s.change_%(model_name)s"]}
