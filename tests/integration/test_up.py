"""``oem-retention up``: every process in one command, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from tests.integration.conftest import ROOT, kill_tree, scalar, wait_for


def test_up_runs_ingester_simulator_and_analytics_and_stops_on_ctrl_c(
        database_url: str, ingester_env: dict[str, str], tenant: str, tmp_path: Path) -> None:
    env = {**ingester_env, "COLUMNS": "100"}
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oem_retention", "up", "--simulate-machines", "5",
         "--interval", "0.2", "--tenant", tenant],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM machines") == 5, timeout=40)
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") >= 100)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert sorted(next(a for a in c.cmdline() if a in {"ingest", "fleet", "analytics", "api"})
                      for c in children) == ["analytics", "api", "fleet", "ingest"]
        # The API answers where the status says.
        api = f"http://127.0.0.1:{env['OEMR_API_PORT']}"
        wait_for(lambda: _answers(f"{api}/api/v1/health/ready"), timeout=30)
        # The analytics schedule rolls the usage up at once.
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM analytics_job_runs"
                                              " WHERE job = 'rollups' AND status = 'succeeded'"
                                ) >= 1, timeout=60)
        # And runs the daily job at once, with a churn model it trained and stored (none was).
        daily = wait_for(lambda: scalar(database_url, "SELECT status || ': ' || detail"
                                                      " FROM analytics_job_runs WHERE job ="
                                                      " 'daily' AND status <> 'running'"),
                         timeout=120)
        assert daily.startswith("succeeded: ") and "trained now: none was stored" in daily
        assert scalar(database_url, "SELECT count(*) FROM churn_models") == 1
        ingester = next(c for c in children if "ingest" in c.cmdline())
        ingester.kill()
        # The supervisor restarts it, and storing goes on.
        wait_for(lambda: any(c.pid != ingester.pid for c in _ingesters(proc.pid)), timeout=20)
        rows = scalar(database_url, "SELECT count(*) FROM telemetry")
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") > rows + 100)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE
                       for child in children)
    finally:
        kill_tree(proc)
        log.close()
    output = (tmp_path / "up.log").read_text()
    assert "machines registered" in output
    assert "database  ok" in output
    assert f"API: {api}/api/v1/docs" in output
    assert "stopped" in output
    assert "ingest exited with -9: restarting it" in output
    assert "Traceback" not in output
    # The children's own output is in a log each, not on the terminal with the status.
    logs = tmp_path / "state" / "logs"
    assert sorted(p.name for p in logs.glob("*.log")) == [
        "analytics.log", "api.log", "ingest.log", "simulator.log", "up.log"]
    assert "INFO ingest.service: ingester" in (logs / "ingest.log").read_text()
    assert "ingest.service" not in output
    # up's own log says when it stopped what, as it says when it started what.
    own = (logs / "up.log").read_text()
    assert "stopping simulator, analytics, api, ingest" in own
    assert "ingest stopped with 0" in own
    # uvicorn stops gracefully on SIGTERM, then ends by the signal it was sent.
    assert "api stopped with -15" in own
    assert "Finished server process" in (logs / "api.log").read_text()
    assert "Traceback" not in "".join(p.read_text() for p in logs.glob("*.log"))


def _ingesters(pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children():
        try:
            if "ingest" in child.cmdline():
                found.append(child)
        except psutil.ZombieProcess:
            continue  # the killed one, not reaped yet
    return found


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
