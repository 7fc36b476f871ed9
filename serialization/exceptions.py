"""Serial engine errors; the API handler maps each to its HTTP status with the message as written here."""

from audit.exceptions import Conflict, DomainError


class PoolExhausted(Conflict):
    code = "pool_exhausted"


class InvalidAllocationRequest(DomainError):
    code = "invalid_request"


class PoolBlocked(Conflict):
    code = "pool_blocked"


class RequestTooLarge(InvalidAllocationRequest):
    code = "request_too_large"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class IssueLimitExceeded(DomainError):
    code = "issue_limit_exceeded"


class InvalidPoolDefinition(DomainError):
    code = "invalid_pool"


class ReleaseRefused(Conflict):
    code = "release_refused"


class NotationUnavailable(DomainError):
    code = "notation_unavailable"


class TooLargeToStream(Conflict):
    code = "too_large_to_stream"


class ExportNotReady(Conflict):
    code = "export_not_ready"


class UnknownSerial(DomainError):
    status_code = 404
    code = "unknown_serial"
