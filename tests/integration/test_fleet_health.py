"""fleet_health on a small case worked out by hand (docs/api-fleet.md), the fleet_status refresh,
and the hourly metric rollup with a late sample.

Rows are written by hand into a fresh database; every expected value below is worked out in the
comments from those rows, not from the code under test.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from analytics.fleet import Series, metric_series, refresh_fleet_status, refresh_metric_hours
from analytics.rollups import refresh_machine_days

TODAY = datetime.now(UTC).date()
T = datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC)  # today, 00:00 UTC
AS_OF = T + timedelta(hours=12)


def noon(days_before: int) -> datetime:
    return T - timedelta(days=days_before) + timedelta(hours=12)


def day(days_before: int) -> date:
    return TODAY - timedelta(days=days_before)


def _world(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Three customers, six installed-base rows, five of them registered machines."""
    ids: dict[str, int] = {}
    for key in ("c1", "c2", "c3"):
        ids[key] = conn.execute(
            "INSERT INTO customers (source, external_id, name, country) VALUES"
            " ('t', %s, %s, 'DE') RETURNING id", (key, f"Customer {key}")).fetchone()[0]
    rows = {  # serial: customer, commissioned, warranty end
        "A": ("c1", day(400), day(100)), "B": ("c2", day(10), day(-100)),
        "C": ("c2", day(400), None), "D": ("c2", day(400), None),
        "E": ("c3", day(400), None), "G": ("c3", day(400), None)}
    for serial, (customer, commissioned, warranty) in rows.items():
        ids[serial] = conn.execute(
            "INSERT INTO installed_base (source, external_id, serial, model, customer_id,"
            " commissioned_on, warranty_end) VALUES ('t', %s, %s, 'M1', %s, %s, %s) RETURNING id",
            (serial, serial, ids[customer], commissioned, warranty)).fetchone()[0]
    conn.execute("UPDATE installed_base SET deleted_at = now() WHERE serial = 'E'")
    for serial in ("A", "B", "C", "E", "G"):  # D never reported
        ids[f"m{serial}"] = conn.execute(
            "INSERT INTO machines (tenant, serial, protocol) VALUES ('t', %s, 'json')"
            " RETURNING id", (serial,)).fetchone()[0]

    def counter(serial: str, readings: list[tuple[datetime, float]]) -> None:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO telemetry (time, machine_id, metric_id, value)"
                            " VALUES (%s, %s, 1, %s)",
                            [(at, ids[f"m{serial}"], v) for at, v in readings])

    # A: a reading at noon each day from 61 days ago to yesterday; +12 h a day up to 31 days
    # ago, +3 h a day after. Hours fall on the day of the reading closing them: days -60..-31
    # hold 30 x 12 = 360 h (of 720 calendar hours: 0.5), days -30..-1 hold 30 x 3 = 90 h
    # (0.125). Trend 0.125 / 0.5 - 1 = -0.75.
    value, readings = 0.0, []
    for k in range(61, 0, -1):
        if k < 61:
            value += 12 if k >= 31 else 3
        readings.append((noon(k), value))
    counter("A", readings)
    # B: commissioned 10 days ago, readings from then, +6 h a day: the first counts nothing,
    # days -9..-1 hold 54 h over the 10 days from commissioning (240 h): 0.225; none before.
    counter("B", [(noon(k), 6.0 * (10 - k)) for k in range(10, 0, -1)])
    # C: last heard of 20 days ago at noon: as of today noon, 20 days.
    counter("C", [(noon(25), 100.0), (noon(20), 110.0)])
    # G: +5 h a day from 40 days ago to 6 days ago: days -39..-31 hold 45 h (0.0625), days
    # -30..-6 hold 125 h (0.1736); 3 faults in the window; last heard of 6 days ago.
    counter("G", [(noon(k), 5.0 * (40 - k)) for k in range(40, 5, -1)])
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO machine_events (time, machine_id, kind, event_key, payload)"
                        " VALUES (%s, %s, 'fault', %s, '{}')",
                        [(noon(k) - timedelta(hours=1), ids["mG"], f"f{k}") for k in (7, 8, 9)]
                        + [(noon(40), ids["mG"], "f40")])  # before the window: not counted
    # Contracts: c1 a live customer-scope one; c2 an expired and a draft customer-scope one
    # (neither live) and a live machine-scope one on C only.
    contracts = [("k1", "c1", None, "customer", day(100), day(-265), "active"),
                 ("k2", "c2", None, "customer", day(400), day(5), "expired"),
                 ("k3", "c2", None, "customer", day(10), day(-300), "draft"),
                 ("k4", "c2", "C", "machine", day(50), day(-50), "active")]
    for ext, customer, machine, scope, starts, ends, status in contracts:
        ids[ext] = conn.execute(
            "INSERT INTO service_contracts (source, external_id, customer_id, installed_base_id,"
            " scope, starts_on, ends_on, annual_value, currency, status)"
            " VALUES ('t', %s, %s, %s, %s, %s, %s, 1000, 'EUR', %s) RETURNING id",
            (ext, ids[customer], ids[machine] if machine else None, scope, starts, ends,
             status)).fetchone()[0]
    return ids


async def _refresh(url: str, as_of: datetime) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await refresh_machine_days(conn)
        await refresh_fleet_status(conn, as_of=as_of)


def test_fleet_health_by_hand(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        ids = _world(conn)
    asyncio.run(_refresh(database_url, AS_OF))
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        got = {r["serial"]: r for r in conn.execute("SELECT * FROM fleet_status")}
    assert set(got) == {"A", "B", "C", "D", "G"}  # E's row is deleted
    a, b, c, d, g = (got[s] for s in "ABCDG")
    assert a["utilisation"] == pytest.approx(0.125)
    assert a["utilisation_prev"] == pytest.approx(0.5)
    assert a["utilisation_trend"] == pytest.approx(-0.75)
    assert a["operating_hours_30d"] == pytest.approx(90)
    assert (a["connectivity"], a["coverage"], a["contract_id"]) == ("reporting", "covered",
                                                                    ids["k1"])
    assert (a["health_band"], a["health_reason"]) == (
        "at_risk", "utilisation down 75% on the previous 30 days (50.0% -> 12.5%)")
    assert a["last_seen"] == noon(1)
    assert b["utilisation"] == pytest.approx(54 / 240)
    assert b["utilisation_prev"] is None and b["utilisation_trend"] is None
    assert (b["coverage"], b["health_band"], b["health_reason"]) == (
        "warranty", "healthy", "reporting, utilisation 22.5% over 30 days, warranty")
    assert (c["connectivity"], c["coverage"], c["contract_id"]) == ("silent", "covered",
                                                                    ids["k4"])
    assert (c["health_band"], c["health_reason"]) == (
        "silent", f"no data for 20 days (last seen {day(20).isoformat()})")
    # C's 10 h closed 20 days ago, inside the 30 days; the reading 25 days ago counts nothing.
    assert c["utilisation"] == pytest.approx(10 / 720)
    assert c["utilisation_prev"] == 0 and c["utilisation_trend"] is None
    assert (d["connectivity"], d["coverage"], d["machine_id"], d["utilisation"]) == (
        "never_reported", "uncovered", None, None)
    assert (d["health_band"], d["health_reason"]) == ("silent", "never reported")
    assert g["utilisation"] == pytest.approx(125 / 720)
    assert g["utilisation_trend"] == pytest.approx((125 / 720) / (45 / 720) - 1)
    assert (g["faults_30d"], g["connectivity"], g["coverage"]) == (3, "quiet", "uncovered")
    # Faults come before the silence of 6 days, which comes before being uncovered.
    assert (g["health_band"], g["health_reason"]) == ("at_risk", "3 faults in 30 days")
    assert {r["as_of"] for r in got.values()} == {AS_OF}
    # Five days later: B is sold (its row deleted) and leaves the fleet; A has gone quiet.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE installed_base SET deleted_at = now() WHERE serial = 'B'")
    asyncio.run(_refresh(database_url, AS_OF + timedelta(days=5)))
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        later = {r["serial"]: r for r in conn.execute("SELECT * FROM fleet_status")}
    assert set(later) == {"A", "C", "D", "G"}
    # A: last seen 6 days before, and no hours in its last 5 days: 90 - 15 = 75 h.
    assert later["A"]["connectivity"] == "quiet"
    assert later["A"]["operating_hours_30d"] == pytest.approx(75)


async def _hours(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await refresh_metric_hours(conn)


def test_metric_hours_take_in_a_late_sample(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO metrics (id, name) VALUES (101, 'load')")
        machine = conn.execute("INSERT INTO machines (tenant, serial, protocol)"
                               " VALUES ('t', 'X', 'json') RETURNING id").fetchone()[0]
        hour = T - timedelta(days=2) + timedelta(hours=10)
        samples = [(hour + timedelta(minutes=15), 10.0), (hour + timedelta(minutes=45), 20.0),
                   (hour + timedelta(minutes=90), 40.0)]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO telemetry (time, machine_id, metric_id, value)"
                            " VALUES (%s, %s, 101, %s)", [(t, machine, v) for t, v in samples])
            # The operating-hours counter is machine_days' (hours per day), not rolled up here.
            cur.execute("INSERT INTO telemetry (time, machine_id, metric_id, value)"
                        " VALUES (%s, %s, 1, 5)", (hour, machine))
    asyncio.run(_hours(database_url))
    query = ("SELECT hour, avg, min, max, samples FROM metric_hours WHERE machine_id = %s"
             " ORDER BY hour")
    with psycopg.connect(database_url) as conn:
        assert conn.execute(query, (machine,)).fetchall() == [
            (hour, 15.0, 10.0, 20.0, 2), (hour + timedelta(hours=1), 40.0, 40.0, 40.0, 1)]
        # A sample of the 10:00 hour arrives after it was rolled up: the next refresh looks
        # back from its watermark (11:00 + 1 h, less 2 h) and recomputes the hour.
        conn.execute("INSERT INTO telemetry (time, machine_id, metric_id, value)"
                     " VALUES (%s, %s, 101, 30)", (hour + timedelta(minutes=50), machine))
        conn.commit()
    asyncio.run(_hours(database_url))
    with psycopg.connect(database_url) as conn:
        assert conn.execute(query, (machine,)).fetchall() == [
            (hour, 20.0, 10.0, 30.0, 3), (hour + timedelta(hours=1), 40.0, 40.0, 40.0, 1)]
        assert conn.execute("SELECT through FROM rollup_watermarks"
                            " WHERE rollup = 'metric_hours'").fetchone() == (
                                hour + timedelta(hours=2),)
        # Samples the rollup has not seen: one in its last hour (11:00, which it may have
        # taken in part), one after it. A chart of more than 2 days reads the hours, and those
        # from the rollup's last hour on from the samples.
        conn.execute("INSERT INTO telemetry (time, machine_id, metric_id, value) VALUES"
                     " (%s, %s, 101, 60), (%s, %s, 101, 80)",
                     (hour + timedelta(minutes=100), machine, hour + timedelta(minutes=190),
                      machine))
        conn.commit()
    series = asyncio.run(_series(database_url, machine, start=hour - timedelta(days=3),
                                 end=hour + timedelta(hours=4)))
    assert (series.source, series.width) == ("hourly", timedelta(hours=1))
    assert [(b["bucket"], b["avg"], b["min"], b["max"], b["samples"]) for b in series.buckets] \
        == [(hour, 20.0, 10.0, 30.0, 3), (hour + timedelta(hours=1), 50.0, 40.0, 60.0, 2),
            (hour + timedelta(hours=3), 80.0, 80.0, 80.0, 1)]


async def _series(url: str, machine: int, *, start: datetime, end: datetime) -> Series:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await metric_series(conn, machine_id=machine, metric_id=101, start=start,
                                   end=end, points=5000)
