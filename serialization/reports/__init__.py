"""Market reports: the document each market's regulator or trading partners expect for a batch (or, for US DSCSA,
a shipment), chosen by the market's ``reporting_format`` and validated before anything is queued.

==============  ===============================================================  ==================
format          document                                                         module
==============  ===============================================================  ==================
``eu_hub``      EU hub: product master data + batch pack data (JSON)             ``eu_hub``
``epcis_1_2``   US DSCSA: EPCIS 1.2 XML of one shipment                          ``us_dscsa``
``mdlp``        RU MDLP: units with crypto key/code (AI 91/92) and SSCC (JSON)   ``ru_mdlp``
``drap``        PK DRAP: batch production data (JSON)                            ``pk_drap``
``rsd``         SA RSD: EPCIS 1.2 XML with SSCC aggregation                      ``sa_rsd``
==============  ===============================================================  ==================

``build_report`` runs a module's ``check`` (master data and pack data, every problem by field) and, only when that
passes, its ``write`` into a file, which checks what the document itself shows (each serial exactly once; the
EPCIS schemas). Any problem raises ``ReportRefused`` with the whole list.
"""

import hashlib
from dataclasses import dataclass
from types import ModuleType
from typing import IO

from masterdata.models import Market
from serialization.models import Batch, LineReport
from serialization.reports import eu_hub, pk_drap, ru_mdlp, sa_rsd, us_dscsa
from serialization.reports.base import Problem, ReportRefused, Subject

__all__ = ["BuiltReport", "Problem", "ReportRefused", "build_report", "check_report", "report_module"]

MODULES: dict[str, ModuleType] = {
    Market.ReportingFormat.EU_HUB: eu_hub,
    Market.ReportingFormat.EPCIS_12: us_dscsa,
    Market.ReportingFormat.MDLP: ru_mdlp,
    Market.ReportingFormat.DRAP: pk_drap,
    Market.ReportingFormat.RSD: sa_rsd,
}


@dataclass(frozen=True)
class BuiltReport:
    """A validated document written to a file: what it is, how big, its SHA-256 and how many serials it carries."""

    kind: str
    content_type: str
    extension: str
    sha256: str
    size: int
    items: int


def report_module(market: Market) -> ModuleType:
    """The report module of ``market``'s reporting format; ReportRefused when no report is built for it."""
    module = MODULES.get(market.reporting_format)
    if module is None:
        supported = ", ".join(Market.ReportingFormat(f).label for f in MODULES)
        raise ReportRefused(
            [
                Problem(
                    "market.reporting_format",
                    f"market {market.code} reports as {market.get_reporting_format_display()}, for which no report is "
                    f"built here; choose one of: {supported}.",
                )
            ],
            what=f"report for {market.code}",
        )
    return module


def check_report(*, market: Market, batch: Batch, shipping_report: LineReport | None = None) -> list[Problem]:
    """Every problem of ``market``'s report for ``batch`` (or its shipment), without writing it; [] when it may be
    built."""
    try:
        module = report_module(market)
    except ReportRefused as exc:
        return exc.problems
    return module.check(Subject(market=market, batch=batch, shipping_report=shipping_report))


def build_report(
    *, market: Market, batch: Batch, out: IO[bytes], shipping_report: LineReport | None = None
) -> BuiltReport:
    """Check and write ``market``'s report for ``batch`` (or one shipment of it) into ``out`` — a seekable binary
    file, positioned at its start. Raises ReportRefused with every problem; nothing useful is left in ``out`` then.
    """
    module = report_module(market)
    subject = Subject(market=market, batch=batch, shipping_report=shipping_report)
    what = f"{module.WHAT} of batch {batch.lot} for {market.code}"
    problems = module.check(subject)
    if problems:
        raise ReportRefused(problems, what=what)
    written = module.write(subject, out)
    if written.problems:
        raise ReportRefused(written.problems, what=what)
    out.seek(0)
    digest, size = hashlib.sha256(), 0
    while chunk := out.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    out.seek(0)
    return BuiltReport(
        kind=module.KIND,
        content_type=module.CONTENT_TYPE,
        extension=module.EXTENSION,
        sha256=digest.hexdigest(),
        size=size,
        items=written.items,
    )
