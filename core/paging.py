"""Keyset pagination: a page is the rows after the last one seen, in a stable order.

A list query sorts on one column a caller chose from a fixed set, then on a unique id, and asks
for the rows after the previous page's last ``(sort value, id)``: each page costs an index range
scan whatever its depth, and a row inserted meanwhile neither repeats nor skips one. The sort
expressions must never be NULL (coalesce them), or the row comparison would drop rows.

>>> from psycopg import sql
>>> page = PageRequest(limit=2, sort="serial", descending=True, after=("M-9", 9))
>>> where, order = keyset({"serial": sql.Identifier("serial")}, sql.Identifier("id"), page)
>>> params = keyset_params(page)
>>> params["keyset_limit"], params["keyset_after_id"]
(3, 9)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from psycopg import sql

T = TypeVar("T")

MAX_LIMIT = 1000


@dataclass(frozen=True)
class PageRequest:
    """Which page: its size, the sort (a name of the list's sortable columns) and where to start.

    ``after`` is the ``(sort value, id)`` of the previous page's last row, None for the first.
    """

    limit: int = 50
    sort: str = "id"
    descending: bool = False
    after: tuple[Any, Any] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT * 10:
            msg = f"page size {self.limit} is outside 1..{MAX_LIMIT * 10}"
            raise ValueError(msg)


def keyset(columns: Mapping[str, sql.Composable], tiebreak: sql.Composable,
           page: PageRequest) -> tuple[sql.Composable, sql.Composable]:
    """The WHERE condition and the ORDER BY list of ``page`` (parameters: :func:`keyset_params`).

    ``columns`` maps each sortable name to its (never NULL) expression; ``tiebreak`` is the unique
    id that makes the order total.
    """
    try:
        column = columns[page.sort]
    except KeyError:
        msg = f"cannot sort by {page.sort!r}: one of {', '.join(sorted(columns))}"
        raise ValueError(msg) from None
    direction = sql.SQL("DESC" if page.descending else "ASC")
    order = sql.SQL("{c} {d}, {t} {d}").format(c=column, t=tiebreak, d=direction)
    if page.after is None:
        return sql.SQL("true"), order
    compare = sql.SQL("<" if page.descending else ">")
    condition = sql.SQL("({c}, {t}) {op} (%(keyset_after_value)s, %(keyset_after_id)s)").format(
        c=column, t=tiebreak, op=compare)
    return condition, order


def keyset_params(page: PageRequest) -> dict[str, Any]:
    """The parameters :func:`keyset`'s SQL names; the limit is one more, to tell if more follow."""
    after_value, after_id = page.after if page.after is not None else (None, None)
    return {"keyset_after_value": after_value, "keyset_after_id": after_id,
            "keyset_limit": page.limit + 1}


@dataclass(frozen=True)
class Page(Generic[T]):
    """Up to ``limit`` rows, and whether more follow."""

    items: Sequence[T]
    more: bool


def cut(rows: Sequence[T], page: PageRequest) -> Page[T]:
    """The rows of a query run with :func:`keyset_params`' limit, as a page."""
    return Page(items=rows[:page.limit], more=len(rows) > page.limit)
