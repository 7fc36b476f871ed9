"""Serial-list parsers, one module per layout, and the registry the import service looks layouts up in.

Every parser is ``parse(stream) -> Iterator[Row | RowProblem | Column]`` (see ``base``); the service owns every check of
the values, so adding a layout is adding a module and a line here.
"""

from serialization.importers import csv_file, json_file, sap_attp, sap_ich, tracelink
from serialization.importers.base import Column, ImportFileError, Parser, Row, RowProblem
from serialization.models import ImportJob

PARSERS: dict[str, Parser] = {
    ImportJob.Layout.CSV: csv_file.parse,
    ImportJob.Layout.JSON: json_file.parse,
    ImportJob.Layout.SAP_ATTP: sap_attp.parse,
    ImportJob.Layout.SAP_ICH: sap_ich.parse,
    ImportJob.Layout.TRACELINK: tracelink.parse,
}


def get_parser(layout: str) -> Parser | None:
    return PARSERS.get(layout)


__all__ = ["PARSERS", "Column", "ImportFileError", "Parser", "Row", "RowProblem", "get_parser"]
