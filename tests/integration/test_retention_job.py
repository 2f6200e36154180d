"""The hourly retention job that `up` runs (and `db retention` by hand) on the Apache edition."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psycopg
from psycopg.conninfo import make_conninfo

from core.retention import run_retention
from core.settings import Settings
from tests.integration.conftest import ROOT, scalar


def test_the_job_drops_what_is_expired_and_rolled_up(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO telemetry VALUES (now() - interval '200 days', 1, 1, 1.0),"
                     " (now() - interval '120 days', 1, 1, 2.0), (now(), 1, 1, 3.0)")
        conn.execute("INSERT INTO rollup_watermarks (rollup, through)"
                     " VALUES ('machine_days', now() - interval '150 days')")
    settings = Settings(database_url=database_url, telemetry_retention="90 days")
    done = run_retention(settings)
    # 200 days old and rolled up: gone. 120 days old but not rolled up yet: kept.
    assert (done.dropped, done.error, done.by_policy) == (1, None, False)
    assert done.line() == "dropped 1 chunk(s)"
    assert scalar(database_url, "SELECT array_agg(value ORDER BY value) FROM telemetry") == [
        2.0, 3.0]
    assert run_retention(settings).dropped == 0


def test_a_database_that_does_not_answer_is_a_failed_turn_not_a_crash(database_url: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = make_conninfo(database_url, host="127.0.0.1", port=port)
    done = run_retention(Settings(database_url=url))
    assert done.dropped is None
    assert (done.error or "").startswith("connection failed")
    assert not done.by_policy
    assert done.line().startswith("failed: connection failed")
    # The command by hand says so and exits 1.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OEMR_")},
           "OEMR_DATABASE_URL": url}
    cli = subprocess.run([sys.executable, "-m", "oem_retention", "db", "retention"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert cli.returncode == 1
    assert "retention failed: connection failed" in cli.stdout
    assert "Traceback" not in cli.stdout + cli.stderr


def test_a_reader_of_an_expired_chunk_makes_a_failed_turn_not_a_wait(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO telemetry VALUES (now() - interval '200 days', 1, 1, 1.0)")
        conn.execute("INSERT INTO rollup_watermarks (rollup, through)"
                     " VALUES ('machine_days', now() - interval '150 days')")
    settings = Settings(database_url=database_url, telemetry_retention="90 days")
    # A long read (a KPI snapshot, a backtest) holds the expired chunk.
    with psycopg.connect(database_url) as reader:
        reader.execute("SELECT count(*) FROM telemetry").fetchone()
        done = run_retention(settings, lock_timeout_ms=200)
        assert done.dropped is None
        assert "lock timeout" in (done.error or "")
    # Once the reader is done, the next turn drops it.
    assert run_retention(settings).dropped == 1
