"""Scheduled analytics work, run so that two processes never run the same job at once.

Each job takes a PostgreSQL advisory lock named after it before it starts; a second scheduler
(another replica, a second `up` by mistake) finds the lock taken and skips that turn. The lock is
held by the job's own connection, so it ends with the process if that dies. Every run is a row of
``analytics_job_runs``: when, how it ended, and a line on what it did.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg_pool import AsyncConnectionPool

from core.errors import OemrError
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
