"""Customers: a filtered, keyset-paged list and the 360 read of one customer.

Everything is read as of a day ``on`` (nothing dated after it counts) in the reporting currency
where money of several documents is summed (``to_reporting`` at each document's day). The
definitions are the platform's own, called rather than restated: after-sales revenue and active
customers (analytics/sql/definitions/, docs/kpis.md), churn scores (``churn_scores``, the latest
scoring day's), customer values (``customer_values``, the latest valuation's), behavioural
segments (``behavioural_segments``) and the machine figures of :func:`analytics.kpi.machine_kpis`.

The list's columns, as of ``on``:

- ``revenue_12m``: after-sales revenue of the 365 days up to ``on`` (``after_sales_revenue``).
- ``annual_contract_value``: annual value of the contracts live on ``on`` (not draft, cancelled or
  deleted, ``starts_on <= on <= ends_on``, the KPIs' live contract), converted on ``on``.
- ``churn_probability``: the score of the latest scoring day on or before ``on``; a customer not
  scored that day is off the books (churned) and has none. ``risk_band``: ``high`` (>= 0.5),
  ``medium`` (>= 0.2), ``low`` (:func:`risk_band`; no band of the model's own: these are the
  API's reading of the probability).
- ``clv``: ``total_clv`` of the latest valuation on or before ``on`` in the reporting currency.
- ``open_invoices`` / ``overdue_invoices``: invoices of status ``open`` issued by ``on``; overdue
  when due before ``on``.

The customer's own figures (:func:`customer_360`, ``figures``) use the KPIs' definitions over the
365 days up to ``on``: after-sales revenue against the 365 days before, purchase days (docs/kpis.md,
repeat purchase rate) and NPS of its answers (one per contact, its latest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from analytics.kpi import DIMENSIONS, MachinePeriod, machine_kpis
from analytics.periods import Period
from core.paging import Page, PageRequest, cut, keyset, keyset_params
from core.sql import queries

Conn = psycopg.AsyncConnection[Any]
Row = dict[str, Any]
RiskBand = Literal["high", "medium", "low"]

#: A machine is silent when it was last heard of more than this many days before the day's end
#: (the ``silent_machines`` KPI's default).
SILENT_DAYS = 14
#: What "since the week before" means, in days.
CHANGE_DAYS = 7
#: How many overdue invoices, recent orders and answers, and history days a 360 shows.
OVERDUE_SHOWN = 20
RECENT_SHOWN = 5
HISTORY_DAYS = 90
#: Churn probability from which a customer's risk band is high, and medium.
HIGH_RISK = 0.5
MEDIUM_RISK = 0.2

# Sortable names -> the list's never-NULL columns (identifiers from this fixed set only).
CUSTOMER_SORTS = ("name", "churn_probability", "clv", "revenue_12m", "annual_contract_value")
INVOICE_SORTS = ("issued_on", "net_amount")
ORDER_SORTS = ("ordered_on", "net_amount")
CONTRACT_SORTS = ("starts_on", "ends_on")
NPS_SORTS = ("answered_at", "score")
RISK_SORTS = ("scored_on",)


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/customers.sql")


def risk_band(probability: float) -> RiskBand:
    """``high`` from :data:`HIGH_RISK`, ``medium`` from :data:`MEDIUM_RISK`, else ``low``."""
    if probability >= HIGH_RISK:
        return "high"
    return "medium" if probability >= MEDIUM_RISK else "low"


@dataclass(frozen=True)
class CustomerFilter:
    """Which customers the list holds (every field optional; all given must hold).

    ``segment`` is ``(dimension, segment)`` of a KPI cut (``analytics.kpi.DIMENSIONS``: an
    attribute as now, a behavioural kind as its latest assignment on or before the day);
    ``q`` a piece of the name (case-insensitive); ``archived`` includes customers deleted in the
    ERP (churned ones are archived there).
    """

    country: str | None = None
    industry: str | None = None
    size_class: str | None = None
    key_account: bool | None = None
    segment: tuple[str, str] | None = None
    risk_band: RiskBand | None = None
    min_probability: float | None = None
    has_overdue: bool | None = None
    q: str | None = None
    archived: bool = False

    def __post_init__(self) -> None:
        if self.segment is not None and self.segment[0] not in DIMENSIONS:
            msg = f"unknown segment dimension {self.segment[0]!r}; one of {', '.join(DIMENSIONS)}"
            raise ValueError(msg)

    def params(self) -> dict[str, Any]:
        """The list query's filter parameters."""
        dimension, value = self.segment if self.segment is not None else (None, None)
        return {"country": self.country, "industry": self.industry,
                "size_class": self.size_class, "key_account": self.key_account,
                "segment_dimension": dimension, "segment_value": value,
                "risk_band": self.risk_band, "min_probability": self.min_probability,
                "has_overdue": self.has_overdue, "q": self.q, "archived": self.archived}


async def _page(conn: Conn, name: str, page: PageRequest, sorts: Sequence[str], *,
                tiebreak: str, params: Mapping[str, Any]) -> Page[Row]:
    """A keyset page of the named list query, sorted by one of ``sorts``."""
    columns = {s: sql.Identifier(s) for s in sorts}
    where, order = keyset(columns, sql.Identifier(tiebreak), page)
    text = sql.SQL(_sql()[name]).format(where=where, order=order)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(text, {**params, **keyset_params(page)})
        return cut(await cur.fetchall(), page)


async def list_customers(conn: Conn, page: PageRequest, *, on: date, reporting_currency: str,
                         where: CustomerFilter | None = None) -> Page[Row]:
    """A page of customers with their risk, value, revenue, contract value and unpaid invoices.

    Sorted by ``page.sort`` (one of :data:`CUSTOMER_SORTS`), then id. Rows: id, external_id,
    name, country, industry, size_class, key_account, customer_since, archived, probability,
    risk_method, risk_band, total_clv, clv_method, revenue_12m, annual_contract_value,
    live_contracts, open_invoices, overdue_invoices, value_tier, rfm, usage, and the sort
    columns churn_probability and clv (-1 where there is no score or value).
    """
    where = where or CustomerFilter()
    return await _page(conn, "customer_list", page, CUSTOMER_SORTS, tiebreak="id",
                       params={**where.params(), "on": on, "rep": reporting_currency,
                               "high_risk": HIGH_RISK, "medium_risk": MEDIUM_RISK})


async def _all(conn: Conn, name: str, params: Mapping[str, Any]) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()[name], params)
        return await cur.fetchall()


async def _one(conn: Conn, name: str, params: Mapping[str, Any]) -> Row | None:
    rows = await _all(conn, name, params)
    return rows[0] if rows else None


async def customer_exists(conn: Conn, customer_id: int) -> bool:
    """Whether the customer is there (and visible to the connection's scope)."""
    row = await _one(conn, "exists", {"customer_id": customer_id})
    return bool(row and row["found"])


@dataclass(frozen=True)
class Customer360:
    """Everything about one customer as of a day.

    ``internal`` False is the customer's own view (the portal): its machines, contracts, unpaid
    invoices, orders and the changes among them; the OEM's assessments of it (risk, value,
    segments), its survey answers and figures are left out (None or empty).

    Attributes
    ----------
    profile
        The customer's record, sites and contacts counted, whether active on the day.
    machines
        Its installed base with when each was last heard of, and its figures for ``period``
        (:class:`analytics.kpi.MachinePeriod`, by installed_base_id).
    contracts
        Every contract with its renewal decisions.
    invoices, orders
        Unpaid and overdue invoices per currency; orders of the last 365 days per currency.
    figures
        Revenue (365 days and the 365 before), purchase days, NPS counts.
    value, risk
        The latest customer_values and churn_scores rows (risk with the score a week earlier).
    segments
        The latest assignment per behavioural kind, and the contract tier.
    changes
        What changed in the 7 days up to the day: kind, day, text, entity and entity_id.
    overdue, recent_orders, recent_answers
        Its overdue invoices (oldest first, up to :data:`OVERDUE_SHOWN`), its latest orders and
        survey answers (:data:`RECENT_SHOWN` each; answers are internal).
    risk_days, value_days
        Churn probability per scoring day and total CLV per valuation day (the latest
        :data:`HISTORY_DAYS` of each, oldest first; internal).
    """

    on: date
    period: Period
    internal: bool
    profile: Row
    machines: list[Row]
    machine_figures: dict[int, MachinePeriod]
    contracts: list[Row]
    invoices: list[Row]
    orders: list[Row]
    figures: Row | None = None
    value: Row | None = None
    risk: Row | None = None
    segments: list[Row] = field(default_factory=list)
    changes: list[Row] = field(default_factory=list)
    overdue: list[Row] = field(default_factory=list)
    recent_orders: list[Row] = field(default_factory=list)
    recent_answers: list[Row] = field(default_factory=list)
    risk_days: list[Row] = field(default_factory=list)
    value_days: list[Row] = field(default_factory=list)


async def customer_360(conn: Conn, customer_id: int, *, on: date, reporting_currency: str,
                       internal: bool = True, period: Period | None = None
                       ) -> Customer360 | None:
    """The 360 read of one customer as of ``on``; None when there is no such customer.

    ``period`` is the period of the machines' figures (default: the quarter containing ``on``,
    to date). ``internal`` False leaves out what the OEM alone may see (see
    :class:`Customer360`).
    """
    params = {"customer_id": customer_id, "on": on, "rep": reporting_currency,
              "internal": internal, "silent_days": SILENT_DAYS, "history_days": HISTORY_DAYS}
    profile = await _one(conn, "profile", params)
    if profile is None:
        return None
    period = period or Period.containing("quarter", on).to_date(on)
    figures = await machine_kpis(conn, period, reporting_currency=reporting_currency,
                                 customer_id=customer_id)
    contracts = await contracts_page(conn, customer_id, PageRequest(limit=10_000,
                                                                   sort="starts_on"), on=on)
    result = Customer360(
        on=on, period=period, internal=internal, profile=profile,
        machines=await _all(conn, "machines", params),
        machine_figures={m.installed_base_id: m for m in figures},
        contracts=list(contracts.items),
        invoices=await _all(conn, "invoice_totals", params),
        orders=await _all(conn, "order_totals", params),
        changes=await _all(conn, "changes", params),
        overdue=list((await invoices_page(conn, customer_id, PageRequest(
            limit=OVERDUE_SHOWN, sort="issued_on"), on=on, overdue=True)).items),
        recent_orders=list((await orders_page(conn, customer_id, PageRequest(
            limit=RECENT_SHOWN, sort="ordered_on", descending=True))).items))
    if not internal:
        return result
    return replace(result, figures=await _one(conn, "figures", params),
                   value=await _one(conn, "value", params),
                   risk=await _one(conn, "risk", params),
                   segments=await _all(conn, "segments", params),
                   recent_answers=list((await nps_page(conn, customer_id, PageRequest(
                       limit=RECENT_SHOWN, sort="answered_at", descending=True))).items),
                   risk_days=await _all(conn, "risk_days", params),
                   value_days=await _all(conn, "value_days", params))


async def risk_history(conn: Conn, customer_id: int, page: PageRequest) -> Page[Row]:
    """The customer's churn scores, one per scoring day, with reasons and revenue at risk."""
    return await _page(conn, "risk_history", page, RISK_SORTS, tiebreak="scored_on",
                       params={"customer_id": customer_id})


async def invoices_page(conn: Conn, customer_id: int, page: PageRequest, *, on: date,
                        status: str | None = None, overdue: bool | None = None) -> Page[Row]:
    """The customer's invoices (not deleted); overdue: open and due before ``on``."""
    return await _page(conn, "invoices", page, INVOICE_SORTS, tiebreak="id",
                       params={"customer_id": customer_id, "on": on, "status": status,
                               "overdue": overdue})


async def orders_page(conn: Conn, customer_id: int, page: PageRequest, *,
                      kind: str | None = None, status: str | None = None) -> Page[Row]:
    """The customer's orders (not deleted), with their line counts."""
    return await _page(conn, "orders", page, ORDER_SORTS, tiebreak="id",
                       params={"customer_id": customer_id, "kind": kind, "status": status})


async def contracts_page(conn: Conn, customer_id: int, page: PageRequest, *, on: date,
                         live: bool | None = None) -> Page[Row]:
    """The customer's contracts (not deleted) with their renewal decisions; live on ``on``."""
    return await _page(conn, "contracts", page, CONTRACT_SORTS, tiebreak="id",
                       params={"customer_id": customer_id, "on": on, "live": live})


async def nps_page(conn: Conn, customer_id: int, page: PageRequest, *,
                   category: str | None = None) -> Page[Row]:
    """The customer's survey answers (not deleted) with their contact and category."""
    return await _page(conn, "nps", page, NPS_SORTS, tiebreak="id",
                       params={"customer_id": customer_id, "category": category})


__all__ = [
    "CHANGE_DAYS",
    "CONTRACT_SORTS",
    "CUSTOMER_SORTS",
    "HIGH_RISK",
    "HISTORY_DAYS",
    "INVOICE_SORTS",
    "MEDIUM_RISK",
    "NPS_SORTS",
    "ORDER_SORTS",
    "OVERDUE_SHOWN",
    "RECENT_SHOWN",
    "RISK_SORTS",
    "SILENT_DAYS",
    "Customer360",
    "CustomerFilter",
    "contracts_page",
    "customer_360",
    "customer_exists",
    "invoices_page",
    "list_customers",
    "nps_page",
    "orders_page",
    "risk_band",
    "risk_history",
]
