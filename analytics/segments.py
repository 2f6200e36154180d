"""Behavioural segments per customer and day, and retention per segment with its trend.

Attribute segments (country, industry, size class, key account, machine model, contract tier) are
cuts of the KPIs (:mod:`analytics.kpi`, the SQL definition ``customer_segments``). This module adds
the *behavioural* ones, which depend on what a customer did up to a day, so they are assigned on a
day and stored with it (table ``segment_memberships``, migration 011):

- ``value_tier``: ``A`` (top 20% by total CLV), ``B`` (next 30%), ``C`` (the rest), from the
  latest :func:`analytics.customer_value.value_customers` run on or before the day;
  ``unrated`` without a value.
- ``rfm``: recency, frequency and monetary quintile scores (1-5) from parts and field-service
  purchases, and a named group (``champions``, ``loyal``, ``promising``, ``at risk``,
  ``hibernating``, ``new``, ``lost``, ``no purchases``).
- ``usage``: operating hours of the customer's machines over the last 90 days against their
  models' fleet median, and against the 90 days before: ``heavy``, ``steady``, ``declining``,
  ``idle``, ``no telemetry``.

Every assignment keeps the figures that made it (``inputs``), so it can be checked by hand. The
definitions, thresholds and the tie rule are in docs/segments.md and in analytics/sql/segments.sql.

:func:`segment_trends` gives, for each segment of a kind (membership as assigned on each
period's first day, or the latest assignment before it), the retention and churn per period with
the KPIs' active-customer definition (the SQL definition ``active_customers``), and its trend, so a
user sees which segment's retention is slipping.

Examples
--------
>>> async def nightly(conn):  # doctest: +SKIP
...     run = await assign_segments(conn, on=date(2026, 5, 1), reporting_currency="EUR")
...     print(run.counts["usage"])            # {'declining': 7, 'heavy': 9, ...}
...     trends = await segment_trends(conn, kind="rfm", reporting_currency="EUR",
...                                   periods=periods_between("quarter", date(2025, 1, 1),
...                                                           date(2026, 3, 31)))
...     print([(t.segment, t.slope) for t in trends])
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row, tuple_row

from analytics.periods import Period
from core.sql import queries

logger = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]

SegmentKind = Literal["value_tier", "rfm", "usage"]
KINDS: tuple[SegmentKind, ...] = ("value_tier", "rfm", "usage")
# The query in segments.sql that assigns each kind.
_QUERY: dict[SegmentKind, str] = {
    "value_tier": "value_tiers", "rfm": "rfm", "usage": "usage_profiles"}

#: Every segment a kind can assign, in a sensible reading order (best first).
SEGMENTS: dict[SegmentKind, tuple[str, ...]] = {
    "value_tier": ("A", "B", "C", "unrated"),
    "rfm": ("champions", "loyal", "promising", "new", "at risk", "hibernating", "lost",
            "no purchases"),
    "usage": ("heavy", "steady", "declining", "idle", "no telemetry"),
}
#: What :func:`segment_trends` calls a customer without an assignment on or before a day.
UNASSIGNED = "unassigned"

DEFAULT_WINDOW_DAYS = 365


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/segments.sql")


def _check_kind(kind: str) -> SegmentKind:
    for known in KINDS:
        if kind == known:
            return known
    msg = f"unknown segment kind {kind!r}; one of {', '.join(KINDS)}"
    raise ValueError(msg)


@dataclass(frozen=True)
class SegmentRun:
    """What one assignment did.

    Attributes
    ----------
    assigned_on, currency
        The day (only what happened on or before it counts) and the reporting currency.
    counts
        Customers per kind and segment, as stored.
    valued_on
        The customer_values run the value tiers came from; ``None`` when there was none on or
        before the day (every customer is then ``unrated``).
    notes
        What a reader should know: no CLV run, purchase lines without an exchange rate.
    """

    assigned_on: date
    currency: str
    counts: dict[str, dict[str, int]]
    valued_on: date | None
    notes: tuple[str, ...] = field(default_factory=tuple)


async def preview_segments(conn: Conn, kind: SegmentKind, *, on: date,
                           reporting_currency: str) -> list[dict[str, Any]]:
    """The segment and inputs of every customer for ``kind`` on ``on``, without storing them.

    Rows ``{"customer_id", "segment", "inputs"}`` ordered by customer; the same query that
    :func:`assign_segments` stores.
    """
    text = f"{_sql()[_QUERY[_check_kind(kind)]]}\nSELECT * FROM assigned ORDER BY customer_id"
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(text, {"on": on, "rep": reporting_currency})
        return await cur.fetchall()


async def assign_segments(conn: Conn, *, on: date, reporting_currency: str,
                          kinds: Sequence[SegmentKind] = KINDS) -> SegmentRun:
    """Assign every customer one segment of each kind on ``on`` and store them.

    Parameters
    ----------
    conn
        A connection; the day's rows of the kinds assigned are replaced in one transaction (of
        its own, or a savepoint in the caller's).
    on
        The assignment day. Purchases, usage and values after it are not looked at, so a past
        day can be assigned again to build the history :func:`segment_trends` reads.
    reporting_currency
        ``Settings.reporting_currency``: RFM spend is converted into it with ``to_reporting``,
        and the value tiers use the CLV run valued in it.
    kinds
        Which kinds to assign (default all three).

    Returns
    -------
    SegmentRun
        Customers per kind and segment, the CLV run used and notes.

    Notes
    -----
    Every customer of the table is assigned, deleted ones included (an ERP archives churned
    customers; their history is what retention is measured on); one that had done nothing by
    ``on`` is ``unrated`` / ``no purchases`` / ``no telemetry``. Definitions: docs/segments.md.
    """
    blocks = _sql()
    params: dict[str, Any] = {"on": on, "rep": reporting_currency}
    async with conn.transaction():
        for name in kinds:
            kind = _check_kind(name)
            await conn.execute(blocks["delete_day"], {**params, "kind": kind})
            await conn.execute(f"{blocks[_QUERY[kind]]}\n{blocks['store']}",
                               {**params, "kind": kind})
        counts: dict[str, dict[str, int]] = {}
        cur = await conn.execute(blocks["run_counts"], params)
        for kind_name, segment, customers in await cur.fetchall():
            counts.setdefault(kind_name, {})[segment] = customers
        cur = await conn.execute(
            "SELECT max(valued_on) FROM customer_values WHERE valued_on <= %(on)s"
            " AND currency = %(rep)s", params)
        row = await cur.fetchone()
        valued_on: date | None = row[0] if row else None
        cur = await conn.execute(
            "SELECT coalesce(sum((inputs->>'unconverted_lines')::integer), 0)"
            " FROM segment_memberships WHERE assigned_on = %(on)s AND kind = 'rfm'", params)
        row = await cur.fetchone()
        unconverted = int(row[0]) if row else 0
    notes: list[str] = []
    if "value_tier" in kinds and valued_on is None:
        notes.append(f"no customer values in {reporting_currency} on or before {on}: every"
                     " customer is unrated (run analytics.customer_value.value_customers)")
    if unconverted:
        notes.append(f"rfm: {unconverted} purchase lines have no exchange rate into"
                     f" {reporting_currency} on their day and are left out")
    logger.info("segments assigned on %s: %s", on, counts)
    return SegmentRun(assigned_on=on, currency=reporting_currency, counts=counts,
                      valued_on=valued_on, notes=tuple(notes))


@dataclass(frozen=True)
class SegmentRetention:
    """Retention of one segment over one period.

    Attributes
    ----------
    period
        The period.
    customers_start
        Customers of the segment (as of the period's first day) active at its start (on the day
        before its first day).
    customers_retained
        Of those, the ones still active on its last day.
    retention, churn
        customers_retained / customers_start and 1 - retention; ``None`` without customers.
    change
        retention - the previous period's retention of the same segment (percentage points as a
        fraction: -0.05 is five points down); ``None`` for the first period or when either is.
    """

    period: Period
    customers_start: int
    customers_retained: int
    retention: Decimal | None
    churn: Decimal | None
    change: Decimal | None


@dataclass(frozen=True)
class SegmentTrend:
    """One segment's retention over the periods asked for, and its trend.

    Attributes
    ----------
    kind, segment
        Which segment.
    points
        One :class:`SegmentRetention` per period, in order.
    slope
        The least-squares slope of retention per period over the periods with a value (-0.02:
        two points lost per period); ``None`` with fewer than two such periods.
    latest_change
        The change of the last period with a value (see :attr:`SegmentRetention.change`).
    """

    kind: str
    segment: str
    points: tuple[SegmentRetention, ...]
    slope: Decimal | None
    latest_change: Decimal | None

    @property
    def slipping(self) -> bool:
        """Retention is going down: a negative slope."""
        return self.slope is not None and self.slope < 0


def _slope(values: Sequence[tuple[int, Decimal]]) -> Decimal | None:
    """Ordinary least-squares slope of value against period index."""
    if len(values) < 2:
        return None
    n = Decimal(len(values))
    zero = Decimal(0)
    mean_x = sum((Decimal(x) for x, _ in values), zero) / n
    mean_y = sum((y for _, y in values), zero) / n
    sxx = sum(((Decimal(x) - mean_x) ** 2 for x, _ in values), zero)
    sxy = sum(((Decimal(x) - mean_x) * (y - mean_y) for x, y in values), zero)
    return sxy / sxx


def _trend(kind: str, segment: str, periods: Sequence[Period],
           rows: Mapping[tuple[date, str], tuple[int, int]]) -> SegmentTrend:
    points: list[SegmentRetention] = []
    previous: Decimal | None = None
    for period in periods:
        start, retained = rows.get((period.start, segment), (0, 0))
        retention = Decimal(retained) / Decimal(start) if start else None
        change = retention - previous if retention is not None and previous is not None else None
        points.append(SegmentRetention(
            period=period, customers_start=start, customers_retained=retained,
            retention=retention, churn=1 - retention if retention is not None else None,
            change=change))
        previous = retention
    valued = [(i, p.retention) for i, p in enumerate(points) if p.retention is not None]
    changes = [p.change for p in points if p.change is not None]
    return SegmentTrend(kind=kind, segment=segment, points=tuple(points),
                        slope=_slope(valued), latest_change=changes[-1] if changes else None)


async def segment_trends(conn: Conn, *, kind: SegmentKind, periods: Sequence[Period],
                         reporting_currency: str,
                         window_days: int = DEFAULT_WINDOW_DAYS) -> list[SegmentTrend]:
    """Retention and churn per period of every segment of ``kind``, and their trend.

    Parameters
    ----------
    conn
        A connection (runs in the caller's transaction).
    kind
        ``value_tier``, ``rfm`` or ``usage``.
    periods
        The periods, in order (``analytics.periods.periods_between``); consecutive ones of one
        kind for a meaningful change and slope.
    reporting_currency
        Accepted for symmetry with the KPIs (retention counts customers, not money).
    window_days
        The active-customer window (SQL definition ``active_customers``, default 365).

    Returns
    -------
    list[SegmentTrend]
        One per segment that had customers at the start of any period, in the order of
        :data:`SEGMENTS` (``unassigned`` last): a segment's membership in a period is the
        customer's latest assignment on or before the period's first day
        (SQL definition ``behavioural_segments``), so it says what was known when the period
        began. Retention: of the segment's customers active at the start (the day before the
        first day), the share still active on the last day; the KPIs' definition
        (``kpi.retention`` with ``new`` customers left out, who have no membership yet).
    """
    kind = _check_kind(kind)
    del reporting_currency  # retention counts customers; kept so every KPI call looks alike
    if not periods:
        return []
    # Tuple rows whatever the connection's row factory (the API's gives dicts).
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_sql()["segment_retention"], {
            "kind": kind, "window": window_days,
            "starts": [p.start for p in periods], "lasts": [p.last_day for p in periods]})
        fetched = await cur.fetchall()
    rows = {(start, segment): (customers, retained)
            for start, segment, customers, retained in fetched}
    return retention_trends(kind, periods, rows, order=[*SEGMENTS[kind], UNASSIGNED])


def retention_trends(kind: str, periods: Sequence[Period],
                     rows: Mapping[tuple[date, str], tuple[int, int]], *,
                     order: Sequence[str] = ()) -> list[SegmentTrend]:
    """The trend of every segment in ``rows``: (period start, segment) -> (at start, retained).

    Segments named in ``order`` come first, in that order, then the others by name. Used by
    :func:`segment_trends` and for the attribute cuts' retention (``kpi.kpi_table``'s counts).
    """
    seen = {segment for _, segment in rows}
    segments = [s for s in order if s in seen] + sorted(seen - set(order))
    return [_trend(kind, segment, periods, rows) for segment in segments]
