"""Invoicing that leaks nothing: unbilled work, and pay-per-use contracts' billable hours.

**Unbilled work** (``unbilled``): service visits (machine events of kind ``maintenance``) and
parts replaced (``part_replaced``) on machines of the installed base with no invoice line of
the matching kind (``field_service``, ``spare_parts``) on that installed machine issued within
a window of the work's day, either side, on an invoice neither cancelled nor deleted. Valued at
the median billed visit of the machine's model over the last 365 days (an invoice's lines of
that kind on one machine, summed, in the reporting currency), else of all models. Each item
names the service contract live on the machine that day, if any: work under a contract may be
included in it, work without one should have been invoiced. The events are the machines' own;
technician-recorded maintenance joins them when the ``services_done`` view lands.

**Pay-per-use** (``billable``): the ERP does not say which contracts bill by use, so finance
records the terms (table ``usage_billing``, migration 022: rate per operating hour, currency,
hours included per calendar month, start day). Billable hours per contract and month = the
operating hours of the machines it covers (machine_days, the machines' own counters) on the
month's days within the terms' start and the contract's term, minus the included hours (never
below zero, not pro-rated); amount = billable hours x rate.

SQL in ``sql/billing.sql``; docs/api-finance.md has the definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.paging import Page, PageRequest, cut, keyset, keyset_params
from core.sql import queries

Conn = psycopg.AsyncConnection[Any]
Coverage = Literal["all", "covered", "uncovered"]
WorkKind = Literal["maintenance", "part_replaced"]

DEFAULT_WINDOW_DAYS = 30
UNBILLED_SORTS: dict[str, sql.Composable] = {
    name: sql.Identifier(name) for name in ("occurred_at", "value", "age_days")}
BILLABLE_SORTS: dict[str, sql.Composable] = {
    name: sql.Identifier(name) for name in ("contract", "period", "amount")}


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/billing.sql")


# -- unbilled work -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnbilledFilter:
    """Which work: from ``since``, older than ``older_than_days`` on ``on``."""

    on: date
    reporting_currency: str
    since: date
    older_than_days: int = 14
    window_days: int = DEFAULT_WINDOW_DAYS
    coverage: Coverage = "all"
    kind: WorkKind | None = None
    customer_id: int | None = None

    def __post_init__(self) -> None:
        if self.older_than_days < 0 or self.window_days < 0:
            msg = "older_than_days and window_days must be 0 or more"
            raise ValueError(msg)
        if self.since > self.on:
            msg = f"since {self.since} is after {self.on}"
            raise ValueError(msg)

    def params(self) -> dict[str, Any]:
        """The SQL parameters of unbilled_rows."""
        return {"on": self.on, "reporting": self.reporting_currency, "since": self.since,
                "older_than_days": self.older_than_days, "window_days": self.window_days,
                "coverage": self.coverage, "kind": self.kind, "customer_id": self.customer_id}


async def unbilled(conn: Conn, page: PageRequest, *, where: UnbilledFilter
                   ) -> Page[dict[str, Any]]:
    """A page of unbilled work items (columns: see sql/billing.sql, unbilled_rows)."""
    condition, order = keyset(UNBILLED_SORTS, sql.Identifier("id"), page)
    q = _sql()
    query = sql.SQL(q["unbilled_rows"] + "\n" + q["unbilled_page"]).format(
        keyset=condition, order=order)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**where.params(), **keyset_params(page)})
        return cut(await cur.fetchall(), page)


@dataclass(frozen=True, slots=True)
class UnbilledTotal:
    """All the unbilled work of a filter: how many items and their estimated value."""

    items: int
    estimated_value: Decimal | None
    unvalued: int


async def unbilled_total(conn: Conn, *, where: UnbilledFilter) -> UnbilledTotal:
    """The count and estimated value of every unbilled item of ``where``."""
    q = _sql()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q["unbilled_rows"] + "\n" + q["unbilled_total"], where.params())
        row = await cur.fetchone()
    assert row is not None  # an aggregate without GROUP BY has its row
    return UnbilledTotal(int(row["items"]), row["estimated_value"], int(row["unvalued"]))


# -- pay-per-use terms -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageTerms:
    """What finance records of a pay-per-use contract."""

    rate_per_hour: Decimal
    currency: str
    included_hours: Decimal
    starts_on: date


async def usage_terms(conn: Conn, *, contract_id: int | None = None) -> list[dict[str, Any]]:
    """The pay-per-use terms with their contract (one contract's, or all)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["usage_terms"], {"contract_id": contract_id})
        return await cur.fetchall()


async def put_usage_terms(conn: Conn, *, contract_id: int, terms: UsageTerms,
                          by: str) -> bool | None:
    """Record (or replace) a contract's terms; True when new, None when no such contract."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["contract_visible"], {"contract_id": contract_id})
        if await cur.fetchone() is None:
            return None
        await cur.execute(_sql()["put_usage_terms"], {
            "contract_id": contract_id, "rate_per_hour": terms.rate_per_hour,
            "currency": terms.currency, "included_hours": terms.included_hours,
            "starts_on": terms.starts_on, "updated_by": by})
        row = await cur.fetchone()
    assert row is not None  # an upsert returns its row
    return bool(row["created"])


async def delete_usage_terms(conn: Conn, *, contract_id: int) -> bool:
    """Stop billing a contract by use; False when it had no terms."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["delete_usage_terms"], {"contract_id": contract_id})
        return await cur.fetchone() is not None


# -- billable hours ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BillableFilter:
    """Calendar months ``first_month`` to ``last_month`` (first days), inclusive."""

    first_month: date
    last_month: date
    customer_id: int | None = None

    def __post_init__(self) -> None:
        if self.first_month.day != 1 or self.last_month.day != 1:
            msg = "months are given by their first day"
            raise ValueError(msg)
        if self.first_month > self.last_month:
            msg = f"from {self.first_month:%Y-%m} is after to {self.last_month:%Y-%m}"
            raise ValueError(msg)

    def params(self) -> dict[str, Any]:
        """The SQL parameters of billable_rows."""
        return {"first_month": self.first_month, "last_month": self.last_month,
                "customer_id": self.customer_id}


async def billable(conn: Conn, page: PageRequest, *, where: BillableFilter
                   ) -> Page[dict[str, Any]]:
    """A page of billable usage per contract and month (columns: sql/billing.sql)."""
    condition, order = keyset(BILLABLE_SORTS, sql.Identifier("id"), page)
    q = _sql()
    query = sql.SQL(q["billable_rows"] + "\n" + q["billable_page"]).format(
        keyset=condition, order=order)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**where.params(), **keyset_params(page)})
        return cut(await cur.fetchall(), page)


def month_of(text: str) -> date:
    """The first day of a ``YYYY-MM`` month."""
    return datetime.strptime(text, "%Y-%m").date()
