"""Segments: the cuts of the customer base, every KPI per segment with its trend, who slips.

Staff only (a portal user gets a 403): segments compare customers with each other.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from analytics import segment_kpis as data
from analytics.kpi import DIMENSIONS, KPI_NAMES
from analytics.kpi_snapshot import SnapshotValue
from analytics.periods import PeriodKind
from analytics.segments import SegmentTrend
from api.deps import Session, requires, settings_of
from api.errors import Problem
from api.models.segments import (
    Dimension,
    PeriodValue,
    RetentionPoint,
    SegmentKpi,
    SegmentKpis,
    Segments,
    SlippingSegment,
    SlippingSegments,
    TrendPoint,
)
from api.models.segments import Segment as SegmentModel
from api.params import Day
from api.responses import json_response

router = APIRouter(prefix="/segments", tags=["segments"])

Staff = Annotated[Session, requires("service", "finance", "viewer")]
DimensionName = Literal["all", "country", "industry", "size_class", "key_account", "model",
                        "tier", "value_tier", "rfm", "usage"]
AsOf = Annotated[Day | None, Query(description="the day read as of (default: today, UTC)")]


def _as_of(on: date | None) -> date:
    return on or datetime.now(UTC).date()


@router.get("", response_model=Segments, summary="Segments and their customers")
async def segments(request: Request, session: Staff, on: AsOf = None) -> Response:
    """Every cut (the KPIs' dimensions) with its segments and their customers on ``on``."""
    day = _as_of(on)
    counts = await data.segment_counts(session.conn, on=day)
    dimensions = [Dimension(dimension=d, overlapping=d == "model",
                            segments=[SegmentModel(segment=c.segment, customers=c.customers,
                                                   active=c.active)
                                      for c in counts if c.dimension == d])
                  for d in DIMENSIONS]
    return json_response(request, Segments(as_of=day, dimensions=dimensions))


def _value(v: SnapshotValue | None) -> PeriodValue | None:
    if v is None:
        return None
    return PeriodValue(period=v.period.label, period_start=v.period.start,
                       period_last=v.period.last_day, complete=v.period.complete,
                       value=v.value, numerator=v.numerator, denominator=v.denominator,
                       counts=dict(v.counts))


@router.get("/kpis", response_model=SegmentKpis, summary="Every KPI per segment, with its trend")
async def kpis(request: Request, session: Staff, *, dimension: DimensionName = "all",
               period: Literal["month", "quarter", "year"] = "month",
               kpi: Annotated[str | None, Query(max_length=60, description="one KPI (docs/"
                                                "kpis.md); default: all")] = None,
               on: Annotated[Day | None, Query(description="the latest snapshot on or before "
                                                "this day (default: the latest)")] = None,
               ) -> Response:
    """Every KPI (or one) per segment of a cut, from the latest daily snapshot.

    For each: the period to date and the complete one before, with numerator, denominator and
    counts; the trend over every complete period the snapshots hold.
    """
    if kpi is not None and kpi not in KPI_NAMES:
        raise Problem(422, "Invalid request", f"kpi: {kpi!r} is not one of "
                      f"{', '.join(KPI_NAMES)}", kind="invalid-request")
    table = await data.segment_kpis(session.conn, dimension=dimension, period_kind=period,
                                    kpi=kpi, on=on)
    items = [SegmentKpi(kpi=r.kpi, segment=r.segment, unit=r.unit, currency=r.currency,
                        current=_value(r.current), previous=_value(r.previous),
                        trend=[TrendPoint(period=p.period.label, period_start=p.period.start,
                                          value=p.value, numerator=p.numerator,
                                          denominator=p.denominator, taken_on=p.taken_on)
                               for p in r.points],
                        slope=r.slope, change=r.change)
             for r in table.rows]
    return json_response(request, SegmentKpis(dimension=table.dimension,
                                              period_kind=table.period_kind,
                                              taken_on=table.taken_on, items=items))


def _slipping(dimension: str, trend: SegmentTrend, base: SegmentTrend,
              kind: PeriodKind) -> SlippingSegment:
    return SlippingSegment(
        dimension=dimension, segment=trend.segment, slipping=trend.slipping, slope=trend.slope,
        latest_change=trend.latest_change, base_slope=base.slope,
        why=data.explain(trend, base, kind),
        points=[RetentionPoint(period=p.period.label, customers_start=p.customers_start,
                               customers_retained=p.customers_retained,
                               retention=p.retention, change=p.change)
                for p in trend.points])


@router.get("/slipping", response_model=SlippingSegments, summary="Segments slipping")
async def slipping(request: Request, session: Staff, *,
                   dimension: DimensionName | None = None,
                   period: Literal["month", "quarter", "year"] = "quarter",
                   periods: Annotated[int, Query(ge=2, le=12)] = 4,
                   steady: Annotated[bool, Query(description="also the segments that do not "
                                                 "slip")] = False,
                   on: AsOf = None) -> Response:
    """Segments whose retention goes down over the last complete periods, and why.

    Retention per segment (customers active at the start still active at the end: the KPIs'),
    its least-squares slope per period (slipping: negative) against the whole base's. Every cut
    but the whole base when ``dimension`` is left out.
    """
    day = _as_of(on)
    currency = settings_of(request).reporting_currency
    names = [dimension] if dimension else [d for d in DIMENSIONS if d != "all"]
    found = await data.slipping_segments(session.conn, dimensions=names, period_kind=period,
                                         on=day, periods=periods, reporting_currency=currency)
    items = [_slipping(f.dimension, t, f.base, period) for f in found for t in f.trends
             if steady or t.slipping]
    span = [p.label for p in found[0].periods] if found else []
    items.sort(key=lambda s: (s.slope is None, s.slope or 0, s.dimension, s.segment))
    return json_response(request, SlippingSegments(as_of=day, period_kind=period,
                                                   periods=span, items=items))
