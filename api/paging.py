"""List responses: a page of items and an opaque cursor to the next one.

A cursor is the previous page's last ``(sort value, id)`` with the sort it belongs to, base64url
of JSON: opaque to clients (they pass it back as it is), refused with a 400 when it is not one of
ours or belongs to another sort.
"""

from __future__ import annotations

import base64
import binascii
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, Field

from api.errors import BadRequest
from core.paging import PageRequest

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


class Page(BaseModel, Generic[T]):
    """One page of a list; ``next_cursor`` is null on the last."""

    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page.")
    limit: int


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def encode_cursor(sort: str, value: Any, row_id: Any) -> str:
    """The cursor after a row whose sort column holds ``value`` and whose id is ``row_id``."""
    raw = orjson.dumps([sort, _plain(value), _plain(row_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, Any]:
    """The ``(sort value, id)`` a cursor of this sort holds; a 400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, value, row_id = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise BadRequest("the cursor is not one this API gave out: pass next_cursor as it was",
                         kind="bad-cursor") from None
    if name != sort:
        raise BadRequest(f"the cursor belongs to sort {name!r}, not {sort!r}: start again "
                         "without a cursor", kind="bad-cursor")
    if not isinstance(value, str | int | float | bool) or not isinstance(row_id, str | int):
        raise BadRequest("the cursor is not one this API gave out", kind="bad-cursor")
    return value, row_id


def page_request(sort: str, *, limit: int, cursor: str | None) -> PageRequest:
    """The page a list route was asked for; ``sort`` is a name, ``-name`` for descending."""
    descending = sort.startswith("-")
    name = sort.removeprefix("-")
    after = decode_cursor(cursor, sort) if cursor else None
    return PageRequest(limit=limit, sort=name, descending=descending, after=after)

