"""Scheduled analytics jobs: one run at a time across processes, every run recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from analytics.jobs import Connection, Job, run_exclusive

from .conftest import rows

Pools = tuple[AsyncConnectionPool, AsyncConnectionPool]


def _done(detail: str) -> Job:
    async def job(_conn: Connection) -> str:
        return detail
    return job


@pytest.fixture
async def pools(database_url: str) -> AsyncIterator[Pools]:
    """Two pools: two schedulers, as two processes would have."""
    async with (AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as one,
                AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as two):
        yield one, two


async def test_a_job_running_in_one_process_is_skipped_by_another(
        pools: Pools, conn: Connection) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(_conn: Connection) -> str:
        started.set()
        await release.wait()
        return "rolled up 3 days"

    first = asyncio.create_task(run_exclusive(pools[0], "rollups", slow))
    await started.wait()
    second = await run_exclusive(pools[1], "rollups", slow)
    other = await run_exclusive(pools[1], "scores", _done("scored 5"))
    release.set()
    assert (second.status, second.detail) == ("skipped", "running elsewhere")
    assert (await first).status == "succeeded"
    assert other.status == "succeeded"
    assert await rows(conn, "SELECT job, status, detail FROM analytics_job_runs ORDER BY id") == [
        ("rollups", "succeeded", "rolled up 3 days"), ("scores", "succeeded", "scored 5")]
    # Released: the next turn runs.
    assert (await run_exclusive(pools[1], "rollups", _done("again"))).status == "succeeded"


async def test_a_failing_job_is_recorded_and_does_not_hold_its_lock(
        pools: Pools, conn: Connection) -> None:
    async def broken(job_conn: Connection) -> str:
        await job_conn.execute("SELECT 1 / 0")
        return "never"

    failed = await run_exclusive(pools[0], "kpis", broken)
    assert failed.status == "failed"
    assert "division by zero" in failed.detail
    later = await run_exclusive(pools[1], "kpis", _done("computed"))
    assert later.status == "succeeded"
    assert await rows(conn, "SELECT status, left(detail, 30) FROM analytics_job_runs"
                            " ORDER BY id") == [
        ("failed", "DivisionByZero: division by ze"), ("succeeded", "computed")]


async def test_a_run_that_died_is_marked_and_a_bug_is_recorded_and_raised(
        pools: Pools, conn: Connection) -> None:
    # A run row left 'running' by a process that died.
    await conn.execute("INSERT INTO analytics_job_runs (job) VALUES ('rollups')")
    await conn.commit()

    async def buggy(_conn: Connection) -> str:
        raise KeyError("feature")

    with pytest.raises(KeyError):
        await run_exclusive(pools[0], "rollups", buggy)
    assert await rows(conn, "SELECT status, detail FROM analytics_job_runs ORDER BY id") == [
        ("failed", "interrupted: the process ended before the run finished"),
        ("failed", "KeyError: 'feature'")]
    assert (await run_exclusive(pools[1], "rollups", _done("fine"))).status == "succeeded"
