"""How lists and heavy reads are answered.

JSON pages with a cursor, an ETag on heavy reads, and every list as CSV or XLSX with the same
filters, streamed.

CSV is streamed as it is read, a page of rows at a time; XLSX (a zip that cannot be written
front to back) is written row by row by openpyxl's write-only workbook to a temporary file that
spills to disk past a few MB, then streamed: memory stays flat either way.
"""

from __future__ import annotations

import csv
import hashlib
import io
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from pydantic import BaseModel

from api.deps import Conn, Session, pool_of, scoped
from api.errors import EXPORT_CONTENT
from api.paging import Page, encode_cursor, page_request
from core.paging import Page as RowPage
from core.paging import PageRequest

M = TypeVar("M", bound=BaseModel)
Row = Mapping[str, Any]
Format = Literal["json", "csv", "xlsx"]
Fetch = Callable[[Conn, PageRequest], Awaitable[RowPage[Row]]]

EXPORT_PAGE = 2000
_MEDIA = {"csv": "text/csv; charset=utf-8",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}

# The other bodies of a list route's 200 (``responses=EXPORTS`` beside ``response_model=
# Page[Item]``); errors.document adds them to any operation with a format parameter anyway.
EXPORTS: dict[int | str, dict[str, Any]] = {200: {"content": EXPORT_CONTENT}}


def json_response(request: Request, body: BaseModel, *, etag: bool = True) -> Response:
    """``body`` as JSON, with a strong ETag of its bytes; 304 when the client has them already."""
    raw = orjson.dumps(body.model_dump(mode="json"))
    if not etag:
        return Response(raw, media_type="application/json")
    tag = '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    sent = request.headers.get("if-none-match", "")
    if tag in {t.strip().removeprefix("W/") for t in sent.split(",")} or sent.strip() == "*":
        return Response(status_code=304, headers=headers)
    return Response(raw, media_type="application/json", headers=headers)


# A text cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection"):
# a leading apostrophe makes it text again.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str) -> str:
    # Control characters a worksheet cannot hold (openpyxl refuses the whole file) are dropped.
    value = ILLEGAL_CHARACTERS_RE.sub("", value)
    return "'" + value if value.startswith(_FORMULA_START) else value


def _cell(value: Any) -> Any:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, datetime):
        # Excel has no time zones: UTC, said so in the column's values being UTC everywhere.
        return value.replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, list | dict):
        return _text(orjson.dumps(value, default=str).decode())
    return value


def _csv_cell(value: Any) -> Any:
    value = _cell(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


async def list_response(request: Request, session: Session, *, fetch: Fetch,
                        item: Callable[[Row], M], model: type[M], sort: str, limit: int,
                        cursor: str | None, fmt: Format, filename: str,
                        key: str = "id") -> Response:
    """A list route's answer: a JSON page, or the whole list as CSV or XLSX.

    ``fetch`` runs the list query for a :class:`PageRequest` (the same filters either way);
    ``item`` turns a row into the response ``model``; ``key`` is the row's unique id column.
    """
    page = page_request(sort, limit=limit, cursor=cursor)
    if fmt == "json":
        rows = await fetch(session.conn, page)
        items = [item(r) for r in rows.items]
        last = rows.items[-1] if rows.items else None
        next_cursor = (encode_cursor(sort, last[page.sort], last[key])
                       if rows.more and last is not None else None)
        return json_response(request, Page[Any](items=items, next_cursor=next_cursor,
                                                limit=limit))
    at_first = PageRequest(limit=EXPORT_PAGE, sort=page.sort, descending=page.descending)

    async def rows_on(conn: Conn) -> AsyncIterator[BaseModel]:
        at = at_first
        while True:
            rows = await fetch(conn, at)
            for r in rows.items:
                yield item(r)
            if not rows.more or not rows.items:
                return
            last = rows.items[-1]
            at = PageRequest(limit=EXPORT_PAGE, sort=page.sort, descending=page.descending,
                             after=(last[page.sort], last[key]))

    if fmt == "xlsx":
        # Written whole before the answer starts: the request's own connection serves, so an
        # export holds one pool connection, not two.
        return await export(rows_on(session.conn), model=model, fmt=fmt, filename=filename)
    pool = pool_of(request, session.principal.tenant)

    async def every_row() -> AsyncIterator[BaseModel]:
        # A connection of its own: the request's is given back before the body is streamed.
        async with scoped(pool, session.principal) as conn:
            async for one in rows_on(conn):
                yield one

    return await export(every_row(), model=model, fmt=fmt, filename=filename)


async def export(items: AsyncIterator[BaseModel], *, model: type[BaseModel],
                 fmt: Literal["csv", "xlsx"], filename: str) -> Response:
    """Stream ``items`` as a CSV or XLSX download (columns: the model's fields, in order)."""
    headers = {"Content-Disposition": f'attachment; filename="{filename}.{fmt}"'}
    columns = list(model.model_fields)
    if fmt == "csv":
        return StreamingResponse(_csv(items, columns), media_type=_MEDIA["csv"],
                                 headers=headers)
    spool = await _xlsx(items, columns)
    return StreamingResponse(_chunks(spool), media_type=_MEDIA["xlsx"], headers=headers)


async def _csv(items: AsyncIterator[BaseModel], columns: list[str]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    # A byte-order mark, so that Excel opens the UTF-8 file with its accents right.
    buffer.write("\ufeff")
    writer.writerow(columns)
    async for item in items:
        writer.writerow([_csv_cell(getattr(item, c)) for c in columns])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


async def _xlsx(items: AsyncIterator[BaseModel], columns: list[str]) -> Any:
    book = Workbook(write_only=True)
    sheet = book.create_sheet("export")
    sheet.append(columns)
    async for item in items:
        sheet.append([_cell(getattr(item, c)) for c in columns])
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
    book.save(spool)
    spool.seek(0)
    return spool


async def _chunks(spool: Any) -> AsyncIterator[bytes]:
    try:
        while chunk := spool.read(256 * 1024):
            yield chunk
    finally:
        spool.close()


def one_of(rows: Sequence[Row]) -> Row | None:
    """The only row of a by-id query, or None."""
    return rows[0] if rows else None
