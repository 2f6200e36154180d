"""Ingest throughput: what the broker delivers, what the database takes, what the ingester does.

Run from the repository root with the services' addresses in the environment::

    set -a && . /var/lib/oem-retention/env && set +a
    .venv/bin/python -m tests.bench.ingest [--messages N] [--publishers K] [--mode MODE]

``--help`` lists the other options (``--mode live|backlog|both``, ``--profile DIR``, ...).

Figures, not pass/fail. All three rates are over the same kind of messages: the JSON contract on
``oem/<tenant>/machines/<serial>/telemetry``, ten metrics and a state each, a distinct
(serial, ts) per message, ten seconds apart per machine.

1. receive limit: a bare subscriber with the ingester's session (MQTT 5, QoS 1, shared
   subscription, the ingester's Receive Maximum, persistent session), acking every message at
   once and dropping it; measured twice, with stock paho 2 and with the ingester's own MQTT
   client (ingest.broker), and the higher rate is the limit (the broker's, not a client's);
2. write limit: psycopg binary COPY (``write_row``) of the same telemetry rows into a freshly
   migrated database, one transaction per ingester batch;
3. end to end: ``oem-retention ingest run`` from broker to committed rows, its resident memory
   sampled every 100 ms; with its fast MQTT client (``--fast-path auto``, the default), stock
   paho (``off``, its fallback when paho's internals differ: ingest/broker.py), or ``both``.

Modes, the same for 1 and 3:

- live: publishers send while the consumer consumes. What production looks like, but on a small
  host the publishers (Python, like the consumer) take CPU from the consumer, the broker and the
  database, and the rate cannot exceed what the publishers offer.
- backlog: the messages are queued first in the consumer's persistent session, then the consumer
  connects and drains them: the catch-up after an ingester restart or database outage, and the
  consumer's own capacity without a load generator on the same cores.

Every run uses its own tenant, client ids, share group and databases; the MQTT sessions are
ended (and expire after 60 s if the run dies) and the databases dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psutil
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from psycopg import sql

from core.settings import Settings
from core.sql import queries
from demo.fleet import PROCESS_METRICS
from ingest.broker import _Client as FastClient  # the ingester's client, as a subscriber
from oem_retention import schema

ROOT = Path(__file__).resolve().parents[2]
METRICS = ("operating_hours", *PROCESS_METRICS)
TICK_MS = 10_000
SESSION_EXPIRY_S = 60
POLL_S = 0.05
RSS_EVERY_S = 0.1
STALL_S = 60.0
STORED_WARNING = 100_000
TARGET_RATIO = 0.7
TARGET_MSG_S = 20_000
TARGET_RSS_MB = 200
_TELEMETRY_TYPES = ["timestamptz", "int4", "int4", "float8"]
_STATE_TYPES = ["timestamptz", "int4", "text"]


# -- the messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    """N messages of one fresh tenant: message k is machine k % machines at tick k // machines."""

    tenant: str
    messages: int
    machines: int
    publishers: int
    start_ms: int

    @classmethod
    def new(cls, *, messages: int, machines: int, publishers: int) -> Workload:
        ticks = -(-messages // machines)
        # All in the past (the ingester refuses the future), the last tick a minute ago.
        start_ms = int(time.time() * 1000) - ticks * TICK_MS - 60_000
        return cls(f"bench{uuid.uuid4().hex[:8]}", messages, machines, publishers, start_ms)

    def serial(self, k: int) -> str:
        return f"SN-{k % self.machines:06d}"

    def ts_ms(self, k: int) -> int:
        return self.start_ms + (k // self.machines) * TICK_MS

    def time(self, k: int) -> datetime:
        return datetime.fromtimestamp(self.ts_ms(k) / 1000, UTC)

    @staticmethod
    def values(k: int) -> list[float]:
        return [((k * 7919 + i * 104_729) % 1_000_000) / 100 for i in range(len(METRICS))]

    def topic(self, k: int) -> str:
        return f"oem/{self.tenant}/machines/{self.serial(k)}/telemetry"

    def payload(self, k: int) -> bytes:
        return orjson.dumps({"ts": self.ts_ms(k), "metrics": dict(zip(METRICS, self.values(k),
                                                                       strict=True)),
                             "state": "running"})

    def share(self, publisher: int) -> range:
        """The messages one publisher sends (each machine's in time order)."""
        return range(publisher, self.messages, self.publishers)

    def last_messages(self) -> list[int]:
        return [s[-1] for s in map(self.share, range(self.publishers)) if s]

    def subscription(self, group: str) -> str:
        """The ingester's JSON filter for this tenant (``Ingester._subscriptions``)."""
        return f"$share/{group}/oem/{self.tenant}/#"


@dataclass(frozen=True, slots=True)
class Config:
    """One benchmark run, from the command line and ``Settings``."""

    messages: int
    machines: int
    publishers: int
    window: int
    modes: tuple[str, ...]
    settings: Settings
    profile_dir: Path | None
    write_states: bool
    publisher: str
    fast_paths: tuple[str, ...] = ("auto",)

    @property
    def address(self) -> tuple[str, int]:
        return self.settings.mqtt_host, self.settings.mqtt_port

    def workload(self) -> Workload:
        return Workload.new(messages=self.messages, machines=self.machines,
                            publishers=self.publishers)


def _q() -> dict[str, str]:
    return queries("tests.bench", "sql/ingest.sql")


# -- MQTT: sessions, publishers, the bare subscriber -----------------------------------------


def _client(client_id: str, *, manual_ack: bool = False) -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
                       manual_ack=manual_ack)


def _connect_props(*, expiry_s: int, receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return props


def _loop_until(client: paho.Client, done: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("MQTT broker did not answer in time")
        client.loop(0.05)


def _open_session(address: tuple[str, int], client_id: str, subscription: str) -> None:
    """Create a consumer's persistent session with its subscription, then leave it offline.

    The consumer later resumes it (clean start off, as the ingester always connects), so no
    message is published before the subscription exists, in either mode.
    """
    client = _client(client_id)
    acked: list[bool] = []
    client.on_subscribe = lambda *_: acked.append(True)
    client.connect(*address, clean_start=True,
                   properties=_connect_props(expiry_s=SESSION_EXPIRY_S))
    _loop_until(client, client.is_connected)
    client.subscribe([(subscription, SubscribeOptions(qos=1))])
    _loop_until(client, lambda: acked)
    client.disconnect()
    _loop_until(client, lambda: not client.is_connected())


def _end_session(address: tuple[str, int], client_id: str) -> None:
    """Discard a session and whatever is queued in it (clean start, expiry 0)."""
    client = _client(client_id)
    client.connect(*address, clean_start=True, properties=_connect_props(expiry_s=0))
    _loop_until(client, client.is_connected)
    client.disconnect()
    _loop_until(client, lambda: not client.is_connected())


@dataclass(frozen=True, slots=True)
class Published:
    publisher: int
    messages: int
    started: float
    finished: float


def _publish_share(w: Workload, index: int, *, publisher: str, address: tuple[str, int],
                   window: int, ready: Any, go: Any, results: Any) -> None:
    """One publisher process: its share of the messages at QoS 1, ``window`` in flight."""
    send = _publish_raw if publisher == "raw" else _publish_paho
    send(w, index, address=address, window=window, ready=ready, go=go, results=results)


def _publish_paho(w: Workload, index: int, *, address: tuple[str, int], window: int,
                  ready: Any, go: Any, results: Any) -> None:
    acked = 0

    def on_publish(*_: Any) -> None:
        nonlocal acked
        acked += 1

    client = _client(f"{w.tenant}-pub-{index}")
    client.max_inflight_messages_set(window)
    client.on_publish = on_publish
    client.connect(*address, clean_start=True, properties=_connect_props(expiry_s=0))
    _loop_until(client, client.is_connected)
    ready.put(index)
    go.wait()
    sent = 0
    started = time.monotonic()
    for k in w.share(index):
        # Without a network thread, publish() writes to the socket at once.
        client.publish(w.topic(k), w.payload(k), qos=1)
        sent += 1
        while sent - acked >= window:
            client.loop(1.0)
    while acked < sent:
        client.loop(1.0)
    results.put(Published(index, sent, started, time.monotonic()))
    client.disconnect()
    with contextlib.suppress(TimeoutError):
        _loop_until(client, lambda: not client.is_connected(), timeout=2)


def _publish_raw(w: Workload, index: int, *, address: tuple[str, int], window: int,
                 ready: Any, go: Any, results: Any) -> None:
    with RawPublisher(address, f"{w.tenant}-pub-{index}") as pub:
        window = min(window, pub.receive_maximum)
        ready.put(index)
        go.wait()
        started = time.monotonic()
        sent = pub.publish_all(((w.topic(k), w.payload(k)) for k in w.share(index)),
                               window=window)
        results.put(Published(index, sent, started, time.monotonic()))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


class RawPublisher:
    """A minimal MQTT 5 QoS 1 publisher: packets pipelined in large writes, PUBACKs counted.

    paho's publisher costs 40-70 us of CPU per message (a send() each, and a scan of all messages
    in flight per PUBACK), so on a small host it, not the broker or the consumer, sets the pace
    (~10,000 msg/s from two processes here). This one offers what the broker accepts (~40,000 to
    80,000 msg/s), leaving the CPU to the consumer.
    """

    _CONNACK, _PUBACK, _DISCONNECT = 0x20, 0x40, 0xE0

    def __init__(self, address: tuple[str, int], client_id: str) -> None:
        self._sock = socket.create_connection(address, timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        # Clean start, keepalive 0 (no pings needed), no properties: session expiry 0.
        body = _utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 0) + b"\0" + _utf8(client_id)
        self._sock.sendall(b"\x10" + _varint(len(body)) + body)
        kind, connack = self._packets()[0]
        if kind != self._CONNACK or connack[1] >= 0x80:
            raise ConnectionError(f"broker refused the connection: {connack!r}")
        self.receive_maximum = _receive_maximum(connack)

    def __enter__(self) -> RawPublisher:
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(b"\xe0\x00")
        self._sock.close()

    def publish_all(self, messages: Iterator[tuple[str, bytes]], *, window: int) -> int:
        """Publish at QoS 1 with up to ``window`` unacknowledged; return when all are acked."""
        sent = acked = 0
        pending = iter(messages)
        more = True
        while more or acked < sent:
            chunk = []
            while more and sent - acked < window and len(chunk) < 64:
                message = next(pending, None)
                if message is None:
                    more = False
                    break
                sent += 1
                chunk.append(_publish_packet(*message, packet_id=sent % 65535 + 1))
            if chunk:
                self._sock.sendall(b"".join(chunk))
            if sent - acked >= window or (not more and acked < sent):
                for kind, body in self._packets():
                    if kind == self._PUBACK:
                        if len(body) > 2 and body[2] >= 0x80:
                            raise RuntimeError(f"broker refused a message: reason {body[2]:#x}")
                        acked += 1
                    elif kind == self._DISCONNECT:
                        raise ConnectionError(f"broker disconnected: {body!r}")
        return sent

    def _packets(self) -> list[tuple[int, bytes]]:
        """Read once from the socket (blocking) and return the whole packets received."""
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionError("broker closed the connection")
        self._buffer += data
        packets, pos = [], 0
        while (header := _packet_at(self._buffer, pos)) is not None:
            start, end = header
            packets.append((self._buffer[pos] & 0xF0, bytes(self._buffer[start:end])))
            pos = end
        del self._buffer[:pos]
        return packets


def _packet_at(buffer: bytearray, pos: int) -> tuple[int, int] | None:
    """Where the body of the packet at ``pos`` starts and ends, if it is all in ``buffer``."""
    length, multiplier, i = 0, 1, pos + 1
    while i < len(buffer):
        digit = buffer[i]
        length += (digit & 0x7F) * multiplier
        multiplier *= 128
        i += 1
        if not digit & 0x80:
            return (i, i + length) if i + length <= len(buffer) else None
    return None


def _publish_packet(topic: str, payload: bytes, *, packet_id: int) -> bytes:
    body = _utf8(topic) + struct.pack("!H", packet_id) + b"\0" + payload  # no properties
    return b"\x32" + _varint(len(body)) + body


def _receive_maximum(connack: bytes) -> int:
    """CONNACK property 0x21, Receive Maximum (65535 when absent)."""
    if len(connack) < 3:
        return 65535
    length, multiplier, i = 0, 1, 2
    while True:
        digit = connack[i]
        length += (digit & 0x7F) * multiplier
        multiplier *= 128
        i += 1
        if not digit & 0x80:
            break
    props, end = i, i + length
    while props < end:
        prop = connack[props]
        if prop == 0x21:
            return int(struct.unpack_from("!H", connack, props + 1)[0])
        props += 1 + _PROPERTY_SIZES.get(prop, 0)
        if prop not in _PROPERTY_SIZES:
            break  # a variable-length property we do not need to read past
    return 65535


# CONNACK properties of fixed size (MQTT 5, 3.2.2.3), to step over them.
_PROPERTY_SIZES = {0x11: 4, 0x21: 2, 0x24: 1, 0x25: 1, 0x27: 4, 0x22: 2, 0x28: 1, 0x29: 1,
                   0x2A: 1, 0x13: 2}


class Publishers:
    """K publisher processes, connected and waiting for ``go()``."""

    def __init__(self, ctx: Any, w: Workload, config: Config) -> None:
        self._ready, self._results, self._go = ctx.Queue(), ctx.Queue(), ctx.Event()
        self._procs = [
            ctx.Process(target=_publish_share, name=f"publisher-{i}", daemon=True,
                        args=(w, i), kwargs={
                            "publisher": config.publisher, "address": config.address,
                            "window": config.window,
                            "ready": self._ready, "go": self._go, "results": self._results})
            for i in range(w.publishers)
        ]

    def __enter__(self) -> Publishers:
        for proc in self._procs:
            proc.start()
        waiting, deadline = len(self._procs), time.monotonic() + 60
        while waiting:
            if any(p.exitcode is not None for p in self._procs) or time.monotonic() > deadline:
                raise RuntimeError("a publisher process did not connect (see its traceback)")
            with contextlib.suppress(queue.Empty):
                self._ready.get(timeout=0.5)
                waiting -= 1
        return self

    def go(self) -> None:
        self._go.set()

    def processes(self) -> list[psutil.Process]:
        return [psutil.Process(p.pid) for p in self._procs if p.pid is not None]

    def results(self, timeout: float = 600) -> list[Published]:
        done = [self._results.get(timeout=timeout) for _ in self._procs]
        for proc in self._procs:
            proc.join(timeout=10)
        return done

    def __exit__(self, *_: object) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)


@dataclass(frozen=True, slots=True)
class Received:
    messages: int
    first: float
    last: float


def _receive(w: Workload, *, address: tuple[str, int], client_id: str, group: str,
             receive_maximum: int, ready: Any, results: Any, fast: bool = False) -> None:
    """The bare subscriber: the ingester's session settings, ack at once, drop the message.

    ``fast``: with the ingester's own client (ingest.broker: in-place PUBLISH decoding, batched
    PUBACKs) instead of stock paho, so the limit measured is the broker's, not paho's.
    """
    received = 0
    first = last = 0.0

    def count(mid: int, qos: int) -> None:
        nonlocal received, first, last
        last = time.monotonic()
        if not received:
            first = last
        received += 1
        client.ack(mid, qos)

    def on_connect(c: paho.Client, *_: Any) -> None:
        # As the ingester does on every connection.
        c.subscribe([(w.subscription(group), SubscribeOptions(qos=1))])

    client: Any
    if fast:
        client = FastClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                            protocol=paho.MQTTv5, manual_ack=True,
                            deliver=lambda msg: count(msg.mid, msg.qos))
    else:
        client = _client(client_id, manual_ack=True)
        client.on_message = lambda _c, _u, msg: count(msg.mid, msg.qos)
    client.on_connect = on_connect
    client.connect(*address, clean_start=False, properties=_connect_props(
        expiry_s=SESSION_EXPIRY_S, receive_maximum=receive_maximum))
    _loop_until(client, client.is_connected)
    ready.set()
    connected = time.monotonic()
    while received < w.messages and time.monotonic() - (last or connected) < STALL_S:
        client.loop(0.5)
        if fast:
            while client.buffered:  # what the 64 KiB read holds beyond what paho asked for
                client.loop_read()
            client.flush_acks()
    results.put(Received(received, first, last))
    client.disconnect()
    with contextlib.suppress(TimeoutError):
        _loop_until(client, lambda: not client.is_connected(), timeout=2)


def broker_stored(address: tuple[str, int], *, fresh: bool = False) -> int | None:
    """Messages the broker holds (queued for sessions, retained), from its $SYS topics.

    The retained value can be one $SYS interval (10 s) old; ``fresh`` waits for the next one.
    """
    found: list[tuple[bool, int]] = []
    client = _client(f"bench-sys-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda _c, _u, msg: found.append((msg.retain, int(msg.payload)))
    client.connect(*address, clean_start=True, properties=_connect_props(expiry_s=0))
    client.subscribe("$SYS/broker/store/messages/count")
    with contextlib.suppress(TimeoutError):
        _loop_until(client, lambda: any(not retained for retained, _ in found) if fresh
                    else found, timeout=15 if fresh else 3)
    client.disconnect()
    with contextlib.suppress(TimeoutError):
        _loop_until(client, lambda: not client.is_connected(), timeout=2)
    return found[-1][1] if found else None


def _broker_process(port: int) -> psutil.Process | None:
    """The broker listening on ``port``, for its CPU time (None where we may not see it)."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port \
                    and conn.pid:
                return psutil.Process(conn.pid)
    return None


def _cpu_seconds(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return float("nan")
    return float(t.user + t.system)


class CpuMeter:
    """CPU of some processes between ``start()`` and ``stop()``, in % of one core.

    ``others`` is the rest of the host's busy time: other work on a shared machine (or processes
    not named here, such as the database's background writers), the noise in the figures.
    """

    def __init__(self, **processes: psutil.Process | list[psutil.Process] | None) -> None:
        self._procs: dict[str, list[psutil.Process]] = {}
        self._start: dict[str, float] = {}
        self._host = self._wall = 0.0
        self.percent: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        for name, procs in processes.items():
            self.add(name, procs)

    def add(self, name: str, procs: psutil.Process | list[psutil.Process] | None) -> None:
        if procs is not None and not self._wall:
            self._procs[name] = procs if isinstance(procs, list) else [procs]

    def start(self) -> None:
        self._wall, self._host = time.monotonic(), _host_busy()
        self._start = {name: sum(map(_cpu_seconds, ps)) for name, ps in self._procs.items()}

    def stop(self) -> None:
        wall = time.monotonic() - self._wall
        self.seconds = {name: sum(map(_cpu_seconds, ps)) - self._start[name]
                        for name, ps in self._procs.items()}
        self.percent = {name: 100 * cpu_s / wall for name, cpu_s in self.seconds.items()}
        self.percent["others"] = 100 * (_host_busy() - self._host) / wall - sum(
            self.percent.values())

    def __str__(self) -> str:
        return ", ".join(f"{name} {pct:.0f}%" for name, pct in self.percent.items())

    def per_message(self, name: str, messages: int) -> str:
        """CPU per message of one process, and the rate that would be at a full core."""
        us = 1e6 * self.seconds.get(name, float("nan")) / max(messages, 1)
        if not us > 0:  # a run too short for the CPU clock's resolution
            return f"{name}: too little CPU measured for a per-message figure"
        return f"{name} {us:.0f} us CPU per message (= {1e6 / us:,.0f} msg/s on a whole core)"


def _host_busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


# -- 1. receive limit ------------------------------------------------------------------------


@dataclass(slots=True)
class Phase:
    """The figures of one measurement."""

    msg_s: float
    notes: list[str] = field(default_factory=list)
    max_rss_mb: float | None = None


def _publish_note(published: list[Published], *, consumer_last: float) -> str:
    started = min(p.started for p in published)
    finished = max(p.finished for p in published)
    total = sum(p.messages for p in published)
    rate = total / (finished - started)
    lag = consumer_last - finished
    return (f"publishers: {total:,} messages at {rate:,.0f} msg/s (broker-acked);"
            f" consumer finished {lag:+.1f} s after the last publish")


def receive_limit(config: Config, mode: str, ctx: Any, *, fast: bool = False) -> Phase:
    w = config.workload()
    client_id, group = f"{w.tenant}-sub", f"g{w.tenant}"
    ready, results = ctx.Event(), ctx.Queue()
    cpu = CpuMeter(broker=_broker_process(config.address[1]))
    _open_session(config.address, client_id, w.subscription(group))
    try:
        with Publishers(ctx, w, config) as pubs:
            if mode == "backlog":
                pubs.go()
                published = pubs.results()
            sub = ctx.Process(target=_receive, name="subscriber", daemon=True, args=(w,), kwargs={
                "address": config.address, "client_id": client_id, "group": group,
                "receive_maximum": config.settings.receive_maximum, "ready": ready,
                "results": results, "fast": fast})
            sub.start()
            if not ready.wait(timeout=60):
                raise RuntimeError("the subscriber process did not connect (see its traceback)")
            cpu.add("subscriber", psutil.Process(sub.pid))
            if mode == "live":
                cpu.add("publishers", pubs.processes())
            cpu.start()
            if mode == "live":
                pubs.go()
            got: Received = results.get(timeout=3600)
            cpu.stop()
            if mode == "live":
                published = pubs.results()
            sub.join(timeout=10)
    finally:
        _end_session(config.address, client_id)
    rate = (got.messages - 1) / (got.last - got.first) if got.messages > 1 else 0.0
    phase = Phase(rate, [
        f"received {got.messages:,} of {w.messages:,} in {got.last - got.first:.1f} s;"
        f" CPU {cpu}",
        cpu.per_message("subscriber", got.messages),
        _publish_note(published, consumer_last=got.last),
    ])
    if got.messages < w.messages:
        phase.notes.append(f"INCOMPLETE: no message for {STALL_S:.0f} s")
    return phase


# -- databases -------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(settings: Settings) -> Iterator[str]:
    """A database built from all migrations, dropped afterwards."""
    name = f"oemr_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg.conninfo.make_conninfo(settings.database_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(settings.database_url, dbname=name)
    try:
        schema.migrate(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def kept_database(settings: Settings, name: str) -> tuple[str, bool]:
    """A database of this name, migrated; True if it was created now (and is empty)."""
    admin = psycopg.conninfo.make_conninfo(settings.database_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(settings.database_url, dbname=name)
    schema.migrate(url)
    return url, not exists


# -- 2. write limit --------------------------------------------------------------------------


def _register(conn: psycopg.Connection[Any], w: Workload) -> tuple[list[int], list[int]]:
    """Machines and metrics as the ingester registers them; their ids in workload order."""
    q = queries("ingest", "sql/store.sql")
    serials = [w.serial(m) for m in range(w.machines)]
    none = [None] * w.machines
    conn.execute(q["register_machines"], {
        "tenants": [w.tenant] * w.machines, "serials": serials,
        "protocols": ["json"] * w.machines, "groups": none, "nodes": none,
        "devices": [""] * w.machines})
    found = conn.execute(q["find_json_machines"], {
        "tenants": [w.tenant] * w.machines, "serials": serials}).fetchall()
    machine_ids = {serial: id_ for id_, _tenant, serial in found}
    conn.execute(q["register_metrics"], {"names": list(METRICS)})
    metric_ids = {name: id_ for id_, name in conn.execute(
        q["find_metrics"], {"names": list(METRICS)}).fetchall()}
    return [machine_ids[s] for s in serials], [metric_ids[n] for n in METRICS]


def write_limit(config: Config) -> Phase:
    w = config.workload()
    q = queries("ingest", "sql/store.sql")
    batch = config.settings.ingest_batch_size
    seconds = 0.0
    rows_written = 0
    with fresh_database(config.settings) as url, psycopg.connect(url, autocommit=True) as conn:
        machine_ids, metric_ids = _register(conn, w)
        backend = psutil.Process(conn.info.backend_pid)
        cpu_client = cpu_backend = 0.0
        for first in range(0, w.messages, batch):
            telemetry, states = [], []
            for k in range(first, min(first + batch, w.messages)):
                at, machine = w.time(k), machine_ids[k % w.machines]
                telemetry.extend((at, machine, metric, value)
                                 for metric, value in zip(metric_ids, w.values(k), strict=True))
                states.append((at, machine, "running"))
            started, cpu_started, backend_started = (
                time.perf_counter(), time.process_time(), _cpu_seconds(backend))
            with conn.transaction():
                _copy(conn, q["copy_telemetry"], _TELEMETRY_TYPES, telemetry)
                if config.write_states:
                    _copy(conn, q["copy_states"], _STATE_TYPES, states)
            seconds += time.perf_counter() - started
            cpu_client += time.process_time() - cpu_started
            cpu_backend += _cpu_seconds(backend) - backend_started
            rows_written += len(telemetry) + (len(states) if config.write_states else 0)
    what = "telemetry + state" if config.write_states else "telemetry"
    return Phase(w.messages / seconds, [
        f"{rows_written:,} {what} rows in {seconds:.1f} s of transactions ="
        f" {rows_written / seconds:,.0f} rows/s, batches of {batch:,} messages;"
        f" CPU: client {100 * cpu_client / seconds:.0f}%,"
        f" postgres backend {100 * cpu_backend / seconds:.0f}%",
    ])


def _copy(conn: psycopg.Connection[Any], statement: str, types: list[str],
          rows: list[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


# -- 3. end to end ---------------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Resident memory of one process every 100 ms until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="rss", daemon=True)
        self._proc = psutil.Process(pid)
        self._stop_event = threading.Event()
        self.max_bytes = 0
        self.samples = 0

    def run(self) -> None:
        while not self._stop_event.wait(RSS_EVERY_S):
            try:
                rss = self._proc.memory_info().rss
            except psutil.Error:
                return
            self.max_bytes = max(self.max_bytes, rss)
            self.samples += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class IngesterProcess:
    """``oem-retention ingest run`` as a child process, as production runs it."""

    def __init__(self, env: dict[str, str], state_dir: Path) -> None:
        self._env = env
        self._log = state_dir / "ingester.log"
        self.status_file = state_dir / "run" / f"ingest-{env['OEMR_INGEST_CLIENT_ID']}.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss: RssSampler | None = None

    def start(self) -> IngesterProcess:
        with self._log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oem_retention", "ingest", "run"],
                env=self._env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.rss = RssSampler(self.proc.pid)
        self.rss.start()
        # Its status file is written once a second: watch its socket to the broker instead.
        proc, port = psutil.Process(self.proc.pid), int(self._env["OEMR_MQTT_PORT"])
        deadline = time.monotonic() + 30
        while not any(c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                      for c in proc.net_connections(kind="tcp")):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"ingester did not connect: {self.log_tail()}")
            time.sleep(0.01)
        return self

    def counters(self) -> dict[str, Any]:
        try:
            return dict(orjson.loads(self.status_file.read_bytes()))
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"ingester exited ({self.proc.returncode}): {self.log_tail()}")

    def log_tail(self) -> str:
        return self._log.read_text(errors="replace")[-2000:]

    def stop(self) -> int | None:
        """SIGTERM, as a service manager stops it; its exit code (-9: it had to be killed)."""
        if self.rss is not None and self.rss.is_alive():
            self.rss.stop()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass(slots=True)
class Committed:
    """When the first and the last messages were seen committed."""

    first: float = 0.0
    first_count: int = 0
    last: float = 0.0


def _watch_commits(conn: psycopg.Connection[Any], w: Workload, ingester: IngesterProcess,
                   on_first: Any) -> Committed:
    """Poll the database every 50 ms until every publisher's last message is committed."""
    q = _q()
    last_ks = w.last_messages()
    last_keys = {"tenant": w.tenant, "serials": [w.serial(k) for k in last_ks],
                 "times": [w.time(k) for k in last_ks]}
    seen = Committed()
    progress, progress_at = -1, time.monotonic()
    while True:
        ingester.check_alive()
        polled = time.monotonic()
        if not seen.first:
            count = conn.execute(q["committed_messages"]).fetchone()[0]
            if count:
                seen.first, seen.first_count = polled, count
                on_first()
        if seen.first and conn.execute(q["last_messages_committed"], last_keys).fetchone()[0] \
                == len(last_ks):
            seen.last = polled
            return seen
        stored = ingester.counters().get("stored_messages", 0)
        if stored != progress:
            progress, progress_at = stored, polled
        elif polled - progress_at > STALL_S:
            raise RuntimeError(f"ingester stalled at {stored:,} stored messages:"
                               f" {ingester.log_tail()}")
        time.sleep(max(0.0, POLL_S - (time.monotonic() - polled)))


def _ingester_env(config: Config, w: Workload, *, url: str, state_dir: Path, client_id: str,
                  group: str, fast_path: str) -> dict[str, str]:
    s = config.settings
    return {
        **os.environ,
        "OEMR_DATABASE_URL": url,
        "OEMR_STATE_DIR": str(state_dir),
        "OEMR_MQTT_HOST": s.mqtt_host,
        "OEMR_MQTT_PORT": str(s.mqtt_port),
        "OEMR_INGEST_CLIENT_ID": client_id,
        "OEMR_INGEST_SHARE_GROUP": group,
        "OEMR_INGEST_TENANT_FILTER": w.tenant,
        "OEMR_INGEST_BATCH_SIZE": str(s.ingest_batch_size),
        "OEMR_INGEST_SESSION_EXPIRY_S": str(SESSION_EXPIRY_S),
        "OEMR_INGEST_FAST_PATH": fast_path,
        # No Sparkplug host: it would leave a retained STATE message in the broker.
        "OEMR_SPARKPLUG_HOST_ID": "",
    }


def end_to_end(config: Config, mode: str, ctx: Any, *, fast_path: str = "auto") -> Phase:
    w = config.workload()
    client_id, group = f"{w.tenant}-ingest", f"g{w.tenant}"
    with fresh_database(config.settings) as url, tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        ingester = IngesterProcess(_ingester_env(config, w, url=url, state_dir=state_dir,
                                                 client_id=client_id, group=group,
                                                 fast_path=fast_path), state_dir)
        _open_session(config.address, client_id, w.subscription(group))
        profiler: Profiler | None = None
        try:
            with Publishers(ctx, w, config) as pubs, psycopg.connect(url, autocommit=True) as conn:
                if mode == "backlog":
                    pubs.go()
                    published = pubs.results()
                ingester.start()
                assert ingester.proc is not None
                if config.profile_dir is not None:
                    profiler = Profiler(ingester.proc.pid, config.profile_dir / f"ingester-{mode}")
                cpu = CpuMeter(ingester=psutil.Process(ingester.proc.pid),
                               broker=_broker_process(config.address[1]))
                if mode == "live":
                    cpu.add("publishers", pubs.processes())

                def on_first() -> None:
                    row = conn.execute(_q()["ingester_backend"]).fetchone()
                    cpu.add("postgres backend", psutil.Process(row[0]) if row else None)
                    cpu.start()

                if mode == "live":
                    pubs.go()
                seen = _watch_commits(conn, w, ingester, on_first)
                cpu.stop()
                if profiler is not None:
                    profiler.stop()
                if mode == "live":
                    published = pubs.results()
                totals = conn.execute(_q()["totals"]).fetchone()
            time.sleep(1.1)  # one more status write, with the last batch counted
            counters = ingester.counters()
        finally:
            exit_code = ingester.stop()
            if profiler is not None:
                profiler.stop()
            _end_session(config.address, client_id)
    assert ingester.rss is not None
    window = seen.last - seen.first
    rate = (w.messages - seen.first_count) / window if window > 0 else float("nan")
    batches, write_ms = counters.get("batches", 0), counters.get("batch_ms_total", 0.0)
    phase = Phase(rate, [
        f"MQTT client: {counters.get('mqtt_client_why', '?')}",
        f"{w.messages - seen.first_count:,} messages committed in {window:.1f} s after the first"
        f" batch; CPU {cpu}",
        cpu.per_message("ingester", w.messages - seen.first_count),
        f"{batches:,} batches, mean {write_ms / max(batches, 1):.0f} ms in Store.write"
        f" (max {counters.get('batch_ms_max', 0):.0f} ms), in Store.write"
        f" {write_ms / 10 / max(window, 1e-9):.0f}% of the time;"
        f" RSS sampled {ingester.rss.samples} times",
        _publish_note(published, consumer_last=seen.last),
    ], max_rss_mb=ingester.rss.max_bytes / 2**20)
    expected = (w.messages * len(METRICS), w.messages, 0)
    if tuple(totals) != expected:
        phase.notes.append(f"UNEXPECTED ROWS: telemetry, states, dead letters = {tuple(totals)},"
                           f" expected {expected}")
    if exit_code:
        phase.notes.append(f"ingester exited with {exit_code} on SIGTERM: {ingester.log_tail()}")
    if profiler is not None:
        phase.notes.extend(profiler.summary())
    return phase


# -- profiling -------------------------------------------------------------------------------


class Profiler:
    """py-spy (from the venv) sampling the ingester; ``summary()`` says where its time went."""

    def __init__(self, pid: int, stem: Path) -> None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        self.raw = stem.with_suffix(".txt")
        spy = Path(sys.executable).with_name("py-spy")
        # --idle: samples waiting in epoll count too, so the parts add up to wall time.
        with stem.with_suffix(".log").open("wb") as log:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [str(spy), "record", "--pid", str(pid), "--rate", "200", "--nonblocking",
                 "--function", "--idle", "--format", "raw", "--output", str(self.raw)],
                stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def summary(self, top: int = 20) -> list[str]:
        if not self.raw.exists():
            return ["profile: py-spy wrote nothing (is py-spy installed in the venv?)"]
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        parts: Counter[str] = Counter()
        total = 0
        for line in self.raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            loop = next((i for i, f in enumerate(frames) if f.startswith(_LOOP)), None)
            if loop is None:
                continue  # not the event loop's thread (paho's connect runs in an executor)
            frames = frames[loop + 1:] or frames[loop:]
            n = int(count)
            total += n
            own[frames[-1]] += n
            parts[_part(frames)] += n
            for frame in set(frames):
                inclusive[frame] += n
        if not total:
            return ["profile: no samples of the event loop"]
        pct = 100 / total
        lines = [f"profile of the ingester's event loop thread: {total:,} samples at 200 Hz"
                 f" ({total / 200:.1f} s), raw stacks in {self.raw}", "  time by part:"]
        lines += [f"    {n * pct:5.1f}%  {part}" for part, n in parts.most_common()]
        lines.append("  own time (leaf frame):")
        lines += [f"    {n * pct:5.1f}%  {f}" for f, n in own.most_common(top)]
        lines.append("  inclusive (below the event loop):")
        lines += [f"    {n * pct:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
        return lines


_LOOP = "BaseEventLoop._run_once ("
# The first of these found from the leaf up names the part a sample belongs to.
_PARTS = (
    ("EpollSelector.select", "idle: waiting in epoll (socket or database)"),
    ("Ingester._decode", "decode: topics.parse + json_contract.decode"),
    ("Ingester._on_message", "Ingester._on_message bookkeeping (entries, Message)"),
    ("Ingester._ack", "acks: paho ack() per message after commit"),
    ("Store.write", "Store.write: resolve, encode, COPY, commit"),
    ("Ingester._store_until_done", "batch assembly (_store_until_done)"),
    ("Broker._read", "paho receive: loop_read, packet parsing, MQTTMessage"),
    ("loop_write", "paho send: loop_write (PUBACKs)"),
    ("_write_status", "status file"),
)


def _part(frames: list[str]) -> str:
    for frame in reversed(frames):
        for mark, part in _PARTS:
            if mark in frame:
                return part
    return "event loop and other"


# -- the run ---------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m tests.bench.ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000, help="per measurement")
    p.add_argument("--machines", type=int, default=1000)
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--inflight", type=int, default=1000,
                   help="QoS 1 messages in flight per publisher")
    p.add_argument("--publisher", choices=("raw", "paho"), default="raw",
                   help="raw: pipelined MQTT 5 writer (offers what the broker takes);"
                        " paho: paho 2 client (its CPU cost caps the offered rate)")
    p.add_argument("--mode", choices=("live", "backlog", "both"), default="both")
    p.add_argument("--fast-path", choices=("auto", "off", "both"), default="auto",
                   help="end to end with the ingester's fast MQTT client (auto), stock paho"
                        " (off: OEMR_INGEST_FAST_PATH=off), or both")
    p.add_argument("--batch-size", type=int, default=None,
                   help="OEMR_INGEST_BATCH_SIZE for the ingester and the write limit")
    p.add_argument("--write-states", action="store_true",
                   help="write limit also COPYs the state row the ingester stores per message")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="sample the ingester with py-spy, raw stacks into DIR (perturbs figures)")
    a = p.parse_args(argv)
    overrides = {"ingest_batch_size": a.batch_size} if a.batch_size else {}
    return Config(messages=a.messages, machines=a.machines, publishers=a.publishers,
                  window=a.inflight,
                  modes=("live", "backlog") if a.mode == "both" else (a.mode,),
                  settings=Settings(**overrides), profile_dir=a.profile,
                  write_states=a.write_states, publisher=a.publisher,
                  fast_paths=("auto", "off") if a.fast_path == "both" else (a.fast_path,))


def _print_phase(title: str, phase: Phase) -> None:
    print(f"{title}: {phase.msg_s:,.0f} msg/s ({phase.msg_s * len(METRICS):,.0f} rows/s)")
    for note in phase.notes:
        print(f"    {note}")
    sys.stdout.flush()


def _print_summary(config: Config, write: Phase, rows: dict[str, tuple[Phase, Phase]]) -> None:
    print("\nsummary (msg/s; 10 telemetry rows per message; indicative: shared 2-core host)")
    width = max(9, *(len(mode) + 1 for mode in rows))
    print(f"{'mode':<{width}}{'receive':>10}{'write':>10}{'end to end':>12}{'ratio':>8}"
          f"{'max RSS':>10}")
    for mode, (rx, e2e) in rows.items():
        ratio = e2e.msg_s / max(min(rx.msg_s, write.msg_s), 1e-9)
        print(f"{mode:<{width}}{rx.msg_s:>10,.0f}{write.msg_s:>10,.0f}{e2e.msg_s:>12,.0f}"
              f"{ratio:>8.2f}{e2e.max_rss_mb or 0:>7.0f} MB"
              f"   {_verdicts(ratio, e2e)}")
    print(f"{'target':<{width}}{'':>10}{'':>10}{f'>= {TARGET_MSG_S:,}':>12}"
          f"{f'>= {TARGET_RATIO}':>8}"
          f"{f'<= {TARGET_RSS_MB} MB':>10}")
    print(f"ratio = end to end / min(receive, write); end to end {TARGET_MSG_S:,} msg/s ="
          f" {TARGET_MSG_S * len(METRICS):,} rows/s. Batch {config.settings.ingest_batch_size:,},"
          f" {config.publishers} publishers, {config.messages:,} messages per measurement.")


def _verdicts(ratio: float, e2e: Phase) -> str:
    below = [name for name, ok in (
        ("ratio", ratio >= TARGET_RATIO), ("rate", e2e.msg_s >= TARGET_MSG_S),
        ("RSS", (e2e.max_rss_mb or 0) <= TARGET_RSS_MB)) if not ok]
    return f"below target: {', '.join(below)}" if below else "targets met"


_CLIENTS = {"auto": "fast", "off": "stock"}


def running_ingesters(settings: Settings, *, fresh_s: float = 30.0) -> list[Path]:
    """Status files of ingesters that wrote one lately (an `oem-retention up` still running)."""
    now = time.time()
    return [path for path in sorted((settings.state_dir / "run").glob("ingest-*.json"))
            if now - path.stat().st_mtime < fresh_s]


def main(argv: list[str] | None = None) -> None:
    config = _parse(argv)
    ctx = mp.get_context("spawn")
    s = config.settings
    if running := running_ingesters(s):
        # Its subscription takes every tenant's telemetry: the benchmark's would end up in its
        # database, and it would share the cores with the figures.
        sys.exit(f"an ingester is running ({', '.join(map(str, running))}): stop"
                 " `oem-retention up` (the demo) first")
    print(f"ingest bench: {config.messages:,} messages x {len(METRICS)} metrics,"
          f" {config.machines:,} machines, {config.publishers} {config.publisher} publishers"
          f" ({config.window} in flight each), batch {s.ingest_batch_size:,}, Receive Maximum"
          f" {s.receive_maximum:,}; broker {s.mqtt_host}:{s.mqtt_port}, {os.cpu_count()} CPUs")
    stored_before = broker_stored(config.address)
    if stored_before is not None and stored_before > STORED_WARNING:
        print(f"WARNING: the broker holds {stored_before:,} messages for offline sessions;"
              " with persistence on, its periodic autosave of them blocks deliveries for"
              " seconds: MQTT figures will be low.")
    sys.stdout.flush()
    write = write_limit(config)
    _print_phase("write limit (COPY binary)", write)
    rows: dict[str, tuple[Phase, Phase]] = {}
    for mode in config.modes:
        rx_paho = receive_limit(config, mode, ctx)
        _print_phase(f"receive limit, {mode}, stock paho subscriber", rx_paho)
        rx_fast = receive_limit(config, mode, ctx, fast=True)
        _print_phase(f"receive limit, {mode}, the ingester's MQTT client as subscriber", rx_fast)
        # The stricter of the two is the limit: what the broker delivers to the best client.
        rx = max(rx_paho, rx_fast, key=lambda phase: phase.msg_s)
        for fast_path in config.fast_paths:
            e2e = end_to_end(config, mode, ctx, fast_path=fast_path)
            label = mode if config.fast_paths == ("auto",) else f"{mode}, {_CLIENTS[fast_path]}"
            _print_phase(f"end to end, {label}", e2e)
            rows[label] = (rx, e2e)
    _print_summary(config, write, rows)
    stored_after = broker_stored(config.address, fresh=True)
    if stored_before is not None and stored_after is not None \
            and stored_after - stored_before > config.messages // 2:
        print(f"WARNING: the broker's stored messages grew by {stored_after - stored_before:,}"
              " during this run. Another offline session with a matching filter (such as an"
              " ingester with the default client id and tenant filter '+') is queueing the"
              " bench's messages: end it (connect with its client id, clean start, session"
              " expiry 0).")


if __name__ == "__main__":
    main()
