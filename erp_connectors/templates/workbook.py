"""The template workbook: the CSV templates as one workbook with a sheet per entity.

The CSV templates beside this module are the source; ``oem-retention-import.xlsx`` is built
from them, so the two cannot drift apart. Cells are typed the way a person filling the sheet in
Excel would type them (dates as date cells, amounts and counts as numbers, flags as booleans),
so importing the workbook also proves that typed cells read as their CSV text. Times stay text:
an Excel time has no zone.

Rebuild after changing a CSV template::

    .venv/bin/python -m erp_connectors.templates.workbook
"""

from __future__ import annotations

import csv
import io
import types
from datetime import date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from openpyxl import Workbook
from openpyxl.styles import Font
from pydantic import BaseModel

from erp_connectors.files import ENTITY_MODELS, EXCHANGE_RATES, TEMPLATE_WORKBOOK
from erp_connectors.rates import ExchangeRateRecord

Kind = Literal["date", "number", "integer", "flag", "text"]
SHEETS: dict[str, type[BaseModel]] = {**ENTITY_MODELS, EXCHANGE_RATES: ExchangeRateRecord}


def _leaf_types(annotation: Any) -> set[Any]:
    """The plain types an annotation allows (through Annotated, Optional and unions)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaf_types(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return set().union(*(_leaf_types(arg) for arg in get_args(annotation)))
    if origin is Literal:
        return {str}
    return {annotation}


def column_kind(model: type[BaseModel], column: str) -> Kind:
    """How a column's cells are typed in the workbook."""
    found = _leaf_types(model.model_fields[column].annotation) - {type(None)}
    kinds: dict[Any, Kind] = {bool: "flag", int: "integer", Decimal: "number", date: "date"}
    if datetime in found or len(found) != 1:
        return "text"
    return kinds.get(next(iter(found)), "text")


def _cell(kind: Kind, text: str) -> object:
    if not text:
        return None
    if kind == "date":
        return date.fromisoformat(text)
    if kind == "integer":
        return int(text)
    if kind == "number":
        # A number cell is a binary float, as if typed into Excel.
        return float(text)
    if kind == "flag":
        return text.lower() in ("true", "yes", "1")
    return text


def template_text(sheet: str) -> str:
    """The CSV template of ``sheet`` (an entity, or ``exchange_rates``)."""
    return (resources.files("erp_connectors") / "templates" / f"{sheet}.csv").read_text(
        encoding="utf-8")


def build_template_workbook() -> Workbook:
    """The workbook of every CSV template, a sheet per entity, in the engine's order."""
    workbook = Workbook()
    workbook.remove(workbook.worksheets[0])
    workbook.properties.creator = "oem-retention"
    for sheet, model in SHEETS.items():
        worksheet = workbook.create_sheet(sheet)
        header, *lines = csv.reader(io.StringIO(template_text(sheet)))
        kinds = [column_kind(model, column) for column in header]
        worksheet.append(header)
        for line in lines:
            worksheet.append([_cell(kind, text) for kind, text in zip(kinds, line, strict=True)])
        for column, kind in enumerate(kinds, start=1):
            letter = worksheet.cell(row=1, column=column).column_letter
            worksheet.column_dimensions[letter].width = max(12, len(header[column - 1]) + 2)
            worksheet.cell(row=1, column=column).font = Font(bold=True)
            if kind == "date":
                for row in range(2, len(lines) + 2):
                    worksheet.cell(row=row, column=column).number_format = "yyyy-mm-dd"
        worksheet.freeze_panes = "A2"
    return workbook


def write_template_workbook(path: Path) -> Path:
    """Build the template workbook and save it at ``path``."""
    build_template_workbook().save(path)
    return path


if __name__ == "__main__":
    write_template_workbook(Path(__file__).with_name(TEMPLATE_WORKBOOK))
