"""The daily analytics run: usage rolled up, customers valued and segmented, churn risk scored.

One function for the scheduled job and for ``oem-retention analytics run``, so both do the same
thing in the same order: the scores and the KPI snapshot read what the rollup, the values and
the segments of that day wrote, with the stored churn model every process shares
(analytics.churn_models).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg

from analytics.churn import ChurnModel, ChurnScore, score_customers
from analytics.churn_models import scoring_model
from analytics.customer_value import ValueRun, value_customers
from analytics.fleet import (
    FleetRefresh,
    MetricHoursRefresh,
    refresh_fleet_status,
    refresh_metric_hours,
)
from analytics.kpi_snapshot import SnapshotRun, take_snapshot
from analytics.rollups import RESWEEP, RollupRefresh, refresh_machine_days
from analytics.segments import SegmentRun, assign_segments

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class DailyRun:
    """What one daily run did, step by step."""

    rollup: RollupRefresh
    value: ValueRun
    segments: SegmentRun
    scores: list[ChurnScore]
    model: ChurnModel  # the scores' model
    model_trained: bool  # none was stored: this run trained (and stored) it
    kpis: SnapshotRun
    metric_hours: MetricHoursRefresh | None = None
    fleet: FleetRefresh | None = None  # the installed base rated as of the run (now)


async def run_daily(conn: Connection, *, on: date, reporting_currency: str,
                    model: ChurnModel | None = None,
                    snapshot_on: date | None = None,
                    keep_raw: str | None = None) -> DailyRun:
    """Roll up, value, segment, score and take the KPI snapshot for day ``on``.

    The rollup re-rolls the ``RESWEEP`` days before ``on`` as well as what is new: a gateway
    that uploads buffered data days late lands before the refresh's watermark. ``model``: the
    churn model to score with; None: the newest stored one trained on data up to ``on``
    (the weekly job's), or, with none stored, one trained on the history up to ``on`` and
    stored. ``snapshot_on``: the day of the KPI snapshot (:mod:`analytics.kpi_snapshot`),
    default ``on``; the scheduler, running in the small hours, snapshots the day before.

    The snapshot comes last: the scores are what the day's run is for and neither wait for it
    nor are lost to it, and it reads none of them (a failed one can be taken again for its day).
    ``keep_raw``: the raw telemetry's retention (``refresh_machine_days``: days marked late
    before it are not recomputed).
    """
    rollup = await refresh_machine_days(conn, since=on - RESWEEP, keep_raw=keep_raw)
    hours = await refresh_metric_hours(conn, since=rollup.from_day)
    fleet = await refresh_fleet_status(conn)
    value = await value_customers(conn, on=on, reporting_currency=reporting_currency)
    segments = await assign_segments(conn, on=on, reporting_currency=reporting_currency)
    trained = False
    if model is None:
        model, trained = await scoring_model(conn, on=on, reporting_currency=reporting_currency)
    scores = await score_customers(conn, on=on, model=model,
                                   reporting_currency=reporting_currency)
    kpis = await take_snapshot(conn, on=snapshot_on or on,
                               reporting_currency=reporting_currency)
    return DailyRun(rollup, value, segments, scores, model, trained, kpis, hours, fleet)
