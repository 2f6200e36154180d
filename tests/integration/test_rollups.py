"""machine_days: exact daily hours from hand-made telemetry; refreshes touch only new days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from analytics.rollups import refresh_machine_days
from tests.integration.conftest import rows

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


def at(day: int, hour: float) -> datetime:
    """March ``day`` 2026 at ``hour`` UTC."""
    return datetime(2026, 3, day, tzinfo=UTC) + timedelta(hours=hour)


# Machine A's counter: the day before ends at 100; day 2 adds 3 h (the first sample's hour
# counts); day 3 is reset to zero mid-day (+1, +0.5, +1); nothing on day 4; day 5 closes the gap
# with +4 over it.
COUNTER_A = [(at(1, 20), 100.0),
             (at(2, 7), 100.5), (at(2, 8), 101.5), (at(2, 9), 102.5), (at(2, 10), 103.0),
             (at(3, 8), 104.0), (at(3, 9), 0.5), (at(3, 10), 1.5),
             (at(5, 12), 5.5)]
COUNTER_B = [(at(2, 7), 10.0), (at(2, 15), 18.0)]
STATES_A = [(at(2, 6), "running"), (at(2, 8), "fault"), (at(2, 8.5), "running"),
            (at(2, 9.5), "idle"), (at(2, 14), "off"),
            # over midnight: 2 h on day 3, 2 h on day 4
            (at(3, 22), "running"), (at(4, 2), "off")]
EVENTS_A = [(at(2, 8), "fault", "F1"), (at(2, 8.5), "fault_cleared", "F1"),
            (at(2, 12), "maintenance", "S1"), (at(5, 9), "fault", "F2")]


async def _machines(conn: Connection) -> tuple[int, int]:
    cur = await conn.execute(
        "INSERT INTO machines (tenant, serial, protocol) VALUES ('t', 'A', 'json'),"
        " ('t', 'B', 'json') RETURNING id")
    (a,), (b,) = await cur.fetchall()
    return a, b


async def _load(conn: Connection, machine: int, counter: list[tuple[datetime, float]],
                states: list[tuple[datetime, str]] = (),  # type: ignore[assignment]
                events: list[tuple[datetime, str, str]] = ()) -> None:  # type: ignore[assignment]
    async with conn.cursor() as cur:
        await cur.executemany("INSERT INTO telemetry VALUES (%s, %s, 1, %s)",
                              [(t, machine, v) for t, v in counter])
        await cur.executemany("INSERT INTO machine_states VALUES (%s, %s, %s)",
                              [(t, machine, s) for t, s in states])
        await cur.executemany(
            "INSERT INTO machine_events (time, machine_id, kind, code, event_key, payload)"
            " VALUES (%s, %s, %s, %s, %s, '{}')",
            [(t, machine, k, c, f"{k}-{c}") for t, k, c in events])
    await conn.commit()


async def _days(conn: Connection) -> dict[tuple[int, date], tuple[Any, ...]]:
    got = await rows(conn, "SELECT machine_id, day, operating_hours, running_hours, fault_hours,"
                           " samples, faults, services, last_seen FROM machine_days")
    return {(r[0], r[1]): r[2:] for r in got}


async def test_daily_hours_states_and_events_worked_out_by_hand(conn: Connection) -> None:
    a, b = await _machines(conn)
    await _load(conn, a, COUNTER_A, STATES_A, EVENTS_A)
    await _load(conn, b, COUNTER_B)
    done = await refresh_machine_days(conn)
    days = await _days(conn)
    expected = {
        (a, date(2026, 3, 1)): (0.0, 0.0, 0.0, 1, 0, 0, at(1, 20)),
        (a, date(2026, 3, 2)): (3.0, 3.0, 0.5, 4, 1, 1, at(2, 14)),
        (a, date(2026, 3, 3)): (2.5, 2.0, 0.0, 3, 0, 0, at(3, 22)),
        (a, date(2026, 3, 4)): (0.0, 2.0, 0.0, 0, 0, 0, at(4, 2)),
        (a, date(2026, 3, 5)): (4.0, 0.0, 0.0, 1, 1, 0, at(5, 12)),
        (b, date(2026, 3, 2)): (8.0, 0.0, 0.0, 2, 0, 0, at(2, 15)),
    }
    assert days.keys() == expected.keys()
    for key, (hours, running, fault, *counts, seen) in expected.items():
        got = days[key]
        assert got[:3] == pytest.approx((hours, running, fault)), key
        assert (*got[3:6], got[6]) == (*counts, seen), key
    assert done.rows_changed == len(expected)
    assert done.through == at(5, 12)


async def test_one_more_hour_changes_only_its_day(conn: Connection) -> None:
    a, b = await _machines(conn)
    await _load(conn, a, COUNTER_A, STATES_A, EVENTS_A)
    await _load(conn, b, COUNTER_B)
    await refresh_machine_days(conn)
    before = await rows(conn, "SELECT machine_id, day, refreshed_at FROM machine_days")
    await _load(conn, a, [(at(5, 13), 6.5)])
    done = await refresh_machine_days(conn)
    after_days = await _days(conn)
    after = await rows(conn, "SELECT machine_id, day, refreshed_at FROM machine_days")
    assert done.from_day == date(2026, 3, 5)
    assert done.rows_changed == 1
    assert after_days[(a, date(2026, 3, 5))][:4] == pytest.approx((5.0, 0.0, 0.0, 2))
    moved = {(m, d) for (m, d, r) in after} - {(m, d) for (m, d, r) in after
                                               if (m, d, r) in set(before)}
    assert moved == {(a, date(2026, 3, 5))}
    assert done.through == at(5, 13)
    # Recomputing everything again changes nothing: the refresh is idempotent.
    again = await refresh_machine_days(conn, since=date(2026, 3, 1))
    assert again.rows_changed == 0
    assert await _days(conn) == after_days


async def test_late_data_before_the_lookback_needs_since(conn: Connection) -> None:
    a, _ = await _machines(conn)
    await _load(conn, a, COUNTER_A)
    await refresh_machine_days(conn)
    # A sample for day 3 arrives late, after the watermark moved to day 5. The plain refresh
    # recomputes day 5 only (its first step now starts at 2.0); day 3 waits for ``since``.
    await _load(conn, a, [(at(3, 11), 2.0)])
    plain = await refresh_machine_days(conn)
    days = await _days(conn)
    assert (plain.from_day, plain.rows_changed) == (date(2026, 3, 5), 1)
    assert days[(a, date(2026, 3, 3))][0] == pytest.approx(2.5)
    assert days[(a, date(2026, 3, 5))][0] == pytest.approx(3.5)
    done = await refresh_machine_days(conn, since=date(2026, 3, 3))
    days = await _days(conn)
    assert days[(a, date(2026, 3, 3))][0] == pytest.approx(3.0)
    assert days[(a, date(2026, 3, 3))][3] == 4
    assert done.rows_changed == 1


async def test_slices_and_helpers_give_the_same_days(conn: Connection, database_url: str
                                                     ) -> None:
    a, b = await _machines(conn)
    await _load(conn, a, COUNTER_A, STATES_A, EVENTS_A)
    await _load(conn, b, COUNTER_B)
    whole = await refresh_machine_days(conn)
    expected = await _days(conn)
    await conn.execute("DELETE FROM machine_days")
    await conn.commit()
    # One day per statement, on two connections: every interval over midnight and every
    # counter step from the day before crosses a slice's edge.
    async with await psycopg.AsyncConnection.connect(database_url) as helper:
        sliced = await refresh_machine_days(conn, since=date(2026, 3, 1), helpers=[helper],
                                            slice_days=1)
    got = await _days(conn)
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        assert got[key][:3] == pytest.approx(values[:3]), key
        assert got[key][3:] == values[3:], key
    assert sliced.rows_changed == whole.rows_changed
    assert sliced.through == whole.through


async def test_a_state_without_a_next_report_lasts_until_the_machine_was_last_heard(
        conn: Connection) -> None:
    a, _ = await _machines(conn)
    # Running from 10:00 on day 2 until it is switched off at 12:00 on day 4; hourly counter
    # samples the whole time. Refreshed as the data arrives, day by day.
    await _load(conn, a, [(at(2, h), float(h)) for h in range(10, 24)],
                [(at(2, 10), "running")])
    first = await refresh_machine_days(conn)
    days = await _days(conn)
    # Last heard at 23:00: 13 running hours so far, not 14 (nor none, as before).
    assert days[(a, date(2026, 3, 2))][1] == pytest.approx(13.0)
    await _load(conn, a, [(at(3, h), 14.0 + h) for h in range(24)])
    await refresh_machine_days(conn)
    days = await _days(conn)
    assert days[(a, date(2026, 3, 2))][1] == pytest.approx(14.0)
    assert days[(a, date(2026, 3, 3))][1] == pytest.approx(23.0)
    await _load(conn, a, [(at(4, h), 38.0 + h) for h in range(13)], [(at(4, 12), "off")])
    last = await refresh_machine_days(conn)
    days = await _days(conn)
    running = {d: v[1] for (m, d), v in days.items() if m == a}
    assert running == pytest.approx({date(2026, 3, 2): 14.0, date(2026, 3, 3): 24.0,
                                     date(2026, 3, 4): 12.0})
    assert first.through == at(2, 23)
    assert last.from_day == date(2026, 3, 3)


async def test_a_day_marked_late_is_recomputed_and_its_mark_dropped(conn: Connection) -> None:
    a, _ = await _machines(conn)
    await _load(conn, a, COUNTER_A)
    await refresh_machine_days(conn)
    # The ingester writes a late sample for day 3 and marks the day (ingest/store.py does both
    # in one transaction; the mark is written here as it would).
    await _load(conn, a, [(at(3, 11), 2.0)])
    await conn.execute("INSERT INTO rollup_late_days (day, earliest) VALUES (%s, %s)",
                       (date(2026, 3, 3), at(3, 11)))
    # A mark older than the raw telemetry kept is dropped, not followed.
    await conn.execute("INSERT INTO rollup_late_days (day, earliest) VALUES ('2020-01-01',"
                       " '2020-01-01 05:00+00')")
    await conn.commit()
    done = await refresh_machine_days(conn, keep_raw="5 years")
    days = await _days(conn)
    # Day 3 gains the hour to 11:00 (+0.5); day 5's first step now starts at 2.0, not 1.5.
    assert done.from_day == date(2026, 3, 3)
    assert days[(a, date(2026, 3, 3))][0] == pytest.approx(3.0)
    assert days[(a, date(2026, 3, 5))][0] == pytest.approx(3.5)
    assert done.rows_changed == 2
    assert await rows(conn, "SELECT day FROM rollup_late_days") == []
    again = await refresh_machine_days(conn)
    assert (again.from_day, again.rows_changed) == (date(2026, 3, 5), 0)


async def test_after_a_reset_the_next_day_continues_from_the_last_reading(
        conn: Connection) -> None:
    a, _ = await _machines(conn)
    # Reset mid-day on day 2 (ends at 1.0, its highest reading was 101); the machine comes back
    # on day 12 at 150: 149 hours over the gap, not 150 - 101. Day 20: a dip that stays above
    # the day before and within the clock (a glitch of the reading, not a reset): the day
    # counts its last reading less the day before's, 152 - 150.
    await _load(conn, a, [(at(2, 8), 100.0), (at(2, 9), 101.0), (at(2, 10), 0.5),
                          (at(2, 11), 1.0), (at(12, 9), 150.0),
                          (at(20, 8), 151.0), (at(20, 9), 150.5), (at(20, 10), 152.0)])
    await refresh_machine_days(conn)
    hours = {d: v[0] for (_, d), v in (await _days(conn)).items()}
    assert hours == pytest.approx({date(2026, 3, 2): 2.0, date(2026, 3, 12): 149.0,
                                   date(2026, 3, 20): 2.0})
