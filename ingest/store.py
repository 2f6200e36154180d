"""Writes decoded messages to TimescaleDB: one transaction per batch, samples by COPY.

Redelivered messages (a crash between commit and ack, a publisher retry) must not create
duplicate rows. The fast path COPYs straight into the hypertables; the unique indexes reject a
duplicate, and that batch is then written again through a staging table with
``ON CONFLICT DO NOTHING``. Batches holding messages the broker marked as redeliveries (DUP) take
the staging path at once.

Late data: rows older than ``late_after`` by the ingester's clock may land on days the analytics
rollup has already rolled up, so the transaction that writes them also marks their UTC days in
``rollup_late_days`` (migration 015 has the why and the consumer's protocol). Late is judged by
the ingester's clock, the one its future-skew check bounds data times with: the rollup's window
follows data times, not the database's clock, and asking the database for its time would cost a
statement on every batch.

Column layout: the COPY rows are packed by hand (core/pgcopy.py) and the server reads each binary
field as its column's type. A column whose type drifted (a migration widening an id, a restore
from another version) makes every row unreadable, which no message is to blame for: each new
connection compares the tables with the packed layout first (``ColumnLayoutError``), and an
error that says the server could not read our rows is that same fault, retried and never
dead-lettered.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from core import pgcopy
from core.errors import DatabaseUnavailableError, OemrError
from core.sql import queries
from ingest.models import MACHINE_STATES, Decoded, MachineRef

logger = logging.getLogger(__name__)

# SQLSTATE classes a message's content can cause: 22 data exception, 23 integrity constraint
# violation, 54 program limit exceeded (an index entry too large).
_CONTENT_ERROR_CLASSES = frozenset({"22", "23", "54"})
# SQLSTATEs that say the server could not take our rows as packed, whatever they hold: 22P03
# invalid binary representation (a field of another size or format than its column's type),
# 08P01 a field shorter than its type ("insufficient data left in message"), 22P04 a bad COPY
# format, 23502 a NOT NULL column the COPY leaves out. Decoded values never cause them (the
# packer writes every field of every row, by type): the table is not what this version writes.
_UNREADABLE_ROWS = frozenset({"22P03", "08P01", "22P04", "23502"})
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be stored, and why."""

    topic: str
    payload: bytes
    reason: str
    size: int | None = None  # of the whole message, when only its start is kept in payload


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message, with its topic and bytes kept for a dead letter."""

    topic: str
    payload: bytes
    decoded: Decoded


@dataclass(slots=True)
class Batch:
    """What one transaction stores."""

    messages: list[Message] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    redelivered: bool = False
    # A replay of dead letters (ingest/replay.py): the id of the dead letter each message comes
    # from, deleted in the transaction that stores the message. A message whose machine cannot
    # be resolved keeps its dead letter: its id and reason go to ``unsettled``.
    settles: list[int] | None = None
    unsettled: list[tuple[int, str]] = field(default_factory=list)

    @property
    def decoded(self) -> list[Decoded]:
        """The decoded content of the messages."""
        return [m.decoded for m in self.messages]


@dataclass(frozen=True, slots=True)
class Written:
    """What a batch put in the database."""

    telemetry_rows: int
    state_rows: int
    events: int
    dead_letters: int

    def __add__(self, other: Written) -> Written:
        return Written(self.telemetry_rows + other.telemetry_rows,
                       self.state_rows + other.state_rows, self.events + other.events,
                       self.dead_letters + other.dead_letters)


class PoisonBatchError(Exception):
    """The database refused the batch for its content, not for being unreachable."""


class ColumnLayoutError(OemrError):
    """The tables are not what the binary COPY writes: retry once an operator has fixed them."""


def _machine_key(ref: MachineRef) -> tuple[str, ...]:
    if ref.protocol == "sparkplug":
        return ("sparkplug", ref.spb_group or "", ref.spb_edge_node or "", ref.spb_device)
    return ("json", ref.tenant, ref.serial)


class Store:
    """The ingester's own database connection and its id caches."""

    def __init__(self, conninfo: str, *, late_after: timedelta) -> None:
        self._conninfo = conninfo
        self._late_after = late_after
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._q = queries("ingest", "sql/store.sql")
        self._machines: dict[tuple[str, ...], int] = {}
        self._metrics: dict[str, int] = {}

    async def close(self) -> None:
        """Close the connection, if open; the next write connects again."""
        if self._conn is not None:
            try:
                await self._conn.close()
            finally:
                self._conn = None

    async def connect(self) -> None:
        """Connect now (else the first write does) and check the tables' column layout.

        Raises ``ColumnLayoutError`` when a table is not what the binary COPY writes and
        ``DatabaseUnavailableError`` when the database cannot be reached.
        """
        await self._connection()

    async def write(self, batch: Batch) -> Written:
        """Store a batch in one transaction.

        Raises ``DatabaseUnavailableError`` when the database is unreachable and
        ``ColumnLayoutError`` when it cannot read our rows (retry later, both), and
        ``PoisonBatchError`` when it refuses the content (split the batch).
        """
        conn = await self._connection()
        try:
            await self._resolve(conn, batch.decoded)
            self._dead_letter_unresolved(batch)
            try:
                return await self._write(conn, batch, staged=batch.redelivered)
            except pg_errors.UniqueViolation:
                logger.info("batch holds already stored messages: writing it deduplicated")
                return await self._write(conn, batch, staged=True)
        except psycopg.Error as exc:
            # Only what the content caused is poison (split the batch, dead-letter the culprit).
            # Anything else (no connection, a revoked privilege, a table a newer migration
            # changed) is retried without acking: an operator's fix resumes ingest, nothing lost.
            sqlstate = exc.sqlstate or ""
            if sqlstate in _UNREADABLE_ROWS:
                # The next connection's layout check names the column, if a type changed.
                await self.close()
                raise ColumnLayoutError(
                    f"the database could not read the rows as the ingester packs them"
                    f" ({sqlstate}: {exc}); has a column of telemetry or machine_states"
                    " changed?") from exc
            if sqlstate[:2] in _CONTENT_ERROR_CLASSES:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    await self.close()
                raise PoisonBatchError(str(exc)) from exc
            await self.close()
            raise DatabaseUnavailableError(str(exc)) from exc

    # -- connection ----------------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, application_name="oemr-ingest",
                connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(str(exc)) from exc
        try:
            await self._check_layout(conn)
            await conn.execute(self._q["create_stages"])
            self._machines.clear()
            for row in await (await conn.execute(self._q["all_machines"])).fetchall():
                ref = MachineRef(row[1], row[2], row[3], row[4], row[5], row[6])
                self._machines[_machine_key(ref)] = row[0]
            self._metrics = {
                name: id_
                for id_, name in await (await conn.execute(self._q["all_metrics"])).fetchall()
            }
        except psycopg.Error as exc:
            # Lost between connect and setup (a server restart, a failover), or refused (a
            # missing privilege): the same outage as a failed connect, retried by the caller.
            await conn.close()
            raise DatabaseUnavailableError(str(exc)) from exc
        except ColumnLayoutError:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _check_layout(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        cur = await conn.execute(self._q["column_layout"], {"tables": list(pgcopy.LAYOUTS)})
        problems = pgcopy.layout_problems(pgcopy.Column(*row) for row in await cur.fetchall())
        if not problems:
            # A state travels as its label: one the enum lacks would fail every message with it.
            cur = await conn.execute(self._q["state_labels"])
            labels = {label for (label,) in await cur.fetchall()}
            problems += [f"machine_states.state has no label {label!r}; the ingester writes"
                         f" {', '.join(sorted(MACHINE_STATES))}"
                         for label in sorted(MACHINE_STATES - labels)]
        if problems:
            raise ColumnLayoutError(
                "the tables are not what the ingester writes, so it writes nothing (a migration"
                " or a restore from another version?): " + "; ".join(problems))

    # -- registration --------------------------------------------------------------------

    async def _resolve(self, conn: psycopg.AsyncConnection[tuple[Any, ...]],
                       decoded: list[Decoded]) -> None:
        new_machines: dict[tuple[str, ...], MachineRef] = {}
        new_metrics: set[str] = set()
        for item in decoded:
            for refs in (s.machine for s in item.samples), (e.machine for e in item.events):
                for ref in refs:
                    key = _machine_key(ref)
                    if key not in self._machines:
                        new_machines[key] = ref
            for samples in item.samples:
                new_metrics.update(n for n in samples.values if n not in self._metrics)
        if new_machines:
            # Sorted: two writers registering overlapping machines lock rows in the same order.
            await self._register_machines(conn, [new_machines[k] for k in sorted(new_machines)])
        if new_metrics:
            names = sorted(new_metrics)
            await conn.execute(self._q["register_metrics"], {"names": names})
            cur = await conn.execute(self._q["find_metrics"], {"names": names})
            self._metrics.update((name, id_) for id_, name in await cur.fetchall())

    async def _register_machines(self, conn: psycopg.AsyncConnection[tuple[Any, ...]],
                                 refs: list[MachineRef]) -> None:
        await conn.execute(self._q["register_machines"], {
            "tenants": [r.tenant for r in refs], "serials": [r.serial for r in refs],
            "protocols": [r.protocol for r in refs], "groups": [r.spb_group for r in refs],
            "nodes": [r.spb_edge_node for r in refs], "devices": [r.spb_device for r in refs],
        })
        json_refs = [r for r in refs if r.protocol == "json"]
        if json_refs:
            cur = await conn.execute(self._q["find_json_machines"], {
                "tenants": [r.tenant for r in json_refs],
                "serials": [r.serial for r in json_refs]})
            for id_, tenant, serial in await cur.fetchall():
                self._machines[("json", tenant, serial)] = id_
        spb_refs = [r for r in refs if r.protocol == "sparkplug"]
        if spb_refs:
            cur = await conn.execute(self._q["find_sparkplug_machines"], {
                "groups": [r.spb_group for r in spb_refs],
                "nodes": [r.spb_edge_node for r in spb_refs],
                "devices": [r.spb_device for r in spb_refs]})
            for id_, group, node, device in await cur.fetchall():
                self._machines[("sparkplug", group, node, device)] = id_

    def _dead_letter_unresolved(self, batch: Batch) -> None:
        kept: list[Message] = []
        kept_ids: list[int] = []
        for i, message in enumerate(batch.messages):
            d = message.decoded
            refs = [s.machine for s in d.samples] + [e.machine for e in d.events]
            missing = [r for r in refs if _machine_key(r) not in self._machines]
            if missing:
                ref = missing[0]
                reason = (f"machine serial {ref.serial!r} of tenant {ref.tenant!r} is already"
                          f" registered for another protocol than {ref.protocol}")
                if batch.settles is None:
                    batch.dead_letters.append(DeadLetter(message.topic, message.payload, reason))
                else:
                    batch.unsettled.append((batch.settles[i], reason))
            else:
                kept.append(message)
                if batch.settles is not None:
                    kept_ids.append(batch.settles[i])
        batch.messages = kept
        if batch.settles is not None:
            batch.settles = kept_ids

    # -- the transaction -----------------------------------------------------------------

    async def _write(self, conn: psycopg.AsyncConnection[tuple[Any, ...]], batch: Batch, *,
                     staged: bool) -> Written:
        cutoff = datetime.now(UTC) - self._late_after
        late: list[datetime] = []
        telemetry, n_telemetry, states, n_states = self._encode(batch.decoded, cutoff, late)
        q = self._q
        async with conn.transaction():
            stored_telemetry = await self._copy(
                conn, telemetry, n_telemetry, q["copy_telemetry_stage"] if staged
                else q["copy_telemetry"], q["merge_telemetry_stage"] if staged else None)
            stored_states = await self._copy(
                conn, states, n_states, q["copy_states_stage"] if staged
                else q["copy_states"], q["merge_states_stage"] if staged else None)
            events = await self._events(conn, batch.decoded, cutoff, late)
            await self._connectivity(conn, batch.decoded)
            await self._gaps(conn, batch.decoded)
            dead = await self._dead_letters(conn, batch.dead_letters)
            if batch.settles:
                await conn.execute(q["settle_dead_letters"], {"ids": batch.settles})
            if late:
                # Last: a writer marking a day another batch has just marked waits for that
                # batch's commit, so the day's row is held locked no longer than needed.
                await self._mark_late_days(conn, late)
        return Written(stored_telemetry, stored_states, events, dead)

    def _encode(self, decoded: list[Decoded], cutoff: datetime,
                late: list[datetime]) -> tuple[bytes, int, bytes, int]:
        """Binary COPY data of the telemetry and state rows, and their counts.

        The times of samples before ``cutoff`` are appended to ``late``: one comparison per
        sample here, where the batch is walked anyway.
        """
        machines, metrics = self._machines, self._metrics
        pack_sample, pack_state = pgcopy.TELEMETRY_ROW.pack, pgcopy.STATE_ROW.pack
        telemetry = bytearray(pgcopy.HEADER)
        states = bytearray(pgcopy.HEADER)
        n_telemetry = n_states = 0
        for item in decoded:
            for s in item.samples:
                machine_id = machines[_machine_key(s.machine)]
                us = (s.time - pgcopy.EPOCH) // _MICROSECOND
                if s.time < cutoff:
                    late.append(s.time)
                for name, value in s.values.items():
                    telemetry += pack_sample(4, 8, us, 4, machine_id, 4, metrics[name], 8, value)
                n_telemetry += len(s.values)
                if s.state is not None:
                    label = s.state.encode()
                    states += pack_state(3, 8, us, 4, machine_id, len(label))
                    states += label
                    n_states += 1
        telemetry += pgcopy.TRAILER
        states += pgcopy.TRAILER
        return bytes(telemetry), n_telemetry, bytes(states), n_states

    @staticmethod
    async def _copy(conn: psycopg.AsyncConnection[tuple[Any, ...]], data: bytes, rows: int,
                    copy_sql: str, merge_sql: str | None) -> int:
        if not rows:
            return 0
        async with conn.cursor() as cur:
            async with cur.copy(copy_sql) as copy:
                await copy.write(data)
            if merge_sql is None:
                return rows
            await cur.execute(merge_sql)
            return max(cur.rowcount, 0)

    async def _events(self, conn: psycopg.AsyncConnection[tuple[Any, ...]],
                      decoded: list[Decoded], cutoff: datetime, late: list[datetime]) -> int:
        """Insert the events; the times of those before ``cutoff`` are appended to ``late``."""
        events = [e for item in decoded for e in item.events]
        if not events:
            return 0
        late.extend(e.time for e in events if e.time < cutoff)
        cur = await conn.execute(self._q["insert_events"], {
            "times": [e.time for e in events],
            "machines": [self._machines[_machine_key(e.machine)] for e in events],
            "kinds": [e.kind for e in events], "codes": [e.code for e in events],
            "keys": [e.key for e in events], "payloads": [e.payload.decode() for e in events],
        })
        return max(cur.rowcount, 0)

    async def _connectivity(self, conn: psycopg.AsyncConnection[tuple[Any, ...]],
                            decoded: list[Decoded]) -> None:
        changes = [c for item in decoded for c in item.connectivity]
        if not changes:
            return
        # The last word per machine wins; one UPDATE row per machine.
        latest: dict[int, tuple[bool, datetime]] = {}
        for ref, online, time in changes:
            latest[self._machines[_machine_key(ref)]] = (online, time)
        await conn.execute(self._q["set_connectivity"], {
            "machines": list(latest), "online": [v[0] for v in latest.values()],
            "times": [v[1] for v in latest.values()]})

    async def _gaps(self, conn: psycopg.AsyncConnection[tuple[Any, ...]],
                    decoded: list[Decoded]) -> None:
        gaps = [g for item in decoded for g in item.gaps]
        if not gaps:
            return
        await conn.execute(self._q["insert_gaps"], {
            "groups": [g.spb_group for g in gaps], "nodes": [g.spb_edge_node for g in gaps],
            "causes": [g.cause for g in gaps], "expected": [g.expected_seq for g in gaps],
            "received": [g.received_seq for g in gaps], "missing": [g.missing for g in gaps],
            "rebirth": [g.rebirth_requested for g in gaps]})

    async def _mark_late_days(self, conn: psycopg.AsyncConnection[tuple[Any, ...]],
                              late: list[datetime]) -> None:
        earliest: dict[date, datetime] = {}
        for time in late:
            day = time.astimezone(UTC).date()
            if day not in earliest or time < earliest[day]:
                earliest[day] = time
        # Sorted: two writers lock the days' rows in the same order.
        days = sorted(earliest)
        await conn.execute(self._q["mark_late_days"], {
            "days": days, "earliest": [earliest[d] for d in days]})

    async def _dead_letters(self, conn: psycopg.AsyncConnection[tuple[Any, ...]],
                            letters: list[DeadLetter]) -> int:
        if not letters:
            return 0
        counts: Counter[bytes] = Counter()
        first: dict[bytes, DeadLetter] = {}
        for letter in letters:
            digest = hashlib.sha256(letter.topic.encode() + b"\0" + letter.payload).digest()
            counts[digest] += 1
            first.setdefault(digest, letter)
        await conn.execute(self._q["insert_dead_letters"], {
            "topics": [first[d].topic for d in counts],
            "payloads": [first[d].payload for d in counts],
            "sizes": [first[d].size or len(first[d].payload) for d in counts],
            "reasons": [first[d].reason for d in counts],
            "digests": list(counts), "counts": list(counts.values())})
        return len(letters)
