"""`up`'s status reads: one connection held across refreshes, table statistics, and honesty
about a database that does not answer."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from oem_retention.status import TABLES, DatabaseReader, JobRunView
from tests.integration.conftest import scalar, wait_for

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
JOBS = ["rollups", "daily", "retrain"]


def _sessions(database_url: str) -> int:
    return int(scalar(database_url, "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                                    " current_database() AND application_name = 'oemr-up-status'"))


def test_one_connection_reads_the_statistics_jobs_and_sync(database_url: str) -> None:
    reader = DatabaseReader(database_url, jobs=JOBS)
    try:
        empty = reader.read(0.0, NOW)
        assert empty.ok
        assert empty.rows == dict.fromkeys(TABLES, 0)
        assert empty.jobs == [JobRunView("rollups"), JobRunView("daily"), JobRunView("retrain")]
        assert empty.sync is None
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO machines (tenant, serial, protocol)"
                         " SELECT 't', 'SN-' || i, 'json' FROM generate_series(1, 3) i")
            # 500 samples over three days: three chunks of the hypertable (1-day chunks).
            conn.execute("INSERT INTO telemetry SELECT now() - i * interval '8 minutes', 1, 1, i"
                         " FROM generate_series(1, 500) i")
            conn.execute("INSERT INTO analytics_job_runs (job, started_at, finished_at, status,"
                         " detail) VALUES ('rollups', now() - interval '20 min', now() -"
                         " interval '19 min', 'failed', 'old'), ('rollups', now() - interval"
                         " '5 min', now() - interval '4 min', 'succeeded', '7 machine-days'),"
                         " ('daily', now() - interval '1 min', NULL, 'running', NULL)")
            conn.execute("INSERT INTO sync_reports (sources, full_resync, ok, report) VALUES"
                         " ('{odoo}', false, false, '{\"entities\": [{\"source\": \"odoo\","
                         " \"entity\": \"customers\", \"status\": \"succeeded\"}, {\"source\":"
                         " \"odoo\", \"entity\": \"invoices\", \"status\": \"failed\"}]}')")
        chunks = scalar(database_url, "SELECT count(*) FROM pg_inherits"
                                      " WHERE inhparent = 'telemetry'::regclass")
        assert chunks >= 3
        # The inserting sessions' statistics reach the server within a second or so.
        view = wait_for(lambda: (v := reader.read(1.0, NOW)).rows["telemetry"] == 500 and v)
        assert view.rows["machines"] == 3
        assert [(j.job, j.status, j.detail) for j in view.jobs] == [
            ("rollups", "succeeded", "7 machine-days"), ("daily", "running", None),
            ("retrain", None, None)]
        assert view.sync is not None
        assert (view.sync.ok, list(view.sync.sources), list(view.sync.failed)) == (
            False, ["odoo"], ["odoo/invoices"])
        # Every read was on the one connection.
        assert reader.connects == 1
        assert view.backend_pid == empty.backend_pid
        assert _sessions(database_url) == 1
    finally:
        reader.close()
    assert _sessions(database_url) == 0


def test_a_lost_connection_is_said_and_made_again(database_url: str) -> None:
    reader = DatabaseReader(database_url, jobs=JOBS)
    try:
        before = reader.read(0.0, NOW)
        assert before.ok
        scalar(database_url, "SELECT pg_terminate_backend(%s)", (before.backend_pid,))
        lost = NOW + timedelta(seconds=10)
        down = reader.read(10.0, lost)
        assert not down.ok
        assert (down.problem or "").startswith("unreachable: ")
        assert (down.down_since, down.retry_in_s, down.rows) == (lost, 1.0, {})
        # Not tried again before its time.
        assert reader.read(10.5, lost).retry_in_s == 0.5
        assert reader.connects == 1
        back = reader.read(11.0, lost)
        assert back.ok
        assert back.backend_pid != before.backend_pid
        assert reader.connects == 2
    finally:
        reader.close()


def test_a_database_that_is_not_there_is_tried_less_and_less_often(database_url: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    reader = DatabaseReader(make_conninfo(database_url, host="127.0.0.1", port=port),
                            jobs=JOBS)
    first = reader.read(0.0, NOW)
    assert not first.ok
    assert (first.problem or "").startswith("unreachable: connection")
    retries = [first.retry_in_s]
    now = 0.0
    for _ in range(6):
        now += retries[-1] or 0.0
        view = reader.read(now, NOW + timedelta(seconds=now))
        assert view.down_since == NOW  # down since the first failure
        retries.append(view.retry_in_s)
    assert retries == [1, 2, 4, 8, 16, 30, 30]
    assert reader.connects == 0


def test_a_database_without_the_platform_is_an_error_not_an_outage(database_url: str) -> None:
    # The server's own maintenance database: reachable, but none of our tables.
    name = conninfo_to_dict(database_url)["dbname"]
    assert name != "postgres"
    reader = DatabaseReader(make_conninfo(database_url, dbname="postgres"), jobs=JOBS)
    view = reader.read(0.0, NOW)
    assert not view.ok
    assert view.problem == 'error: relation "analytics_job_runs" does not exist'
    reader.close()
