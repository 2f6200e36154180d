"""Segments for the API: who is in each, every KPI per segment with its trend, who is slipping.

- :func:`segment_counts`: every cut's segments (``analytics.kpi.DIMENSIONS``) on a day, with
  their customers and active customers (the KPIs' segments and active-customer definition).
- :func:`segment_kpis`: every KPI per segment of a cut from the latest daily snapshot
  (:func:`analytics.kpi_snapshot.latest_snapshot`): the period to date and the previous complete
  one, with their numerators, denominators and counts, and the trend over every complete period
  the snapshots hold (each as its latest taking): the least-squares slope per period and the
  change of the last complete period against the one before.
- :func:`slipping_segments`: retention per segment over the last complete periods and its
  slope (``segments.segment_trends`` for the behavioural kinds; the same counts from
  ``kpi.kpi_table``'s retention for the attribute cuts: customers active at the start, of them
  those active at the end); a segment slips when the slope is negative (docs/segments.md),
  and why: its points against the whole base's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from analytics.kpi import DIMENSIONS, Cut, kpi_table
from analytics.kpi_snapshot import SnapshotValue, latest_snapshot
from analytics.periods import Period, PeriodKind, periods_between
from analytics.segments import KINDS, SegmentTrend, retention_trends, segment_trends
from core.sql import queries

logger = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]

DEFAULT_WINDOW_DAYS = 365


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/segment_kpis.sql")


def _dimension(dimension: str) -> str:
    if dimension not in DIMENSIONS:
        msg = f"unknown dimension {dimension!r}; one of {', '.join(DIMENSIONS)}"
        raise ValueError(msg)
    return dimension


@dataclass(frozen=True)
class SegmentCount:
    """One segment of a cut on a day: its customers, and of them the active ones."""

    dimension: str
    segment: str
    customers: int
    active: int


async def segment_counts(conn: Conn, *, on: date, dimensions: Sequence[str] = DIMENSIONS,
                         window_days: int = DEFAULT_WINDOW_DAYS) -> list[SegmentCount]:
    """Every segment of every cut on ``on``, with its customers (archived ones too) and active ones.

    Segments are the KPIs' (SQL ``period_segments``): attributes as they are now, behavioural
    kinds as the latest assignment on or before ``on``. ``model`` segments overlap; every other
    cut's add up to the customers.
    """
    dims = [_dimension(d) for d in dimensions]
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_sql()["segment_counts"], {"dimensions": dims, "on": on,
                                                     "window": window_days})
        return [SegmentCount(d, s, int(n), int(a)) for d, s, n, a in await cur.fetchall()]


@dataclass(frozen=True)
class TrendPoint:
    """A complete period's value of one KPI and segment, as its latest snapshot took it."""

    period: Period
    value: Decimal | None
    numerator: Decimal | None
    denominator: Decimal | None
    taken_on: date


@dataclass(frozen=True)
class SegmentKpi:
    """One KPI of one segment: the period to date, the previous complete one, and the trend.

    ``change`` is the last complete period's value less the one before it (both from the
    snapshots); ``slope`` the least-squares change per period over ``points`` (None with fewer
    than two values).
    """

    kpi: str
    segment: str
    unit: str
    currency: str
    current: SnapshotValue | None
    previous: SnapshotValue | None
    points: tuple[TrendPoint, ...]
    slope: Decimal | None
    change: Decimal | None


@dataclass(frozen=True)
class SegmentKpiTable:
    """Every KPI per segment of a cut, as of the latest snapshot (``taken_on``, None: none)."""

    dimension: str
    period_kind: str
    taken_on: date | None
    rows: tuple[SegmentKpi, ...]


def _change(points: Sequence[TrendPoint]) -> Decimal | None:
    if len(points) < 2 or points[-1].value is None or points[-2].value is None:
        return None
    return points[-1].value - points[-2].value


async def _complete(conn: Conn, *, dimension: str, period_kind: PeriodKind, kpi: str | None,
                    on: date | None) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["complete_periods"], {
            "dimension": dimension, "period_kind": period_kind, "kpi": kpi, "on": on,
            "months": 12 // Period(period_kind, date(2000, 1, 1)).per_year})
        return await cur.fetchall()


async def segment_kpis(conn: Conn, *, dimension: str, period_kind: PeriodKind,
                       kpi: str | None = None, on: date | None = None) -> SegmentKpiTable:
    """Every KPI (or one) per segment of ``dimension`` from the latest snapshot on or before ``on``.

    Ordered by KPI, then segment. Values, numerators, denominators and counts are the snapshot's
    (``kpi_table``'s on its day); the trend is over the complete periods of every snapshot up
    to the latest.
    """
    _dimension(dimension)
    latest = [v for v in await latest_snapshot(conn, dimension=dimension,
                                               period_kind=period_kind, on=on)
              if kpi is None or v.kpi == kpi]
    taken_on = latest[0].taken_on if latest else None
    points: dict[tuple[str, str], list[TrendPoint]] = {}
    slopes: dict[tuple[str, str], Decimal | None] = {}
    for row in await _complete(conn, dimension=dimension, period_kind=period_kind, kpi=kpi,
                               on=taken_on):
        key = (row["segment"], row["kpi"])
        points.setdefault(key, []).append(TrendPoint(
            period=Period(period_kind, row["period_start"]), value=row["value"],
            numerator=row["numerator"], denominator=row["denominator"],
            taken_on=row["taken_on"]))
        slope = row["slope"]
        slopes[key] = Decimal(repr(slope)) if slope is not None else None
    current: dict[tuple[str, str], SnapshotValue] = {}
    previous: dict[tuple[str, str], SnapshotValue] = {}
    for v in latest:
        (current if v.period.last_day == v.taken_on else previous)[(v.segment, v.kpi)] = v
    rows = []
    for segment, name in sorted({*current, *previous}, key=lambda k: (k[1], k[0])):
        key = (segment, name)
        any_value = current.get(key) or previous[key]
        trend = tuple(points.get(key, ()))
        rows.append(SegmentKpi(kpi=name, segment=segment, unit=any_value.unit,
                               currency=any_value.currency, current=current.get(key),
                               previous=previous.get(key), points=trend,
                               slope=slopes.get(key), change=_change(trend)))
    return SegmentKpiTable(dimension=dimension, period_kind=period_kind, taken_on=taken_on,
                           rows=tuple(rows))


def last_complete_periods(kind: PeriodKind, *, on: date, count: int) -> list[Period]:
    """The ``count`` complete periods of ``kind`` before the one containing ``on``, oldest first."""
    last = Period.containing(kind, on).previous()
    first = last
    for _ in range(count - 1):
        first = first.previous()
    return periods_between(kind, first.start, last.last_day)


@dataclass(frozen=True)
class Slipping:
    """A cut's retention trends per segment, and the whole base's over the same periods."""

    dimension: str
    periods: tuple[Period, ...]
    base: SegmentTrend
    trends: tuple[SegmentTrend, ...]


def _counts(values: Sequence[Any], periods: Sequence[Period]
            ) -> Mapping[tuple[date, str], tuple[int, int]]:
    starts = {p: p.start for p in periods}
    return {(starts[v.period], v.segment): (int(v.counts.get("customers_start") or 0),
                                           int(v.counts.get("customers_retained") or 0))
            for v in values if v.kpi == "retention_rate" and v.period in starts}


async def _retention(conn: Conn, dimension: str, periods: Sequence[Period], *,
                     reporting_currency: str) -> list[SegmentTrend]:
    table = await kpi_table(conn, periods, Cut(dimension),  # type: ignore[arg-type]
                            reporting_currency=reporting_currency, kpis={"retention_rate"})
    return retention_trends(dimension, periods, _counts(table, periods))


async def slipping_segments(conn: Conn, *, dimensions: Sequence[str], period_kind: PeriodKind,
                            on: date, periods: int, reporting_currency: str) -> list[Slipping]:
    """Retention per segment of each cut over the ``periods`` complete periods before ``on``.

    Per dimension, every segment's :class:`analytics.segments.SegmentTrend` (``slipping``: a
    negative slope) and the whole base's, to compare with.
    """
    for dimension in dimensions:
        _dimension(dimension)
    span = last_complete_periods(period_kind, on=on, count=periods)
    [base] = await _retention(conn, "all", span, reporting_currency=reporting_currency)
    found = []
    for dimension in dimensions:
        if dimension in KINDS:
            trends = await segment_trends(conn, kind=dimension,
                                          periods=span, reporting_currency=reporting_currency)
        elif dimension == "all":
            trends = [base]
        else:
            trends = await _retention(conn, dimension, span,
                                      reporting_currency=reporting_currency)
        found.append(Slipping(dimension=dimension, periods=tuple(span), base=base,
                              trends=tuple(trends)))
    return found


def _points(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f} points"


def explain(trend: SegmentTrend, base: SegmentTrend, period_kind: str) -> str:
    """Why a segment is said to slip (or not), in words, from its own counts."""
    valued = [p for p in trend.points if p.retention is not None]
    if len(valued) < 2:
        return f"fewer than two {period_kind}s with customers at the start: no trend"
    first, last = valued[0], valued[-1]
    assert first.retention is not None and last.retention is not None
    return (f"retention {first.retention:.0%} in {first.period.label} to {last.retention:.0%} "
            f"in {last.period.label} ({_points(trend.slope)} per {period_kind}; whole base "
            f"{_points(base.slope)}); {last.period.label}: {last.customers_retained} of "
            f"{last.customers_start} kept")


__all__ = ["SegmentCount", "SegmentKpi", "SegmentKpiTable", "Slipping", "TrendPoint", "explain",
           "last_complete_periods", "segment_counts", "segment_kpis", "slipping_segments"]
