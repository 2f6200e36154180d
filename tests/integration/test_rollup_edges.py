"""The sliced rollup and the shared KPI machine rows at their edges: numbers must not depend on
where a slice or a window starts, nor cached rows leak into another computation (cases found by
an independent review, each failing before its fix)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import psycopg
import pytest

from analytics.rollups import refresh_machine_days
from tests.integration.test_kpis import fleet  # noqa: F401
from tests.integration.test_rollups import Connection, _days, _load, _machines, at


async def test_a_glitch_day_at_a_slice_edge_gives_the_next_day_the_same_hours(
        conn: Connection, database_url: str) -> None:
    a, _ = await _machines(conn)
    # Day 2 dips within the clock and above the day before (a glitch of the reading, not a
    # reset): it counts its last reading less the day before's, 105 - 99 = 6, and day 3
    # continues from 105: 112 - 105 = 7 (13 in all, the counter's rise from 99 to 112).
    await _load(conn, a, [(at(1, 20), 99.0),
                          (at(2, 1), 100.0), (at(2, 12), 110.0), (at(2, 23), 105.0),
                          (at(3, 1), 111.0), (at(3, 2), 112.0)])
    await refresh_machine_days(conn)
    whole = {d: v[0] for (_, d), v in (await _days(conn)).items()}
    assert whole[date(2026, 3, 2)] == pytest.approx(6.0)
    assert whole[date(2026, 3, 3)] == pytest.approx(7.0)
    await conn.execute("DELETE FROM machine_days")
    await conn.commit()
    async with await psycopg.AsyncConnection.connect(database_url) as helper:
        await refresh_machine_days(conn, since=date(2026, 3, 1), helpers=[helper],
                                   slice_days=1)
    sliced = {d: v[0] for (_, d), v in (await _days(conn)).items()}
    # Slicing changes no number (rollups.py).
    assert sliced == pytest.approx(whole)


async def test_a_window_starting_the_day_after_a_glitch_day_changes_nothing(
        conn: Connection) -> None:
    a, _ = await _machines(conn)
    await _load(conn, a, [(at(1, 20), 99.0),
                          (at(2, 1), 100.0), (at(2, 12), 110.0), (at(2, 23), 105.0),
                          (at(3, 1), 111.0), (at(3, 2), 112.0)])
    await refresh_machine_days(conn)
    # The daily job's re-roll (since = a week back) may start on any day: it must be idempotent.
    again = await refresh_machine_days(conn, since=date(2026, 3, 3))
    hours = {d: v[0] for (_, d), v in (await _days(conn)).items()}
    assert hours[date(2026, 3, 3)] == pytest.approx(7.0)
    assert again.rows_changed == 0


async def test_a_state_report_at_a_slice_start_midnight(conn: Connection,
                                                        database_url: str) -> None:
    a, _ = await _machines(conn)
    # Idle from day 1 10:00; running at exactly day 2 00:00 (a slice's start); off at 06:00.
    await _load(conn, a, [(at(1, 10), 0.0), (at(2, 6), 6.0)],
                [(at(1, 10), "idle"), (at(2, 0), "running"), (at(2, 6), "off")])
    async with await psycopg.AsyncConnection.connect(database_url) as helper:
        await refresh_machine_days(conn, helpers=[helper], slice_days=1)
    running = {d: v[1] for (m, d), v in (await _days(conn)).items() if m == a}
    assert running[date(2026, 3, 2)] == pytest.approx(6.0)


async def test_a_resweep_from_a_midnight_with_a_state_report_changes_nothing(
        conn: Connection) -> None:
    a, _ = await _machines(conn)
    await _load(conn, a, [(at(1, 10), 0.0), (at(2, 6), 6.0)],
                [(at(1, 10), "idle"), (at(2, 0), "running"), (at(2, 6), "off")])
    await refresh_machine_days(conn)
    first = {d: v[1] for (m, d), v in (await _days(conn)).items() if m == a}
    # The daily job re-rolls from a day back (since): same data, same numbers.
    again = await refresh_machine_days(conn, since=date(2026, 3, 2))
    running = {d: v[1] for (m, d), v in (await _days(conn)).items() if m == a}
    assert first[date(2026, 3, 2)] == pytest.approx(6.0)
    assert running[date(2026, 3, 2)] == pytest.approx(6.0)
    assert again.rows_changed == 0


async def test_shared_machine_rows_are_not_read_for_another_currency(
        conn: Connection, fleet: dict[str, int]) -> None:  # noqa: F811
    from analytics import kpi
    from tests.integration.test_kpis import FEB
    # EUR -> USD at 1.1 (to_reporting multiplies by the rate of the amount's currency).
    await conn.execute("INSERT INTO exchange_rates VALUES ('EUR', '2025-01-01', 1.1)")
    await conn.commit()
    # USD: implied 1176 x 1.1 = 1293.6; bought (250 + 200 + 48) x 1.1 + 100 = 647.8.
    outside = await kpi.parts_capture(conn, FEB, reporting_currency="USD")
    assert outside.denominator is not None
    assert outside.denominator.quantize(Decimal("0.01")) == Decimal("1293.60")
    async with kpi.shared_machine_rows(conn, [FEB], reporting_currency="EUR"):
        inside = await kpi.parts_capture(conn, FEB, reporting_currency="USD")
    # Both in USD: the block's EUR rows must not be used for a USD table.
    assert (inside.value, inside.numerator, inside.denominator) == (
        outside.value, outside.numerator, outside.denominator)


async def test_shared_machine_rows_twice_on_one_connection(
        conn: Connection, fleet: dict[str, int]) -> None:  # noqa: F811
    from analytics import kpi
    from tests.integration.test_kpis import FEB
    # A non-autocommit connection (as here): the block's transaction is a savepoint of the one
    # its coverage check opened, so ON COMMIT DROP does not drop the table when the block ends.
    for _ in range(2):
        async with kpi.shared_machine_rows(conn, [FEB], reporting_currency="EUR"):
            await kpi.parts_capture(conn, FEB, reporting_currency="EUR")


async def test_a_refresh_before_any_data_or_after_all_of_it_changes_nothing(
        conn: Connection) -> None:
    # `up` starts the analytics schedule with the ingester: its first refresh may find no
    # telemetry at all (greatest() of a NULL first chunk and the window start is the window
    # start: there was a start but no end, and the refresh failed until the next turn).
    first = await refresh_machine_days(conn)
    assert first.rows_changed == 0
    a, _ = await _machines(conn)
    await _load(conn, a, [(at(1, 20), 99.0), (at(2, 1), 100.0)])
    # (The first refresh that finds data rolls up all of it: the next test.)
    assert (await refresh_machine_days(conn)).rows_changed == 2
    after = await refresh_machine_days(conn, since=date(2027, 1, 1))
    assert after.rows_changed == 0


async def test_the_first_refresh_rolls_up_everything_whatever_it_is_asked(
        conn: Connection) -> None:
    # The daily run asks for its last week; when it gets the lock before the first rollups turn
    # (both run at start), the history before that week must not be left out for good.
    a, _ = await _machines(conn)
    await _load(conn, a, [(at(1, 1), 10.0), (at(1, 23), 20.0), (at(2, 23), 30.0),
                          (at(3, 23), 45.0)])
    await refresh_machine_days(conn, since=date(2026, 3, 3))
    hours = {d: v[0] for (_, d), v in (await _days(conn)).items()}
    assert hours[date(2026, 3, 1)] == pytest.approx(10.0)
    assert hours[date(2026, 3, 2)] == pytest.approx(10.0)
    assert hours[date(2026, 3, 3)] == pytest.approx(15.0)
    # Once a watermark exists, ``since`` is honoured: nothing before it is recomputed.
    await conn.execute("UPDATE machine_days SET operating_hours = -1 WHERE day = '2026-03-01'")
    await conn.commit()
    await refresh_machine_days(conn, since=date(2026, 3, 3))
    again = {d: v[0] for (_, d), v in (await _days(conn)).items()}
    assert again[date(2026, 3, 1)] == -1
