"""The supervisor's pure parts: restart backoff, a child's log read as it grows, the children."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from core.settings import Settings
from oem_retention.platform import erp_schedule_words, platform_commands
from oem_retention.supervisor import LogTail, restart_delay


def test_the_restart_delay_doubles_up_to_a_minute() -> None:
    assert [restart_delay(n) for n in range(1, 9)] == [2, 4, 8, 16, 32, 60, 60, 60]
    assert restart_delay(10_000) == 60
    with pytest.raises(ValueError, match="from 1"):
        restart_delay(0)


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def test_the_tail_keeps_the_last_warning_or_error(tmp_path: Path) -> None:
    log = tmp_path / "ingest.log"
    _append(log, "2026-05-01 10:00:00,001 ERROR ingest.service: from a run before this one\n")
    tail = LogTail(log)
    assert tail.poll() is None  # what was there before the tail is not news
    _append(log, "2026-05-01 11:00:00,001 INFO ingest.service: starting\n"
                 "2026-05-01 11:00:01,002 WARNING ingest.broker: reconnecting\n"
                 "2026-05-01 11:00:02,003 INFO ingest.broker: connected\n")
    assert tail.poll() == "2026-05-01 11:00:01,002 WARNING ingest.broker: reconnecting"
    # A line written in two pieces counts once it is whole.
    _append(log, "2026-05-01 11:00:03,004 ERROR ingest.store: database ")
    assert tail.poll() == "2026-05-01 11:00:01,002 WARNING ingest.broker: reconnecting"
    _append(log, "unavailable\n")
    assert tail.poll() == "2026-05-01 11:00:03,004 ERROR ingest.store: database unavailable"


def test_a_traceback_counts_by_its_exception(tmp_path: Path) -> None:
    log = tmp_path / "analytics.log"
    tail = LogTail(log)
    assert tail.poll() is None  # no file yet
    _append(log, "Traceback (most recent call last):\n"
                 '  File "analytics/jobs.py", line 10, in daily\n'
                 "    raise KeyError('feature')\n"
                 "KeyError: 'feature'\n"
                 "2026-05-01 11:00:03,004 INFO analytics.jobs: next turn at 02:00\n")
    assert tail.poll() == "KeyError: 'feature'"


def test_a_truncated_log_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "simulator.log"
    _append(log, "x" * 100 + "\n")
    tail = LogTail(log)
    log.write_text("2026-05-01 11:00:00,000 CRITICAL demo.fleet: broker gone\n")
    assert tail.poll() == "2026-05-01 11:00:00,000 CRITICAL demo.fleet: broker gone"


def test_a_flood_is_read_by_its_end(tmp_path: Path) -> None:
    log = tmp_path / "ingest.log"
    tail = LogTail(log, max_read=1000)
    _append(log, "2026-05-01 11:00:00,000 ERROR ingest: early\n"
            + "2026-05-01 11:00:00,000 INFO ingest: noise\n" * 100
            + "2026-05-01 11:00:00,000 WARNING ingest: late\n")
    assert tail.poll() == "2026-05-01 11:00:00,000 WARNING ingest: late"
    assert tail.offset == log.stat().st_size


def settings(**values: object) -> Settings:
    return Settings.model_validate(values)


def test_the_platform_children() -> None:
    py = sys.executable
    cmd = [py, "-m", "oem_retention"]
    assert platform_commands(settings(), simulate_machines=0, interval=1.0, tenant="demo",
                             fleet=None) == {"ingest": [*cmd, "ingest", "run"],
                                             "api": [*cmd, "api", "serve"],
                                             "analytics": [*cmd, "analytics", "schedule"]}
    with_all = platform_commands(settings(erp_odoo_url="http://odoo:8069"),
                                 simulate_machines=5, interval=0.5, tenant="t1",
                                 fleet=Path("/w/machines.json"))
    assert list(with_all) == ["ingest", "api", "erp-sync", "analytics", "simulator"]
    assert with_all["erp-sync"] == [*cmd, "erp", "schedule"]
    assert with_all["simulator"] == [*cmd, "demo", "fleet", "--fleet", "/w/machines.json",
                                     "--interval", "0.5", "--tenant", "t1"]
    made_up = platform_commands(settings(), simulate_machines=5, interval=0.5, tenant="t1",
                                fleet=None)
    assert made_up["simulator"] == [*cmd, "demo", "fleet", "--machines", "5", "--interval",
                                    "0.5", "--tenant", "t1"]
    # A source configured but its schedule off: no ERP child.
    off = settings(erp_odoo_url="http://odoo:8069", erp_sync_interval_minutes=0)
    assert "erp-sync" not in platform_commands(off, simulate_machines=0, interval=1.0,
                                               tenant="demo", fleet=None)
    assert erp_schedule_words(off) == "not scheduled (OEMR_ERP_SYNC_INTERVAL_MINUTES is 0)"
    assert erp_schedule_words(settings()) == "no ERP source configured"
    assert erp_schedule_words(settings(erp_files_dir="/srv/x")) == "every 15 min"
