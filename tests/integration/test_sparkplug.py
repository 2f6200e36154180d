"""Sparkplug B through the real broker into the real ingester (a Host Application) and database.

Payloads are encoded with ``ingest.sparkplug_schema.Payload``; the expected rows are written out
here from the values published. The test's tenant is the Sparkplug group (the ingester fixture
sets ``OEMR_SPARKPLUG_GROUP_FILTER`` to it).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.sparkplug_schema import BOOLEAN, DOUBLE, FLOAT, INT32, STRING
from tests.integration.conftest import IngesterProcess, mqtt_address, publisher, scalar, wait_for
from tests.sparkplug_payloads import bd_seq, decode, metric, payload

NODE, DEVICE = "node-1", "press-1"


class Inbox:
    """An MQTT 5 subscriber that keeps every message it receives."""

    def __init__(self, *filters: str) -> None:
        self._messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        messages, lock = self._messages, self._lock

        def on_message(_client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
            with lock:
                messages.append((message.topic, bytes(message.payload), bool(message.retain)))

        host, port = mqtt_address()
        self._client = paho.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"inbox-{uuid.uuid4().hex[:8]}",
                                   protocol=paho.MQTTv5)
        # The callbacks hold no reference to this object: no cycle, so the client (and the
        # socket pair it closes only when collected) goes as soon as the inbox does.
        self._client.on_message = on_message
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect(host, port)
        self._client.loop_start()
        self._client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        assert subscribed.wait(10), "broker did not confirm the subscription"

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        """Payloads and retain flags received on ``topic`` so far."""
        with self._lock:
            return [(body, retain) for t, body, retain in self._messages if t == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def rows(database_url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def telemetry(database_url: str, serial: str) -> dict[tuple[str, int], float]:
    """(metric name, epoch ms) -> value of one machine, as the database has it."""
    return {(name, ms): value for name, ms, value in rows(database_url, """
        SELECT m.name, (extract(epoch FROM t.time) * 1000)::bigint, t.value
        FROM telemetry t JOIN metrics m ON m.id = t.metric_id
        JOIN machines ma ON ma.id = t.machine_id WHERE ma.serial = %s""", (serial,))}


def retained_state(host_id: str) -> dict[str, Any]:
    """The retained STATE of a host, as a new subscriber gets it."""
    topic = f"spBv1.0/STATE/{host_id}"
    inbox = Inbox(topic)
    try:
        (body, retain), *_ = wait_for(lambda: inbox.on(topic), timeout=10)
    finally:
        inbox.close()
    assert retain, "STATE is not retained"
    return dict(orjson.loads(body))


@pytest.fixture
def sparkplug_ingester(start_ingester: Any, ingester_env: dict[str, str]) -> Iterator[
        IngesterProcess]:
    """An ingester; afterwards, its retained STATE is cleared from the broker."""
    proc = start_ingester()
    yield proc
    proc.stop()
    pub = publisher()
    pub.publish(f"spBv1.0/STATE/{ingester_env['OEMR_SPARKPLUG_HOST_ID']}", b"", qos=1,
                retain=True).wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()


def test_births_aliases_gap_rebirth_and_death(database_url: str, tenant: str,
                                              sparkplug_ingester: IngesterProcess) -> None:
    host_id = f"host-{tenant}"
    ncmd_topic = f"spBv1.0/{tenant}/NCMD/{NODE}"
    inbox = Inbox(f"spBv1.0/{tenant}/NCMD/#")
    pub = publisher()
    node, device = f"spBv1.0/{tenant}/{{}}/{NODE}", f"spBv1.0/{tenant}/{{}}/{NODE}/{DEVICE}"
    serial = f"{tenant}/{NODE}/{DEVICE}"
    t0 = int(time.time() * 1000) - 60_000
    started_ms = int(time.time() * 1000)

    # Edge nodes publish at QoS 0, as the specification says.
    pub.publish(node.format("NBIRTH"), payload(
        bd_seq(5), metric("Node Control/Rebirth", datatype=BOOLEAN, boolean_value=False),
        timestamp=t0, seq=0), qos=0)
    pub.publish(device.format("DBIRTH"), payload(
        metric("Spindle/Speed", alias=1, datatype=DOUBLE, double_value=1200.5),
        metric("Coolant/Temp", alias=2, datatype=FLOAT, float_value=21.5),
        metric("Counts/Scrap", alias=3, datatype=INT32, int_value=2**32 - 7),  # -7
        metric("Machine/State", alias=4, datatype=STRING, string_value="running"),
        metric("Operating Hours", alias=5, datatype=DOUBLE, double_value=1234.0),
        metric("Door Open", alias=6, datatype=BOOLEAN, boolean_value=False),
        timestamp=t0, seq=1), qos=0)
    # Alias only, no names.
    pub.publish(device.format("DDATA"), payload(
        metric(alias=1, datatype=DOUBLE, double_value=1300.25),
        metric(alias=3, datatype=INT32, int_value=2**32 - 12),  # -12
        metric(alias=4, datatype=STRING, string_value="fault"),
        metric(alias=6, datatype=BOOLEAN, boolean_value=True),
        timestamp=t0 + 1000, seq=2), qos=0)
    pub.publish(device.format("DDATA"), payload(
        metric(alias=5, datatype=DOUBLE, double_value=1234.5), timestamp=t0 + 2000, seq=3),
        qos=0)

    expected = {
        ("Spindle/Speed", t0): 1200.5, ("Coolant/Temp", t0): 21.5, ("Counts/Scrap", t0): -7.0,
        ("operating_hours", t0): 1234.0, ("Door Open", t0): 0.0,
        ("Spindle/Speed", t0 + 1000): 1300.25, ("Counts/Scrap", t0 + 1000): -12.0,
        ("Door Open", t0 + 1000): 1.0,
        ("operating_hours", t0 + 2000): 1234.5,
    }
    wait_for(lambda: len(telemetry(database_url, serial)) >= len(expected))
    assert telemetry(database_url, serial) == expected
    assert rows(database_url, """
        SELECT (extract(epoch FROM s.time) * 1000)::bigint, s.state::text
        FROM machine_states s JOIN machines m ON m.id = s.machine_id
        WHERE m.serial = %s ORDER BY s.time""", (serial,)) == [(t0, "running"),
                                                             (t0 + 1000, "fault")]
    # The platform's own metric is stored under its reserved id.
    assert scalar(database_url, "SELECT id FROM metrics WHERE name = 'operating_hours'") == 1
    assert rows(database_url, """
        SELECT tenant, protocol, spb_group, spb_edge_node, spb_device, online,
               (extract(epoch FROM online_changed_at) * 1000)::bigint
        FROM machines""") == [(tenant, "sparkplug", tenant, NODE, DEVICE, True, t0)]
    assert rows(database_url, """
        SELECT kind, (extract(epoch FROM time) * 1000)::bigint, payload->>'bdSeq'
        FROM machine_events""") == [("online", t0, "5")]
    assert scalar(database_url, "SELECT count(*) FROM sparkplug_gaps") == 0
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0
    assert inbox.on(ncmd_topic) == []

    # seq 4 and 5 are lost: 6 comes next.
    pub.publish(device.format("DDATA"), payload(
        metric(alias=1, datatype=DOUBLE, double_value=1400.0), timestamp=t0 + 3000, seq=6),
        qos=0)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM sparkplug_gaps") == 1)
    assert rows(database_url, """
        SELECT spb_group, spb_edge_node, cause, expected_seq, received_seq, missing,
               rebirth_requested FROM sparkplug_gaps""") == [
        (tenant, NODE, "seq_gap", 4, 6, 2, True)]
    [(request, retained)] = wait_for(lambda: inbox.on(ncmd_topic), timeout=10)
    assert not retained
    command = decode(request)
    assert [(m.name, m.datatype, m.WhichOneof("value"), m.boolean_value)
            for m in command.metrics] == [("Node Control/Rebirth", BOOLEAN, "boolean_value",
                                           True)]
    assert started_ms <= command.timestamp <= int(time.time() * 1000)
    # What arrived after the gap is kept.
    wait_for(lambda: ("Spindle/Speed", t0 + 3000) in telemetry(database_url, serial))
    assert telemetry(database_url, serial)[("Spindle/Speed", t0 + 3000)] == 1400.0

    # The will of an earlier connection (bdSeq 4) changes nothing...
    pub.publish(node.format("NDEATH"), payload(bd_seq(4), timestamp=t0 + 4000), qos=0)
    pub.publish(device.format("DDATA"), payload(
        metric(alias=1, datatype=DOUBLE, double_value=1500.0), timestamp=t0 + 5000, seq=7),
        qos=0)
    wait_for(lambda: ("Spindle/Speed", t0 + 5000) in telemetry(database_url, serial))
    assert scalar(database_url, "SELECT online FROM machines") is True
    assert scalar(database_url, "SELECT count(*) FROM machine_events WHERE kind = 'offline'") == 0
    assert scalar(database_url, "SELECT count(*) FROM sparkplug_gaps") == 1

    # ...the NDEATH of this birth (bdSeq 5) takes the machine offline. It is the node's will:
    # built before it connected, so its timestamp is older than the births.
    death_sent = int(time.time() * 1000)
    pub.publish(node.format("NDEATH"), payload(bd_seq(5), timestamp=t0 - 1000), qos=0)
    wait_for(lambda: scalar(database_url, "SELECT online FROM machines") is False)
    # Offline from when the host heard of it.
    offline_at = scalar(database_url, """
        SELECT (extract(epoch FROM online_changed_at) * 1000)::bigint FROM machines""")
    assert death_sent <= offline_at <= int(time.time() * 1000)
    assert rows(database_url, """
        SELECT kind, (extract(epoch FROM time) * 1000)::bigint, payload->>'bdSeq'
        FROM machine_events ORDER BY time""") == [("online", t0, "5"),
                                                  ("offline", offline_at, "5")]
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0

    # The host announced itself: retained STATE, online, with a timestamp of its start.
    state = retained_state(host_id)
    assert state["online"] is True
    assert started_ms - 60_000 <= state["timestamp"] <= int(time.time() * 1000)
    assert sparkplug_ingester.proc is not None
    assert sparkplug_ingester.proc.poll() is None
    pub.disconnect()
    pub.loop_stop()
    inbox.close()


def test_data_without_birth_asks_for_a_rebirth(database_url: str, tenant: str,
                                               sparkplug_ingester: IngesterProcess) -> None:
    ncmd_topic = f"spBv1.0/{tenant}/NCMD/{NODE}"
    inbox = Inbox(ncmd_topic)
    pub = publisher()
    t0 = int(time.time() * 1000) - 60_000
    # The ingester never saw this node's birth (it started after it, say).
    pub.publish(f"spBv1.0/{tenant}/DDATA/{NODE}/{DEVICE}", payload(
        metric(alias=1, datatype=DOUBLE, double_value=1.0), timestamp=t0, seq=41), qos=0)
    [(request, _)] = wait_for(lambda: inbox.on(ncmd_topic), timeout=10)
    assert [(m.name, m.boolean_value) for m in decode(request).metrics] == [
        ("Node Control/Rebirth", True)]
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM sparkplug_gaps") == 1)
    assert rows(database_url, """
        SELECT cause, expected_seq, received_seq, missing, rebirth_requested
        FROM sparkplug_gaps""") == [("no_birth", None, 41, None, True)]
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM dead_letters") == 1)
    reason = scalar(database_url, "SELECT reason FROM dead_letters")
    assert "no birth" in reason
    assert "rebirth" in reason
    assert scalar(database_url, "SELECT count(*) FROM telemetry") == 0
    assert scalar(database_url, "SELECT count(*) FROM machines") == 0
    pub.disconnect()
    pub.loop_stop()
    inbox.close()


def test_unbound_alias_asks_for_a_rebirth_and_any_printable_name_is_stored(
        database_url: str, tenant: str, sparkplug_ingester: IngesterProcess) -> None:
    ncmd_topic = f"spBv1.0/{tenant}/NCMD/{NODE}"
    inbox = Inbox(ncmd_topic)
    pub = publisher()
    device = f"spBv1.0/{tenant}/{{}}/{NODE}/{DEVICE}"
    serial = f"{tenant}/{NODE}/{DEVICE}"
    t0 = int(time.time() * 1000) - 60_000
    pub.publish(f"spBv1.0/{tenant}/NBIRTH/{NODE}", payload(bd_seq(1), timestamp=t0, seq=0), qos=0)
    # A serial past 64 characters is ignored: the device keeps its namespace serial.
    pub.publish(device.format("DBIRTH"), payload(
        metric("Properties/Serial Number", datatype=STRING, string_value="S" * 65),
        metric("Temp °C", alias=1, datatype=DOUBLE, double_value=21.5),
        metric("Speed %", alias=2, datatype=DOUBLE, double_value=80.0),
        timestamp=t0, seq=1), qos=0)
    wait_for(lambda: len(telemetry(database_url, serial)) == 2)
    assert telemetry(database_url, serial) == {("Temp °C", t0): 21.5, ("Speed %", t0): 80.0}
    assert inbox.on(ncmd_topic) == []

    # The edge node uses an alias its birth did not bind (its newer birth was lost, say).
    unbound = payload(metric(alias=1, datatype=DOUBLE, double_value=22.0),
                      metric(alias=3, datatype=DOUBLE, double_value=1.0),
                      timestamp=t0 + 1000, seq=2)
    pub.publish(device.format("DDATA"), unbound, qos=0)
    [(request, _)] = wait_for(lambda: inbox.on(ncmd_topic), timeout=10)
    assert [(m.name, m.boolean_value) for m in decode(request).metrics] == [
        ("Node Control/Rebirth", True)]
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM dead_letters") == 1)
    [(body, reason)] = rows(database_url, "SELECT payload, reason FROM dead_letters")
    assert bytes(body) == unbound
    for word in ("DDATA", "alias 3", "not bound", "rebirth was requested"):
        assert word in reason
    assert scalar(database_url, "SELECT count(*) FROM sparkplug_gaps") == 0
    assert len(telemetry(database_url, serial)) == 2  # the message was stored not at all
    assert rows(database_url, "SELECT serial FROM machines") == [(serial,)]
    pub.disconnect()
    pub.loop_stop()
    inbox.close()


def test_host_state_is_offline_after_the_ingester_stops(
        tenant: str, sparkplug_ingester: IngesterProcess) -> None:
    host_id = f"host-{tenant}"
    assert retained_state(host_id)["online"] is True
    # Sparkplug 3.0: a host that disconnects on purpose publishes its offline STATE first
    # (its will covers only the connection that breaks).
    assert sparkplug_ingester.stop() == 0
    wait_for(lambda: retained_state(host_id)["online"] is False, timeout=10)


def test_host_state_is_offline_after_the_ingester_dies(
        tenant: str, sparkplug_ingester: IngesterProcess) -> None:
    host_id = f"host-{tenant}"
    assert retained_state(host_id)["online"] is True
    sparkplug_ingester.kill()  # the broker publishes its will
    wait_for(lambda: retained_state(host_id)["online"] is False, timeout=10)
