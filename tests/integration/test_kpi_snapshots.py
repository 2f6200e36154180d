"""KPI snapshots: what kpi_table says, stored per day; to-date periods; history; reruns.

Hand-made case (reporting EUR, active-customer window 365 days):

    A  DE  contract 2025-01-01..2026-12-31; invoices 2026-02-10 service_contract 1200,
           2026-03-05 field_service 300
    B  DE  contract 2025-01-01..2026-02-15
    C  FR  invoice 2025-06-01 service_contract 500 (active by it until 2026-05-31)
    D  FR  contract 2025-03-01..2026-03-15

and, arriving after the first snapshot (2026-03-10): B invoice 2026-03-12 spare_parts 200,
A invoice 2026-03-18 spare_parts 100.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from analytics import kpi
from analytics.kpi import DIMENSIONS, Cut
from analytics.kpi_snapshot import (
    SnapshotRun,
    SnapshotValue,
    kpi_history,
    latest_snapshot,
    snapshot_periods,
    take_snapshot,
)
from analytics.periods import Period
from analytics.segments import assign_segments
from demo.world import World
from tests.integration.worlds import load_demo_world

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
EUR = "EUR"
MARCH = Period("month", date(2026, 3, 1))
FEB = Period("month", date(2026, 2, 1))

_ids: Iterator[int] = itertools.count(1)


async def _id(conn: Conn, query: str, params: dict[str, Any]) -> int:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def customer(conn: Conn, name: str, country: str) -> int:
    return await _id(conn, "INSERT INTO customers (source, external_id, name, country)"
                     " VALUES ('t', %(n)s, %(n)s, %(c)s) RETURNING id", {"n": name, "c": country})


async def contract(conn: Conn, cust: int, starts: str, ends: str) -> None:
    await conn.execute(
        "INSERT INTO service_contracts (source, external_id, customer_id, scope, tier, starts_on,"
        " ends_on, annual_value, currency, status) VALUES ('t', %(e)s, %(c)s, 'customer',"
        " 'basic', %(s)s, %(x)s, 1000, 'EUR', 'active')",
        {"e": f"SC-{next(_ids)}", "c": cust, "s": starts, "x": ends})


async def invoice(conn: Conn, cust: int, issued: str, kind: str, amount: str) -> None:
    inv = await _id(
        conn, "INSERT INTO invoices (source, external_id, customer_id, issued_on, currency,"
        " net_amount, status) VALUES ('t', %(e)s, %(c)s, %(d)s, 'EUR', %(a)s, 'paid')"
        " RETURNING id", {"e": f"I-{next(_ids)}", "c": cust, "d": issued, "a": amount})
    await conn.execute(
        "INSERT INTO invoice_lines (source, external_id, invoice_id, kind, net_amount) VALUES"
        " ('t', %(e)s, %(i)s, %(k)s, %(a)s)",
        {"e": f"IL-{next(_ids)}", "i": inv, "k": kind, "a": amount})


@pytest.fixture
async def base(conn: Conn) -> dict[str, int]:
    c = {name: await customer(conn, name, country)
         for name, country in (("A", "DE"), ("B", "DE"), ("C", "FR"), ("D", "FR"))}
    await contract(conn, c["A"], "2025-01-01", "2026-12-31")
    await invoice(conn, c["A"], "2026-02-10", "service_contract", "1200")
    await invoice(conn, c["A"], "2026-03-05", "field_service", "300")
    await contract(conn, c["B"], "2025-01-01", "2026-02-15")
    await invoice(conn, c["C"], "2025-06-01", "service_contract", "500")
    await contract(conn, c["D"], "2025-03-01", "2026-03-15")
    # A's machine M1: operating-hours counter 1000 on 02-28, 1108 on 03-09, then nothing.
    await conn.execute("INSERT INTO installed_base (source, external_id, serial, model,"
                       " customer_id, commissioned_on) VALUES ('t', 'M1', 'M1', 'VMC', %(a)s,"
                       " '2020-01-01')", {"a": c["A"]})
    mid = await _id(conn, "INSERT INTO machines (tenant, serial, protocol) VALUES ('t', 'M1',"
                    " 'json') RETURNING id", {})
    await conn.execute("INSERT INTO telemetry VALUES ('2026-02-28T12:00Z', %(m)s, 1, 1000),"
                       " ('2026-03-09T12:00Z', %(m)s, 1, 1108)", {"m": mid})
    await conn.commit()
    return c


async def later_data(conn: Conn, c: dict[str, int]) -> None:
    await invoice(conn, c["B"], "2026-03-12", "spare_parts", "200")
    await invoice(conn, c["A"], "2026-03-18", "spare_parts", "100")
    await conn.commit()


async def snapshot(conn: Conn, on: date) -> SnapshotRun:
    """Take the snapshot of ``on`` and commit it (it runs in the caller's transaction)."""
    run = await take_snapshot(conn, on=on, reporting_currency=EUR)
    await conn.commit()
    return run


async def stored(conn: Conn, on: date) -> dict[tuple[Period, str, str, str], SnapshotValue]:
    """The snapshot of ``on`` by (period, dimension, segment, kpi)."""
    values = await latest_snapshot(conn, on=on)
    assert values, f"no snapshot on or before {on}"
    assert {v.taken_on for v in values} == {on}
    return {(v.period, v.dimension, v.segment, v.kpi): v for v in values}


async def count(conn: Conn, query: str, params: Any = None) -> int:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    await conn.rollback()
    assert row is not None
    return int(row[0])


def vnd(v: SnapshotValue | kpi.KpiValue) -> tuple[Any, Any, Any]:
    """Value, numerator, denominator (untyped: compared with plain ints and Decimals)."""
    return v.value, v.numerator, v.denominator


def nd(v: SnapshotValue | kpi.KpiValue) -> tuple[Any, Any]:
    return v.numerator, v.denominator


def test_the_periods_of_a_snapshot() -> None:
    assert snapshot_periods(date(2026, 3, 10)) == [
        Period("month", date(2026, 3, 1), date(2026, 3, 10)),
        Period("quarter", date(2026, 1, 1), date(2026, 3, 10)),
        Period("year", date(2026, 1, 1), date(2026, 3, 10)),
        Period("month", date(2026, 2, 1)), Period("quarter", date(2025, 10, 1)),
        Period("year", date(2025, 1, 1))]
    # On a period's last day the period to date is the whole period.
    assert snapshot_periods(date(2026, 3, 31))[:2] == [
        MARCH, Period("quarter", date(2026, 1, 1))]


async def test_a_later_day_moves_the_current_period_and_not_the_previous(
        conn: Conn, base: dict[str, int]) -> None:
    run = await snapshot(conn, date(2026, 3, 10))
    # 6 periods x 10 cuts; every segment gets every KPI.
    assert run.segments == {"all": 1, "country": 2, "industry": 1, "key_account": 1,
                            "model": 1, "rfm": 1, "size_class": 1, "tier": 2, "usage": 1,
                            "value_tier": 1}, run.segments
    first = await stored(conn, date(2026, 3, 10))
    march_10 = MARCH.to_date(date(2026, 3, 10))
    assert march_10.last_day == date(2026, 3, 10)
    # March to 03-10. At start (02-28): A (contract), C (invoice 2025-06-01), D (contract); B's
    # contract ended 02-15. At 03-10: A, C, D. Retention 3 of 3. Served A, C, D; March
    # revenue A's 300: 100 per customer.
    r = first[(march_10, "all", "all", "retention_rate")]
    assert vnd(r) == (Decimal(1), 3, 3)
    assert (r.counts["customers_end"], r.counts["customers_new"], r.unit, r.currency) == (
        3, 0, "ratio", EUR)
    assert vnd(first[(march_10, "all", "all", "revenue_per_customer")]) == (
        Decimal(100), 300, 3)
    # Not what the whole of March says: D's contract ends 03-15, so on 03-31 D is gone and
    # March retains 2 of 3. The snapshot does not count a loss that has not happened yet.
    whole = await kpi.retention(conn, MARCH, reporting_currency=EUR)
    assert nd(whole) == (2, 3)
    # M1 to 03-10: 108 hours of the 240 from 03-01 to the end of 03-10, 0.45; heard on 03-09,
    # within the 14 days before 03-11: not silent. Over the whole of March the same 108 hours
    # are of 744, and by 04-01 it has been silent for 23 days.
    u = first[(march_10, "all", "all", "utilisation")]
    assert vnd(u) == (Decimal("0.45"), 108, 240)
    assert vnd(first[(march_10, "all", "all", "silent_machines")]) == (Decimal(0), 0, 1)
    assert (await kpi.utilisation(conn, MARCH, reporting_currency=EUR)).denominator == 744
    assert (await kpi.silent_machines(conn, MARCH, reporting_currency=EUR)).numerator == 1
    # February (complete). At start (01-31): A, B, C, D; at 02-28: A, C, D. 3 of 4. Revenue
    # A's 1200 over the 4 served: 300.
    assert vnd(first[(FEB, "all", "all", "retention_rate")]) == (Decimal("0.75"), 3, 4)
    assert vnd(first[(FEB, "all", "all", "revenue_per_customer")]) == (Decimal(300), 1200, 4)
    # 2025: nobody was active on 2024-12-31: no retention, stored as undefined, not zero.
    y2025 = first[(Period("year", date(2025, 1, 1)), "all", "all", "retention_rate")]
    assert vnd(y2025) == (None, 0, 0)
    assert y2025.counts["customers_new"] == 4

    await later_data(conn, base)
    await snapshot(conn, date(2026, 3, 20))
    second = await stored(conn, date(2026, 3, 20))
    march_20 = MARCH.to_date(date(2026, 3, 20))
    # March to 03-20. At start A, C, D; at 03-20 A, B (invoice 03-12: new), C; D's contract
    # ended 03-15. Retention (3 - 1) / 3. Served A, B, C, D; revenue 300 + 200 + 100 = 600:
    # 150 per customer.
    r = second[(march_20, "all", "all", "retention_rate")]
    assert nd(r) == (2, 3)
    assert r.value is not None and r.value.quantize(Decimal("0.0001")) == Decimal("0.6667")
    assert (r.counts["customers_end"], r.counts["customers_new"]) == (3, 1)
    assert vnd(second[(march_20, "all", "all", "revenue_per_customer")]) == (
        Decimal(150), 600, 4)
    # By country. DE: at start A (B lapsed), at 03-20 A and B (new): 1 of 1; revenue 600 over
    # A, B. FR: at start C, D, at 03-20 C: 1 of 2; revenue 0 over C, D.
    assert vnd(second[(march_20, "country", "DE", "retention_rate")]) == (Decimal(1), 1, 1)
    assert vnd(second[(march_20, "country", "FR", "retention_rate")]) == (Decimal("0.5"), 1, 2)
    assert vnd(second[(march_20, "country", "DE", "revenue_per_customer")]) == (
        Decimal(300), 600, 2)
    assert vnd(second[(march_20, "country", "FR", "revenue_per_customer")]) == (
        Decimal(0), 0, 2)
    # Q1 to 03-20: at start (2025-12-31) A, B, C, D; at 03-20 A, B, C: 3 of 4.
    q1 = Period("quarter", date(2026, 1, 1), date(2026, 3, 20))
    assert vnd(second[(q1, "all", "all", "retention_rate")]) == (Decimal("0.75"), 3, 4)
    # February is the same on both days, counts included; DE 1 of 2 (B lost), FR 2 of 2.
    for key in [(FEB, "all", "all", "retention_rate"), (FEB, "all", "all", "revenue_per_customer"),
                (FEB, "country", "DE", "retention_rate"),
                (FEB, "country", "FR", "retention_rate")]:
        assert vnd(second[key]) == vnd(first[key]), key
        assert second[key].counts == first[key].counts, key
    assert vnd(second[(FEB, "country", "DE", "retention_rate")]) == (Decimal("0.5"), 1, 2)


async def test_rerunning_a_day_replaces_its_snapshot(conn: Conn, base: dict[str, int]) -> None:
    on = date(2026, 3, 20)
    await snapshot(conn, date(2026, 3, 10))
    first = await snapshot(conn, on)
    rows = await count(conn, "SELECT count(*) FROM kpi_snapshots")
    day = await count(conn, "SELECT count(*) FROM kpi_snapshots WHERE taken_on = %s", (on,))
    assert day == first.values and rows > day
    # March to 03-20, served (active on 02-28 or 03-20): A, C, D (B lapsed and bought nothing).
    # Revenue A's 300.
    march = MARCH.to_date(on)
    value = (await stored(conn, on))[(march, "all", "all", "revenue_per_customer")]
    assert nd(value) == (300, 3)
    # An invoice of C arrives for 03-19: the rerun stores 300 + 400 in place of 300.
    await invoice(conn, base["C"], "2026-03-19", "field_service", "400")
    await conn.commit()
    again = await snapshot(conn, on)
    assert again.values == first.values
    assert await count(conn, "SELECT count(*) FROM kpi_snapshots") == rows
    value = (await stored(conn, on))[(march, "all", "all", "revenue_per_customer")]
    assert nd(value) == (700, 3)
    # The earlier day is untouched.
    earlier = (await stored(conn, date(2026, 3, 10)))[
        (MARCH.to_date(date(2026, 3, 10)), "all", "all", "revenue_per_customer")]
    assert nd(earlier) == (300, 3)


async def test_history_is_one_value_per_day_in_order(conn: Conn, base: dict[str, int]) -> None:
    await later_data(conn, base)
    # Taken out of order; a past day reads only what had happened by it.
    for day in (20, 10, 15):
        await snapshot(conn, date(2026, 3, day))
    revenue = await kpi_history(conn, "revenue_per_customer", period_kind="month")
    # 03-10: 300 over A, C, D. 03-15: 300 + 200 (B, 03-12) over A, B, C, D. 03-20: + 100 (A,
    # 03-18).
    assert [(v.taken_on.day, v.period.last_day.day, *nd(v))
            for v in revenue] == [(10, 10, 300, 3), (15, 15, 500, 4), (20, 20, 600, 4)]
    assert [v.value for v in revenue] == [Decimal(100), Decimal(125), Decimal(150)]
    # Retention to 03-15: D's contract still runs (ends that day) and B is back: (4 - 1) / 3.
    retention = await kpi_history(conn, "retention_rate", period_kind="month", since=date(
        2026, 3, 15))
    assert [(v.taken_on.day, *nd(v)) for v in retention] == [
        (15, 3, 3), (20, 2, 3)]
    # The complete month before, every day: February, 3 of 4.
    previous = await kpi_history(conn, "retention_rate", period_kind="month", current=False)
    assert [(v.taken_on.day, v.period, *nd(v)) for v in previous] == [
        (10, FEB, 3, 4), (15, FEB, 3, 4), (20, FEB, 3, 4)]
    # One segment: France (C, D) loses D after 03-15.
    fr = await kpi_history(conn, "retention_rate", period_kind="month", dimension="country",
                           segment="FR")
    assert [nd(v) for v in fr] == [(2, 2), (2, 2), (1, 2)]
    # The latest snapshot is the 20th's; on or before the 16th, the 15th's.
    assert {v.taken_on for v in await latest_snapshot(conn)} == {date(2026, 3, 20)}
    mid = await latest_snapshot(conn, on=date(2026, 3, 16), dimension="country",
                                period_kind="quarter")
    assert {(v.taken_on, v.dimension, v.period.kind) for v in mid} == {
        (date(2026, 3, 15), "country", "quarter")}
    assert {v.period for v in mid} == {Period("quarter", date(2026, 1, 1), date(2026, 3, 15)),
                                       Period("quarter", date(2025, 10, 1))}


# -- demo world ----------------------------------------------------------------------------------

WORLD_END = date(2026, 5, 1)
ON = date(2026, 4, 17)


async def test_a_snapshot_holds_what_kpi_table_says(database_url: str, conn: Conn,
                                                   tmp_path: Path) -> None:
    world = World.generate(11, WORLD_END, customers=30, machines=90, years=1)
    await load_demo_world(database_url, world, tmp_path)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as auto:
        # Behavioural segments as of the current periods' first days.
        for day in (date(2026, 1, 1), date(2026, 4, 1)):
            await assign_segments(auto, on=day, reporting_currency=EUR)
        run = await take_snapshot(auto, on=ON, reporting_currency=EUR)
    # The periods written out, not derived with the code under test.
    periods = [Period("month", date(2026, 4, 1), ON), Period("quarter", date(2026, 4, 1), ON),
               Period("year", date(2026, 1, 1), ON), Period("month", date(2026, 3, 1)),
               Period("quarter", date(2026, 1, 1)), Period("year", date(2025, 1, 1))]
    assert list(run.periods) == periods
    got = await stored(conn, ON)
    expected: list[kpi.KpiValue] = []
    for dimension in DIMENSIONS:
        expected += await kpi.kpi_table(conn, periods, Cut(dimension), reporting_currency=EUR)
    await conn.rollback()
    assert len(got) == len(expected) == run.values
    for want in expected:
        have = got[(want.period, want.dimension, want.segment, want.kpi)]
        assert (vnd(have), have.unit, dict(have.counts)) == (
            vnd(want), want.unit, dict(want.counts)), (want.period, want.dimension,
                                                        want.segment, want.kpi)
    # The world is not empty where it matters: values, segments, machine-side figures.
    assert run.segments["rfm"] > 1 and run.segments["country"] > 1
    april = periods[0]
    assert got[(april, "all", "all", "retention_rate")].denominator
    utilisation = got[(april, "all", "all", "utilisation")]
    assert utilisation.value and utilisation.counts["machines_reporting"]
    # A to-date period measures silence up to its own end: the world's machines mostly report.
    silent = got[(april, "all", "all", "silent_machines")]
    assert silent.value is not None and silent.value < Decimal("0.5")
