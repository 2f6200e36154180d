"""Daily machine rollups: the table usage KPIs and churn features read instead of raw telemetry.

``machine_days`` holds one row per machine and UTC day: operating hours from the
``operating_hours`` counter (metric 1), running and fault hours from the state transitions,
counter samples, faults and services from the events, and when the machine was last heard of.
``refresh_machine_days`` recomputes, in one SQL statement, only the days from the last refresh's
watermark on (less a lookback for late data), so the scheduled job costs what the new data costs.

Operating hours of a day are the sum of the counter's increments between consecutive samples,
each falling on the day of the sample that closes it: the hour before a day's first sample is
counted (``max - min`` within the day would lose it), a counter that went down was reset and
counts from zero again, and the hours over a gap in the data fall on the day the machine came
back. A machine's very first sample has nothing to count from. Days whose counter did not fall
(the lowest reading not below the one the day continues from, the rise within the clock) are
summed as last less previous reading from one unsorted aggregate; the others sample by sample
(docs/churn-risk.md says what that leaves out).

Late data: the watermark follows the newest data seen, so a gateway that uploads a buffer of
older samples after a longer outage lands before the refresh's window. The ingester marks the
UTC days it wrote such rows for (``rollup_late_days``, migration 015, which states the protocol)
and every refresh recomputes from the earliest marked day on, then deletes the marks it handled.
The daily analytics job also re-rolls the last ``RESWEEP`` days (``since``), for data written
by anything other than the ingester.

A long refresh (the first, or one with ``since``) runs in slices of ``SLICE_DAYS`` days, each a
statement that sorts its own samples in memory, on the caller's connection and on ``helpers``
at the same time. A slice's first counter step starts from the machine's last sample before it
and its states from the state in force when it opens, so slicing changes no number (tested).
A running or fault state with no later report lasts until the machine was last heard of.

Continuous aggregates: on a server with the Timescale license (``core.timescale.Capabilities.
continuous_aggregates``) the same numbers could come from a continuous aggregate over
``telemetry``, refreshed by a TimescaleDB policy; docs/churn-risk.md sketches it. The servers we
run here are Apache-licensed, so only this fallback exists, and it is what is tested.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg

from core.sql import queries

logger = logging.getLogger(__name__)

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

# Late samples (a machine's clock, the ingester's accepted skew of an hour, a broker backlog)
# land on days already rolled up: the refresh looks back this far before its watermark.
DEFAULT_LOOKBACK = timedelta(hours=2)
# The daily job re-rolls this many days back, for gateways that upload old data late.
RESWEEP = timedelta(days=7)
# Days per refresh statement: a slice's counter samples are sorted in memory (SET LOCAL
# work_mem), where one statement over years of them sorted on disk.
SLICE_DAYS = 61
# A machine's last sample before a slice is looked for this far back first.
NEAR = timedelta(days=7)
_EPOCH = date(1970, 1, 1)


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/rollups.sql")


@dataclass(frozen=True, slots=True)
class RollupRefresh:
    """What one refresh did.

    Attributes
    ----------
    from_day
        The first UTC day recomputed.
    rows_changed
        Machine-days inserted or changed (unchanged days are not rewritten).
    through
        The watermark after the refresh: the latest data time rolled up, or None if none yet.
    """

    from_day: date
    rows_changed: int
    through: datetime | None


def slices(first: date, last: date, days: int) -> list[tuple[date, date]]:
    """Half-open day ranges [start, end) of at most ``days`` days covering ``first``..``last``.

    Examples
    --------
    >>> slices(date(2026, 1, 1), date(2026, 1, 5), 2)
    [(datetime.date(2026, 1, 1), datetime.date(2026, 1, 3)), \
(datetime.date(2026, 1, 3), datetime.date(2026, 1, 5)), \
(datetime.date(2026, 1, 5), datetime.date(2026, 1, 6))]
    """
    out = []
    start = first
    while start <= last:
        end = min(start + timedelta(days=days), last + timedelta(days=1))
        out.append((start, end))
        start = end
    return out


def _ts(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


async def _refresh_slice(conn: Connection, q: dict[str, str], start: date, end: date, *,
                         own_transaction: bool) -> int:
    async def run() -> int:
        await conn.execute(q["no_jit"])
        await conn.execute(q["custom_plans"])
        await conn.execute(q["work_mem"])
        # Timestamps computed here, not in SQL, so the planner sees the slice's bounds.
        cur = await conn.execute(q["refresh_machine_days"],
                                 {"from_ts": _ts(start), "to_ts": _ts(end),
                                  "near_ts": _ts(start - NEAR)})
        return cur.rowcount

    if not own_transaction:
        return await run()
    async with conn.transaction():
        return await run()


async def refresh_machine_days(conn: Connection, since: date | None = None, *,
                               lookback: timedelta = DEFAULT_LOOKBACK,
                               helpers: Sequence[Connection] = (),
                               slice_days: int = SLICE_DAYS,
                               keep_raw: str | None = None) -> RollupRefresh:
    """Bring ``machine_days`` up to date with telemetry, states and events.

    Parameters
    ----------
    conn
        A connection; the refresh runs in a transaction of its own (committed on return).
    since
        Recompute from this UTC day on, whatever the watermark says (after a backfill of old
        data). None: from the watermark's day less ``lookback``. The first run (no watermark
        yet) recomputes everything whatever ``since`` says.
    lookback
        How far before the watermark late data is still picked up.
    helpers
        More connections to compute slices on at the same time (a full recompute on a server
        with cores to spare); each of their slices commits on its own. Idle connections.
    slice_days
        Days per statement: each sorts its slice's counter samples in memory.
    keep_raw
        The raw telemetry's retention (``OEMR_TELEMETRY_RETENTION``, a Postgres interval):
        days the ingester marked as written late are recomputed from the earliest on, unless
        older than this (the raw data of the days after them may be gone; logged and dropped).
        None: every mark is honoured.

    Returns
    -------
    RollupRefresh
        The first day recomputed, the rows that changed and the new watermark.

    Examples
    --------
    >>> async def nightly(conn):  # doctest: +SKIP
    ...     done = await refresh_machine_days(conn)
    ...     return done.rows_changed
    """
    q = _sql()
    async with conn.transaction():
        await conn.execute(q["lock"])
        cur = await conn.execute(q["watermark"])
        row = await cur.fetchone()
        if row is None:
            # Never rolled up: everything, whatever was asked. A daily run that gets the lock
            # before the first rollups turn asks for its last week only; the history before it
            # would never be rolled up, and its raw data goes with retention.
            since = _EPOCH
        elif since is None:
            since = (row[0] - lookback).astimezone(UTC).date()
        cur = await conn.execute(q["late_days"], {"keep": keep_raw})
        marks = await cur.fetchall()
        late = [day for day, _, usable in marks if usable]
        too_old = [day for day, _, usable in marks if not usable]
        if too_old:
            logger.warning("data arrived for %s day(s) from %s to %s after the raw telemetry"
                           " of the days after them may have been dropped (retention %s):"
                           " not rolled up", len(too_old), too_old[0], too_old[-1], keep_raw)
        if late and late[0] < since:
            # From the earliest marked day on: a late sample also moves the step and the state
            # interval ending at the machine's next report, on a later day.
            since = late[0]
        cur = await conn.execute(q["data_span"], {"from_ts": _ts(since)})
        span = await cur.fetchone()
        # No chunk ends after the window's start: nothing to roll up (the first day is then
        # the window's start, greatest() skipping the NULL, but there is no last day).
        todo = ([] if span is None or span[1] is None
                else slices(span[0], span[1], slice_days))
        queue = list(reversed(todo))

        async def work(worker: Connection, *, own_transaction: bool) -> int:
            done = 0
            while queue:
                start, end = queue.pop()
                done += await _refresh_slice(worker, q, start, end,
                                             own_transaction=own_transaction)
            return done

        # The caller's connection holds the lock and computes slices inside its transaction;
        # each helper takes the next slice when it is free.
        results = await asyncio.gather(work(conn, own_transaction=False),
                                       *(work(h, own_transaction=True) for h in helpers))
        changed = sum(results)
        cur = await conn.execute(q["latest_seen"], {"from_day": since})
        latest = await cur.fetchone()
        through: datetime | None = latest[0] if latest else None
        if through is not None:
            await conn.execute(q["set_watermark"], {"through": through})
        cur = await conn.execute(q["watermark"])
        mark = await cur.fetchone()
        if marks:
            await conn.execute(q["handled_late_days"], {"days": [m[0] for m in marks],
                                                        "xids": [m[1] for m in marks]})
    logger.info("machine_days refreshed from %s in %s slice(s): %s rows changed", since,
                len(todo), changed)
    return RollupRefresh(since, changed, mark[0] if mark else None)
