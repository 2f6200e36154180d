"""Bad input lands in dead_letters with a reason a person can act on, and nothing else is stored.

Every message goes through the real broker to a real ingester process; afterwards the ingester
is still alive and stores good messages.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
import psycopg

from ingest.sparkplug_schema import DOUBLE
from tests.integration.conftest import BOTH_CLIENTS, CLIENT_OF, publisher, scalar, wait_for
from tests.sparkplug_payloads import bd_seq, metric, payload


def rows(database_url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def dead_letters(database_url: str) -> dict[str, tuple[bytes, int, str, int]]:
    """topic -> (payload, payload_size, reason, times_received)."""
    return {topic: (bytes(body), size, reason, times) for topic, body, size, reason, times in rows(
        database_url,
        "SELECT topic, payload, payload_size, reason, times_received FROM dead_letters")}


@BOTH_CLIENTS
def test_each_kind_of_bad_input_is_a_dead_letter_with_its_reason(
        database_url: str, tenant: str, start_ingester: Any, fast_path: str) -> None:
    ingester = start_ingester(OEMR_INGEST_FAST_PATH=fast_path)
    assert ingester.counters()["mqtt_client"] == CLIENT_OF[fast_path]
    pub = publisher()
    now = int(time.time() * 1000)
    ts = now - 60_000
    json_topic = f"oem/{tenant}/machines/{{}}/telemetry"
    group = f"spBv1.0/{tenant}"

    # topic -> (payload, words the reason must contain)
    bad: dict[str, tuple[bytes, list[str]]] = {
        json_topic.format("BAD-text"): (b"temperature=21.5", ["not valid JSON"]),
        json_topic.format("BAD-nan"): (
            b'{"ts": %d, "metrics": {"temp": NaN}}' % ts, ["NaN", "JSON does not allow"]),
        json_topic.format("BAD-str"): (
            orjson.dumps({"ts": ts, "metrics": {"temp": "21.5"}}),
            ["metric 'temp'", "str value", "metrics are numbers"]),
        json_topic.format("BAD-list"): (
            orjson.dumps({"ts": ts, "metrics": [21.5]}), ["'metrics' must be an object", "list"]),
        json_topic.format("BAD-no-ts"): (
            orjson.dumps({"metrics": {"temp": 21.5}}), ["'ts' is missing"]),
        json_topic.format("BAD-1999"): (
            orjson.dumps({"ts": 946_684_799_000, "metrics": {"temp": 21.5}}),
            ["1999-12-31T23:59:59", "before 2000-01-01", "never set"]),
        json_topic.format("BAD-future"): (
            orjson.dumps({"ts": now + 86_400_000, "metrics": {"temp": 21.5}}),
            ["in the future", "ahead of the server clock"]),
        json_topic.format("BAD-naive"): (
            orjson.dumps({"ts": "2024-05-01T10:00:00", "metrics": {"temp": 21.5}}),
            ["2024-05-01T10:00:00", "no time zone"]),
        f"oem/{tenant}/machines/BAD-event/events": (
            orjson.dumps({"ts": ts, "type": "explosion"}),
            ["event 'type' 'explosion'", "fault"]),
        f"oem/{tenant}/gateways/gw-1/telemetry": (
            orjson.dumps({"ts": ts, "metrics": {"temp": 21.5}}),
            ["unknown topic", "oem/<tenant>/machines/<serial>/telemetry|events"]),
        f"{group}/DDATA/node-9/dev-1": (
            b"\x00 not protobuf", ["DDATA", "not a valid Sparkplug B protobuf"]),
        json_topic.format("BAD-name"): (
            orjson.dumps({"ts": ts, "metrics": {"temp\u0007": 21.5}}),
            ["metric name 'temp\\x07'", "printable"]),
        f"oem/{tenant}/machines/BAD-id/events": (
            orjson.dumps({"ts": ts, "type": "fault", "id": "e" * 129}),
            ["event 'id'", "129 characters", "at most 128"]),
        f"oem/{tenant}/machines/BAD-code/events": (
            orjson.dumps({"ts": ts, "type": "fault", "code": "c" * 129}),
            ["event 'code'", "129 characters", "at most 128"]),
        f"{group}/NBIRTH/{'n' * 65}": (
            payload(bd_seq(0), timestamp=ts, seq=0), ["edge node id", "at most 64"]),
    }
    for topic, (body, _) in bad.items():
        pub.publish(topic, body, qos=1)

    # Sparkplug: a proper birth, then DATA with an alias no birth bound.
    pub.publish(f"{group}/NBIRTH/node-1", payload(bd_seq(0), timestamp=ts, seq=0), qos=1)
    pub.publish(f"{group}/DBIRTH/node-1/press", payload(
        metric("Speed", alias=1, datatype=DOUBLE, double_value=10.0), timestamp=ts, seq=1), qos=1)
    unbound = payload(metric(alias=1, datatype=DOUBLE, double_value=11.0),
                      metric(alias=7, datatype=DOUBLE, double_value=12.0),
                      timestamp=ts + 1000, seq=2)
    pub.publish(f"{group}/DDATA/node-1/press", unbound, qos=1)
    bad[f"{group}/DDATA/node-1/press"] = (unbound, ["DDATA", "alias 7", "not bound"])

    # The same bad message twice (a publisher retrying) is one problem, seen twice.
    duplicate = json_topic.format("BAD-twice")
    for _ in range(2):
        pub.publish(duplicate, b"{oops", qos=1).wait_for_publish(10)

    wait_for(lambda: scalar(database_url, "SELECT sum(times_received) FROM dead_letters") == (
        len(bad) + 2))
    letters = dead_letters(database_url)
    assert set(letters) == {*bad, duplicate}
    for topic, (body, words) in bad.items():
        stored, size, reason, times = letters[topic]
        assert (stored, size, times) == (body, len(body), 1), topic
        for word in words:
            assert word in reason, (topic, reason)
    assert letters[duplicate][0] == b"{oops"
    assert letters[duplicate][3] == 2
    assert "not valid JSON" in letters[duplicate][2]

    # Still alive, and good messages are stored.
    pub.publish(json_topic.format("GOOD-1"), orjson.dumps(
        {"ts": ts, "metrics": {"temp": 21.5, "rpm": 1200}}), qos=1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 3)
    assert ingester.proc.poll() is None
    # Nothing of the bad messages was stored: only the good machine and the Sparkplug birth.
    assert sorted(rows(database_url, """
        SELECT ma.serial, m.name, (extract(epoch FROM t.time) * 1000)::bigint, t.value
        FROM telemetry t JOIN metrics m ON m.id = t.metric_id
        JOIN machines ma ON ma.id = t.machine_id""")) == [
        ("GOOD-1", "rpm", ts, 1200.0), ("GOOD-1", "temp", ts, 21.5),
        (f"{tenant}/node-1/press", "Speed", ts, 10.0)]
    assert sorted(r[0] for r in rows(database_url, "SELECT serial FROM machines")) == [
        "GOOD-1", f"{tenant}/node-1/press"]
    assert scalar(database_url, "SELECT count(*) FROM machine_states") == 0
    assert rows(database_url, "SELECT kind FROM machine_events") == [("online",)]
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == len(bad) + 1
    # The status file (written every second) counts every letter received.
    wait_for(lambda: ingester.counters()["dead_lettered"] == len(bad) + 2, timeout=5)
    pub.disconnect()
    pub.loop_stop()


def test_oversized_payload_is_a_dead_letter(database_url: str, tenant: str,
                                            start_ingester: Any) -> None:
    ingester = start_ingester(OEMR_INGEST_MAX_PAYLOAD_BYTES="256")
    pub = publisher()
    ts = int(time.time() * 1000) - 60_000
    big = orjson.dumps({"ts": ts, "metrics": {f"sensor_{i:03d}": i for i in range(40)}})
    small = orjson.dumps({"ts": ts, "metrics": {"temp": 21.5}})
    assert len(big) > 256 >= len(small)
    pub.publish(f"oem/{tenant}/machines/BIG-1/telemetry", big, qos=1)
    pub.publish(f"oem/{tenant}/machines/SMALL-1/telemetry", small, qos=1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM dead_letters") == 1)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 1)
    [(topic, body, size, reason)] = rows(
        database_url, "SELECT topic, payload, payload_size, reason FROM dead_letters")
    # Its start is kept, with its size and the digest of the whole: bounded, still traceable.
    assert (topic, bytes(body), size) == (f"oem/{tenant}/machines/BIG-1/telemetry", big[:256],
                                          len(big))
    for word in (f"{len(big)} bytes", "over the limit of 256", "OEMR_INGEST_MAX_PAYLOAD_BYTES",
                 "first 256 bytes are kept", hashlib.sha256(big).hexdigest()):
        assert word in reason
    assert rows(database_url, "SELECT serial FROM machines") == [("SMALL-1",)]
    assert ingester.proc.poll() is None
    pub.disconnect()
    pub.loop_stop()
