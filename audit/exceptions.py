"""Domain errors shared by every app. Each carries the HTTP status and a message that names the problem and the fix.

Services raise these; the API's exception handler (audit.api.exceptions) turns them into the common error shape,
and forms/admin actions show ``message`` to the user. Domain apps subclass DomainError in their own exceptions.py.
"""


class DomainError(Exception):
    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or {}


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class PermissionDenied(DomainError):
    status_code = 403
    code = "permission_denied"
