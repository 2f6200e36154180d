"""CSV files as an ERP: customers.csv, sites.csv, installed_base.csv (docs/erp-files.md).

For the many machine builders whose ERP has no usable API: they export (or fill in the templates
under ``erp_connectors/templates``) and we read. A file is a full snapshot, so every sync reads
it from the top and the upserts leave unchanged rows alone; the cursor only marks how far a sync
got in *this* file (its SHA-256 and a line number), so a sync that died midway resumes after the
last committed page, and a file changed since starts over.

A line that cannot be a record (too few cells, an external id seen before in the file) is
rejected here with its line number; a record with a bad value is rejected by the engine with
its model's reason and the same line number. A file that breaks the contract as a whole (not
UTF-8, no header, a required column missing, an unknown column) stops that entity with
:class:`FileContractError`.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import logging
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

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

FILE_NAMES: dict[str, str] = {
    "customers": "customers.csv",
    "sites": "sites.csv",
    "installed_base": "installed_base.csv",
}
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
        fields = ENTITIES[entity].model.model_fields
        return cls(required=tuple(n for n, f in fields.items() if f.is_required()),
                   optional=tuple(n for n, f in fields.items() if not f.is_required()))


@dataclass(frozen=True, slots=True)
class Row:
    """One CSV record: a record for the engine, or why there is none. Lines count from 1."""

    line_number: int  # where the record starts (a quoted cell may span lines)
    end_line: int
    record: dict[str, str] | None = None
    reject: SourceReject | None = None


def _decoded(binary_lines: Iterable[bytes], name: str) -> Iterator[str]:
    for number, raw in enumerate(binary_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FileContractError(
                f"{name} line {number} is not UTF-8 text: save the file as"
                " 'CSV UTF-8' (Excel) or convert it") from None
        yield line.removeprefix("\ufeff") if number == 1 else line


def _header(first_line: str, entity: str, name: str) -> tuple[list[str], str]:
    """Column names and delimiter, checked against the contract."""
    # Excel writes ';' where the decimal separator is ',' (most of Europe).
    delimiter = ";" if ";" in first_line and "," not in first_line else ","
    header = [cell.strip() for cell in next(csv.reader([first_line], delimiter=delimiter))]
    contract = Columns.of(entity)
    problems = []
    if duplicated := sorted({c for c in header if header.count(c) > 1}):
        problems.append(f"column(s) {', '.join(duplicated)} appear more than once")
    if missing := [c for c in contract.required if c not in header]:
        problems.append(f"required column(s) {', '.join(missing)} missing")
    known = {*contract.required, *contract.optional}
    if unknown := [c for c in header if c not in known]:
        problems.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}"
                        f" (known: {', '.join(sorted(known))})")
    if problems:
        raise FileContractError(f"{name} line 1: {'; '.join(problems)}")
    return header, delimiter


def parse_csv(lines: Iterable[str], *, entity: str, name: str) -> Iterator[Row]:
    """Read CSV text into rows with their line numbers.

    ``lines`` keep their line endings (a file opened with ``newline=""``). Blank lines and
    lines of empty cells are skipped; an empty cell is an absent value. Raises
    :class:`FileContractError` for a header that breaks the contract or a quote never closed.
    """
    lines = iter(lines)
    first = next(lines, None)
    if first is None or not first.strip():
        raise FileContractError(f"{name} is empty: its first line must be the header")
    header, delimiter = _header(first, entity, name)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    seen: dict[str, int] = {}
    label = ENTITIES[entity].label
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
                record={"cells": cells}, line_number=start))
            continue
        record = {col: cell.strip() for col, cell in zip(header, cells, strict=False)
                  if cell.strip()}
        external_id = record.get("external_id")
        if external_id is not None and external_id in seen:
            yield Row(start, end, reject=SourceReject(
                reason=f"{label} {external_id} appears again (first at line"
                       f" {seen[external_id]}, which is kept)",
                record=record, line_number=start, external_id=external_id))
            continue
        if external_id is not None:
            seen[external_id] = start
        yield Row(start, end, record=record)


def read_rows(binary: Iterable[bytes], *, entity: str, name: str) -> Iterator[Row]:
    """Rows of a CSV file opened in binary mode (UTF-8, with or without a byte order mark)."""
    return parse_csv(_decoded(binary, name), entity=entity, name=name)


def _read(path: Path, entity: str) -> Generator[Row]:
    with path.open("rb") as binary:
        yield from read_rows(binary, entity=entity, name=path.name)


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


async def _pages(path: Path, entity: str, cursor: str | None,
                 page_size: int) -> AsyncIterator[Page]:
    try:
        digest = await asyncio.to_thread(_sha256, path)
    except OSError as exc:
        raise FileContractError(f"{path} cannot be read: {exc.strerror}") from exc
    after = _resume_after(cursor, digest, path.name)
    rows = _read(path, entity)
    try:
        chunk = await asyncio.to_thread(_take, rows, page_size, after)
        while chunk:
            following = await asyncio.to_thread(_take, rows, page_size, after)
            # The last page clears the cursor: the next sync reads the whole file again.
            yield _page(chunk, f"sha256:{digest}:{chunk[-1].end_line}" if following else None)
            chunk = following
    finally:
        rows.close()


def csv_pages(path: Path, entity: str, *, page_size: int = PAGE_SIZE) -> PageSource:
    """The page source of one CSV file, for :func:`erp_connectors.sync.sync_entity`."""
    if entity not in FILE_NAMES:
        raise ValueError(f"no file contract for entity {entity!r}")

    def pages(cursor: str | None) -> AsyncIterator[Page]:
        return _pages(path, entity, cursor, page_size)

    return pages


async def sync_files(target: psycopg.AsyncConnection[Any] | AsyncConnectionPool,
                     directory: Path, *, source: str = "files", full: bool = False,
                     page_size: int = PAGE_SIZE) -> list[SyncResult]:
    """Sync every contract file found in ``directory``, parents first.

    A missing file is skipped (a builder may have no sites); a file that breaks its contract
    fails its own entity and the others still run.
    """
    results = []
    for entity, file_name in FILE_NAMES.items():
        path = directory / file_name
        if not await asyncio.to_thread(path.exists):
            logger.info("%s: no %s, skipping %s", directory, file_name, entity)
            continue
        results.append(await sync_entity(target, source=source, entity=entity, full=full,
                                         pages=csv_pages(path, entity, page_size=page_size)))
    return results


def template(entity: str) -> str:
    """The text of the fill-in template of ``entity``'s file."""
    return (resources.files("erp_connectors") / "templates" / FILE_NAMES[entity]).read_text(
        encoding="utf-8")


__all__ = ["FILE_NAMES", "Columns", "FileContractError", "Row", "csv_pages", "parse_csv",
           "read_rows", "sync_files", "template"]
