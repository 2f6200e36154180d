"""`up`'s status as it is drawn: what a 200x50 terminal shows, and what is left on 80x24."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from core.retention import RetentionRun
from oem_retention.status import (
    TABLES,
    DatabaseView,
    IngestReader,
    IngestView,
    JobRunView,
    PlatformStatus,
    SyncView,
)
from oem_retention.status_view import StatusView
from oem_retention.supervisor import ChildState

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LOGS = Path("/var/lib/oem-retention/logs")
WARNING = ("2026-05-01 11:58:07,123 WARNING erp_connectors.sources: odoo: the source did not"
           " answer after 5 tries: ConnectError")
COUNTERS = {"received": 123_456, "stored_messages": 123_400, "telemetry_rows": 1_234_000,
            "dead_lettered": 3, "batches": 500, "batch_ms_last": 12.3, "batch_ms_max": 80.1,
            "pending": 20, "mqtt_connected": True, "db_ok": True}


def status() -> PlatformStatus:
    children = [
        ChildState("ingest", "running", 4242, 1, 754.0, None, -9, None, LOGS / "ingest.log"),
        ChildState("erp-sync", "running", 4243, 0, 3600.0, None, None, WARNING,
                   LOGS / "erp-sync.log"),
        ChildState("analytics", "restarting", None, 3, None, 4.0, 1, "KeyError: 'feature'",
                   LOGS / "analytics.log"),
        ChildState("simulator", "running", 4245, 0, 3600.0, None, None, None,
                   LOGS / "simulator.log"),
    ]
    rows = dict.fromkeys(TABLES, 0) | {"machines": 1_500, "telemetry": 19_234_567,
                                       "dead_letters": 12, "customers": 300}
    jobs = [JobRunView("rollups", "succeeded", NOW - timedelta(minutes=3),
                       NOW - timedelta(minutes=2), "1500 machine-days from 2026-04-29"),
            JobRunView("daily", "running", NOW - timedelta(minutes=10)),
            JobRunView("retrain")]
    database = DatabaseView(True, rows=rows, jobs=jobs, backend_pid=999,
                            sync=SyncView(NOW - timedelta(minutes=5), False, ["odoo"],
                                          ["odoo/invoices"]))
    ingest = IngestView(Path("/var/lib/oem-retention/run/ingest-oemr-ingest-1.json"), COUNTERS,
                        0.4, 1500.0)
    return PlatformStatus(4240, NOW - timedelta(hours=1), NOW, LOGS, children, ingest, database,
                          RetentionRun(NOW - timedelta(minutes=59), dropped=2), "every 15 min")


def draw(s: PlatformStatus, width: int, height: int) -> list[str]:
    console = Console(record=True, width=width, height=height, file=io.StringIO())
    console.print(StatusView(s))
    lines = console.export_text().splitlines()
    assert len(lines) <= height, "\n".join(lines)
    assert max(len(line) for line in lines) <= width
    return lines


def row(lines: list[str], first: str) -> list[str]:
    """The cells of the line that starts with ``first`` (cells are 2+ spaces apart)."""
    found = [line for line in lines if line.startswith(first + " ")]
    assert len(found) == 1, (first, lines)
    return [cell.strip() for cell in found[0].split("  ") if cell.strip()]


def test_everything_on_a_200x50_terminal() -> None:
    lines = draw(status(), 200, 50)
    text = "\n".join(lines)
    assert lines[0].startswith("oem-retention up  pid 4240  running 1:00:00  2026-05-01 12:00:00")
    assert "logs: /var/lib/oem-retention/logs/<process>.log" in lines[1]
    assert row(lines, "ingest") == ["ingest", "running", "4242", "1", "0:12:34", "-"]
    # The log line without its date, seconds and logger.
    assert row(lines, "erp-sync")[-1] == ("11:58 WARNING odoo: the source did not answer after"
                                          " 5 tries: ConnectError")
    assert row(lines, "analytics") == ["analytics", "restart in 4 s (exit 1)", "3",
                                       "KeyError: 'feature'"]
    assert row(lines, "simulator")[:5] == ["simulator", "running", "4245", "0", "1:00:00"]
    assert ("ingester  healthy  1,500 rows/s, 3 dead-lettered, 20 pending  MQTT connected,"
            " database ok  123,400 messages stored, batch 12 ms (max 80)") in text
    assert "database  ok  one connection for this status (backend pid 999)" in text
    for shown in ("machines registered 1,500", "telemetry rows 19,234,567", "dead letters 12",
                  "customers 300", "churn scores 0", "(table statistics)"):
        assert shown in text
    assert row(lines, "rollups") == ["rollups", "succeeded 11:58 (2 min ago)",
                                     "1500 machine-days from 2026-04-29"]
    assert row(lines, "daily run") == ["daily run", "running since 11:50 (10 min ago)"]
    assert row(lines, "retraining") == ["retraining", "never"]
    assert row(lines, "erp sync") == ["erp sync", "11:55 (5 min ago)",
                                      "odoo: did not sync: odoo/invoices; every 15 min"]
    assert row(lines, "retention") == ["retention", "11:01 (59 min ago)",
                                       "dropped 2 chunk(s); hourly"]


def test_what_is_left_on_80x24() -> None:
    lines = draw(status(), 80, 24)
    text = "\n".join(lines)
    # Every process with its state, pid and restarts; long text cut, never wrapped.
    assert row(lines, "ingest")[:5] == ["ingest", "running", "4242", "1", "0:12:34"]
    assert row(lines, "erp-sync")[-1].startswith("11:58 WARNING odoo")
    assert row(lines, "erp-sync")[-1].endswith("…")
    assert row(lines, "analytics")[:3] == ["analytics", "restart in 4 s", "3"]
    assert row(lines, "simulator")[:3] == ["simulator", "running", "4245"]
    assert "ingester  healthy  1,500 rows/s, 3 dead-lettered, 20 pending" in text
    assert "database  ok" in text
    assert "machines registered 1,500" in text
    assert "telemetry 19.2M" in text
    for first in ("rollups", "daily run", "retraining", "erp sync", "retention"):
        assert row(lines, first)


def test_a_database_that_does_not_answer_is_said_so() -> None:
    down = DatabaseView(False, 'unreachable: connection failed: connection to server at'
                               ' "127.0.0.1", port 55432 failed: Connection refused',
                        NOW - timedelta(seconds=45), 4.0)
    for width, height in ((200, 50), (80, 24)):
        text = "\n".join(draw(dataclasses.replace(status(), database=down), width, height))
        assert "database  unreachable: connection failed" in text
        assert "stored ≈ unknown while the database does not answer" in text
        assert "machines registered" not in text  # no stale numbers
        assert "the database does not answer" in text
    wide = "\n".join(draw(dataclasses.replace(status(), database=down), 200, 50))
    assert "Connection refused since 11:59:15 (45 s); next try in 4 s" in wide


@pytest.mark.parametrize(("ingest", "shown"), [
    (IngestView(Path("/run/i.json"), problem="no status file yet: the ingester has not started"),
     "ingester  no status file yet: the ingester has not started (/run/i.json)"),
    (IngestView(Path("/run/i.json"), COUNTERS, 42.0, None),
     "ingester  status 42 s old: not running  3 dead-lettered"),
    (IngestView(Path("/run/i.json"), COUNTERS | {"mqtt_connected": False}, 0.5, 0.0),
     "ingester  unhealthy  0 rows/s, 3 dead-lettered, 20 pending  MQTT DISCONNECTED"),
    (IngestView(Path("/run/i.json"), COUNTERS | {"db_ok": False}, 0.5, 0.0),
     "ingester  unhealthy  0 rows/s, 3 dead-lettered, 20 pending  MQTT connected, database"
     " FAILING"),
    # Waiting for a database that is not there, before its first batch: as `ingest health`.
    (IngestView(Path("/run/i.json"), COUNTERS | {"db_ok": False, "batches": 0,
                                                 "db_error": "connection refused"}, 0.5, 0.0),
     "ingester  unhealthy  0 rows/s, 3 dead-lettered, 20 pending  MQTT connected, database"
     " FAILING"),
])
def test_an_ingester_in_trouble(ingest: IngestView, shown: str) -> None:
    assert shown in "\n".join(draw(dataclasses.replace(status(), ingest=ingest), 200, 50))


def _write(path: Path, **counters: float) -> None:
    path.write_bytes(orjson.dumps({"started_at": 1.0, "mqtt_connected": True, **counters}))


def test_the_rate_is_over_the_last_minute_of_the_ingesters_counters(tmp_path: Path) -> None:
    path = tmp_path / "ingest.json"
    reader = IngestReader(path, window_s=60)
    assert reader.read(100.0).problem == ("no status file yet: the ingester has not started"
                                          " (or runs elsewhere)")
    _write(path, updated_at=100.0, telemetry_rows=0)
    first = reader.read(100.5)
    assert (first.rows_per_s, first.age_s) == (None, 0.5)  # one sample is no rate
    _write(path, updated_at=101.0, telemetry_rows=1_000)
    assert reader.read(101.2).rows_per_s == 1_000
    _write(path, updated_at=104.0, telemetry_rows=10_000)
    assert reader.read(104.0).rows_per_s == 2_500  # 10,000 rows in 4 s
    assert reader.read(104.5).rows_per_s == 2_500  # the same sample again changes nothing
    _write(path, updated_at=164.0, telemetry_rows=10_600)  # the samples of 100 and 101 are old
    assert reader.read(164.0).rows_per_s == 10  # 600 rows in the 60 s since 104
    _write(path, updated_at=165.0, telemetry_rows=50, started_at=150.0)  # a new ingester
    assert reader.read(165.0).rows_per_s is None
    path.write_bytes(b"{not json")
    assert (reader.read(166.0).problem or "").startswith("status file unreadable")
