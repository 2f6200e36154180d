"""List responses: a page of items and an opaque cursor to the next one.

A cursor is the previous page's last ``(sort value, id)`` with the sort it belongs to, base64url
of JSON, then a truncated HMAC-SHA256 of that JSON: opaque to clients (they pass it back as it
is), refused with a 400 when it is not one of ours or belongs to another sort. The signature
keeps a forged value (another JSON type than the sort column's) away from the database, where
it would fail as a 500. The key is derived from ``api_secret_key`` by ``create_app``, so every
worker of one deployment accepts the others' cursors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, Field

from api.errors import BadRequest
from core.paging import PageRequest

T = TypeVar("T")

_SIGNATURE_BYTES = 16
# Until create_app sets the deployment's key: a process's own, so no cursor is accepted by
# accident with a key anyone could know.
_key: bytes = secrets.token_bytes(32)


def set_cursor_key(secret: str) -> None:
    """Sign cursors with a key derived from the API's secret (``settings.api_secret_key``)."""
    global _key  # noqa: PLW0603 -- one key per process, set once when the app is made
    _key = hashlib.sha256(b"oemr-cursor\0" + secret.encode()).digest()


def _signature(raw: bytes) -> bytes:
    return hmac.new(_key, raw, hashlib.sha256).digest()[:_SIGNATURE_BYTES]

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
    return base64.urlsafe_b64encode(_signature(raw) + raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, Any]:
    """The ``(sort value, id)`` a cursor of this sort holds; a 400 for anything else."""
    refused = BadRequest("the cursor is not one this API gave out: pass next_cursor as it was",
                         kind="bad-cursor")
    try:
        signed = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise refused from None
    signature, raw = signed[:_SIGNATURE_BYTES], signed[_SIGNATURE_BYTES:]
    if not hmac.compare_digest(signature, _signature(raw)):
        raise refused
    try:
        name, value, row_id = orjson.loads(raw)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise refused from None
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

