"""The ingester: MQTT in, batches of decoded messages out to TimescaleDB, acks after commit.

Nothing is lost on the JSON contract: messages come at QoS 1 over a persistent session, are
acknowledged to the broker only after the transaction that stored them (or their dead letter) has
committed. Up to ``ingest_writers`` batches are written at once, each on its own connection, and
the broker's in-flight window (MQTT 5 Receive Maximum) is one batch more than that, so a batch
fills while the others commit. When the database is away, batches are retried with backoff;
unacknowledged messages fill the window and the broker stops sending (QoS 0 Sparkplug traffic
beyond a high-water mark is shed before decoding, so its seq gap is recorded), so memory stays
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.errors import DatabaseUnavailableError
from core.settings import Settings
from ingest import json_contract, topics
from ingest.broker import Broker, ClientChoice, Publish, SessionOptions, choose_client
from ingest.models import Decoded, Rejected
from ingest.sparkplug import NOT_A_HOST, SparkplugHost
from ingest.store import (
    Batch,
    ColumnLayoutError,
    DeadLetter,
    Message,
    PoisonBatchError,
    Store,
    Written,
)

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Counters:
    """What the ingester has done since it started; written to its status file every second."""

    received: int = 0
    stored_messages: int = 0
    telemetry_rows: int = 0
    state_rows: int = 0
    events: int = 0
    dead_lettered: int = 0
    batches: int = 0
    batch_ms_last: float = 0.0
    batch_ms_max: float = 0.0
    batch_ms_total: float = 0.0
    db_retries: int = 0
    acks_skipped: int = 0
    qos0_shed: int = 0
    pending: int = 0  # received, waiting for a batch
    writing: int = 0  # in batches being written now
    mqtt_connected: bool = False
    # Which MQTT client runs: "fast" (ingest/broker.py's fast path) or "stock" (paho as
    # shipped), and why (OEMR_INGEST_FAST_PATH, or paho internals that differ).
    mqtt_client: str = ""
    mqtt_client_why: str = ""
    db_ok: bool = False
    # Why the last write failed, while writes fail (unreachable, or tables not as we write them).
    db_error: str | None = None
    started_at: float = field(default_factory=time.time)
    updated_at: float = 0.0


@dataclass(slots=True)
class _Entry:
    mid: int
    qos: int
    generation: int
    dup: bool
    message: Message | None = None
    dead_letter: DeadLetter | None = None


class Ingester:
    """One ingester process's work; ``run()`` until stopped."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.counters = Counters()
        late_after = timedelta(seconds=settings.ingest_late_after_s)
        self._all_stores = [Store(settings.database_url, late_after=late_after)
                            for _ in range(settings.ingest_writers)]
        self._stores: asyncio.Queue[Store] = asyncio.Queue()
        for store in self._all_stores:
            self._stores.put_nowait(store)
        self._writes: set[asyncio.Task[None]] = set()
        self._writing: dict[int, int] = {}  # id of a write task's batch -> messages in it
        self._write_failure: BaseException | None = None
        self._pending: list[_Entry] = []
        self._nonempty = asyncio.Event()
        self._full = asyncio.Event()
        self._stopping = asyncio.Event()
        self._max_skew = timedelta(seconds=settings.ingest_max_clock_skew_s)
        self._host = SparkplugHost(
            tenant=settings.sparkplug_tenant,
            rebirth_debounce=timedelta(seconds=settings.sparkplug_rebirth_debounce_s),
            max_skew=self._max_skew,
        ) if settings.sparkplug_host_id else None
        self._broker: Broker | None = None
        # Past this many pending messages the socket is paused (briefly: see Broker.pause) and
        # QoS 0 messages are shed.
        self._high_water = (settings.ingest_writers + 2) * settings.ingest_batch_size
        # Sparkplug 3.0: the STATE birth of a connection carries the same timestamp as its will.
        self._state_time = _now()

    def stop(self) -> None:
        """Ask ``run()`` to finish the batch in hand and return."""
        self._stopping.set()

    async def run(self) -> None:
        """Connect, ingest until stopped, flush what was received, disconnect."""
        # Each pending message is a few dozen objects: with the default thresholds the cyclic
        # collector ran every few hundred messages and took 15% of the CPU in the benchmark.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 50)
        await self._check_database()
        client = self._choose_client()
        s = self._settings
        state_topic = f"spBv1.0/STATE/{s.sparkplug_host_id}" if self._host else None
        self._broker = Broker(
            SessionOptions(
                host=s.mqtt_host, port=s.mqtt_port, client_id=s.ingest_client_id,
                keepalive=s.mqtt_keepalive, session_expiry_s=s.ingest_session_expiry_s,
                receive_maximum=s.receive_maximum, username=s.mqtt_username,
                password=s.mqtt_password, will_topic=state_topic,
            ),
            on_message=self._on_message,
            subscriptions=self._subscriptions(),
            on_connected=self._announce_host,
            fast=client.fast,
        )
        tasks = [
            asyncio.create_task(self._flush_loop(), name="flush"),
            asyncio.create_task(self._connection_loop(), name="mqtt"),
            asyncio.create_task(self._status_loop(), name="status"),
        ]
        watch = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([watch, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not watch and task.exception():
                    # A bug, not bad input or an outage: stop, unacked messages come again.
                    raise RuntimeError(f"ingester task {task.get_name()} failed") from (
                        task.exception())
            if self._write_failure is not None:
                raise RuntimeError("a batch write failed") from self._write_failure
        finally:
            watch.cancel()
            tasks[1].cancel()
            self._broker.pause(for_good=True)
            self._full.set()
            self._nonempty.set()
            # The flusher drains what was received, then ends (bounded by shutdown grace). One
            # that already failed is not awaited: its exception, raised again here, would chain
            # to the RuntimeError it caused, a cycle on which the CLI's traceback printer loops
            # forever instead of letting the process exit.
            if not tasks[0].done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(tasks[0]), timeout=10)
            # Past the grace, batches still being written (the database is away) are abandoned:
            # they were never acked, so the broker sends them again to the next run.
            for task in [*tasks, *self._writes]:
                task.cancel()
            await asyncio.gather(*tasks, *self._writes, return_exceptions=True)
            if state_topic and self._broker.connected:
                # Sparkplug 3.0: a host leaving on purpose publishes its death STATE before the
                # DISCONNECT; the broker sends the will only for a connection that breaks.
                self._broker.publish(state_topic, SparkplugHost.state_payload(
                    online=False, now=self._state_time), qos=1, retain=True)
            await self._broker.disconnect()
            for store in self._all_stores:
                await store.close()
            self._write_status()

    async def _check_database(self) -> None:
        """Refuse to start on tables the binary COPY cannot write (``ColumnLayoutError``).

        An unreachable database is no reason not to start: batches wait for it (unacked).
        """
        try:
            await self._all_stores[0].connect()
        except DatabaseUnavailableError as exc:
            self.counters.db_error = str(exc)
            logger.warning("database unreachable at start (%s): batches wait for it, and the"
                           " tables are checked when it answers", exc)

    def _choose_client(self) -> ClientChoice:
        choice = choose_client(self._settings.ingest_fast_path)
        self.counters.mqtt_client, self.counters.mqtt_client_why = choice.path, choice.why
        if choice.problems:
            logger.warning("MQTT client: %s (ingest/broker.py); what differs: %s", choice.why,
                           "; ".join(choice.problems))
        else:
            logger.info("MQTT client: %s", choice.why)
        return choice

    def _subscriptions(self) -> list[tuple[str, SubscribeOptions]]:
        s = self._settings
        json_filter = f"{topics.JSON_ROOT}/{s.ingest_tenant_filter}/#"
        if s.ingest_share_group:
            json_filter = f"$share/{s.ingest_share_group}/{json_filter}"
        subs = [(json_filter, SubscribeOptions(qos=1))]
        if self._host:
            subs.append((f"{topics.SPARKPLUG_ROOT}/{s.sparkplug_group_filter}/#",
                         SubscribeOptions(qos=1, noLocal=True)))
        return subs

    def _announce_host(self) -> None:
        if self._host and self._broker:
            self._broker.publish(
                f"spBv1.0/STATE/{self._settings.sparkplug_host_id}",
                SparkplugHost.state_payload(online=True, now=self._state_time), qos=1,
                retain=True)

    # -- receiving -----------------------------------------------------------------------

    def _on_message(self, msg: Publish) -> None:
        assert self._broker is not None
        self.counters.received += 1
        if msg.qos == 0 and len(self._pending) >= self._high_water:
            # QoS 1 traffic is bounded by the in-flight window; QoS 0 (Sparkplug) is not, and
            # while the database is away it is shed here, before decoding, so Sparkplug's seq
            # check records the gap and asks for a rebirth. The socket keeps being read, so
            # keepalive and reconnects go on.
            self.counters.qos0_shed += 1
            return
        entry = _Entry(msg.mid, msg.qos, self._broker.generation, bool(msg.dup))
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "replace")
        payload = bytes(msg.payload)
        limit = self._settings.ingest_max_payload_bytes
        if len(payload) > limit:
            # Keep its start and a digest, not the whole: memory and the table stay bounded.
            entry.dead_letter = DeadLetter(topic, payload[:limit], (
                f"payload of {len(payload)} bytes is over the limit of {limit}"
                f" (OEMR_INGEST_MAX_PAYLOAD_BYTES); its first {limit} bytes are kept, sha256 of"
                f" the whole: {hashlib.sha256(payload).hexdigest()}"), size=len(payload))
            self._enqueue(entry)
            return
        try:
            decoded = self._decode(topic, payload)
        except Rejected as exc:
            entry.dead_letter = DeadLetter(topic, payload, exc.reason)
            if exc.keep is not None:
                entry.message = Message(topic, b"", exc.keep)
        except Exception as exc:
            # A decoder bug must not stall the stream or lose the message: keep it, say so.
            logger.exception("decoder failed on a message of %s", topic)
            entry.dead_letter = DeadLetter(topic, payload, f"internal decoder error: {exc!r:.300}"
                                           " (please report; the raw message is kept here)")
        else:
            if decoded is not None:
                entry.message = Message(topic, payload, decoded)
        self._enqueue(entry)

    def _enqueue(self, entry: _Entry) -> None:
        self._pending.append(entry)
        self._nonempty.set()
        if len(self._pending) >= self._settings.ingest_batch_size:
            self._full.set()
        if len(self._pending) >= self._high_water:
            assert self._broker is not None
            self._broker.pause()

    def _decode(self, topic: str, payload: bytes) -> Decoded | None:
        route = topics.parse(topic)
        if isinstance(route, topics.JsonTopic):
            return json_contract.decode(route, payload, now=_now(), max_skew=self._max_skew)
        if self._host is None:
            raise Rejected(NOT_A_HOST)
        outcome = self._host.handle(route, payload, now=_now())
        assert self._broker is not None
        for command in outcome.commands:
            self._broker.publish(command.topic, command.payload, qos=0)
        if outcome.rejected:
            gaps = outcome.decoded.gaps
            raise Rejected(outcome.rejected, keep=Decoded(gaps=gaps) if gaps else None)
        decoded = outcome.decoded
        empty = not (decoded.samples or decoded.events or decoded.gaps or decoded.connectivity)
        return None if empty else decoded

    # -- storing -------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        linger = self._settings.ingest_linger_ms / 1000
        while True:
            await self._nonempty.wait()
            if not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), timeout=linger)
            entries = self._pending[: self._settings.ingest_batch_size]
            del self._pending[: len(entries)]
            if len(self._pending) < self._settings.ingest_batch_size:
                self._full.clear()
            if not self._pending:
                self._nonempty.clear()
            if self._broker and len(self._pending) < self._settings.ingest_batch_size:
                self._broker.resume()
            if entries:
                store = await self._stores.get()  # waits while every writer is busy
                task = asyncio.create_task(self._store_until_done(entries, store))
                self._writes.add(task)
                task.add_done_callback(self._write_done)
            if self._stopping.is_set() and not self._pending:
                await asyncio.gather(*self._writes, return_exceptions=True)
                return

    def _write_done(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None and self._write_failure is None:
            # A bug, not bad input or an outage: stop; unacked messages come again.
            self._write_failure = task.exception()
            logger.error("a batch write failed: %r", self._write_failure)
            self._stopping.set()

    async def _store_until_done(self, entries: list[_Entry], store: Store) -> None:
        self._writing[id(entries)] = len(entries)
        try:
            await self._store_entries(entries, store)
        finally:
            del self._writing[id(entries)]
            self._stores.put_nowait(store)

    async def _store_entries(self, entries: list[_Entry], store: Store) -> None:
        batch = Batch(
            messages=[e.message for e in entries if e.message is not None],
            dead_letters=[e.dead_letter for e in entries if e.dead_letter is not None],
            redelivered=any(e.dup for e in entries),
        )
        started = time.perf_counter()
        try:
            written = await self._write_retrying(batch, store)
        except PoisonBatchError as exc:
            logger.error("database refused a batch (%s): storing its messages one by one", exc)
            written = await self._store_one_by_one(batch, store)
        self._count(written, len(batch.messages), time.perf_counter() - started)
        self._ack(entries)

    async def _write_retrying(self, batch: Batch, store: Store) -> Written:
        """Write until the database takes the batch; ``PoisonBatchError`` if it refuses it.

        An unreachable database and tables the COPY cannot write are the server's faults, not
        the messages': retried with backoff, never acked meanwhile, reported in the status.
        """
        delay = 0.2
        while True:
            try:
                written = await store.write(batch)
            except (DatabaseUnavailableError, ColumnLayoutError) as exc:
                c = self.counters
                c.db_ok, c.db_retries, c.db_error = False, c.db_retries + 1, str(exc)
                if isinstance(exc, ColumnLayoutError):
                    logger.error("cannot write a batch of %d messages, retrying in %.1fs: %s",
                                 len(batch.messages) + len(batch.dead_letters), delay, exc)
                else:
                    logger.warning("database unavailable, batch of %d kept for retry in %.1fs:"
                                   " %s", len(batch.messages) + len(batch.dead_letters), delay,
                                   exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self.counters.db_ok, self.counters.db_error = True, None
                return written

    async def _store_one_by_one(self, batch: Batch, store: Store) -> Written:
        total = Written(0, 0, 0, 0)
        singles = [Batch(messages=[m], redelivered=True) for m in batch.messages]
        singles += [Batch(dead_letters=[d]) for d in batch.dead_letters]
        for single in singles:
            total += await self._write_single(single, store)
        return total

    async def _write_single(self, single: Batch, store: Store) -> Written:
        while True:
            try:
                return await self._write_retrying(single, store)
            except PoisonBatchError as exc:
                if single.messages:
                    m = single.messages[0]
                    single = Batch(dead_letters=[DeadLetter(
                        m.topic, m.payload, f"the database refused this message: {exc}")])
                elif single.dead_letters[0].payload:
                    # Keep the record of the failure even if its bytes cannot be stored.
                    d = single.dead_letters[0]
                    single = Batch(dead_letters=[DeadLetter(
                        d.topic, b"", f"{d.reason} (payload of {len(d.payload)} bytes not kept:"
                        f" the database refused it: {exc})")])
                else:
                    # Never ack what was not stored: stop; the broker sends it again.
                    raise RuntimeError(f"database refused a dead letter: {exc}") from exc

    def _count(self, written: Written, messages: int, seconds: float) -> None:
        c = self.counters
        c.batches += 1
        c.stored_messages += messages
        c.telemetry_rows += written.telemetry_rows
        c.state_rows += written.state_rows
        c.events += written.events
        c.dead_lettered += written.dead_letters
        ms = seconds * 1000
        c.batch_ms_last = ms
        c.batch_ms_max = max(c.batch_ms_max, ms)
        c.batch_ms_total += ms

    def _ack(self, entries: list[_Entry]) -> None:
        assert self._broker is not None
        for entry in entries:
            # Ack only after commit: the broker redelivers whatever we had not stored.
            if entry.qos > 0 and not self._broker.ack(entry.mid, entry.qos, entry.generation):
                self.counters.acks_skipped += 1
        self._broker.flush_acks()  # one write for the batch's PUBACKs

    # -- connection and status -----------------------------------------------------------

    async def _connection_loop(self) -> None:
        assert self._broker is not None
        delay = 0.5
        while True:
            self._state_time = _now()
            will = SparkplugHost.state_payload(online=False, now=self._state_time)
            try:
                await self._broker.connect(will_payload=will if self._host else None)
            except (OSError, TimeoutError) as exc:
                self.counters.mqtt_connected = False
                logger.warning("cannot reach the MQTT broker (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            self.counters.mqtt_connected = True
            await self._broker.wait_disconnected()
            self.counters.mqtt_connected = False

    async def _status_loop(self) -> None:
        while True:
            self._write_status()
            await asyncio.sleep(1)

    def _write_status(self) -> None:
        self.counters.pending = len(self._pending)
        self.counters.writing = sum(self._writing.values())
        self.counters.updated_at = time.time()
        path = status_path(self._settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(asdict(self.counters)))
        tmp.replace(path)


def status_path(settings: Settings) -> Path:
    """Where an ingester writes its counters (read by ``oem-retention ingest health``)."""
    return settings.state_dir / "run" / f"ingest-{settings.ingest_client_id}.json"


def health_problems(status: Mapping[str, Any], *, age_s: float, max_age_s: float) -> list[str]:
    """What is wrong with an ingester, from its status file's counters (empty: healthy).

    Examples
    --------
    >>> health_problems({"mqtt_connected": True, "batches": 0, "db_ok": False,
    ...                  "db_error": "connection refused"}, age_s=1.0, max_age_s=10.0)
    ['cannot write: connection refused']
    """
    problems = []
    if age_s > max_age_s:
        problems.append(f"status {age_s:.0f} s old (the ingester is gone or hung)")
    if not status["mqtt_connected"]:
        problems.append("not connected to the broker")
    # A write error counts before the first batch too: an ingester whose every batch fails
    # has stored none.
    if status.get("db_error") or (status["batches"] and not status["db_ok"]):
        problems.append(f"cannot write: {status.get('db_error') or 'database not ok'}")
    return problems


def _now() -> datetime:
    return datetime.now(UTC)


async def serve(settings: Settings) -> None:
    """Run an ingester until SIGINT or SIGTERM."""
    ingester = Ingester(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, ingester.stop)
    logger.info("ingester %s starting (pid %d)", settings.ingest_client_id, os.getpid())
    if settings.ingest_share_group:
        logger.warning(
            "shared subscription group %r: Mosquitto 2.0 does not restore shared subscriptions"
            " after a broker restart, so messages published between the restart and this"
            " ingester's reconnection are dropped by the broker (docs/mqtt.md)",
            settings.ingest_share_group)
    await ingester.run()
