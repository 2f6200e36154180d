"""``oem-retention ingest health``: the counters of a running ingester, and its verdict."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import orjson
from paho.mqtt import __version__ as paho_version

from tests.integration.conftest import ROOT, publisher, scalar, wait_for


def _health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oem_retention", "ingest", "health", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=30,
                          check=False)


def test_health_reports_counters_and_fails_when_the_ingester_is_gone(
        database_url: str, tenant: str, start_ingester: Any) -> None:
    ingester = start_ingester()
    pub = publisher()
    ts = int(time.time() * 1000) - 60_000
    for i in range(30):
        pub.publish(f"oem/{tenant}/machines/SN-{i % 3}/telemetry",
                    orjson.dumps({"ts": ts + i, "metrics": {"a": i, "b": 2 * i}}), qos=1)
    pub.publish(f"oem/{tenant}/machines/SN-0/telemetry", b"not json", qos=1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 60)
    wait_for(lambda: ingester.counters()["dead_lettered"] == 1)

    healthy = _health(ingester.env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    status = orjson.loads(healthy.stdout)
    assert status["received"] == 31
    assert status["stored_messages"] == 30
    assert status["telemetry_rows"] == 60
    assert status["dead_lettered"] == 1
    assert status["mqtt_connected"] is True and status["db_ok"] is True
    assert status["db_error"] is None
    assert (status["mqtt_client"], status["mqtt_client_why"]) == (
        "fast", f"fast path on paho-mqtt {paho_version}: its internals checked")
    assert status["batches"] >= 1 and status["batch_ms_max"] > 0

    ingester.kill()
    time.sleep(1.5)
    stale = _health(ingester.env, "--max-age", "1")
    assert stale.returncode == 1, stale.stdout
    pub.loop_stop()


def test_health_fails_when_the_ingester_cannot_write_before_its_first_batch(
        tenant: str, start_ingester: Any) -> None:
    # A database that is not there: the ingester waits for it, connected to the broker, and
    # has stored no batch yet. Healthy it is not.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = sock.getsockname()[1]
    ingester = start_ingester(
        OEMR_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{nobody}/oemr?connect_timeout=1")
    wait_for(lambda: ingester.counters()["db_error"])
    assert ingester.counters()["batches"] == 0
    verdict = _health(ingester.env)
    assert verdict.returncode == 1, verdict.stdout
    assert "unhealthy: cannot write:" in verdict.stdout
