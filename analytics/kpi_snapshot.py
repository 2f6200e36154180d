"""Daily KPI snapshots: every KPI, per cut and segment, as computed on a day, kept with the day.

:func:`take_snapshot` computes :func:`analytics.kpi.kpi_table` for the whole base and every
dimension of :data:`analytics.kpi.DIMENSIONS`, for six periods: the month, quarter and year
containing the day, *to date* (their days up to and including it: :meth:`Period.to_date`), and the
previous complete month, quarter and year; it stores them (table ``kpi_snapshots``, migration
016) in one transaction, replacing that day's snapshot if there was one. The daily job
(:func:`analytics.daily.run_daily`) takes one a day, so that :func:`kpi_history` can show how a
KPI of a segment moved from day to day (which segment's retention is slipping) without
recomputing the past, and :func:`latest_snapshot` gives the dashboard the latest figures.

A period to date reads what happened by the day: customers active on it, hours and calendar hours
up to its end, machines silent in the days before it. The whole period would measure an end that
has not come (every machine silent, utilisation over calendar hours still ahead, contracts ending
later in the month already lost). Definitions: docs/kpis.md ("Snapshots").

Examples
--------
>>> async def nightly(conn):  # doctest: +SKIP
...     run = await take_snapshot(conn, on=date(2026, 5, 17), reporting_currency="EUR")
...     print(run.values, run.seconds)
...     for v in await kpi_history(conn, "retention_rate", period_kind="quarter",
...                                dimension="rfm", segment="champions"):
...         print(v.taken_on, v.period.label, v.value, v.numerator, v.denominator)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import partial
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb, set_json_loads

from analytics.kpi import DIMENSIONS, Count, Cut, KpiValue, kpi_table, shared_machine_rows
from analytics.periods import Period, PeriodKind
from core.sql import queries

logger = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]

KINDS: tuple[PeriodKind, ...] = ("month", "quarter", "year")


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/kpi_snapshot.sql")


def snapshot_periods(on: date) -> list[Period]:
    """The periods a snapshot on ``on`` holds.

    The month, quarter and year containing ``on``, to date (whole on their last day), then the
    previous complete month, quarter and year.
    """
    current = [Period.containing(kind, on) for kind in KINDS]
    return [p.to_date(on) for p in current] + [p.previous() for p in current]


@dataclass(frozen=True, slots=True)
class SnapshotRun:
    """What one snapshot stored.

    Attributes
    ----------
    taken_on, currency
        The day and the reporting currency.
    periods
        The periods of :func:`snapshot_periods`.
    values
        Rows stored: one per period, dimension, segment and KPI.
    segments
        Segments per dimension (over all the periods).
    seconds, seconds_by_dimension
        Time to compute and store it; to compute each dimension's ``kpi_table``.
    """

    taken_on: date
    currency: str
    periods: tuple[Period, ...]
    values: int
    segments: dict[str, int]
    seconds: float
    seconds_by_dimension: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SnapshotValue:
    """One stored KPI value: a :class:`analytics.kpi.KpiValue` and the day it was taken.

    Attributes
    ----------
    taken_on
        The day of the snapshot.
    period
        The period, to date (``period.through == taken_on``) or complete.
    kpi, dimension, segment, value, numerator, denominator, unit, counts
        As in :class:`analytics.kpi.KpiValue`; a count read back is an ``int`` when it is a
        whole number and a ``Decimal`` otherwise.
    currency
        The reporting currency of the snapshot (money amounts among the value and counts).
    """

    taken_on: date
    period: Period
    kpi: str
    dimension: str
    segment: str
    value: Decimal | None
    numerator: Decimal | None
    denominator: Decimal | None
    unit: str
    counts: Mapping[str, Count]
    currency: str


def _number(value: Count | bool) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal) and not value.is_finite():
        msg = f"a KPI count is not a finite number: {value}"
        raise ValueError(msg)
    return str(value)


def _counts_json(counts: Mapping[str, Count]) -> str:
    # json.dumps writes a Decimal as a float (or refuses it): the counts go in with their exact
    # digits, so that a snapshot says what kpi_table said.
    return "{" + ", ".join(f"{json.dumps(key)}: {_number(val)}"
                           for key, val in counts.items()) + "}"


def _row(on: date, currency: str, v: KpiValue) -> tuple[Any, ...]:
    return (on, v.period.kind, v.period.start, v.period.last_day, v.dimension, v.segment, v.kpi,
            v.value, v.numerator, v.denominator, v.unit, Jsonb(v.counts, dumps=_counts_json),
            currency)


async def take_snapshot(conn: Conn, *, on: date, reporting_currency: str) -> SnapshotRun:
    """Compute every KPI for every cut on ``on`` and store them as that day's snapshot.

    Parameters
    ----------
    conn
        A connection. The KPIs are computed first (each query in a transaction or savepoint of
        its own), then the day's rows are replaced in one transaction (of its own, or a
        savepoint in the caller's): a reader sees the old snapshot or the new one, never half.
    on
        The day. The periods to date end with it, so a past day can be taken again and reads
        what had happened by then (ERP attributes and deletions are as they are now).
    reporting_currency
        ``Settings.reporting_currency``.

    Returns
    -------
    SnapshotRun
        Rows stored, segments per dimension, timings.
    """
    started = time.perf_counter()
    periods = snapshot_periods(on)
    rows: list[tuple[Any, ...]] = []
    timings: dict[str, float] = {}
    # The machine rows (hours, services due, parts implied) are the same for every cut.
    async with shared_machine_rows(conn, periods, reporting_currency=reporting_currency):
        for dimension in DIMENSIONS:
            begun = time.perf_counter()
            table = await kpi_table(conn, periods, Cut(dimension),
                                    reporting_currency=reporting_currency)
            timings[dimension] = time.perf_counter() - begun
            rows.extend(_row(on, reporting_currency, v) for v in table)
    blocks = _sql()
    async with conn.transaction():
        await conn.execute(blocks["delete_day"], {"on": on})
        async with conn.cursor() as cur, cur.copy(blocks["copy_rows"]) as copy:
            for row in rows:
                await copy.write_row(row)
        cur = await conn.execute(blocks["day_counts"], {"on": on})
        segments = {dimension: int(n) for dimension, _, n in await cur.fetchall()}
    seconds = time.perf_counter() - started
    logger.info("kpi snapshot on %s: %s values, %s cuts, in %.1f s", on, len(rows),
                len(DIMENSIONS), seconds)
    return SnapshotRun(taken_on=on, currency=reporting_currency, periods=tuple(periods),
                       values=len(rows), segments=segments, seconds=seconds,
                       seconds_by_dimension=timings)


def _value(row: Mapping[str, Any]) -> SnapshotValue:
    return SnapshotValue(
        taken_on=row["taken_on"],
        period=Period(row["period_kind"], row["period_start"], row["period_last"]),
        kpi=row["kpi"], dimension=row["dimension"], segment=row["segment"], value=row["value"],
        numerator=row["numerator"], denominator=row["denominator"], unit=row["unit"],
        counts=row["counts"], currency=row["currency"].strip())


async def _read(conn: Conn, name: str, params: Mapping[str, Any]) -> list[SnapshotValue]:
    async with conn.cursor(row_factory=dict_row) as cur:
        # Counts with their exact digits, as stored (json's default reads them as floats).
        set_json_loads(partial(json.loads, parse_float=Decimal), cur)
        await cur.execute(_sql()[name], params)
        return [_value(row) for row in await cur.fetchall()]


async def kpi_history(conn: Conn, kpi: str, *, period_kind: PeriodKind, dimension: str = "all",
                      segment: str = "all", since: date | None = None,
                      current: bool = True) -> list[SnapshotValue]:
    """One KPI of one segment as the snapshots took it, one value per day, oldest first.

    Parameters
    ----------
    conn
        A connection.
    kpi
        Its name (``retention_rate``...: docs/kpis.md).
    period_kind
        ``month``, ``quarter`` or ``year``.
    dimension, segment
        The cut (``all``/``all`` is the whole base).
    since
        The first day wanted (default: every day).
    current
        True: each day's period containing it, to date (how this month is going); False: the
        complete period before it (changes only when a period ends, or data about it arrives
        late).
    """
    return await _read(conn, "history", {
        "kpi": kpi, "period_kind": period_kind, "dimension": dimension, "segment": segment,
        "since": since, "current": current})


async def latest_snapshot(conn: Conn, *, dimension: str | None = None,
                          period_kind: PeriodKind | None = None,
                          on: date | None = None) -> list[SnapshotValue]:
    """Every value of the latest snapshot (taken on or before ``on`` if given).

    Optionally only one dimension's and one period kind's. Ordered by period kind, period,
    dimension, KPI and segment; empty when no snapshot was taken.
    """
    return await _read(conn, "latest", {"dimension": dimension, "period_kind": period_kind,
                                        "on": on})


__all__ = ["KINDS", "SnapshotRun", "SnapshotValue", "kpi_history", "latest_snapshot",
           "snapshot_periods", "take_snapshot"]
