"""Leakage: after-sales revenue the installed base implies and the books do not show.

A contract covers a machine on a day when it is live that day (not draft, cancelled or deleted,
``starts_on <= day <= ends_on``, the rule of ``active_customers``) and is on that machine or on
its whole customer.

- Uncovered: installed machines (not deleted, commissioned by ``today``) no contract covers
  today; with whether they are still in warranty and when their last cover ended.
- Warranty ending: machines whose warranty ends within ``days`` days (from today on) and that no
  contract covers on the day after it ends (a contract signed to start then is cover).
- Parts gap, per customer over the ``days`` days up to and including ``today``: expected parts =
  the operating hours of its installed machines (``machine_days``) x the model's
  ``parts_value_per_1000h`` / 1000 (the ERP's value, converted at today's rate); bought = its
  spare-parts invoice lines (draft, cancelled and deleted left out, credit notes negative, each
  converted at its invoice day's rate), in the reporting currency; gap = expected - bought,
  listed where positive. Parts demand follows operating hours, so parts bought below that rate
  were bought elsewhere (docs/api-maintenance.md).

Examples
--------
>>> async def show(conn):  # doctest: +SKIP
...     page = await parts_gap_page(conn, PageRequest(limit=20, sort="gap", descending=True),
...                                 filters=LeakageFilters(), today=date(2026, 12, 7),
...                                 days=365, reporting_currency="EUR")
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.paging import Page, PageRequest, cut, keyset, keyset_params
from core.sql import queries

Conn = psycopg.AsyncConnection[Any]
Row = dict[str, Any]

# The parts gap's default window: a year evens out the seasons of parts buying.
PARTS_WINDOW_DAYS = 365

UNCOVERED_SORTS = {"serial": sql.Identifier("serial"),
                   "customer": sql.Identifier("customer")}
WARRANTY_SORTS = {"warranty_end": sql.Identifier("warranty_end"),
                  "serial": sql.Identifier("serial")}
GAP_SORTS = {"gap": sql.Identifier("gap"), "customer": sql.Identifier("customer")}


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/leakage.sql")


@dataclass(frozen=True)
class LeakageFilters:
    """Which rows a leakage list holds (None: any)."""

    customer_id: int | None = None
    region: str | None = None
    model: str | None = None


async def _page(conn: Conn, query: sql.Composed, params: dict[str, Any],
                page: PageRequest) -> Page[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**params, **keyset_params(page)})
        return cut(await cur.fetchall(), page)


def _filter_params(filters: LeakageFilters) -> dict[str, Any]:
    return {"customer_id": filters.customer_id, "region": filters.region,
            "model": filters.model}


async def uncovered_page(conn: Conn, page: PageRequest, *, filters: LeakageFilters,
                         today: date) -> Page[Row]:
    """Installed machines no contract covers on ``today`` (sorts: :data:`UNCOVERED_SORTS`)."""
    where, order = keyset(UNCOVERED_SORTS, sql.Identifier("installed_base_id"), page)
    query = sql.SQL(_sql()["machines"] + "\n" + _sql()["uncovered"]).format(
        keyset=where, order=order)
    return await _page(conn, query, {"today": today, **_filter_params(filters)}, page)


async def warranty_ending_page(conn: Conn, page: PageRequest, *, filters: LeakageFilters,
                               today: date, days: int) -> Page[Row]:
    """Warranties ending within ``days`` days with no contract to follow them."""
    where, order = keyset(WARRANTY_SORTS, sql.Identifier("installed_base_id"), page)
    query = sql.SQL(_sql()["machines"] + "\n" + _sql()["warranty_ending"]).format(
        keyset=where, order=order)
    return await _page(conn, query, {"today": today, "days": days,
                                     **_filter_params(filters)}, page)


async def parts_gap_page(conn: Conn, page: PageRequest, *, filters: LeakageFilters,
                         today: date, days: int, reporting_currency: str) -> Page[Row]:
    """Customers buying fewer parts than their operating hours imply, with the gap's value."""
    where, order = keyset(GAP_SORTS, sql.Identifier("customer_id"), page)
    query = sql.SQL(_sql()["parts_gap"]).format(keyset=where, order=order)
    return await _page(conn, query, {"today": today, "days": days,
                                     "reporting": reporting_currency,
                                     **_filter_params(filters)}, page)
