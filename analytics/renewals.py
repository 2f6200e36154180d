"""The renewals pipeline: contracts coming up for notice or term end, and what is at risk.

A contract is in the pipeline on a day when it is in force (not deleted, not a draft, started,
not ended) and its notice date (term end minus its notice period) or its term end falls within
the next N days. Its value is the running term's annual value, in the contract's currency and
in the reporting currency (``to_reporting`` on the day); its churn probability and reasons are
its customer's score of the latest scoring day on or before the day, the day
:func:`analytics.churn.revenue_at_risk` reads; and its revenue at risk = value in the
reporting currency x probability, so a customer's contracts in force add up to that customer's
revenue at risk (annual contract value in force x probability). The SQL is in
``sql/renewals.sql``; docs/api-finance.md has the definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from analytics.kpi import DIMENSIONS
from core.paging import Page, PageRequest, cut, keyset, keyset_params
from core.sql import queries

Conn = psycopg.AsyncConnection[Any]
Due = Literal["notice", "end", "either"]

# What a caller may sort the pipeline by: each a never-NULL column of pipeline_page.
SORTS: dict[str, sql.Composable] = {
    name: sql.Identifier(name)
    for name in ("notice_date", "ends_on", "value", "revenue_at_risk", "probability")}


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/renewals.sql")


@dataclass(frozen=True)
class PipelineFilter:
    """Which contracts: due (notice date, term end or either) within ``within_days`` of ``on``.

    ``dimension`` and ``segment`` go together: the customer's segment of a KPI cut on ``on``.
    """

    on: date
    reporting_currency: str
    within_days: int = 90
    due: Due = "either"
    auto_renew: bool | None = None
    tier: str | None = None
    customer_id: int | None = None
    min_probability: float | None = None
    dimension: str | None = None
    segment: str | None = None

    def __post_init__(self) -> None:
        if self.within_days < 0:
            msg = f"within_days must be 0 or more, not {self.within_days}"
            raise ValueError(msg)
        if (self.dimension is None) != (self.segment is None):
            msg = "dimension and segment go together"
            raise ValueError(msg)
        if self.dimension is not None and self.dimension not in DIMENSIONS:
            msg = f"dimension {self.dimension!r}: one of {', '.join(DIMENSIONS)}"
            raise ValueError(msg)

    def params(self) -> dict[str, Any]:
        """The SQL parameters of pipeline_rows."""
        return {"on": self.on, "reporting": self.reporting_currency,
                "within_days": self.within_days, "due": self.due,
                "auto_renew": self.auto_renew, "tier": self.tier,
                "customer_id": self.customer_id, "min_probability": self.min_probability,
                "dimension": self.dimension, "segment": self.segment}


async def pipeline(conn: Conn, page: PageRequest, *, where: PipelineFilter
                   ) -> Page[dict[str, Any]]:
    """A page of the pipeline, one row per contract (columns: see sql/renewals.sql).

    Each row holds the contract, its customer, ``notice_date``, ``ends_on``, ``annual_value``
    and ``currency``, ``value_reporting``, ``churn_probability``, ``reasons``, ``at_risk``
    (revenue at risk) and the sort keys.
    """
    condition, order = keyset(SORTS, sql.Identifier("id"), page)
    q = _sql()
    query = sql.SQL(q["pipeline_rows"] + "\n" + q["pipeline_page"]).format(
        keyset=condition, order=order)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**where.params(), **keyset_params(page)})
        return cut(await cur.fetchall(), page)


@dataclass(frozen=True, slots=True)
class MonthRisk:
    """The pipeline's revenue at risk in a month (of notice date or term end) and a segment."""

    month: date
    segment: str
    contracts: int
    customers: int
    value: Decimal | None
    revenue_at_risk: Decimal | None
    unscored: int


async def at_risk_by_month(conn: Conn, *, where: PipelineFilter,
                           by_dimension: str = "all") -> list[MonthRisk]:
    """The pipeline of ``where`` summed by month of its due date and segment of ``by_dimension``.

    ``where.due`` must be "notice" or "end": the date whose month a contract counts in. Values
    are in the reporting currency; ``unscored`` counts contracts whose customer has no score
    (no revenue at risk).
    """
    if where.due == "either":
        msg = "by month needs due 'notice' or 'end': the date a contract is counted at"
        raise ValueError(msg)
    if by_dimension not in DIMENSIONS:
        msg = f"dimension {by_dimension!r}: one of {', '.join(DIMENSIONS)}"
        raise ValueError(msg)
    q = _sql()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q["pipeline_rows"] + "\n" + q["pipeline_by_month"],
                          {**where.params(), "by_dimension": by_dimension})
        return [MonthRisk(r["month"], r["segment"], int(r["contracts"]), int(r["customers"]),
                          r["value"], r["revenue_at_risk"], int(r["unscored"]))
                for r in await cur.fetchall()]
