"""Late data marks its UTC days for the rollup (rollup_late_days, migration 015).

Messages go through the real broker to a real ingester process. Times are chosen at hours well
inside their UTC day, and every expected day and earliest time is written out here from the
published timestamps, not read back from the ingester.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from core.sql import queries
from tests.integration.conftest import publisher, scalar, wait_for


def _marks(database_url: str) -> list[tuple[date, datetime]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT day, earliest FROM rollup_late_days ORDER BY day").fetchall()


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _days_ago(days: int, hour: int, minute: int = 0) -> datetime:
    today = datetime.now(UTC).date()
    return datetime(today.year, today.month, today.day, hour, minute, tzinfo=UTC) - timedelta(
        days=days)


def test_samples_states_and_events_mark_their_days(database_url: str, tenant: str,
                                                  start_ingester: Any) -> None:
    start_ingester()
    pub = publisher()
    base = f"oem/{tenant}/machines/SN-1"
    now = datetime.now(UTC)

    # On time (a minute old): stored, no mark.
    pub.publish(f"{base}/telemetry", orjson.dumps(
        {"ts": _ms(now - timedelta(minutes=1)), "metrics": {"operating_hours": 10.0}}), qos=1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 1)
    assert _marks(database_url) == []

    # Ten days old: its day, with its time.
    ten_days = _days_ago(10, 12)
    pub.publish(f"{base}/telemetry", orjson.dumps(
        {"ts": _ms(ten_days), "metrics": {"operating_hours": 5.0}}), qos=1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 2)
    assert _marks(database_url) == [(ten_days.date(), ten_days)]

    # Later on the same day (a later batch): the mark keeps the earliest time.
    pub.publish(f"{base}/telemetry", orjson.dumps(
        {"ts": _ms(_days_ago(10, 15)), "metrics": {"operating_hours": 6.0}}), qos=1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 3)
    assert _marks(database_url) == [(ten_days.date(), ten_days)]

    # Earlier on the same day (a later batch again): the earliest moves back to it.
    earlier = _days_ago(10, 8, 30)
    pub.publish(f"{base}/telemetry", orjson.dumps(
        {"ts": _ms(earlier), "metrics": {"operating_hours": 4.0}}), qos=1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 4)
    assert _marks(database_url) == [(ten_days.date(), earlier)]

    # A machine state alone (no metrics), twenty days old; an event thirty days old.
    state_time, event_time = _days_ago(20, 9), _days_ago(30, 14)
    pub.publish(f"{base}/telemetry", orjson.dumps(
        {"ts": _ms(state_time), "state": "running"}), qos=1)
    pub.publish(f"{base}/events", orjson.dumps(
        {"ts": _ms(event_time), "type": "maintenance", "id": "svc-1"}), qos=1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM machine_events") == 1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM machine_states") == 1)
    assert _marks(database_url) == [(event_time.date(), event_time),
                                    (state_time.date(), state_time),
                                    (earlier.date(), earlier)]
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0
    pub.loop_stop()


def test_a_backlog_message_marks_each_day_once_with_its_earliest(
        database_url: str, tenant: str, start_ingester: Any) -> None:
    start_ingester()
    pub = publisher()
    a1, a2, a3 = _days_ago(12, 16), _days_ago(12, 7, 15), _days_ago(12, 11)
    b1 = _days_ago(11, 3)
    on_time = datetime.now(UTC) - timedelta(minutes=5)
    samples = [{"ts": _ms(t), "metrics": {"operating_hours": float(i)}}
               for i, t in enumerate((a1, a2, b1, a3, on_time))]
    pub.publish(f"oem/{tenant}/machines/SN-2/telemetry", orjson.dumps({"samples": samples}),
                qos=1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 5)
    assert _marks(database_url) == [(a2.date(), a2), (b1.date(), b1)]
    pub.loop_stop()


def test_late_after_is_the_setting(database_url: str, tenant: str, start_ingester: Any) -> None:
    start_ingester(OEMR_INGEST_LATE_AFTER_S="600")
    pub = publisher()
    now = datetime.now(UTC)
    # With the default hour neither would be late.
    twenty_min, five_min = now - timedelta(minutes=20), now - timedelta(minutes=5)
    for serial, moment in (("SN-3", five_min), ("SN-4", twenty_min)):
        pub.publish(f"oem/{tenant}/machines/{serial}/telemetry", orjson.dumps(
            {"ts": _ms(moment), "metrics": {"operating_hours": 1.0}}), qos=1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 2)
    twenty_min = datetime.fromtimestamp(_ms(twenty_min) / 1000, UTC)  # as stored: milliseconds
    assert _marks(database_url) == [(twenty_min.date(), twenty_min)]
    pub.loop_stop()


# -- the consumer's protocol (migration 015), on the ingester's own upsert --------------------

_CONSUME = """
    DELETE FROM rollup_late_days d
    USING unnest(%(days)s::date[], %(xids)s::xid8[]) AS h(day, xid)
    WHERE d.day = h.day AND d.marked_xid = h.xid"""


async def _mark(conn: psycopg.AsyncConnection[tuple[Any, ...]], day: date) -> None:
    moment = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    await conn.execute(queries("ingest", "sql/store.sql")["mark_late_days"],
                       {"days": [day], "earliest": [moment]})


@pytest.mark.parametrize("ingest_commits", ["before the delete", "while the delete waits"])
async def test_a_mark_made_after_the_refresh_read_the_marks_survives_its_delete(
        database_url: str, ingest_commits: str) -> None:
    d1, d2 = date(2026, 3, 1), date(2026, 3, 2)
    async with (await psycopg.AsyncConnection.connect(database_url, autocommit=True) as ingest,
                await psycopg.AsyncConnection.connect(database_url) as refresh):
        for day in (d1, d2):
            await _mark(ingest, day)
        # (1) the refresh reads the marks
        cur = await refresh.execute("SELECT day, marked_xid FROM rollup_late_days ORDER BY day")
        handled = await cur.fetchall()
        assert [d for d, _ in handled] == [d1, d2]
        # An ingest batch marks d2 again, in a transaction of its own; (2) would not see its rows.
        await ingest.execute("BEGIN")
        await _mark(ingest, d2)
        params = {"days": [d for d, _ in handled], "xids": [x for _, x in handled]}
        if ingest_commits == "before the delete":
            await ingest.execute("COMMIT")
            cur = await refresh.execute(_CONSUME, params)
        else:
            # (3) finds d2's row locked by the open batch and waits for it: the server says
            # the refresh's backend waits on a lock (not merely that it is still running).
            delete = asyncio.create_task(refresh.execute(_CONSUME, params))
            pid = refresh.info.backend_pid
            async with await psycopg.AsyncConnection.connect(database_url,
                                                             autocommit=True) as watch:
                while (await (await watch.execute(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                        (pid,))).fetchone()) != ("Lock",):
                    assert not delete.done(), "the delete did not wait for the batch's lock"
                    await asyncio.sleep(0.02)
            assert not delete.done()
            await ingest.execute("COMMIT")
            cur = await delete
        assert cur.rowcount == 1
        await refresh.commit()
        left = await (await ingest.execute("SELECT day FROM rollup_late_days")).fetchall()
    assert left == [(d2,)]
