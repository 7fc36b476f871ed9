"""Forms of the partner portal: the pool search, the pack-history lookup, a serial request and a report upload.

Production report files (the upload on an order's page) come in one of two shapes:

* **JSON** — the line-report envelope the API takes: ``{"report_id", "kind", "order", "lines": [...],
  "occurred_at"?}``, any kind (commissioning, decommissioning, aggregation, unpacking, shipping); ``order`` is the
  order's number (or id) and must be the order whose page it is uploaded on. Problems are reported by the 1-based
  position of the entry in ``lines``.
* **CSV** — commissioning of units, one per row: ``product_code,serial``, or ``serial`` alone (the order's product
  code is used), or ``product_code,serial,parent_sscc`` for a unit commissioned straight into a case (commissioned
  before, e.g. by a JSON report); a first row naming the columns is skipped, blank rows too. The report id is the
  one the form carries (a new one per form shown, so sending the same form twice applies the report once).
  Problems are reported by the line number in the file.
"""

import csv
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django import forms
from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime

from serialization.models import LineReport, PackagingOrder

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
REPORT_ID_MAX = LineReport._meta.get_field("report_id").max_length
REQUEST_ID_MAX = 97  # the allocation's request id keeps 100 characters, 3 of them for the SSCC level suffix
CSV_HEADER_NAMES = {"product_code", "serial", "gtin", "ntin", "product code"}


def new_request_id(prefix: str) -> str:
    """A fresh idempotency key for a form about to be shown: a resent form repeats it, a new form gets a new one."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def reader_rows(reader) -> Iterator[tuple[int, list[str]]]:
    """(line number in the file where the row ends, cells) for each row of a csv.reader."""
    for row in reader:
        yield reader.line_num, row


class PoolSearchForm(forms.Form):
    q = forms.CharField(
        label="Search",
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"placeholder": "Product code or part of the name", "type": "search"}),
    )


class PackHistoryForm(forms.Form):
    product_code = forms.CharField(
        label="Product code",
        required=False,
        max_length=14,
        widget=forms.TextInput(attrs={"placeholder": "GTIN / NTIN", "autocomplete": "off", "spellcheck": "false"}),
    )
    serial = forms.CharField(
        label="Serial number",
        required=False,
        max_length=20,
        strip=False,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    sscc = forms.CharField(
        label="or SSCC",
        required=False,
        max_length=18,
        widget=forms.TextInput(attrs={"placeholder": "18 digits", "autocomplete": "off", "inputmode": "numeric"}),
    )

    def clean(self):
        data = super().clean()
        code, serial, sscc = data.get("product_code", ""), data.get("serial", ""), data.get("sscc", "")
        serial = serial.strip() if serial else ""
        data["serial"] = serial
        if sscc and (code or serial):
            raise ValidationError("Look up either a product code with a serial number, or an SSCC — not both.")
        if sscc:
            if not (sscc.isdigit() and len(sscc) == 18):
                self.add_error("sscc", "An SSCC has exactly 18 digits.")
        elif code and not serial:
            self.add_error("serial", "Enter the serial number printed after (21).")
        elif serial and not code:
            self.add_error("product_code", "Enter the product code (GTIN/NTIN) printed after (01).")
        elif not code:
            raise ValidationError("Enter a product code and a serial number, or an SSCC.")
        return data


class RequestSerialsForm(forms.Form):
    quantity = forms.IntegerField(
        label="Unit serials",
        min_value=0,
        max_value=500_000,
        initial=0,
    )
    cases = forms.IntegerField(label="Case SSCCs", min_value=0, max_value=500_000, required=False, initial=0)
    pallets = forms.IntegerField(label="Pallet SSCCs", min_value=0, max_value=500_000, required=False, initial=0)
    request_id = forms.CharField(widget=forms.HiddenInput, max_length=REQUEST_ID_MAX)

    def clean(self):
        data = super().clean()
        if not self.errors and not (data.get("quantity") or data.get("cases") or data.get("pallets")):
            raise ValidationError("Ask for at least one unit serial or SSCC.")
        return data

    @property
    def sscc_quantities(self) -> dict[int, int]:
        wanted = {2: self.cleaned_data.get("cases") or 0, 3: self.cleaned_data.get("pallets") or 0}
        return {level: count for level, count in wanted.items() if count}


@dataclass(frozen=True)
class ParsedReport:
    """An uploaded report, ready for ``apply_line_report``; ``line_numbers[i]`` is where ``lines[i]`` stood in the
    file (the file line of a CSV row, the position of a JSON entry)."""

    format: str  # "csv" or "json"
    report_id: str
    kind: str
    lines: list
    line_numbers: list[int]
    occurred_at: datetime | None

    def file_line(self, line: int | None) -> int | None:
        """The place in the file of the report's 1-based ``line``."""
        if line is None or not 1 <= line <= len(self.line_numbers):
            return line
        return self.line_numbers[line - 1]


class ReportUploadForm(forms.Form):
    file = forms.FileField(
        label="Report file",
        help_text="JSON with report_id, kind, order and lines — or a CSV of commissioned units: product_code,serial "
        "(or serial alone) per row.",
    )
    report_id = forms.CharField(widget=forms.HiddenInput, max_length=REPORT_ID_MAX)

    def __init__(self, *args, order: PackagingOrder, **kwargs):
        super().__init__(*args, **kwargs)
        self.order = order

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise ValidationError(
                f"The file has {upload.size:,} bytes; upload at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB at once "
                "(split the report)."
            )
        return upload

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload is None or self.errors:
            return data
        raw = upload.read()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError({"file": "The file is not UTF-8 text; save it as UTF-8 CSV or JSON."}) from None
        name = (upload.name or "").lower()
        looks_json = name.endswith(".json") or text.lstrip().startswith("{")
        data["report"] = self._parse_json(text) if looks_json else self._parse_csv(text)
        return data

    # --- JSON: the API's envelope ---------------------------------------------------------------------------------

    def _parse_json(self, text: str) -> ParsedReport:
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                {"file": f"The JSON cannot be read at line {exc.lineno}, column {exc.colno}: {exc.msg}."}
            ) from None
        if not isinstance(body, dict):
            raise ValidationError({"file": 'The JSON must be one object: {"report_id", "kind", "order", "lines"}.'})
        missing = [key for key in ("report_id", "kind", "lines") if key not in body]
        if missing:
            raise ValidationError({"file": f"The JSON lacks {', '.join(missing)}; give report_id, kind and lines."})
        order = body.get("order")
        if order not in (None, "") and str(order).strip() not in (self.order.number, str(self.order.pk)):
            raise ValidationError(
                {"file": f"The report is for order {order}, but this is order {self.order.number}: upload it there."}
            )
        occurred_at = None
        if body.get("occurred_at"):
            occurred_at = parse_datetime(str(body["occurred_at"]))
            if occurred_at is None or occurred_at.tzinfo is None:
                raise ValidationError(
                    {"file": "occurred_at must be an ISO 8601 time with its offset, e.g. 2025-03-03T08:00:00+01:00."}
                )
        lines = body["lines"]
        count = len(lines) if isinstance(lines, list) else 0
        return ParsedReport(
            format="json",
            report_id=str(body["report_id"]),
            kind=str(body["kind"]),
            lines=lines,
            line_numbers=list(range(1, count + 1)),
            occurred_at=occurred_at,
        )

    # --- CSV: commissioned units ----------------------------------------------------------------------------------

    def _parse_csv(self, text: str) -> ParsedReport:
        product_code = self.order.batch.product.product_code
        lines: list[dict] = []
        numbers: list[int] = []
        reader = csv.reader(io.StringIO(text))
        try:
            rows = list(reader_rows(reader))
        except csv.Error as exc:
            raise ValidationError({"file": f"The CSV cannot be read at line {reader.line_num}: {exc}."}) from None
        for line_num, row in rows:
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if not lines and cells[0].lower() in CSV_HEADER_NAMES:
                continue  # the header row
            if len(cells) == 1:
                lines.append({"product_code": product_code, "serial": cells[0]})
            elif len(cells) == 2 or (len(cells) == 3 and not cells[2]):
                lines.append({"product_code": cells[0], "serial": cells[1]})
            elif len(cells) == 3:
                lines.append({"product_code": cells[0], "serial": cells[1], "parent_sscc": cells[2]})
            else:
                raise ValidationError(
                    {
                        "file": f"Line {line_num} has {len(cells)} columns; give product_code,serial (and the SSCC "
                        "of the case it went into, if any) or serial."
                    }
                )
            numbers.append(line_num)
        if not lines:
            raise ValidationError({"file": "The CSV holds no serials: one product_code,serial (or serial) per row."})
        return ParsedReport(
            format="csv",
            report_id=self.cleaned_data["report_id"],
            kind=LineReport.Kind.COMMISSIONING,
            lines=lines,
            line_numbers=numbers,
            occurred_at=None,
        )
