"""Churn features per customer at a cut-off day, read from what was known on that day.

``features_at(conn, t)`` returns one row per customer on the books on ``t`` (a contract in force,
or for a customer without contracts an invoice within 365 days) with the features of
``FEATURES``: usage trend, maintenance adherence, parts capture, payment delays, NPS and survey
silence, faults, contract terms, tenure and size. All of it is one SQL query
(analytics/sql/features.sql) over ``machine_days`` and the business tables; nothing dated after
``t`` is read, so features at ``t`` do not change when later data arrives. docs/churn-risk.md
defines each one.

``churn_dates(conn, as_of)`` says when each customer churned, by the one definition the labels,
the backtest and the docs share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from core.sql import queries

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature: its column, what it says, and how a customer's value reads in a reason."""

    name: str
    description: str
    template: str  # str.format with {v} (the value), e.g. "operating hours {v:+.0%} vs ..."


FEATURES: tuple[Feature, ...] = (
    Feature("machines", "machines installed", "{v:.0f} machines"),
    Feature("hours_per_machine_week", "operating hours per machine and week, last 90 days",
            "{v:.1f} operating hours per machine and week"),
    Feature("usage_trend_90", "operating hours, last 90 days vs the 90 before, -1..",
            "operating hours {v:+.0%} vs previous quarter"),
    Feature("usage_trend_30", "daily operating hours, last 30 days vs the 90 before",
            "operating hours {v:+.0%} in the last 30 days vs the 90 before"),
    Feature("usage_yoy_90", "operating hours, last 90 days vs the same 90 days a year earlier",
            "operating hours {v:+.0%} vs the same quarter last year"),
    Feature("maint_adherence_180", "services done / due, last 180 days (hours or days interval)",
            "{v:.0%} of due services done in the last 6 months"),
    Feature("maint_adherence_change", "maintenance adherence, last 180 days minus the year before",
            "maintenance adherence {v:+.0%} vs the year before"),
    Feature("services_overdue", "service intervals passed since each machine's last service",
            "{v:.0f} services overdue"),
    Feature("faults_90_per_machine", "fault events per machine, last 90 days",
            "{v:.1f} faults per machine in 90 days"),
    Feature("faults_change", "faults in the last 90 days minus the quarterly mean of the year"
            " before", "{v:+.0f} faults vs a usual quarter"),
    Feature("parts_capture_180", "OEM spare-parts orders / the parts value the hours imply,"
            " last 180 days", "OEM parts bought: {v:.0%} of what the operating hours imply"),
    Feature("parts_capture_change", "parts capture, last 180 days minus the year before",
            "parts capture {v:+.0%} vs the year before"),
    Feature("pay_delay_180", "mean days paid after due, invoices due in the last 180 days",
            "invoices paid {v:.0f} days late on average"),
    Feature("pay_delay_change", "payment delay, last 180 days minus the year before (days)",
            "payments {v:+.0f} days later than the year before"),
    Feature("late_share_180", "share of invoices due in the last 180 days paid late or unpaid",
            "{v:.0%} of recent invoices paid late"),
    Feature("overdue_open", "invoices past due and unpaid on the day", "{v:.0f} invoices overdue"),
    Feature("nps_last", "latest NPS score (0-10)", "latest NPS answer {v:.0f}"),
    Feature("nps_change", "mean NPS score, last 180 days minus the 18 months before",
            "NPS scores {v:+.1f} points vs before"),
    Feature("survey_silence_days", "days since the last survey answer",
            "no survey answer for {v:.0f} days"),
    Feature("responses_365", "survey answers in the last year", "{v:.0f} survey answers in a year"),
    Feature("responses_change", "survey answers, last year minus the year before",
            "{v:+.0f} survey answers vs the year before"),
    Feature("auto_renew", "share of contracts in force that renew automatically",
            "auto-renewal on {v:.0%} of contracts"),
    Feature("days_to_term_end", "days to the nearest contract term end",
            "contract term ends in {v:.0f} days"),
    Feature("days_to_notice", "days to the nearest notice deadline (negative: inside it)",
            "notice deadline in {v:.0f} days"),
    Feature("notice_days", "shortest notice period (days)", "notice period {v:.0f} days"),
    Feature("tier_rank", "highest contract tier in force (1 basic, 2 plus, 3 premium)",
            "contract tier {v:.0f} (1 basic .. 3 premium)"),
    Feature("log_annual_value", "ln(1 + annual contract value in force, reporting currency)",
            "annual contract value e^{v:.1f}"),
    Feature("lapse_notified", "share of contract value with notice of non-renewal given",
            "notice of non-renewal for {v:.0%} of contract value"),
    Feature("downgrades_365", "contract downgrades decided in the last year",
            "{v:.0f} contract downgrades in the last year"),
    Feature("tenure_years", "years since customer_since", "customer for {v:.1f} years"),
    Feature("size_rank", "size class (1 small .. 4 enterprise)", "size class {v:.0f} of 4"),
    Feature("key_account", "key account (1) or not (0)", "key account: {v:.0f}"),
    Feature("log_revenue_365", "ln(1 + invoiced revenue of the last year, reporting currency)",
            "revenue e^{v:.1f} in the last year"),
    Feature("new_machines_400", "new machines bought in the last 400 days",
            "{v:.0f} new machines bought in 400 days"),
    Feature("retrofits_365", "retrofits bought in the last year", "{v:.0f} retrofits in a year"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/features.sql")


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """Features of the customers on the books at a cut-off day.

    Attributes
    ----------
    cutoff
        The day T: only data dated on or before it was read.
    customer_ids, external_ids
        One per row.
    annual_values
        Annual contract value in force on T, reporting currency (None: no contract).
    values
        Shape (customers, len(FEATURE_NAMES)), NaN where a feature has no value (no surveys yet,
        no machine data the period before, ...).
    """

    cutoff: date
    customer_ids: list[int]
    external_ids: list[str]
    annual_values: list[Decimal | None]
    values: npt.NDArray[np.float64] = field(repr=False)

    def row(self, i: int) -> dict[str, float | None]:
        """The features of row ``i`` by name (None for a missing value)."""
        return {name: (None if math.isnan(v) else float(v))
                for name, v in zip(FEATURE_NAMES, self.values[i], strict=True)}


async def features_at(conn: Connection, t: date, *, reporting_currency: str = "EUR") -> FeatureSet:
    """Features of every customer on the books on day ``t``, from data dated up to ``t``.

    Parameters
    ----------
    conn
        A connection; ``machine_days`` should be refreshed (``refresh_machine_days``).
    t
        The cut-off day.
    reporting_currency
        Money is converted into it with ``to_reporting`` at the rate of the day.
    """
    cur = await conn.execute(_sql()["features_at"], {"t": t, "reporting": reporting_currency})
    rows = await cur.fetchall()
    columns = [c.name for c in cur.description or ()]
    index = [columns.index(name) for name in FEATURE_NAMES]
    values = np.array([[np.nan if r[i] is None else float(r[i]) for i in index] for r in rows],
                      dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))
    return FeatureSet(t, [int(r[0]) for r in rows], [str(r[1]) for r in rows],
                      [r[2] for r in rows], values)


async def churn_dates(conn: Connection, as_of: date) -> dict[int, date]:
    """The day each customer churned, as the data known on ``as_of`` says.

    Churn: every service contract of the customer has ended (expired, cancelled or terminated)
    by ``as_of`` and none is still running; the churn day is the end of the last one. A customer
    that never held a contract churned when 365 days passed without an invoice (business
    stopped), dated on that 365th day.
    """
    cur = await conn.execute(_sql()["churn_dates"], {"as_of": as_of})
    return {int(c): d for c, d in await cur.fetchall()}


async def data_span(conn: Connection) -> tuple[date | None, date | None]:
    """The first and last days the invoices and machine rollups cover."""
    cur = await conn.execute(_sql()["data_span"])
    row = await cur.fetchone()
    return (row[0], row[1]) if row else (None, None)
