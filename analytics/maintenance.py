"""Maintenance planning: due and overdue per machine, the work list, plans and service records.

A machine's plan is its model's plan in force (``service_plans``: the plan put through the API,
else the ERP's intervals): due after ``interval_hours`` operating hours or ``interval_days``
days since the last service, whichever comes first. Services done are ``services_done`` (the
machine's own maintenance events and the records of :func:`record_service`, a visit reported
by both on one UTC day counting once), the same services maintenance adherence counts.

Per machine, on day ``today`` (UTC):

- last service: the latest service done by ``today``; never serviced: the base is the later of
  commissioning and the machine's first day of data (hours before the data began are unknown).
- hours since: operating hours (``machine_days``) of the days after the last service's day, up
  to and including today; days since: ``today`` minus that day.
- usage rate: operating hours per day over the ``USAGE_DAYS`` days before today (fewer for a
  machine known for fewer days).
- forecast due date: the earlier of base + interval_days and, by hours, today + the hours left /
  the usage rate (rounded up; none at a rate of 0), or, when the hours are already past, the day
  they were reached.
- status: ``overdue`` past either interval (hours since > interval_hours, or today after the
  days' due date), ``due`` forecast within ``SOON_DAYS``, ``ok``, or ``no_plan``.
- overdue by: hours past interval_hours, and days since the forecast due date.

Examples
--------
>>> async def show(conn):  # doctest: +SKIP
...     page = await due_page(conn, PageRequest(limit=20, sort="due"),
...                           filters=DueFilters(status="overdue"), today=date(2026, 12, 7))
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core.paging import Page, PageRequest, cut, keyset, keyset_params
from core.sql import queries

Conn = psycopg.AsyncConnection[Any]
Row = dict[str, Any]
Status = Literal["overdue", "due", "ok", "no_plan"]
GroupBy = Literal["region", "customer", "site"]

# The usage rate's window: a quarter smooths weekly shifts and holidays, and still follows a
# machine whose use changed this year.
USAGE_DAYS = 90
# Forecast within four weeks: 'due' (a month's planning horizon of a service team).
SOON_DAYS = 28

DUE_SORTS = {"due": sql.Identifier("due"), "serial": sql.Identifier("serial"),
             "overdue_days": sql.Identifier("overdue_days")}
RECORD_SORTS = {"performed_at": sql.Identifier("r", "performed_at")}
# The work list's groups: fixed expressions, never a caller's string.
_GROUPS: dict[GroupBy, tuple[sql.Composable, sql.Composable]] = {
    "region": (sql.SQL("coalesce(l.region, '')"), sql.SQL("coalesce(l.region, '')")),
    "customer": (sql.SQL("l.customer_id::text"), sql.SQL("l.customer_name")),
    "site": (sql.SQL("coalesce(l.site_id::text, '')"),
             sql.SQL("coalesce(l.site_name, l.customer_name || ' (no site)')")),
}


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/maintenance.sql")


@dataclass(frozen=True)
class DueFilters:
    """Which machines a due list holds (None: any)."""

    status: Status | None = None
    customer_id: int | None = None
    site_id: int | None = None
    region: str | None = None
    model: str | None = None
    due_before: date | None = None
    machine_id: int | None = None


def _status_params(today: date, filters: DueFilters) -> dict[str, Any]:
    return {"today": today, "usage_days": USAGE_DAYS, "soon_days": SOON_DAYS,
            "machine_id": filters.machine_id, "customer_id": filters.customer_id,
            "site_id": filters.site_id, "region": filters.region, "model": filters.model}


async def due_page(conn: Conn, page: PageRequest, *, filters: DueFilters,
                   today: date) -> Page[Row]:
    """A page of machines with their maintenance status (sorts: :data:`DUE_SORTS`)."""
    where, order = keyset(DUE_SORTS, sql.Identifier("machine_id"), page)
    query = sql.SQL(_sql()["status"] + "\n" + _sql()["status_page"]).format(
        keyset=where, order=order)
    params = {**_status_params(today, filters), **keyset_params(page),
              "status": filters.status, "due_before": filters.due_before}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return cut(await cur.fetchall(), page)


async def machine_status(conn: Conn, machine_id: int, *, today: date) -> Row | None:
    """One machine's maintenance status, or None when it is not visible or not installed."""
    page = await due_page(conn, PageRequest(limit=1, sort="serial"),
                          filters=DueFilters(machine_id=machine_id), today=today)
    return page.items[0] if page.items else None


async def worklist(conn: Conn, *, weeks: int, by: GroupBy, today: date) -> list[Row]:
    """Machines due within ``weeks`` weeks, by the ISO week due and region, customer or site.

    Overdue machines are in the current week; each group lists its machines.
    """
    key, name = _GROUPS[by]
    query = sql.SQL(_sql()["status"] + "\n" + _sql()["worklist"]).format(
        group_key=key, group_name=name)
    params = {**_status_params(today, DueFilters()),
              "horizon": date.fromordinal(today.toordinal() + 7 * weeks)}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def plans(conn: Conn, *, model: str | None = None) -> list[Row]:
    """The plan in force of every model (or of one), with the ERP's intervals beside it."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["plans"], {"model": model})
        return await cur.fetchall()


async def model_known(conn: Conn, model: str) -> bool:
    """Whether ``model`` is one the ERP or the installed base names (or already has a plan)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["model_known"], {"model": model})
        row = await cur.fetchone()
    return bool(row and row["known"])


@dataclass(frozen=True)
class PlanChange:
    """A model's plan as put: intervals (one may be None), the work and the parts kit."""

    interval_hours: int | None
    interval_days: int | None
    work: str
    parts_kit: list[dict[str, Any]]


async def put_plan(conn: Conn, model: str, plan: PlanChange, *, by: str) -> Row:
    """Create or replace ``model``'s plan; the plan in force after it."""
    await conn.execute(_sql()["put_plan"], {
        "model": model, "interval_hours": plan.interval_hours,
        "interval_days": plan.interval_days, "work": plan.work,
        "parts_kit": Jsonb(plan.parts_kit), "updated_by": by})
    (row,) = await plans(conn, model=model)
    return row


async def machine_visible(conn: Conn, machine_id: int) -> bool:
    """Whether the caller's transaction sees the machine (row-level security)."""
    cur = await conn.execute(_sql()["machine_visible"], {"machine_id": machine_id})
    return await cur.fetchone() is not None


@dataclass(frozen=True)
class Service:
    """A service done, as a technician reports it."""

    machine_id: int
    performed_at: datetime
    work: str
    parts: list[dict[str, Any]]
    technician: str


async def record_service(conn: Conn, service: Service, *, by: str) -> Row:
    """Store a service done; the machine's due date moves in the same transaction."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["add_record"], {
            "machine_id": service.machine_id, "performed_at": service.performed_at,
            "work": service.work, "parts": Jsonb(service.parts),
            "technician": service.technician, "recorded_by": by})
        row = await cur.fetchone()
    assert row is not None
    return row


@dataclass(frozen=True)
class RecordFilters:
    """Which records a list holds (None: any); ``until`` is exclusive."""

    machine_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None


async def records_page(conn: Conn, page: PageRequest, *, filters: RecordFilters) -> Page[Row]:
    """A page of recorded services (sort: performed_at)."""
    where, order = keyset(RECORD_SORTS, sql.Identifier("r", "id"), page)
    query = sql.SQL(_sql()["records_page"]).format(keyset=where, order=order)
    params = {**keyset_params(page), "machine_id": filters.machine_id,
              "since": filters.since, "until": filters.until}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return cut(await cur.fetchall(), page)
