"""CSV and XLSX files as an ERP: one file (or sheet) per entity (docs/erp-files.md).

For the many machine builders whose ERP has no usable API: they export (or fill in the templates
under ``erp_connectors/templates``) and we read. An entity's data is ``<entity>.csv``,
``<entity>.xlsx``, or the sheet named ``<entity>`` of any other workbook in the directory (the
template workbook ``oem-retention-import.xlsx`` has one sheet per entity). Absent entities are
skipped. A file is a full snapshot, so every sync reads it from the top and the upserts leave
unchanged rows alone; the cursor only marks how far a sync got in *this* file (its SHA-256 and a
line or row number), so a sync that died midway resumes after the last committed page, and a
file changed since starts over.

A line that cannot be a record (too few cells, an external id seen before in the file) is
rejected here with its line number; a record with a bad value is rejected by the engine with
its model's reason and the same line number. A file that breaks the contract as a whole (not
UTF-8, not a workbook, no header, a required column missing, an unknown column) stops that
entity with :class:`FileContractError`.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import logging
import math
import zipfile
import zlib
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import psycopg
from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException
from psycopg_pool import AsyncConnectionPool

from erp_connectors.models import (
    ContactRecord,
    ContractRenewalRecord,
    CustomerRecord,
    InstalledBaseRecord,
    InvoiceLineRecord,
    InvoiceRecord,
    MachineModelRecord,
    OrderLineRecord,
    OrderRecord,
    ServiceContractRecord,
    SiteRecord,
    SourceRecord,
    SurveyResponseRecord,
)
from erp_connectors.sync import (
    ENTITIES,
    Page,
    PageSource,
    PermanentSyncError,
    SourceReject,
    SyncResult,
    sync_entity,
)

logger = logging.getLogger(__name__)

# The engine's entities in its order, parents first; a file's columns are its model's fields.
ENTITY_MODELS: dict[str, type[SourceRecord]] = {
    "customers": CustomerRecord,
    "sites": SiteRecord,
    "contacts": ContactRecord,
    "machine_models": MachineModelRecord,
    "installed_base": InstalledBaseRecord,
    "service_contracts": ServiceContractRecord,
    "contract_renewals": ContractRenewalRecord,
    "invoices": InvoiceRecord,
    "invoice_lines": InvoiceLineRecord,
    "orders": OrderRecord,
    "order_lines": OrderLineRecord,
    "survey_responses": SurveyResponseRecord,
}
FILE_NAMES: dict[str, str] = {entity: f"{entity}.csv" for entity in ENTITY_MODELS}
WORKBOOK = ".xlsx"
TEMPLATE_WORKBOOK = "oem-retention-import.xlsx"
# Not an engine entity (no external id, no source): loaded by erp_connectors.rates.
EXCHANGE_RATES = "exchange_rates"
PAGE_SIZE = 1000


class FileContractError(PermanentSyncError):
    """A file breaks the column contract as a whole; no line of it can be trusted as read."""


@dataclass(frozen=True, slots=True)
class Columns:
    """The column contract of one file, taken from its entity's model."""

    required: tuple[str, ...]
    optional: tuple[str, ...]

    @classmethod
    def of(cls, entity: str) -> Columns:
        """The columns of ``entity``'s file."""
        return cls.of_model(ENTITY_MODELS[entity])

    @classmethod
    def of_model(cls, model: type[Any]) -> Columns:
        """The columns of a file of ``model`` records (a pydantic model)."""
        fields = model.model_fields
        return cls(required=tuple(n for n, f in fields.items() if f.is_required()),
                   optional=tuple(n for n, f in fields.items() if not f.is_required()))


@dataclass(frozen=True, slots=True)
class Contract:
    """What a file must look like: its columns, how a reason names a record, its unique key.

    ``key`` is the column that must not repeat within a file (``external_id``); ``None`` leaves
    duplicates to the reader (exchange rates are keyed by two columns, checked after parsing).
    """

    columns: Columns
    label: str
    key: str | None = "external_id"

    @classmethod
    def of(cls, entity: str) -> Contract:
        """The contract of an engine entity's file."""
        spec = ENTITIES.get(entity)
        # The engine's label, so a reject reads the same whoever wrote it.
        label = spec.label if spec is not None else entity.replace("_", " ").removesuffix("s")
        return cls(Columns.of(entity), label)


@dataclass(frozen=True, slots=True)
class Row:
    """One record of a file: a record for the engine, or why there is none.

    Lines (CSV) and rows (XLSX) count from 1, the header being 1.
    """

    line_number: int  # where the record starts (a quoted cell may span lines)
    end_line: int
    record: dict[str, str] | None = None
    reject: SourceReject | None = None


def check_header(header: Sequence[str], contract: Contract, where: str) -> None:
    """Raise :class:`FileContractError` naming ``where`` if the header breaks the contract."""
    columns = contract.columns
    problems = []
    if duplicated := sorted({c for c in header if header.count(c) > 1}):
        problems.append(f"column(s) {', '.join(duplicated)} appear more than once")
    if missing := [c for c in columns.required if c not in header]:
        problems.append(f"required column(s) {', '.join(missing)} missing")
    known = {*columns.required, *columns.optional}
    if unknown := [c for c in header if c not in known]:
        problems.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}"
                        f" (known: {', '.join(sorted(known))})")
    if problems:
        raise FileContractError(f"{where}: {'; '.join(problems)}")


@dataclass(slots=True)
class _FirstSeen:
    """Where each key of a file was first seen: a key seen again is rejected, the first kept."""

    contract: Contract
    at: dict[str, int] = field(default_factory=dict)

    def again(self, record: dict[str, str], line: int, place: str,
              within: str = "") -> SourceReject | None:
        """The reject of ``record`` if its key was seen before; ``place`` says "line" or "row"."""
        if self.contract.key is None or (key := record.get(self.contract.key)) is None:
            return None
        if (first := self.at.get(key)) is None:
            self.at[key] = line
            return None
        return SourceReject(
            reason=f"{self.contract.label} {key} appears again{within} (first at {place}"
                   f" {first}, which is kept)",
            record=record, line_number=line, external_id=key)


# CSV --------------------------------------------------------------------------------------------

def _decoded(binary_lines: Iterable[bytes], name: str) -> Iterator[str]:
    for number, raw in enumerate(binary_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FileContractError(
                f"{name} line {number} is not UTF-8 text: save the file as"
                " 'CSV UTF-8' (Excel) or convert it") from None
        yield line.removeprefix("\ufeff") if number == 1 else line


def _csv_header(first_line: str, contract: Contract, name: str) -> tuple[list[str], str]:
    """Column names and delimiter, checked against the contract."""
    # Excel writes ';' where the decimal separator is ',' (most of Europe).
    delimiter = ";" if ";" in first_line and "," not in first_line else ","
    header = [cell.strip() for cell in next(csv.reader([first_line], delimiter=delimiter))]
    check_header(header, contract, f"{name} line 1")
    return header, delimiter


def _external_id(header: Sequence[str], cells: Sequence[str]) -> str | None:
    """The external id of a line that is not a record, so the reject still names it."""
    if "external_id" not in header:
        return None
    at = header.index("external_id")
    return cells[at].strip() or None if at < len(cells) else None


def parse_csv(lines: Iterable[str], *, entity: str, name: str,
              contract: Contract | None = None) -> Iterator[Row]:
    """Read CSV text into rows with their line numbers.

    ``lines`` keep their line endings (a file opened with ``newline=""``). Blank lines and
    lines of empty cells are skipped; an empty cell is an absent value. Raises
    :class:`FileContractError` for a header that breaks the contract or a quote never closed.
    """
    contract = contract or Contract.of(entity)
    lines = iter(lines)
    first = next(lines, None)
    if first is None or not first.strip():
        raise FileContractError(f"{name} is empty: its first line must be the header")
    header, delimiter = _csv_header(first, contract, name)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    seen = _FirstSeen(contract)
    end = 1
    while True:
        start = end + 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            if "end of data" in str(exc):
                # A quote opened and never closed swallowed every line to the end.
                raise FileContractError(
                    f"{name} line {start}: a quote opened here is never closed") from exc
            end = reader.line_num + 1
            yield Row(start, end, reject=SourceReject(
                reason=f"line {start} is not valid CSV: {exc}", record={}, line_number=start))
            continue
        if cells is None:
            return
        end = reader.line_num + 1  # the reader does not see the header line
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) < len(header) or any(c.strip() for c in cells[len(header):]):
            yield Row(start, end, reject=SourceReject(
                reason=f"line {start} has {len(cells)} cells but the header has {len(header)}",
                record={"cells": cells}, line_number=start,
                external_id=_external_id(header, cells)))
            continue
        record = {col: cell.strip() for col, cell in zip(header, cells, strict=False)
                  if cell.strip()}
        if (again := seen.again(record, start, "line")) is not None:
            yield Row(start, end, reject=again)
            continue
        yield Row(start, end, record=record)


def read_rows(binary: Iterable[bytes], *, entity: str, name: str,
              contract: Contract | None = None) -> Iterator[Row]:
    """Rows of a CSV file opened in binary mode (UTF-8, with or without a byte order mark)."""
    return parse_csv(_decoded(binary, name), entity=entity, name=name, contract=contract)


# XLSX -------------------------------------------------------------------------------------------

def _number_text(value: float) -> str:
    """A number as Excel shows it: 15 significant digits, no exponent, no trailing zeros."""
    if not math.isfinite(value):
        return str(value)
    # Excel keeps 15 significant digits; beyond them is binary noise (1234.4999999999998).
    text = format(Decimal(format(value, ".15g")), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def cell_text(value: object) -> str | None:
    """A cell's value as the CSV text of the same data would be; ``None`` for an empty cell.

    >>> [cell_text(v) for v in (" C-1 ", 1234.4999999999998, 4950.0, 7, True, None, "")]
    ['C-1', '1234.5', '4950', '7', 'true', None, None]
    >>> cell_text(datetime(2025, 4, 1)), cell_text(datetime(2025, 4, 1, 9, 30))
    ('2025-04-01', '2025-04-01T09:30:00')
    """
    text: str
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, bool):  # before int: True is an int
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = _number_text(value)
    elif isinstance(value, datetime):
        # Excel has no dates apart from times: a time at midnight is a date cell.
        text = (value.date().isoformat() if value.time() == time(0) and value.tzinfo is None
                else value.isoformat())
    elif isinstance(value, date | time):
        text = value.isoformat()
    elif isinstance(value, timedelta):
        text = str(value)
    else:
        text = str(value).strip()
    return text or None


def parse_sheet(rows: Iterable[Sequence[object]], *, entity: str, name: str,
                contract: Contract | None = None) -> Iterator[Row]:
    """Read a sheet's rows of cell values (row 1 first) into rows with their row numbers.

    ``name`` names the sheet in messages (``customers.xlsx sheet customers``). Rows of empty
    cells are skipped; cells are read with :func:`cell_text`. Raises
    :class:`FileContractError` for a header row that is missing or breaks the contract.
    """
    contract = contract or Contract.of(entity)
    rows = iter(rows)
    first = [cell_text(v) for v in next(rows, ())]
    while first and first[-1] is None:  # formatted but empty columns after the last
        first.pop()
    if not first:
        raise FileContractError(
            f"{name} row 1 is empty: it must be the header (the column names)")
    header = [cell or "" for cell in first]
    check_header(header, contract, f"{name} row 1")
    seen = _FirstSeen(contract)
    for number, values in enumerate(rows, start=2):
        cells = [cell_text(v) for v in values]
        if all(cell is None for cell in cells):
            continue
        if any(cell is not None for cell in cells[len(header):]):
            yield Row(number, number, reject=SourceReject(
                reason=f"{name} row {number} has values beyond the header's"
                       f" {len(header)} columns",
                record={"cells": cells}, line_number=number,
                external_id=_external_id(header, [c or "" for c in cells])))
            continue
        record = {col: cell for col, cell in zip(header, cells, strict=False)
                  if cell is not None}
        if (again := seen.again(record, number, "row", f" in {name}")) is not None:
            yield Row(number, number, reject=again)
            continue
        yield Row(number, number, record=record)


_SHEET_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def sheet_names(path: Path) -> list[str]:
    """The sheet names of a workbook, read from its index alone (no cell is parsed)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("xl/workbook.xml") as index:
            # expat refuses external entities and (2.4.1+) entity-expansion bombs.
            tree = ElementTree.parse(index)  # noqa: S314
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as exc:
        raise FileContractError(_not_a_workbook(path, exc)) from exc
    except OSError as exc:
        raise FileContractError(f"{path} cannot be read: {exc.strerror}") from exc
    return [sheet.attrib["name"] for sheet in tree.iter(f"{_SHEET_NS}sheet")]


def _not_a_workbook(path: Path, exc: Exception) -> str:
    return (f"{path.name} is not an Excel workbook (.xlsx): {exc or type(exc).__name__};"
            " save it as 'Excel Workbook (.xlsx)' or as 'CSV UTF-8'")


def _sheet_key(name: str) -> str:
    return name.strip().lower()


def _choose_sheet(path: Path, entity: str, sheet: str | None) -> str:
    """The sheet to read: the one asked for, else the one named for the entity, else the only."""
    names = sheet_names(path)
    wanted = sheet or entity
    for name in names:
        if _sheet_key(name) == _sheet_key(wanted):
            return name
    if sheet is None and len(names) == 1:
        return names[0]
    raise FileContractError(
        f"{path.name} has no sheet named {wanted}"
        f" (its sheets: {', '.join(names) or 'none'})")


def _read_sheet(path: Path, entity: str, sheet: str | None,
                contract: Contract | None) -> Generator[Row]:
    chosen = _choose_sheet(path, entity, sheet)
    values = _sheet_values(path, chosen)
    try:
        yield from parse_sheet(values, entity=entity, name=f"{path.name} sheet {chosen}",
                               contract=contract)
    finally:
        values.close()


def _sheet_values(path: Path, chosen: str) -> Generator[tuple[object, ...]]:
    """The cell values of a sheet, row 1 first, streamed; a damaged sheet is a contract error."""
    try:
        # read_only streams the sheet's XML; data_only gives a formula's last computed value.
        workbook = load_workbook(path, read_only=True, data_only=True, keep_links=False)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError) as exc:
        raise FileContractError(_not_a_workbook(path, exc)) from exc
    try:
        worksheet = workbook[chosen]
        if not hasattr(worksheet, "iter_rows"):
            raise FileContractError(f"{path.name} sheet {chosen} is a chart, not a table")
        # Some writers store a wrong size (A1:A1); forget it and read what is there.
        worksheet.reset_dimensions()
        name = f"{path.name} sheet {chosen}"
        read = 0
        try:
            for values in worksheet.iter_rows(min_row=1, values_only=True):
                yield values
                read += 1
        # ElementTree and lxml parse errors are both SyntaxErrors.
        except (SyntaxError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise FileContractError(
                f"{name} cannot be read after row {read}: the workbook is damaged ({exc});"
                " open and save it again in Excel") from exc
    finally:
        workbook.close()


# Where an entity's data is ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EntityFile:
    """Where one entity's data is: a CSV file, or a sheet of a workbook.

    ``sheet`` is ``None`` for a CSV file, and for a workbook named after its entity, whose
    sheet of that name (or only sheet) is read.
    """

    entity: str
    path: Path

    sheet: str | None = None

    @property
    def is_workbook(self) -> bool:
        """Whether this is an XLSX workbook (else CSV)."""
        return self.path.suffix.lower() == WORKBOOK

    @property
    def name(self) -> str:
        """How messages name it: ``customers.csv``, ``import.xlsx sheet customers``."""
        return self.path.name if self.sheet is None else f"{self.path.name} sheet {self.sheet}"

    def rows(self, contract: Contract | None = None) -> Generator[Row]:
        """Its rows, streamed; the caller closes the generator to close the file."""
        if self.is_workbook:
            yield from _read_sheet(self.path, self.entity, self.sheet, contract)
            return
        with self.path.open("rb") as binary:
            yield from read_rows(binary, entity=self.entity, name=self.path.name,
                                 contract=contract)


def _ignored(path: Path) -> bool:
    # Excel keeps '~$name.xlsx' beside a workbook it has open; it is a lock, not data.
    return path.name.startswith(("~$", "."))


def locate(directory: Path, entities: Iterable[str] = ENTITY_MODELS) -> dict[str, list[EntityFile]]:
    """Where each of ``entities`` is in ``directory`` (or in the one workbook ``directory``).

    An entity is ``<entity>.csv``, ``<entity>.xlsx``, or a sheet named ``<entity>`` (case and
    surrounding spaces ignored) of any other workbook there. Absent entities are left out; an
    entity found in more than one place maps to all of them (the caller refuses it).
    """
    wanted = list(entities)
    found: dict[str, list[EntityFile]] = {entity: [] for entity in wanted}
    files = ([directory] if directory.is_file() else
             sorted(p for p in directory.iterdir() if p.is_file() and not _ignored(p)))
    singles = [p for p in files if p.stem.lower() in found
                   and p.suffix.lower() in (".csv", WORKBOOK)]
    workbooks = [p for p in files if p.suffix.lower() == WORKBOOK and p not in singles
                 and p.stem.lower() not in (*ENTITY_MODELS, EXCHANGE_RATES)]
    for path in singles:
        found[path.stem.lower()].append(EntityFile(path.stem.lower(), path))
    for path in workbooks:
        for sheet in sheet_names(path):
            if (entity := _sheet_key(sheet)) in found:
                found[entity].append(EntityFile(entity, path, sheet))
            elif entity not in (*ENTITY_MODELS, EXCHANGE_RATES):
                logger.warning("%s: sheet %r is not an entity, ignored (sheets are read by"
                               " name: %s)", path.name, sheet, ", ".join(ENTITY_MODELS))
    return {entity: places for entity, places in found.items() if places}


# Pages ------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as binary:
        for block in iter(lambda: binary.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resume_after(cursor: str | None, digest: str, name: str) -> int:
    """The last line a previous run committed in this same file, or 0 to read it all."""
    if cursor is None:
        return 0
    kind, _, rest = cursor.partition(":")
    stored_digest, _, line = rest.partition(":")
    if kind != "sha256" or not line.isdigit():
        logger.warning("%s: cursor %r is not a file position; reading from the top", name, cursor)
        return 0
    if stored_digest != digest:
        logger.info("%s changed since the interrupted sync; reading it from the top", name)
        return 0
    return int(line)


def _take(rows: Iterator[Row], count: int, after_line: int) -> list[Row]:
    taken = []
    for row in rows:
        if row.line_number > after_line:
            taken.append(row)
            if len(taken) == count:
                break
    return taken


def _page(rows: list[Row], cursor: str | None) -> Page:
    records = [(r.line_number, r.record) for r in rows if r.record is not None]
    return Page(records=[dict(record) for _, record in records],
                line_numbers=[line for line, _ in records],
                rejects=[r.reject for r in rows if r.reject is not None],
                cursor=cursor)


async def _pages(found: EntityFile, cursor: str | None, page_size: int) -> AsyncIterator[Page]:
    try:
        digest = await asyncio.to_thread(_sha256, found.path)
    except OSError as exc:
        raise FileContractError(f"{found.path} cannot be read: {exc.strerror}") from exc
    after = _resume_after(cursor, digest, found.name)
    rows = found.rows()
    try:
        chunk = await asyncio.to_thread(_take, rows, page_size, after)
        while chunk:
            following = await asyncio.to_thread(_take, rows, page_size, after)
            # The last page clears the cursor: the next sync reads the whole file again.
            yield _page(chunk, f"sha256:{digest}:{chunk[-1].end_line}" if following else None)
            chunk = following
    finally:
        rows.close()


def file_pages(found: EntityFile, *, page_size: int = PAGE_SIZE) -> PageSource:
    """The page source of one entity's file or sheet, for :func:`sync_entity`."""
    if found.entity not in ENTITY_MODELS:
        raise ValueError(f"no file contract for entity {found.entity!r}")

    def pages(cursor: str | None) -> AsyncIterator[Page]:
        return _pages(found, cursor, page_size)

    return pages


def csv_pages(path: Path, entity: str, *, page_size: int = PAGE_SIZE) -> PageSource:
    """The page source of one CSV file."""
    return file_pages(EntityFile(entity, path), page_size=page_size)


def xlsx_pages(path: Path, entity: str, *, sheet: str | None = None,
               page_size: int = PAGE_SIZE) -> PageSource:
    """The page source of one sheet (by default the entity's, or the only one) of a workbook."""
    return file_pages(EntityFile(entity, path, sheet), page_size=page_size)


def _refused(entity: str, places: list[EntityFile]) -> PageSource:
    message = (f"{entity} is given {len(places)} times ({', '.join(p.name for p in places)}):"
               " keep one, or the rows of one would silently replace the other's")

    async def pages(_cursor: str | None) -> AsyncIterator[Page]:
        raise FileContractError(message)
        yield  # an async generator that fails when read, so only this entity fails

    return pages


class FilesConnector:
    """A directory of contract files (or one workbook) as a source system.

    Parameters
    ----------
    directory
        Where ``<entity>.csv``, ``<entity>.xlsx`` or a workbook with a sheet per entity are;
        or the path of one such workbook.
    source
        The name stored in every row's ``source``; give each ERP its own.
    page_size
        Records per committed page.

    Examples
    --------
    >>> connector = FilesConnector(Path("erp_connectors/templates"))
    >>> list(connector.page_sources())[:3]
    ['customers', 'sites', 'contacts']
    """

    def __init__(self, directory: Path, source: str = "files", *,
                 page_size: int = PAGE_SIZE) -> None:
        self.directory = directory
        self.source = source
        self.page_size = page_size

    def page_sources(self) -> dict[str, PageSource]:
        """A page source per entity present, parents first; an entity given twice fails."""
        if not self.directory.exists():
            raise FileContractError(f"{self.directory} does not exist")
        sources: dict[str, PageSource] = {}
        for entity, places in locate(self.directory).items():
            sources[entity] = (file_pages(places[0], page_size=self.page_size)
                               if len(places) == 1 else _refused(entity, places))
        if not sources:
            logger.warning("%s holds no contract file (%s.csv ...)", self.directory,
                           next(iter(ENTITY_MODELS)))
        return sources

    async def aclose(self) -> None:
        """Nothing to release: each read opens and closes its file."""


async def sync_files(target: psycopg.AsyncConnection[Any] | AsyncConnectionPool,
                     directory: Path, *, source: str = "files", full: bool = False,
                     page_size: int = PAGE_SIZE) -> list[SyncResult]:
    """Sync every entity found in ``directory``, parents first.

    A missing file is skipped (a builder may have no sites); a file that breaks its contract
    fails its own entity and the others still run.
    """
    connector = FilesConnector(directory, source, page_size=page_size)
    results = []
    for entity, pages in (await asyncio.to_thread(connector.page_sources)).items():
        results.append(await sync_entity(target, source=source, entity=entity, full=full,
                                         pages=pages))
    return results


def template(entity: str) -> str:
    """The text of the fill-in template of ``entity``'s file."""
    return (resources.files("erp_connectors") / "templates" / f"{entity}.csv").read_text(
        encoding="utf-8")


__all__ = ["ENTITY_MODELS", "EXCHANGE_RATES", "FILE_NAMES", "TEMPLATE_WORKBOOK", "Columns",
           "Contract", "EntityFile", "FileContractError", "FilesConnector", "Row", "cell_text",
           "check_header", "csv_pages", "file_pages", "locate", "parse_csv", "parse_sheet",
           "read_rows", "sheet_names", "sync_files", "template", "xlsx_pages"]
