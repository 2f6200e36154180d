"""Dead letters replayed: decoded again with today's decoders, stored where they now decode.

How an operator recovers after fixing what made messages fail (a topic or payload mismatch fixed
in the decoders, a setting such as the clock-skew bound, a machine's protocol conflict, a
Sparkplug host switched on): ``oem-retention ingest replay`` reads the selected dead letters in
arrival order, decodes each as the ingester would have when it was last received (time bounds are
relative to that moment, not to now), and

- stores what now decodes through the ingester's own store, deduplicated (the unique keys of
  telemetry, states and events: a message stored before, or replayed twice, is stored once), and
  deletes its dead letter in the same transaction;
- keeps what still fails, with the reason today's decoders give (``reason`` is updated);
- leaves alone what cannot be replayed: a payload over the size limit was kept as its first bytes.

Sparkplug B (``SparkplugHost.decode_standalone``): a message is read for what it carries itself.
Births name their metrics and are replayed (samples, and the serial number they declare); DATA
only if its metrics carry their names and its machine was registered by a stored birth (else its
serial is unknown); alias-only DATA and deaths stay dead letters, because alias bindings, seq and
bdSeq were the session's, and replay has no session. No seq gaps, connectivity changes or
online/offline events are made: they were recorded, or not, when the messages came.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from core.errors import OemrError
from core.settings import Settings
from core.sql import queries
from ingest import json_contract, topics
from ingest.models import Decoded, Rejected
from ingest.sparkplug import NOT_A_HOST, SparkplugHost
from ingest.store import Batch, Message, PoisonBatchError, Store, Written

logger = logging.getLogger(__name__)

CHUNK = 2000  # dead letters per transaction, as a default ingester batch
# What varies from one message to the next in a reason (quoted names, numbers, times): replaced
# to group reasons by kind in the report.
_DETAILS = re.compile(r"'[^']*'|\"[^\"]*\"|\d[\d:.\-T+Z]*")


class ReplayError(OemrError):
    """The replay was asked for something it cannot do (a --since it cannot read)."""


@dataclass(frozen=True, slots=True)
class _Letter:
    id: int
    topic: str
    payload: bytes
    size: int
    reason: str
    received_at: datetime


@dataclass(slots=True)
class ReplayReport:
    """What a replay did (or, dry, would do)."""

    dry_run: bool
    selected: int = 0
    stored: int = 0  # dead letters whose messages decoded and were stored (and are gone)
    empty: int = 0  # of those, messages that decode to nothing to store (a STATE, say)
    values: int = 0  # what the stored messages hold: telemetry values, states, events
    states: int = 0
    events: int = 0
    written: Written = field(default_factory=lambda: Written(0, 0, 0, 0))  # rows new to tables
    truncated: int = 0  # kept as their first bytes: cannot be replayed
    still_bad: Counter[str] = field(default_factory=Counter)  # by kind of reason
    examples: dict[str, str] = field(default_factory=dict)  # a reason of each kind
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The report, for a person."""
        rate = self.selected / self.seconds if self.seconds > 0 else 0.0
        verb = "would store" if self.dry_run else "decoded and stored"
        out = [f"dead letters selected: {self.selected:,}"
               f" ({self.seconds:.1f} s, {rate:,.0f} per second)"]
        out.append(f"{verb}: {self.stored:,} messages ({self.values:,} telemetry values,"
                   f" {self.states:,} states, {self.events:,} events"
                   + (f"; {self.empty:,} with nothing to store)" if self.empty else ")"))
        if not self.dry_run:
            w = self.written
            out.append(f"  new rows: telemetry {w.telemetry_rows:,}, machine_states"
                       f" {w.state_rows:,}, machine_events {w.events:,} (rows stored before"
                       " are not written twice)")
        out.append(f"still bad: {sum(self.still_bad.values()):,}"
                   + (", by reason (today's, now in dead_letters.reason):" if self.still_bad
                      and not self.dry_run else ", by reason:" if self.still_bad else ""))
        for kind, n in self.still_bad.most_common():
            out.append(f"  {n:>9,}  {self.examples[kind][:300]}")
        if self.truncated:
            out.append(f"not replayable: {self.truncated:,} (over the payload size limit when"
                       " received: only their first bytes were kept)")
        if self.dry_run:
            out.append("dry run: nothing was written")
        return out

    def bad(self, reason: str) -> None:
        """Count a dead letter that still does not decode, by kind of reason."""
        kind = _DETAILS.sub("...", reason)
        self.still_bad[kind] += 1
        self.examples.setdefault(kind, reason)


class _Decoders:
    """The ingester's decoders, as its settings configure them, for messages out of session."""

    def __init__(self, settings: Settings, devices: set[tuple[str, str, str]]) -> None:
        self._max_skew = timedelta(seconds=settings.ingest_max_clock_skew_s)
        self._limit = settings.ingest_max_payload_bytes
        self._host = SparkplugHost(
            tenant=settings.sparkplug_tenant, rebirth_debounce=timedelta(0),
            max_skew=self._max_skew) if settings.sparkplug_host_id else None
        self._devices = devices

    def decode(self, letter: _Letter) -> Decoded:
        """What the message decodes to; ``Rejected`` with today's reason."""
        if letter.size > self._limit:
            raise Rejected(f"payload of {letter.size} bytes is over the limit of {self._limit}"
                           " (OEMR_INGEST_MAX_PAYLOAD_BYTES)")
        route = topics.parse(letter.topic)
        if isinstance(route, topics.JsonTopic):
            return json_contract.decode(route, letter.payload, now=letter.received_at,
                                        max_skew=self._max_skew)
        if self._host is None:
            raise Rejected(NOT_A_HOST)
        decoded = self._host.decode_standalone(route, letter.payload, now=letter.received_at)
        device = (route.group, route.edge_node, route.device or "")
        if route.message_type.endswith("BIRTH"):
            self._devices.add(device)
        elif decoded.samples and device not in self._devices:
            raise Rejected(f"{route.message_type}: {'/'.join(device).rstrip('/')} has no stored"
                           " birth: its serial (which a birth may declare) is unknown, so its"
                           " DATA is not replayed")
        return decoded


async def replay(settings: Settings, *, reason: str | None = None, since: str | None = None,
                 dry_run: bool = False, chunk: int = CHUNK) -> ReplayReport:
    """Replay the dead letters selected by ``reason`` and ``since``; see the module's docstring.

    ``reason``: those whose reason contains this text (case-insensitive). ``since``: those last
    received since a time (ISO 8601; UTC if it has no zone) or within a PostgreSQL interval
    (``7 days``). ``dry_run``: decode and report, write nothing.
    """
    started = time.perf_counter()
    q = queries("ingest", "sql/replay.sql")
    store = Store(settings.database_url,
                  late_after=timedelta(seconds=settings.ingest_late_after_s))
    async with await psycopg.AsyncConnection.connect(
            settings.database_url, autocommit=True, application_name="oemr-replay") as conn:
        select = {"reason": reason, "since": await _since(conn, q, since), "limit": chunk}
        devices = {(group, node, device) for group, node, device in await (
            await conn.execute(q["sparkplug_devices"])).fetchall()}
        run = _Replay(conn, q, store, _Decoders(settings, devices), ReplayReport(dry_run))
        after = 0
        try:
            while rows := await (await conn.execute(
                    q["dead_letters"], {**select, "after": after})).fetchall():
                after = rows[-1][0]
                await run.chunk([_Letter(*row) for row in rows])
        finally:
            await store.close()
    run.report.seconds = time.perf_counter() - started
    return run.report


async def _since(conn: psycopg.AsyncConnection[Any], q: dict[str, str],
                 since: str | None) -> datetime | None:
    if since is None:
        return None
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        pass
    else:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        row = await (await conn.execute(q["since"], {"ago": since})).fetchone()
    except psycopg.DataError as exc:
        raise ReplayError(f"--since {since!r} is neither a time (ISO 8601, such as"
                          " 2026-12-01T08:00Z) nor a PostgreSQL interval (such as '7 days')"
                          ) from exc
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


@dataclass(slots=True)
class _Replay:
    conn: psycopg.AsyncConnection[Any]
    q: dict[str, str]
    store: Store
    decoders: _Decoders
    report: ReplayReport

    async def chunk(self, letters: list[_Letter]) -> None:
        """Decode the letters; store what decodes, give the rest today's reason."""
        report = self.report
        report.selected += len(letters)
        # Most dead letters were never stored: COPY straight into the tables, and a batch that
        # meets a row stored before is written again deduplicated (Store.write), 3x slower.
        batch = Batch(redelivered=False, settles=[])
        ids: list[int] = []
        reasons: list[tuple[int, str]] = []
        for letter in letters:
            if letter.size > len(letter.payload):
                report.truncated += 1
                continue
            try:
                decoded = self.decoders.decode(letter)
            except Rejected as exc:
                reasons.append((letter.id, exc.reason))
                continue
            except Exception as exc:
                logger.exception("decoder failed on dead letter %s of %s", letter.id,
                                 letter.topic)
                reasons.append((letter.id, f"internal decoder error: {exc!r:.300} (please"
                                           " report; the raw message is kept here)"))
                continue
            batch.messages.append(Message(letter.topic, letter.payload, decoded))
            ids.append(letter.id)
        batch.settles = ids
        if not report.dry_run and batch.messages:
            await self._store(batch)
            reasons += batch.unsettled
        _count(batch, report)
        for _, why in reasons:
            report.bad(why)
        if not report.dry_run and reasons:
            await self.conn.execute(self.q["set_reasons"], {
                "ids": [i for i, _ in reasons], "reasons": [r for _, r in reasons]})

    async def _store(self, batch: Batch) -> None:
        """Write the batch; if the database refuses its content, message by message.

        What the store kept of the batch stays in it (``messages``, ``settles``), what it did
        not goes to ``unsettled`` with the reason.
        """
        try:
            written = await self.store.write(batch)
        except PoisonBatchError as exc:
            logger.warning("database refused a replayed batch (%s): storing one by one", exc)
        else:
            self.report.written += written
            return
        assert batch.settles is not None
        kept: list[Message] = []
        kept_ids: list[int] = []
        for message, letter_id in zip(batch.messages, batch.settles, strict=True):
            single = Batch(messages=[message], redelivered=False, settles=[letter_id])
            try:
                self.report.written += await self.store.write(single)
            except PoisonBatchError as exc:
                batch.unsettled.append((letter_id, f"the database refused this message: {exc}"))
                continue
            batch.unsettled += single.unsettled
            kept += single.messages
            kept_ids += single.settles or []
        batch.messages, batch.settles = kept, kept_ids


def _count(batch: Batch, report: ReplayReport) -> None:
    """Count the messages stored (or, dry, that would be) and what they hold."""
    for message in batch.messages:
        d = message.decoded
        report.stored += 1
        report.empty += not (d.samples or d.events)
        report.values += sum(len(s.values) for s in d.samples)
        report.states += sum(s.state is not None for s in d.samples)
        report.events += len(d.events)
