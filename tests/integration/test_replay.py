"""``oem-retention ingest replay``: dead letters made by a real ingester from bad input, replayed
after the cause is fixed.

The cause here is a setting: the ingester runs with a clock-skew bound of 60 s, and machines send
times ten minutes ahead (a gateway in the wrong time zone); the operator raises the bound to an
hour and replays. Sparkplug DATA that came before its device's birth is replayed too, alias-only
DATA is not (its bindings were the session's). What each step stores is written out here from
what was published, not read back from the replay.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg

from core.settings import Settings
from ingest.replay import replay
from ingest.sparkplug_schema import DOUBLE, STRING
from tests.integration.conftest import ROOT, publisher, scalar, wait_for
from tests.sparkplug_payloads import bd_seq, metric, payload

AHEAD_MS = 600_000  # ten minutes: over the ingester's 60 s, within the replay's hour


def _replay(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "oem_retention", "ingest", "replay", *args],
                          env={**env, "OEMR_INGEST_MAX_CLOCK_SKEW_S": "3600", "COLUMNS": "200"},
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _letters(url: str) -> dict[str, tuple[str, int]]:
    """topic -> (reason, times received); topics are unique in these tests."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT topic, reason, times_received FROM dead_letters").fetchall()
    assert len({r[0] for r in rows}) == len(rows)
    return {topic: (reason, times) for topic, reason, times in rows}


def _stored(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[str]]:
    """Telemetry (serial, metric, value), states (serial, state), event kinds, sorted."""
    with psycopg.connect(url) as conn:
        telemetry = conn.execute("""
            SELECT ma.serial, m.name, t.value FROM telemetry t
            JOIN metrics m ON m.id = t.metric_id JOIN machines ma ON ma.id = t.machine_id
            ORDER BY 1, 2, 3""").fetchall()
        states = conn.execute("""
            SELECT ma.serial, s.state::text FROM machine_states s
            JOIN machines ma ON ma.id = s.machine_id ORDER BY 1, 2""").fetchall()
        events = [r[0] for r in conn.execute(
            "SELECT kind || coalesce(':' || code, '') FROM machine_events ORDER BY 1")]
    return telemetry, states, events


def test_replay_stores_what_now_decodes_once_and_keeps_the_rest(
        database_url: str, tenant: str, start_ingester: Any, ingester_env: dict[str, str]) -> None:
    ingester = start_ingester(OEMR_INGEST_MAX_CLOCK_SKEW_S="60",
                              OEMR_INGEST_MAX_PAYLOAD_BYTES="512")
    pub = publisher()
    now = int(time.time() * 1000)
    ts, ahead = now - 60_000, now + AHEAD_MS
    json_topic = f"oem/{tenant}/machines/{{}}/{{}}"
    group = f"spBv1.0/{tenant}"

    def send(topic: str, body: bytes) -> None:
        pub.publish(topic, body, qos=1).wait_for_publish(10)

    def telemetry(i: int) -> bytes:
        return orjson.dumps({"ts": ahead + i, "state": "running",
                             "metrics": {"temp": 20.0 + i, "rpm": 1000.0 + i}})

    # JSON: three machines ahead of the clock (F-1 twice: one problem, received twice), an event
    # ahead, a text that is no JSON, a payload over the size limit.
    for i in (1, 2, 3):
        send(json_topic.format(f"F-{i}", "telemetry"), telemetry(i))
    send(json_topic.format("F-1", "telemetry"), telemetry(1))
    send(json_topic.format("F-4", "events"), orjson.dumps(
        {"ts": ahead, "type": "fault", "code": "E7", "id": "ev-ahead-1"}))
    send(json_topic.format("BAD-text", "telemetry"), b"{oops")
    big = orjson.dumps({"ts": ts, "metrics": {f"sensor_{k:03d}": k for k in range(60)}})
    send(json_topic.format("BIG-1", "telemetry"), big)
    # Sparkplug, node-1's messages in seq order: DATA (named) before its device's birth; the
    # birth; DATA with an alias no birth bound; a birth ahead of the clock and its DATA; DATA of
    # a device never born; a birth declaring a serial a JSON machine then also uses.
    node = f"{group}/{{}}/node-1"
    send(node.format("NBIRTH"), payload(bd_seq(0), timestamp=ts, seq=0))
    send(f"{node.format('DDATA')}/press", payload(
        metric("Speed", datatype=DOUBLE, double_value=11.0), timestamp=ts + 1000, seq=1))
    send(f"{node.format('DBIRTH')}/press", payload(
        metric("Speed", alias=1, datatype=DOUBLE, double_value=10.0), timestamp=ts, seq=2))
    alias_only = payload(metric(alias=1, datatype=DOUBLE, double_value=12.0),
                         metric(alias=7, datatype=DOUBLE, double_value=13.0),
                         timestamp=ts + 2000, seq=3)
    # (A device of its own, unborn, so that each dead letter here has a topic of its own.)
    send(f"{node.format('DDATA')}/press-alias", alias_only)
    send(f"{node.format('DBIRTH')}/lathe", payload(
        metric("Properties/Serial Number", datatype=STRING, string_value="LATHE-9"),
        metric("Temp", alias=2, datatype=DOUBLE, double_value=40.0), timestamp=ahead, seq=4))
    send(f"{node.format('DDATA')}/lathe", payload(
        metric("Temp", datatype=DOUBLE, double_value=41.0), timestamp=ts + 3000, seq=5))
    send(f"{node.format('DDATA')}/drill", payload(
        metric("Speed", datatype=DOUBLE, double_value=5.0), timestamp=ts, seq=6))
    send(f"{node.format('DBIRTH')}/mill", payload(
        metric("Properties/Serial Number", datatype=STRING, string_value="MILL-1"),
        metric("Load", alias=3, datatype=DOUBLE, double_value=1.0), timestamp=ts, seq=7))
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 2)
    send(json_topic.format("MILL-1", "telemetry"), orjson.dumps(
        {"ts": ts, "metrics": {"load": 2.0}}))

    reasons = {  # topic -> words of the ingester's reason
        json_topic.format("F-1", "telemetry"): "in the future",
        json_topic.format("F-2", "telemetry"): "in the future",
        json_topic.format("F-3", "telemetry"): "in the future",
        json_topic.format("F-4", "events"): "in the future",
        json_topic.format("BAD-text", "telemetry"): "not valid JSON",
        json_topic.format("BIG-1", "telemetry"): "over the limit of 512",
        f"{node.format('DDATA')}/press": "without a DBIRTH",
        f"{node.format('DDATA')}/press-alias": "DDATA: device press-alias",
        f"{node.format('DBIRTH')}/lathe": "in the future",
        f"{node.format('DDATA')}/lathe": "without a DBIRTH",
        f"{node.format('DDATA')}/drill": "without a DBIRTH",
        json_topic.format("MILL-1", "telemetry"): "registered for another protocol",
    }
    wait_for(lambda: len(_letters(database_url)) == len(reasons))
    before = _letters(database_url)
    for topic, words in reasons.items():
        assert words in before[topic][0], (topic, before[topic])
    assert before[json_topic.format("F-1", "telemetry")][1] == 2
    live = (sorted([(f"{tenant}/node-1/press", "Speed", 10.0), ("MILL-1", "Load", 1.0)]), [],
            ["online", "online"])
    assert _stored(database_url) == live

    # F-1 comes once more after the fix, to a restarted ingester: stored now, its dead letter
    # stays, and replaying that must not store it again.
    ingester.stop()
    ingester = start_ingester(OEMR_INGEST_MAX_CLOCK_SKEW_S="3600",
                              OEMR_INGEST_MAX_PAYLOAD_BYTES="512")
    send(json_topic.format("F-1", "telemetry"), telemetry(1))
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM telemetry") == 4)
    f1 = [("F-1", "rpm", 1001.0), ("F-1", "temp", 21.0)]
    assert _stored(database_url)[0] == sorted(live[0] + f1)
    pub.disconnect()
    pub.loop_stop()
    env = ingester.env

    # A dry run says what it would do and changes nothing.
    snapshot = (_letters(database_url), _stored(database_url))
    out = _replay(env, "--dry-run")
    assert "dead letters selected: 12" in out, out
    # F-1..3, the event, press's and lathe's named DATA (lathe's birth comes before it), the
    # lathe birth, MILL-1 (its conflict shows only when stored): 8.
    assert "would store: 8 messages (10 telemetry values, 3 states, 1 events)" in out, out
    assert "still bad: 3" in out and "not replayable: 1" in out, out
    assert "dry run: nothing was written" in out, out
    assert (_letters(database_url), _stored(database_url)) == snapshot

    # --reason selects: the messages ahead of the clock, and nothing else.
    out = _replay(env, "--reason", "IN THE FUTURE")
    assert "dead letters selected: 5" in out, out
    assert "decoded and stored: 5 messages (7 telemetry values, 3 states, 1 events)" in out, out
    # F-1 was stored already: its rows are not written twice.
    assert "new rows: telemetry 5, machine_states 2, machine_events 1" in out, out
    after = _letters(database_url)
    assert set(after) == set(before) - {t for t, w in reasons.items() if w == "in the future"}
    assert all(after[t] == before[t] for t in after)
    lathe = [("LATHE-9", "Temp", 40.0)]
    f2_f3 = [("F-2", "rpm", 1002.0), ("F-2", "temp", 22.0), ("F-3", "rpm", 1003.0),
             ("F-3", "temp", 23.0)]
    states = [("F-1", "running"), ("F-2", "running"), ("F-3", "running")]
    assert _stored(database_url) == (sorted(live[0] + f1 + f2_f3 + lathe), states,
                                     ["fault:E7", "online", "online"])

    # Everything: the named DATA of born devices is stored; the rest stays, with today's reason.
    out = _replay(env)
    assert "dead letters selected: 7" in out, out
    assert "decoded and stored: 2 messages (2 telemetry values, 0 states, 0 events)" in out, out
    assert "still bad: 4" in out and "not replayable: 1" in out, out
    data = [(f"{tenant}/node-1/press", "Speed", 11.0), ("LATHE-9", "Temp", 41.0)]
    stored = (sorted(live[0] + f1 + f2_f3 + lathe + data), states,
              ["fault:E7", "online", "online"])
    assert _stored(database_url) == stored
    left = _letters(database_url)
    assert set(left) == {f"{node.format('DDATA')}/press-alias", f"{node.format('DDATA')}/drill",
                         json_topic.format("BAD-text", "telemetry"),
                         json_topic.format("BIG-1", "telemetry"),
                         json_topic.format("MILL-1", "telemetry")}
    assert left[f"{node.format('DDATA')}/press-alias"][0].startswith(
        "DDATA: metric alias 1 cannot be replayed: alias bindings are the edge node's session")
    assert "drill has no stored birth" in left[f"{node.format('DDATA')}/drill"][0]
    for unchanged in ("BAD-text", "BIG-1", "MILL-1"):
        topic = json_topic.format(unchanged, "telemetry")
        assert left[topic] == before[topic]

    # Again: nothing more is stored, and the reasons stay.
    out = _replay(env)
    assert "dead letters selected: 5" in out and "decoded and stored: 0 messages" in out, out
    assert (_letters(database_url), _stored(database_url)) == (left, stored)

    # --since selects by when a dead letter was last received.
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert "dead letters selected: 0" in _replay(env, "--since", later)
    assert "dead letters selected: 5" in _replay(env, "--since", "1 hour", "--dry-run")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE dead_letters SET last_received_at = now() - interval '2 days'"
                     " WHERE topic = %s", (json_topic.format("BAD-text", "telemetry"),))
    assert "dead letters selected: 4" in _replay(env, "--since", "1 day", "--dry-run")
    bad = subprocess.run([sys.executable, "-m", "oem_retention", "ingest", "replay", "--since",
                          "last tuesday"], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 1
    assert "is neither a time" in bad.stdout + bad.stderr


async def test_what_the_database_refuses_stays_a_dead_letter_and_the_rest_is_stored(
        database_url: str, tenant: str) -> None:
    # Planted as an ingester with a 60 s clock-skew bound writes them (the test above makes them
    # with a real one); a constraint then refuses one message's content: the batch is stored
    # message by message, that one keeps its dead letter with the database's reason.
    ahead = int(time.time() * 1000) + AHEAD_MS
    bodies = {f"oem/{tenant}/machines/SN-{i}/telemetry": orjson.dumps(
        {"ts": ahead, "metrics": {"temp": value}}) for i, value in enumerate([1.5, -7.0, 2.5])}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for topic, body in bodies.items():
            conn.execute("INSERT INTO dead_letters (topic, payload, payload_size, reason, digest)"
                         " VALUES (%s, %s, %s, 'in the future', sha256(%s))",
                         (topic, body, len(body), topic.encode() + b"\0" + body))
        conn.execute("ALTER TABLE telemetry ADD CONSTRAINT no_frost CHECK (value >= 0)")
    settings = Settings(database_url=database_url, ingest_max_clock_skew_s=3600)
    report = await replay(settings)
    assert (report.selected, report.stored, report.written.telemetry_rows) == (3, 2, 2)
    assert _stored(database_url)[0] == [("SN-0", "temp", 1.5), ("SN-2", "temp", 2.5)]
    (left,) = _letters(database_url).items()
    assert left[0] == f"oem/{tenant}/machines/SN-1/telemetry"
    assert left[1][0].startswith("the database refused this message: ")
    assert "no_frost" in left[1][0]
    again = await replay(settings)
    assert (again.selected, again.stored, sum(again.still_bad.values())) == (1, 0, 1)
