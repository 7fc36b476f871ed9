"""Master-data domain errors (mapped to HTTP codes by audit.api.exceptions)."""

from audit.exceptions import Conflict


class ObjectInUse(Conflict):
    """A delete or change refused because other records still refer to the object (PROTECT)."""

    code = "in_use"
