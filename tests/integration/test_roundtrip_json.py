from __future__ import annotations

import time
from typing import Any

import orjson

from tests.integration.conftest import BOTH_CLIENTS, CLIENT_OF, publisher, scalar, wait_for


@BOTH_CLIENTS
def test_json_telemetry_and_events_are_stored(database_url: str, tenant: str,
                                              start_ingester: Any, fast_path: str) -> None:
    ingester = start_ingester(OEMR_INGEST_FAST_PATH=fast_path)
    assert ingester.counters()["mqtt_client"] == CLIENT_OF[fast_path]
    pub = publisher()
    ts = int(time.time() * 1000) - 60_000
    for i in range(5):
        body = {"ts": ts + i * 1000, "state": "running",
                "metrics": {"operating_hours": 100.0 + i, "spindle_speed_rpm": 8000 + i}}
        pub.publish(f"oem/{tenant}/machines/SN-1/telemetry", orjson.dumps(body), qos=1)
    pub.publish(f"oem/{tenant}/machines/SN-1/events",
                orjson.dumps({"ts": ts, "type": "fault", "code": "E42", "id": "ev-1"}), qos=1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 10)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM machine_events") == 1)
    assert scalar(database_url, "SELECT serial FROM machines") == "SN-1"
    assert scalar(database_url, """
        SELECT max(value) FROM telemetry t JOIN metrics m ON m.id = t.metric_id
        WHERE m.name = 'operating_hours'""") == 104.0
    assert scalar(database_url, "SELECT count(*) FROM machine_states WHERE state = 'running'") == 5
    assert scalar(database_url, "SELECT code FROM machine_events") == "E42"
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0
    pub.loop_stop()
