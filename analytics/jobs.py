"""Scheduled analytics work: the job table, each run so that no two processes run a job at once.

The table (:func:`job_table`): usage rollups every 15 minutes; the daily run (rollups, value,
segments, scores, the KPI snapshot of the day before) at 02:00 UTC; the churn model's retraining
on Mondays at 03:00 UTC, and at start when the newest stored model is a week old. The rollups and
the daily run also run at start. :func:`run_schedule` runs it until told to stop.

Each job takes a PostgreSQL advisory lock named after it before it starts; a second scheduler
(another replica, a second `up` by mistake) finds the lock taken and skips that turn. The lock is
held by the job's own connection, so it ends with the process if that dies. Every run is a row of
``analytics_job_runs``: when, how it ended, and a line on what it did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, Literal

import psycopg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from psycopg_pool import AsyncConnectionPool

from analytics.churn_models import newest_trained_until, train_and_save
from analytics.daily import run_daily
from analytics.fleet import refresh_fleet_status, refresh_metric_hours
from analytics.rollups import refresh_machine_days
from core.errors import OemrError
from core.settings import Settings
from core.sql import queries

logger = logging.getLogger(__name__)

# Class of the two-key advisory locks of analytics jobs (4_0001 is the ERP sync's).
LOCK_CLASS = 4_0002

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
Job = Callable[[Connection], Awaitable[str]]
"""A job's work on a connection of its own (autocommit); returns a line on what it did."""


@dataclass(frozen=True, slots=True)
class JobRun:
    """How one turn of a job ended."""

    job: str
    status: Literal["succeeded", "failed", "skipped"]
    detail: str
    run_id: int | None = None


def _q() -> dict[str, str]:
    return queries("analytics", "sql/jobs.sql")


async def run_exclusive(pool: AsyncConnectionPool, name: str, job: Job) -> JobRun:
    """Run ``job`` unless another process is running the job of that name.

    A job that raises is recorded as failed with its error and logged; the error does not
    propagate, so a scheduler keeps its other jobs (and this one's next turn) going. Only a
    database that cannot be reached at all propagates, as :class:`psycopg.OperationalError`.
    """
    keys = {"lock_class": LOCK_CLASS, "job": name}
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        cur = await conn.execute(_q()["try_lock"], keys)
        row = await cur.fetchone()
        if row is None or not row[0]:
            logger.info("job %s is running elsewhere; skipped", name)
            return JobRun(name, "skipped", "running elsewhere")
        try:
            # Under the lock no other run of this job is alive: one still 'running' died.
            await conn.execute(_q()["abandon_runs"], {"job": name})
            cur = await conn.execute(_q()["start_run"], {"job": name})
            started = await cur.fetchone()
            assert started is not None
            run_id = int(started[0])
            try:
                detail = await job(conn)
            except (OemrError, psycopg.Error, ValueError, ArithmeticError) as exc:
                # What a job can run into with data it has not seen before.
                logger.exception("job %s failed", name)
                await _finish(conn, run_id, "failed", f"{type(exc).__name__}: {exc}")
                return JobRun(name, "failed", str(exc), run_id)
            except BaseException as exc:
                # Anything else is a bug (or a cancellation) and stays loud, but its run row
                # must not say 'running' for ever.
                if not conn.closed:
                    await _finish(conn, run_id, "failed", f"{type(exc).__name__}: {exc}")
                raise
            await _finish(conn, run_id, "succeeded", detail)
            logger.info("job %s: %s", name, detail)
            return JobRun(name, "succeeded", detail, run_id)
        finally:
            if not conn.closed:
                await conn.execute(_q()["unlock"], keys)


async def _finish(conn: Connection, run_id: int, status: str, detail: str) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        await conn.rollback()  # a failed statement left the job's transaction aborted
    await conn.execute(_q()["finish_run"], {"run_id": run_id, "status": status,
                                            "detail": detail})


async def last_success(conn: Connection, name: str) -> datetime | None:
    """When the job last succeeded, or None."""
    cur = await conn.execute(_q()["last_success"], {"job": name})
    row = await cur.fetchone()
    return None if row is None else row[0]


# The weekly retraining is caught up at start once the newest model is this old: the job store
# is in memory, so a process that was down on Monday night would not know it missed a turn.
RETRAIN_AFTER = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    """One row of the job table: a job's name, its APScheduler trigger and the trigger's options."""

    name: str
    trigger: Literal["interval", "cron"]
    options: Mapping[str, Any] = field(default_factory=dict)


def retraining_due(trained_until: date | None, now: datetime) -> bool:
    """Whether the retraining is to run at start: the newest model is ``RETRAIN_AFTER`` old.

    With no model stored (None) it is not: the first daily run trains and stores one.
    """
    return trained_until is not None and _utc(now).date() - trained_until >= RETRAIN_AFTER


def job_table(now: datetime, trained_until: date | None) -> list[ScheduledJob]:
    """The analytics jobs and when they run, for a scheduler starting at ``now`` (aware).

    ``trained_until``: the day the newest stored churn model was trained up to (None: none).
    A turn up to its grace late still runs (APScheduler's default is one second).
    """
    now = _utc(now)
    catch_up = {"next_run_time": now} if retraining_due(trained_until, now) else {}
    return [
        ScheduledJob("rollups", "interval", {"minutes": 15, "next_run_time": now,
                                             "misfire_grace_time": 15 * 60}),
        ScheduledJob("daily", "cron", {"hour": 2, "minute": 0, "next_run_time": now,
                                       "misfire_grace_time": 3600}),
        ScheduledJob("retrain", "cron", {"day_of_week": "mon", "hour": 3,
                                         "misfire_grace_time": 3600, **catch_up}),
    ]


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"expected a time with its zone (UTC), got the naive {moment}")
    return moment.astimezone(UTC)


async def rollups(conn: Connection, *, pool: AsyncConnectionPool, settings: Settings) -> str:
    """The usage rollup's refresh, on the job's connection and a second one from the pool."""
    # A second connection computes slices too: the first refresh of a fleet's history (or one
    # after late data) is long, and the server has cores for it.
    async with pool.connection() as helper:
        done = await refresh_machine_days(conn, helpers=[helper],
                                          keep_raw=settings.telemetry_retention)
    # From the same day: it already takes in the days the ingester marked as written late.
    hours = await refresh_metric_hours(conn, since=done.from_day)
    fleet = await refresh_fleet_status(conn)
    return (f"{done.rows_changed} machine-days from {done.from_day}, {hours.rows_changed}"
            f" metric-hours, {fleet.written} machines rated")


async def daily(conn: Connection, *, settings: Settings) -> str:
    """Rollups, value, segments and scores for today; the KPI snapshot of yesterday."""
    # The stored model, whichever process trained it: every scheduler scores alike.
    today = datetime.now(UTC).date()
    # The KPIs of yesterday, whole: at 02:00 today has two hours of data against 24 calendar
    # hours, and, the ingester writing past the rollup's watermark, a period through today
    # would be read from raw telemetry (10x slower: docs/kpis.md).
    done = await run_daily(conn, on=today, snapshot_on=today - timedelta(days=1),
                           reporting_currency=settings.reporting_currency,
                           keep_raw=settings.telemetry_retention)
    return (f"{done.rollup.rows_changed} machine-days re-rolled, {done.value.customers}"
            f" customers valued and segmented, {len(done.scores)} scored with"
            f" {done.model.version_}"
            f"{' (trained now: none was stored)' if done.model_trained else ''},"
            f" KPI snapshot of {done.kpis.taken_on}: {done.kpis.values} values")


async def retrain(conn: Connection, *, settings: Settings) -> str:
    """Train the churn model on the history up to today and store it."""
    today = datetime.now(UTC).date()
    m, model_id = await train_and_save(conn, cutoff=today,
                                       reporting_currency=settings.reporting_currency)
    return (f"trained until {today}: {m.churn_events_} churn events, method {m.method_};"
            f" stored as model {model_id}")


def scheduled_work(settings: Settings, pool: AsyncConnectionPool) -> dict[str, Job]:
    """The work of each job of :func:`job_table`, by name."""
    return {"rollups": partial(rollups, pool=pool, settings=settings),
            "daily": partial(daily, settings=settings),
            "retrain": partial(retrain, settings=settings)}


async def run_schedule(settings: Settings, pool: AsyncConnectionPool, *,
                       stop: asyncio.Event) -> None:
    """Run the job table on ``pool`` (open) until ``stop`` is set; each turn via run_exclusive."""
    now = datetime.now(UTC)
    work = scheduled_work(settings, pool)
    scheduler = AsyncIOScheduler(timezone="UTC")
    for job in job_table(now, await _newest_trained_until(pool)):
        scheduler.add_job(run_exclusive, job.trigger, args=(pool, job.name, work[job.name]),
                          id=job.name, max_instances=1, coalesce=True, **job.options)
    scheduler.start()
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)


async def _newest_trained_until(pool: AsyncConnectionPool) -> date | None:
    try:
        async with pool.connection() as conn:
            return await newest_trained_until(conn)
    except psycopg.Error as exc:
        logger.warning("no catch-up of the churn model's retraining: %s", exc)
        return None
