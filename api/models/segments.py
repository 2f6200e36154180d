"""Answers of the segment routes: segments and their customers, KPIs per segment, slipping."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field


class Segment(BaseModel):
    """A segment of a cut and its customers on ``as_of``."""

    segment: str
    customers: int = Field(description="customers of the segment (archived ones too)")
    active: int = Field(description="of them, active customers on as_of (docs/kpis.md)")


class Dimension(BaseModel):
    """A cut of the customer base and its segments."""

    dimension: str
    overlapping: bool = Field(description="a customer can be in several segments (model)")
    segments: list[Segment]


class Segments(BaseModel):
    """Every cut (the KPIs' dimensions) with its segments."""

    as_of: date
    dimensions: list[Dimension]


class PeriodValue(BaseModel):
    """A KPI of a segment for one period, with what it was computed from."""

    period: str = Field(description="label: 2026-11, 2026-Q4, 2026; '... to <day>' to date")
    period_start: date
    period_last: date
    complete: bool
    value: Decimal | None = Field(description="null when its denominator is zero")
    numerator: Decimal | None
    denominator: Decimal | None
    counts: dict[str, Any] = Field(description="every count the value came from")


class TrendPoint(BaseModel):
    """A complete period's value, as the latest snapshot that holds it took it."""

    period: str
    period_start: date
    value: Decimal | None
    numerator: Decimal | None
    denominator: Decimal | None
    taken_on: date


class SegmentKpi(BaseModel):
    """One KPI of one segment: now, the period before, and its trend."""

    kpi: str
    segment: str
    unit: str = Field(description="ratio (0-1), money (currency), points, index, per_1000h, "
                                  "years")
    currency: str
    current: PeriodValue | None = Field(description="the period containing taken_on, to date")
    previous: PeriodValue | None = Field(description="the complete period before it")
    trend: list[TrendPoint] = Field(description="every complete period the snapshots hold")
    slope: Decimal | None = Field(description="least-squares change per period over trend")
    change: Decimal | None = Field(description="the last complete period less the one before")


class SegmentKpis(BaseModel):
    """Every KPI per segment of a cut, from the latest daily snapshot."""

    dimension: str
    period_kind: str
    taken_on: date | None = Field(description="the snapshot's day; null: none taken yet")
    items: list[SegmentKpi]


class RetentionPoint(BaseModel):
    """Retention of a segment over one complete period."""

    period: str
    customers_start: int = Field(description="active at the start (the day before the first)")
    customers_retained: int = Field(description="of them, active on the last day")
    retention: Decimal | None
    change: Decimal | None = Field(description="retention less the period before's")


class SlippingSegment(BaseModel):
    """A segment whose retention goes down over the periods, and why it is said to."""

    dimension: str
    segment: str
    slipping: bool = Field(description="negative slope")
    slope: Decimal | None = Field(description="least-squares retention change per period")
    latest_change: Decimal | None
    base_slope: Decimal | None = Field(description="the whole base's slope, same periods")
    why: str
    points: list[RetentionPoint]


class SlippingSegments(BaseModel):
    """Segments of the cuts asked for, slipping ones first (most negative slope)."""

    as_of: date
    period_kind: str
    periods: list[str]
    items: list[SlippingSegment]
