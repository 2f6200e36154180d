"""Receivables per customer: open and overdue invoices and days sales outstanding (DSO).

Definitions (docs/api-finance.md; SQL in ``sql/receivables.sql``), in the reporting currency, each
invoice's net amount converted at its issue day:

- open receivables: invoices the ERP has as open now, in full (partial payments are not known);
- overdue: open and due before the day; days overdue = the day - the due day;
- DSO = open receivables / revenue invoiced in the 90 days up to the day x 90 (revenue: every
  invoice of those days but drafts, cancelled and deleted ones; credit notes count negative);
  None without revenue in those days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.paging import Page, PageRequest, cut, keyset, keyset_params
from core.sql import queries

Conn = psycopg.AsyncConnection[Any]

DSO_DAYS = 90
SORTS: dict[str, sql.Composable] = {
    name: sql.Identifier(name)
    for name in ("overdue_amount", "open_amount", "days_overdue", "dso", "customer_id")}


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/receivables.sql")


@dataclass(frozen=True)
class ReceivablesFilter:
    """Whose receivables: every customer with open invoices or revenue in the DSO window."""

    on: date
    reporting_currency: str
    overdue_only: bool = False
    customer_id: int | None = None

    def params(self) -> dict[str, Any]:
        """The SQL parameters of per_customer_rows."""
        return {"on": self.on, "reporting": self.reporting_currency,
                "overdue_only": self.overdue_only, "customer_id": self.customer_id}


async def per_customer(conn: Conn, page: PageRequest, *, where: ReceivablesFilter
                       ) -> Page[dict[str, Any]]:
    """A page of receivables per customer (open, overdue, revenue of 90 days, DSO)."""
    condition, order = keyset(SORTS, sql.Identifier("id"), page)
    q = _sql()
    query = sql.SQL(q["per_customer_rows"] + "\n" + q["per_customer_page"]).format(
        keyset=condition, order=order)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**where.params(), **keyset_params(page)})
        return cut(await cur.fetchall(), page)


@dataclass(frozen=True, slots=True)
class OpenInvoice:
    """An open invoice, in its currency and the reporting currency."""

    id: int
    number: str | None
    issued_on: date
    due_on: date | None
    net_amount: Decimal
    currency: str
    amount_reporting: Decimal | None
    days_overdue: int


async def open_invoices(conn: Conn, *, customer_id: int, on: date,
                        reporting_currency: str) -> list[OpenInvoice] | None:
    """A customer's open invoices, oldest due first; None when the customer is not visible."""
    params = {"customer_id": customer_id, "on": on, "reporting": reporting_currency}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["customer_visible"], params)
        if await cur.fetchone() is None:
            return None
        await cur.execute(_sql()["open_invoices"], params)
        return [OpenInvoice(**r) for r in await cur.fetchall()]
