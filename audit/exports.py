"""Streamed CSV downloads of audit records (the audit trail, incidents), each recorded in the access log.

The file is written while it is sent, so memory stays flat whatever its size. The access event is written when the
stream ends — finished or cut off by the client — with the rows and bytes actually sent and their SHA-256, so what the
log says matches the file the requester holds.
"""

import csv
import hashlib
from collections.abc import Iterable, Iterator

from django.http import HttpRequest, StreamingHttpResponse

from audit.models import AccessEvent
from audit.services import record_access


class _Line:
    """A file-like sink for csv.writer that hands back the last line written."""

    value = ""

    def write(self, text: str) -> int:
        self.value = text
        return len(text)


def recorded_csv_response(
    *,
    request: HttpRequest,
    filename: str,
    header: list[str],
    rows: Iterable[Iterable],
    target: str,
    details: dict | None = None,
) -> StreamingHttpResponse:
    """A streamed CSV download of ``rows`` under ``header``; recorded as an ``export`` event of ``request.user``."""

    def stream() -> Iterator[bytes]:
        digest, sink = hashlib.sha256(), _Line()
        writer = csv.writer(sink)
        sent = {"rows": -1, "bytes": 0}  # the header is not a row
        complete = False

        def line(values: Iterable) -> bytes:
            writer.writerow(values)
            chunk = sink.value.encode()
            digest.update(chunk)
            sent["rows"] += 1
            sent["bytes"] += len(chunk)
            return chunk

        try:
            yield line(header)
            for values in rows:
                yield line(values)
            complete = True
        finally:
            record_access(
                kind=AccessEvent.Kind.EXPORT,
                user=request.user,
                request=request,
                target=target,
                quantity=max(sent["rows"], 0),
                details={
                    **(details or {}),
                    "format": "csv",
                    "file": filename,
                    "rows": max(sent["rows"], 0),
                    "bytes": sent["bytes"],
                    "sha256": digest.hexdigest(),
                    "complete": complete,
                },
            )

    response = StreamingHttpResponse(stream(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response
