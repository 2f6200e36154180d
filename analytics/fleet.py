"""Installed-base health: the fleet list, its summary, and one machine's usage, charts and history.

A *machine* here is a live installed-base row (``installed_base.id``, not deleted): the ERP's
record of a machine at a customer, which is what a machine builder manages and what a portal
user's company owns. Its telemetry is found by serial (``machines.id``); one that never reported
has none and is listed as ``never_reported``. A machine that reports but is in no ERP has no
customer and is not in the fleet (the ingest side's views show it).

What the numbers mean is the SQL definition ``fleet_health`` (analytics/sql/definitions/
fleet_health.sql, docs/api-fleet.md): utilisation over the 30 days before today and its trend,
contract coverage, connectivity and a health band with its reason. :func:`refresh_fleet_status`
writes it for every machine into ``fleet_status`` after each rollup refresh (migration 020), and
the list pages through that table by index (keyset, core/paging.py), so a page of a
100,000-machine fleet costs an index range scan.

Charts read ``metric_hours`` (an hourly avg/min/max/count per machine and metric, refreshed with
the daily rollup by :func:`refresh_metric_hours`) downsampled with ``time_bucket`` to at most
``points`` buckets; only ranges up to ``RAW_MAX`` read the raw samples.

Examples
--------
>>> async def page_of_risky(conn):  # doctest: +SKIP
...     page = PageRequest(limit=50, sort="utilisation_trend")
...     return await list_machines(conn, page, FleetFilter(band=("at_risk",)))
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from analytics.rollups import slices
from core.paging import Page, PageRequest, cut, keyset, keyset_params
from core.sql import queries

logger = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]
Row = dict[str, Any]

# Ranges up to this long are drawn from the raw samples; longer ones from the hourly rollup.
RAW_MAX = timedelta(days=2)
DEFAULT_POINTS = 500
# The operating-hours counter: machine_days rolls it up (hours per day), metric_hours does not.
OPERATING_HOURS = 1
MAX_POINTS = 5000
# Hours per metric_hours refresh statement (its samples are grouped in memory).
METRIC_SLICE_DAYS = 7
# Late samples land on hours already rolled up: a refresh looks back this far before its mark.
LOOKBACK = timedelta(hours=2)
_EPOCH = date(1970, 1, 1)

# The sortable columns of the list: name -> expression (never NULL; fleet_status' *_key columns
# hold a missing value as the lowest).
_SORTS: Mapping[str, sql.Composable] = {
    "serial": sql.SQL("fs.serial"),
    "last_seen": sql.SQL("fs.last_seen_key"),
    "utilisation": sql.SQL("fs.utilisation_key"),
    "utilisation_trend": sql.SQL("fs.trend_key"),
    "customer": sql.SQL("fs.customer_name"),
}
SORTS = tuple(_SORTS)
_TIEBREAK = sql.SQL("fs.installed_base_id")


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/fleet.sql")


@dataclass(frozen=True)
class FleetFilter:
    """Filters of the fleet list and summary; each set one is ANDed, values within one ORed.

    ``serial_prefix`` matches the start of the serial; ``search`` a substring of the serial or of
    the customer's name, case-insensitive. ``portal_customer``: the caller's own company when it
    is a portal user (row-level security limits the rows anyway; this lets an index do it).
    """

    customer: Sequence[int] = ()
    model: Sequence[str] = ()
    site: Sequence[int] = ()
    country: Sequence[str] = ()
    state: Sequence[str] = ()
    band: Sequence[str] = ()
    coverage: Sequence[str] = ()
    connectivity: Sequence[str] = ()
    serial_prefix: str | None = None
    search: str | None = None
    portal_customer: int | None = None


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(filters: FleetFilter) -> tuple[sql.Composable, dict[str, Any]]:
    """The WHERE of the set filters (fixed blocks of fleet.sql) and their parameters."""
    q = _sql()
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for f in fields(filters):
        value = getattr(filters, f.name)
        if value is None or (isinstance(value, Sequence) and len(value) == 0):
            continue
        if f.name == "serial_prefix":
            value = _like_escaped(value) + "%"
        elif f.name == "search":
            value = "%" + _like_escaped(value) + "%"
        elif not isinstance(value, int):
            value = list(value)
        parts.append(sql.SQL(q[f"filter_{f.name}"]))
        params[f.name] = value
    where = sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")
    return where, params


async def list_machines(conn: Conn, page: PageRequest, filters: FleetFilter) -> Page[Row]:
    """One page of the fleet (rows of ``fleet_status``), in ``page``'s sort, after its cursor.

    Each row has the sort's value as ``sort_key`` (for the next page's cursor) and the machine's
    id as ``installed_base_id``.
    """
    condition, order = keyset(_SORTS, _TIEBREAK, page)
    where, params = _where(filters)
    query = sql.SQL(_sql()["list_machines"]).format(
        sort_key=_SORTS[page.sort], where=sql.SQL("({}) AND {}").format(where, condition),
        order=order)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**params, **keyset_params(page)})
        rows = await cur.fetchall()
    return cut(rows, page)


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """Machines per health band, coverage and connectivity, as of the status' last refresh."""

    as_of: datetime | None
    machines: int
    health_band: dict[str, int]
    coverage: dict[str, int]
    connectivity: dict[str, int]


async def fleet_summary(conn: Conn, filters: FleetFilter) -> FleetSummary:
    """Counts of the (filtered) fleet per band, coverage and connectivity, zeros included."""
    where, params = _where(filters)
    query = sql.SQL(_sql()["summary"]).format(where=where)
    counts: dict[str, dict[str, int]] = {
        "health_band": dict.fromkeys(("healthy", "watch", "at_risk", "silent"), 0),
        "coverage": dict.fromkeys(("covered", "warranty", "uncovered"), 0),
        "connectivity": dict.fromkeys(("reporting", "quiet", "silent", "never_reported"), 0)}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        for r in await cur.fetchall():
            counts[r["dimension"]][r["value"]] = int(r["machines"])
        await cur.execute(_sql()["status_as_of"])
        row = await cur.fetchone()
    return FleetSummary(as_of=row["as_of"] if row else None,
                        machines=sum(counts["health_band"].values()), **counts)


async def machine(conn: Conn, installed_base_id: int) -> Row | None:
    """One machine's row of ``fleet_status`` with its customer, site, contract and connection."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["machine"], {"id": installed_base_id})
        return await cur.fetchone()


async def telemetry_machine(conn: Conn, installed_base_id: int) -> tuple[bool, int | None]:
    """Whether the machine is visible, and its telemetry id (None: it never reported)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["telemetry_machine"], {"id": installed_base_id})
        row = await cur.fetchone()
    return (False, None) if row is None else (True, row["machine_id"])


async def usage(conn: Conn, *, machine_id: int | None, by: Literal["day", "week"],
                from_day: date, to_day: date, commissioned_on: date | None) -> list[Row]:
    """Hours and utilisation per UTC day or ISO week in [from_day, to_day), from machine_days.

    A machine that never reported has calendar hours and no operating hours.
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["usage"], {
            "machine_id": machine_id if machine_id is not None else -1, "by": by,
            "from_day": from_day, "to_day": to_day, "commissioned_on": commissioned_on})
        return await cur.fetchall()


async def metric(conn: Conn, name: str) -> Row | None:
    """The metric of that name (id, name, unit, kind), or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["metric_by_name"], {"name": name})
        return await cur.fetchone()


@dataclass(frozen=True, slots=True)
class Series:
    """A metric over a range in at most ``points`` buckets of ``width``.

    ``source`` says where the buckets came from: ``raw`` samples (ranges up to ``RAW_MAX``) or
    the ``hourly`` rollup, whose buckets start at ``origin`` (the range's start down to the hour)
    and which holds hours up to ``rollup_through`` (its last hour and those after it are read
    from the samples).
    """

    source: Literal["raw", "hourly"]
    width: timedelta
    origin: datetime
    rollup_through: datetime | None
    buckets: list[Row]


def bucket_width(start: datetime, end: datetime, points: int) -> tuple[str, timedelta, datetime]:
    """The source, bucket width and origin that cover [start, end) in at most ``points`` buckets.

    Up to ``RAW_MAX`` the raw samples, in whole seconds; beyond, whole hours from ``start`` down
    to the hour, so that the rollup's hours nest in the buckets.

    >>> s = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    >>> bucket_width(s, s + timedelta(days=1), 500)[:2]
    ('raw', datetime.timedelta(seconds=173))
    >>> bucket_width(s, s + timedelta(days=365), 500)[1]
    datetime.timedelta(seconds=64800)
    """
    if end - start <= RAW_MAX:
        seconds = max(1, math.ceil((end - start).total_seconds() / points))
        return "raw", timedelta(seconds=seconds), start
    origin = start.replace(minute=0, second=0, microsecond=0)
    hours = max(1, math.ceil((end - origin).total_seconds() / 3600 / points))
    return "hourly", timedelta(hours=hours), origin


async def metric_series(conn: Conn, *, machine_id: int | None, metric_id: int,
                        start: datetime, end: datetime, points: int) -> Series:
    """``metric_id`` of a machine over [start, end), downsampled to at most ``points`` buckets.

    Each bucket has ``bucket`` (its start), ``avg``, ``min``, ``max`` and ``samples``; buckets
    without samples are left out.
    """
    source, width, origin = bucket_width(start, end, points)
    q = _sql()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q["metric_hours_through"])
        mark = await cur.fetchone()
        through = mark["through"] if mark else None
        # The rollup's last hour may hold part of its samples: it and what follows come from
        # the samples (before any refresh, all of the range does).
        fresh_from = through - timedelta(hours=1) if through is not None else origin
        await cur.execute(q["metric_from_raw" if source == "raw" else "metric_from_hours"], {
            "machine_id": machine_id if machine_id is not None else -1,
            "metric_id": metric_id, "width": width, "origin": origin, "from_ts": start,
            "to_ts": end, "fresh_from": fresh_from})
        rows = await cur.fetchall()
    return Series(source="raw" if source == "raw" else "hourly", width=width, origin=origin,
                  rollup_through=through, buckets=rows)


async def state_timeline(conn: Conn, *, machine_id: int | None, start: datetime,
                         end: datetime, limit: int) -> Page[Row]:
    """Merged state intervals over [start, end), at most ``limit`` (``more``: there were more)."""
    if machine_id is None:
        return Page(items=[], more=False)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["states"], {"machine_id": machine_id, "from_ts": start,
                                             "to_ts": end, "limit": limit + 1})
        rows = await cur.fetchall()
    return Page(items=rows[:limit], more=len(rows) > limit)


async def events(conn: Conn, *, machine_id: int | None, kinds: Sequence[str] | None,
                 start: datetime, end: datetime, limit: int) -> list[Row]:
    """A machine's events in [start, end), newest first, at most ``limit``."""
    if machine_id is None:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["events"], {
            "machine_id": machine_id, "kinds": list(kinds) if kinds else None,
            "after": start, "before": end, "limit": limit})
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class FleetRefresh:
    """What a refresh of ``fleet_status`` did."""

    as_of: datetime
    written: int
    removed: int


async def refresh_fleet_status(conn: Conn, *, as_of: datetime | None = None) -> FleetRefresh:
    """Rate every live installed-base row with ``fleet_health`` into ``fleet_status``.

    ``as_of``: the moment rated (default: now). Runs in a transaction of its own (committed on
    return); one refresh at a time.
    """
    moment = as_of or datetime.now(UTC)
    q = _sql()
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q["lock_fleet_status"])
        await cur.execute(q["no_jit"])
        await cur.execute(q["refresh_fleet_status"], {"as_of": moment})
        row = await cur.fetchone()
    assert row is not None
    logger.info("fleet_status rated as of %s: %s written, %s removed", moment, row["written"],
                row["removed"])
    return FleetRefresh(moment, int(row["written"]), int(row["removed"]))


@dataclass(frozen=True, slots=True)
class MetricHoursRefresh:
    """What a refresh of ``metric_hours`` did: from which day, rows changed, hours up to when."""

    from_day: date
    rows_changed: int
    through: datetime | None


def _ts(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


async def refresh_metric_hours(conn: Conn, *, since: date | None = None) -> MetricHoursRefresh:
    """Bring ``metric_hours`` up to date with telemetry.

    Recomputes from the earlier of UTC day ``since`` and the day of its watermark less
    ``LOOKBACK`` on; everything on its first run (no watermark yet), whatever ``since`` says.
    The rollup job passes the day its ``machine_days`` refresh started from, which already takes
    in the days the ingester marked as written late. Runs in a transaction of its own, in
    slices of ``METRIC_SLICE_DAYS`` days.
    """
    q = _sql()
    changed = 0
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q["lock_metric_hours"])
        await cur.execute(q["no_jit"])
        await cur.execute(q["work_mem"])
        await cur.execute(q["metric_hours_through"])
        mark = await cur.fetchone()
        if mark is None:
            first = _EPOCH
        else:
            from_mark = (mark["through"] - LOOKBACK).astimezone(UTC).date()
            first = min(since, from_mark) if since else from_mark
        await cur.execute(q["telemetry_span"], {"from_ts": _ts(first)})
        span = await cur.fetchone()
        if span is not None and span["last_day"] is not None:
            for start, end in slices(span["first_day"], span["last_day"], METRIC_SLICE_DAYS):
                await cur.execute(q["refresh_metric_hours"],
                                  {"from_ts": _ts(start), "to_ts": _ts(end)})
                changed += cur.rowcount
        await cur.execute(q["metric_hours_latest"], {"from_ts": _ts(first)})
        latest = await cur.fetchone()
        through = latest["through"] if latest else None
        if through is not None:
            await cur.execute(q["set_metric_hours_watermark"], {"through": through})
    logger.info("metric_hours refreshed from %s: %s rows changed", first, changed)
    return MetricHoursRefresh(first, changed, through)
