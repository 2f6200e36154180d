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
back. A machine's very first sample has nothing to count from.

Late data: the watermark follows the newest data seen, so a gateway that uploads a buffer of
older samples after a longer outage lands before the refresh's window. The daily analytics job
therefore also re-rolls the last ``RESWEEP`` days (``since``), which catches backfills up to a
week late; older backfills need a refresh with ``since`` by hand (``oem-retention analytics
run`` does not do it). A per-day "data arrived" mark written by the ingester would make this
exact; it is not built yet.

Continuous aggregates: on a server with the Timescale license (``core.timescale.Capabilities.
continuous_aggregates``) the same numbers could come from a continuous aggregate over
``telemetry``, refreshed by a TimescaleDB policy; docs/churn-risk.md sketches it. The servers we
run here are Apache-licensed, so only this fallback exists, and it is what is tested.
"""

from __future__ import annotations

import logging
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


async def refresh_machine_days(conn: Connection, since: date | None = None, *,
                               lookback: timedelta = DEFAULT_LOOKBACK) -> RollupRefresh:
    """Bring ``machine_days`` up to date with telemetry, states and events.

    Parameters
    ----------
    conn
        A connection; the refresh runs in a transaction of its own (committed on return).
    since
        Recompute from this UTC day on, whatever the watermark says (after a backfill of old
        data). None: from the watermark's day less ``lookback``, or everything on the first run.
    lookback
        How far before the watermark late data is still picked up.

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
        await conn.execute(q["no_jit"])
        await conn.execute(q["custom_plans"])
        await conn.execute(q["lock"])
        if since is None:
            cur = await conn.execute(q["watermark"])
            row = await cur.fetchone()
            since = _EPOCH if row is None else (row[0] - lookback).astimezone(UTC).date()
        # A timestamp computed here, not in SQL, so the planner sees the window's start.
        from_ts = datetime.combine(since, time.min, tzinfo=UTC)
        cur = await conn.execute(q["refresh_machine_days"], {"from_ts": from_ts})
        changed = cur.rowcount
        cur = await conn.execute(q["latest_seen"], {"from_day": since})
        latest = await cur.fetchone()
        through: datetime | None = latest[0] if latest else None
        if through is not None:
            await conn.execute(q["set_watermark"], {"through": through})
        cur = await conn.execute(q["watermark"])
        mark = await cur.fetchone()
    logger.info("machine_days refreshed from %s: %s rows changed", since, changed)
    return RollupRefresh(since, changed, mark[0] if mark else None)
