"""How a stored document leaves the back-office: an HTTP(S) POST to an endpoint, or a file dropped into a folder.

``deliver`` makes one attempt and says what came of it — accepted, rejected or failed — with the receiver's status
code and the start of its answer; it never raises for a problem on the way (the outbox decides what follows).

- HTTP(S): the document is streamed as the request body with its content type, ``Content-Length``, its SHA-256
  (``X-Content-SHA256``) and an ``Idempotency-Key`` that stays the same across the retries of one document, so a
  receiver can drop a duplicate. Redirects are not followed (a POST must not be replayed somewhere else). Every
  socket operation waits at most the endpoint's timeout. TLS certificates are verified.
- Credentials come from the environment variable the endpoint names, read at the moment of sending. They are sent
  only in headers and appear in no message, log line or stored field.
- What the answer means: 2xx is accepted unless the body says it was rejected (``{"status": "rejected"}``, a
  ``<status>REJECTED</status>`` element or a body starting with ``REJECTED``); 4xx is rejected — except 408 and
  429, which ask to come back later; 5xx, a timeout, a refused or broken connection, or a missing credential is a
  failure, tried again later.
- File drop: written as a hidden ``.part`` file in the endpoint's folder (inside OUTBOX_DROP_ROOT), flushed to disk,
  then renamed — a receiver polling the folder never picks up half a file. The folder must exist: a missing network
  mount fails the attempt instead of filling a local directory.
"""

import base64
import http.client
import json
import os
import re
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from django.conf import settings

from serialization.outbox_models import Endpoint

ACCEPTED, REJECTED, FAILED = "accepted", "rejected", "failed"
BODY_EXCERPT = 2_000  # characters of the answer kept on the submission
_BODY_READ_LIMIT = 64 * 1024
# 4xx codes that mean "not now" rather than "not this document".
_RETRY_LATER = {408, 425, 429}
_REJECTED_JSON_KEYS = ("status", "result", "outcome", "state")
_REJECTED_TEXT = re.compile(r"^\s*rejected\b|<status>\s*rejected\s*</status>", re.IGNORECASE)
USER_AGENT = "serialization-backoffice-outbox/1.0"


@dataclass(frozen=True)
class Document:
    """A stored document ready to go: its bytes (an open binary file), name, type, size and SHA-256."""

    file: IO[bytes]
    filename: str
    content_type: str
    size: int
    sha256: str
    idempotency_key: str


@dataclass(frozen=True)
class Delivery:
    """What one attempt came to. ``error`` is for people and never holds a credential."""

    outcome: str
    status_code: int | None = None
    body: str = ""
    error: str = ""


def deliver(*, endpoint: Endpoint, document: Document) -> Delivery:
    """One attempt to hand ``document`` to ``endpoint``."""
    if endpoint.kind == Endpoint.Kind.FILE_DROP:
        return drop_file(endpoint=endpoint, document=document)
    return post_http(endpoint=endpoint, document=document)


# --- HTTP(S) ------------------------------------------------------------------------------------------------------


def _auth_headers(endpoint: Endpoint) -> dict[str, str]:
    """The authentication header of ``endpoint``; KeyError naming the variable when the credential is not set."""
    if endpoint.auth_kind == Endpoint.AuthKind.NONE:
        return {}
    secret = os.environ.get(endpoint.credential_env, "")
    if not secret:
        raise KeyError(endpoint.credential_env)
    if endpoint.auth_kind == Endpoint.AuthKind.BEARER:
        return {"Authorization": f"Bearer {secret}"}
    if endpoint.auth_kind == Endpoint.AuthKind.BASIC:
        pair = base64.b64encode(f"{endpoint.username}:{secret}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {endpoint.api_key_header: secret}


def post_http(*, endpoint: Endpoint, document: Document) -> Delivery:
    url = urlsplit(endpoint.url)
    where = f"{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"
    try:
        auth = _auth_headers(endpoint)
    except KeyError as missing:
        return Delivery(
            FAILED,
            error=f"The credential of endpoint {endpoint.name} is not set: set the environment variable "
            f"{missing.args[0]} on the workers.",
        )
    timeout = endpoint.timeout_seconds
    if url.scheme == "https":
        connection = http.client.HTTPSConnection(
            url.hostname, url.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    headers = {
        "Content-Type": document.content_type,
        "Content-Length": str(document.size),
        "Content-Disposition": f'attachment; filename="{document.filename}"',
        "X-Content-SHA256": document.sha256,
        "Idempotency-Key": document.idempotency_key,
        "User-Agent": USER_AGENT,
        "Accept": "application/json, application/xml;q=0.9, */*;q=0.5",
        **auth,
    }
    try:
        connection.request("POST", path, body=document.file, headers=headers)
        response = connection.getresponse()
        raw = response.read(_BODY_READ_LIMIT)
    except TimeoutError:
        return Delivery(FAILED, error=f"No answer from {where} within {timeout} s; will try again.")
    except ConnectionRefusedError:
        return Delivery(FAILED, error=f"Connection to {where} refused: the receiver is not listening; will try again.")
    except ssl.SSLError as exc:
        return Delivery(
            FAILED, error=f"TLS with {where} failed ({exc.reason or exc}); check the receiver's certificate."
        )
    except (OSError, http.client.HTTPException) as exc:
        return Delivery(FAILED, error=f"Sending to {where} failed: {type(exc).__name__}: {exc}; will try again.")
    finally:
        connection.close()
    body = raw.decode(response.headers.get_content_charset() or "utf-8", errors="replace")
    return classify(response.status, body, reason=response.reason)


def classify(status: int, body: str, *, reason: str = "") -> Delivery:
    """The outcome of an HTTP answer (see the module's docstring)."""
    excerpt = body[:BODY_EXCERPT]
    said = f"HTTP {status}{f' {reason}' if reason else ''}"
    if 200 <= status < 300:
        if says_rejected(body):
            return Delivery(
                REJECTED, status, excerpt, f"{said}, but the receiver's answer says the document was rejected."
            )
        return Delivery(ACCEPTED, status, excerpt)
    if 400 <= status < 500 and status not in _RETRY_LATER:
        return Delivery(REJECTED, status, excerpt, f"The receiver refused the document: {said}.")
    if 300 <= status < 400:
        return Delivery(
            FAILED, status, excerpt, f"{said}: the endpoint moved; correct its URL (redirects are not followed)."
        )
    return Delivery(FAILED, status, excerpt, f"The receiver answered {said}; will try again.")


def says_rejected(body: str) -> bool:
    """Whether a 2xx answer still says the document was rejected."""
    try:
        data = json.loads(body)
    except ValueError:
        return bool(_REJECTED_TEXT.search(body[:_BODY_READ_LIMIT]))
    if isinstance(data, dict):
        return any(str(data.get(key, "")).strip().lower() == "rejected" for key in _REJECTED_JSON_KEYS)
    return False


# --- file drop ----------------------------------------------------------------------------------------------------


def drop_root() -> Path:
    return Path(settings.OUTBOX_DROP_ROOT)


def drop_folder(endpoint: Endpoint) -> Path:
    """The endpoint's folder, which must lie inside OUTBOX_DROP_ROOT (ValueError otherwise)."""
    root = drop_root().resolve()
    folder = (root / endpoint.folder).resolve()
    if folder != root and root not in folder.parents:
        raise ValueError(f"drop folder {endpoint.folder!r} lies outside OUTBOX_DROP_ROOT")
    return folder


def drop_file(*, endpoint: Endpoint, document: Document) -> Delivery:
    try:
        folder = drop_folder(endpoint)
    except ValueError as exc:
        return Delivery(FAILED, error=f"Endpoint {endpoint.name}: {exc}; correct its folder.")
    if not folder.is_dir():
        return Delivery(
            FAILED,
            error=f"Drop folder {endpoint.folder} does not exist under OUTBOX_DROP_ROOT; create it or mount the share.",
        )
    final = folder / document.filename
    partial = folder / f".{document.filename}.part"
    try:
        with open(partial, "wb") as target:
            shutil.copyfileobj(document.file, target, 1 << 20)
            target.flush()
            os.fsync(target.fileno())
        os.replace(partial, final)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        return Delivery(FAILED, error=f"Writing {document.filename} into {endpoint.folder} failed: {exc.strerror}.")
    return Delivery(ACCEPTED, body=f"written to {endpoint.folder}/{document.filename} ({document.size} bytes)")
