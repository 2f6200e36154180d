"""`oem-retention analytics run|backtest` on a small demo world, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, time
from pathlib import Path

import orjson
import psycopg
import pytest

from analytics.kpi import DIMENSIONS
from demo.world import World, load_history, truth, write_world
from erp_connectors.files import sync_files
from erp_connectors.rates import load_exchange_rates

from .conftest import ROOT, scalar

END = date(2026, 5, 1)


@pytest.fixture
async def world_db(database_url: str, tmp_path: Path) -> tuple[str, Path]:
    """A 40-customer, 2-year world: business data through the files connector, history by COPY."""
    world = World.generate(11, END, customers=40, machines=120, years=2)
    directory = tmp_path / "world"
    directory.mkdir()
    write_world(world, directory)
    (directory / "truth.json").write_bytes(orjson.dumps(truth(world)))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await sync_files(conn, directory, source="demo")
        await load_exchange_rates(conn, directory / "exchange_rates.csv", source="demo")
    load_history(database_url, world)
    return database_url, directory


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OEMR_")},
           "OEMR_DATABASE_URL": database_url, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "oem_retention", "analytics", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_run_stores_values_and_scores_and_shows_the_riskiest(world_db: tuple[str, Path]) -> None:
    url, _ = world_db
    done = cli(url, "run", "--on", END.isoformat())
    assert done.returncode == 0, done.stdout + done.stderr
    customers = scalar(url, "SELECT count(*) FROM customers")
    gone = sum(1 for c in orjson.loads((world_db[1] / "truth.json").read_bytes())[
        "customers"].values() if c.get("churned") and date.fromisoformat(c["churn_date"]) <= END)
    # Every customer still on the books is scored; those who churned before are not.
    scored = scalar(url, "SELECT count(*) FROM churn_scores WHERE scored_on = %s", (END,))
    assert customers - gone <= scored < customers
    assert scalar(url, "SELECT count(DISTINCT customer_id) FROM customer_values"
                       " WHERE valued_on = %s", (END,)) >= customers - 2
    assert scalar(url, "SELECT count(*) FROM machine_days") > 0
    out = " ".join(done.stdout.split())
    assert "machine-days written" in out
    assert "segments by rfm:" in out
    assert scalar(url, "SELECT count(DISTINCT kind) FROM segment_memberships"
                       " WHERE assigned_on = %s", (END,)) == 3
    # The day's KPI snapshot: the whole base and every cut, each for six periods.
    assert f"KPI snapshot on {END}:" in out
    assert scalar(url, "SELECT count(DISTINCT dimension) FROM kpi_snapshots"
                       " WHERE taken_on = %s", (END,)) == len(DIMENSIONS)
    assert scalar(url, "SELECT count(DISTINCT (period_kind, period_start)) FROM kpi_snapshots"
                       " WHERE taken_on = %s", (END,)) == 6
    assert f"highest churn risk on {END}" in out
    # The riskiest customer shown is the one with the highest stored probability.
    top = scalar(url, "SELECT c.external_id FROM churn_scores s JOIN customers c"
                      " ON c.id = s.customer_id WHERE s.scored_on = %s"
                      " ORDER BY s.probability DESC, c.external_id LIMIT 1", (END,))
    assert top in out
    # No model was stored: one was trained up to the day, stored and scored with.
    version = scalar(url, "SELECT string_agg(DISTINCT model_version, ',') FROM churn_scores")
    assert scalar(url, "SELECT array_agg(version || ' ' || trained_until) FROM churn_models"
                  ) == [f"{version} {END}"]
    assert f"churn model {version} (rules, trained until {END}), trained now and stored" in out
    # The next run scores with the stored one.
    again = cli(url, "run", "--on", END.isoformat())
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"churn model {version} (rules, trained until {END}), as stored" in " ".join(
        again.stdout.split())
    assert scalar(url, "SELECT count(*) FROM churn_models") == 1


def test_backtest_prints_its_figures_against_data_and_truth(
        world_db: tuple[str, Path]) -> None:
    url, directory = world_db
    done = cli(url, "backtest", "--cutoff", "2025-09-01", "--truth",
               str(directory / "truth.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "backtest: trained until 2025-09-01" in out
    for name in ("data", "truth"):
        assert f"against {name}:" in out
    assert "ROC AUC" in out and "median lead" in out


def test_a_bad_day_is_refused_plainly(database_url: str) -> None:
    done = cli(database_url, "run", "--on", "01.05.2026")
    assert done.returncode == 2
    assert "expected a day as YYYY-MM-DD, got '01.05.2026'" in " ".join(
        (done.stdout + done.stderr).split())


async def test_the_daily_run_rolls_up_data_that_arrived_days_late(
        world_db: tuple[str, Path]) -> None:
    """A gateway uploads a buffered sample from three days back after the rollup's watermark
    has moved on: the daily run re-rolls the last week and counts it."""
    from analytics.daily import run_daily
    from analytics.rollups import refresh_machine_days

    url, _ = world_db
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await refresh_machine_days(conn)
        # A machine and a recent day it sent nothing (a weekend), with samples on both sides.
        cur = await conn.execute("""
            SELECT md.machine_id, d::date
            FROM machine_days md,
                 generate_series(%(end)s::date - 6, %(end)s::date - 2, interval '1 day') AS d
            WHERE md.day = %(end)s::date - 7 AND md.operating_hours > 0
              AND NOT EXISTS (SELECT 1 FROM machine_days x
                              WHERE x.machine_id = md.machine_id AND x.day = d::date)
              AND EXISTS (SELECT 1 FROM machine_days y
                          WHERE y.machine_id = md.machine_id AND y.day > d::date)
            ORDER BY 1, 2 LIMIT 1""", {"end": END})
        row = await cur.fetchone()
        assert row is not None
        machine_id, day = row
        await conn.execute("""
            INSERT INTO telemetry (time, machine_id, metric_id, value)
            SELECT %(at)s, %(m)s, 1, value + 0.5 FROM telemetry
            WHERE machine_id = %(m)s AND metric_id = 1 AND time < %(at)s
            ORDER BY time DESC LIMIT 1""",
            {"at": datetime.combine(day, time(12), UTC), "m": machine_id})
        assert (await refresh_machine_days(conn)).from_day > day  # the watermark's window
        await run_daily(conn, on=END, reporting_currency="EUR")
        cur = await conn.execute("SELECT operating_hours, samples FROM machine_days"
                                 " WHERE machine_id = %s AND day = %s", (machine_id, day))
        assert await cur.fetchone() == (0.5, 1)
