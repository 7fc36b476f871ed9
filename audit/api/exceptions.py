"""One JSON error shape for the whole API, and the mapping of domain errors to HTTP codes.

    {"error": {"code": "invalid", "message": "…", "fields": {"gtin": ["…"]}, "details": {…}}}

Nothing a client sends may produce a 500: validation errors from models (full_clean) and integrity errors from
constraints that a race slipped past are mapped to 400/409 here as a last line of defence.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from audit.exceptions import DomainError

logger = logging.getLogger(__name__)


def error_response(status_code: int, code: str, message: str, fields: dict | None = None, details: dict | None = None):
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    if details:
        body["details"] = details
    return Response({"error": body}, status=status_code)


def _flatten(detail) -> dict[str, list[str]] | list[str]:
    if isinstance(detail, dict):
        return {
            key: _flatten(value) if isinstance(value, dict) else [str(v) for v in _as_list(value)]
            for key, value in detail.items()
        }
    return [str(v) for v in _as_list(detail)]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _first_message(fields: dict) -> str:
    for key, messages in fields.items():
        if isinstance(messages, dict):
            return f"{key}: {_first_message(messages)}"
        if messages:
            return messages[0] if key == "non_field_errors" else f"{key}: {messages[0]}"
    return "Invalid input."


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        fields = {exc.field: [exc.message]} if exc.field else None
        return error_response(exc.status_code, exc.code, exc.message, fields, exc.details)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, IntegrityError):
        logger.warning("integrity error reached the API: %s", exc)
        return error_response(
            status.HTTP_409_CONFLICT,
            "conflict",
            "The request conflicts with existing data (a uniqueness rule). Reload and try again with other values.",
        )

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        fields = _flatten(detail)
        response.data = {"error": {"code": "invalid", "message": _first_message(fields), "fields": fields}}
    else:
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        response.data = {"error": {"code": code if isinstance(code, str) else "error", "message": str(exc.detail)}}
    return response
