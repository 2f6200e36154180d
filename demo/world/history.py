"""The world's telemetry history, bulk-loaded with binary COPY as if the ingester had stored it.

Machines are registered as the ingester registers a JSON machine (tenant ``demo``, protocol
``json``), metrics as it registers them (``operating_hours`` is id 1). Per machine and workday,
within its shift span (06:00 UTC on, 8/16/22 hours for 1/2/3 shifts):

- ``telemetry``: an ``operating_hours`` sample at the end of every powered hour; the counter
  grows by the week's operating hours spread evenly over its workdays, running first, then idle.
  For the last ``process_days`` also ``spindle_load_pct`` and ``coolant_temp_c`` every hour.
- ``machine_states``: transitions only: ``running`` at shift start, ``idle`` when the day's
  running hours are done, ``fault`` and back for each fault, ``off`` at shift end.
- ``machine_events``: the service visits the world planted (``maintenance``), faults and
  ``fault_cleared``.

A machine whose connectivity went with its contract (``silent_from``) sends nothing from then on.
Three connections COPY the three tables at once, so the database works while Python packs.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from core import pgcopy
from core.sql import queries
from demo.world import catalogue as cat
from demo.world.files import TENANT, read_world
from demo.world.generator import MachinePlan, World

logger = logging.getLogger(__name__)

_HOUR_US = 3_600_000_000
_DAY_US = 24 * _HOUR_US
_SHIFT_START_US = 6 * _HOUR_US
_EPOCH_ORDINAL = date(2000, 1, 1).toordinal()
_STATES = {name: name.encode() for name in ("running", "idle", "fault", "off")}
PROCESS_METRICS = ("spindle_load_pct", "coolant_temp_c")
METRICS = ("operating_hours", *PROCESS_METRICS)


class HistoryExistsError(RuntimeError):
    """The world's machines already have history in this database."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a history load wrote, and how long it took."""

    machines: int
    telemetry_rows: int
    state_rows: int
    event_rows: int
    seconds: float

    @property
    def rows(self) -> int:
        """Rows of all three tables."""
        return self.telemetry_rows + self.state_rows + self.event_rows

    @property
    def rows_per_second(self) -> float:
        """Rows written per second, all tables together."""
        return self.rows / self.seconds if self.seconds else 0.0


def _us(moment: datetime) -> int:
    return (moment - pgcopy.EPOCH) // timedelta(microseconds=1)


def _day_us(day: date) -> int:
    return (day.toordinal() - _EPOCH_ORDINAL) * _DAY_US


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">i", len(data)) + data


@dataclass(slots=True)
class _Packed:
    telemetry: bytearray
    states: bytearray
    events: bytearray
    n_telemetry: int = 0
    n_states: int = 0
    n_events: int = 0


def pack_machine(world: World, m: MachinePlan, machine_id: int, metric_ids: dict[str, int], *,
                 process_days: int = 90) -> _Packed:
    """Binary COPY rows (no header) of one machine's telemetry, states and events."""
    out = _Packed(bytearray(), bytearray(), bytearray())
    rng = random.Random(f"{world.seed}:{m.serial}:history")
    gauss = rng.gauss
    pack, pack_state = pgcopy.TELEMETRY_ROW.pack, pgcopy.STATE_ROW.pack
    telemetry, states = out.telemetry, out.states
    hours_id = metric_ids["operating_hours"]
    load_id, temp_id = metric_ids["spindle_load_pct"], metric_ids["coolant_temp_c"]
    span = cat.SHIFT_SPAN[m.shifts]
    process_from = world.end_date - timedelta(days=process_days)
    silent = m.silent_from or date.max
    faults: dict[date, list[tuple[datetime, int]]] = defaultdict(list)
    for when, duration, _ in m.faults:
        # By the shift's day: a night shift's fault falls on the next calendar day.
        faults[(when - timedelta(hours=6)).date()].append((when, duration))
    counter = m.hours_at_start
    n_rows = n_states = 0
    for k, week_hours in enumerate(m.weekly_hours):
        week = m.first_week + k
        monday = world.window_start + timedelta(weeks=week)
        per_day = week_hours / 5
        for d in range(world.workdays(week)):
            day = monday + timedelta(days=d)
            if day >= silent:
                break
            if per_day == 0:
                continue
            start = _day_us(day) + _SHIFT_START_US
            process = day >= process_from
            utilisation = per_day / span
            for i in range(1, span + 1):
                at = start + i * _HOUR_US
                telemetry += pack(4, 8, at, 4, machine_id, 4, hours_id, 8,
                                  round(counter + min(i, per_day), 3))
                n_rows += 1
                if process:
                    running = i <= per_day + 1
                    load = (max(5.0, min(100.0, gauss(40 + 45 * utilisation, 8))) if running
                            else max(0.0, gauss(3, 1)))
                    telemetry += pack(4, 8, at, 4, machine_id, 4, load_id, 8, round(load, 2))
                    telemetry += pack(4, 8, at, 4, machine_id, 4, temp_id, 8,
                                      round(21 + 0.06 * load + gauss(0, 0.7), 2))
                    n_rows += 2
            counter += per_day
            # Transitions of the day; a fault interrupts whatever state it falls in.
            changes = {start: "running"}
            if per_day < span:
                changes[start + round(per_day * _HOUR_US)] = "idle"
            for when, duration in faults.get(day, ()):
                begin = _us(when)
                end = begin + duration * _HOUR_US
                changes[begin] = "fault"
                changes[end] = "running" if end < start + per_day * _HOUR_US else "idle"
            changes[start + span * _HOUR_US] = "off"
            for at in sorted(changes):
                label = _STATES[changes[at]]
                states += pack_state(3, 8, at, 4, machine_id, len(label))
                states += label
                n_states += 1
    out.n_telemetry, out.n_states = n_rows, n_states
    _pack_events(m, machine_id, silent, out)
    return out


def _pack_events(m: MachinePlan, machine_id: int, silent: date, out: _Packed) -> None:
    events: list[tuple[datetime, str, str, str, dict[str, Any]]] = []
    for n, (when, code, _) in enumerate(m.services, start=1):
        key = f"svc-{m.serial}-{n:04d}"
        events.append((when, "maintenance", code, key,
                       {"type": "maintenance", "code": code, "id": key,
                        "technician": "field service", "text": "preventive maintenance"}))
    for n, (when, duration, fault) in enumerate(m.faults, start=1):
        code, _, text = fault.partition(" ")
        key = f"flt-{m.serial}-{n:04d}"
        events.append((when, "fault", code, key, {"type": "fault", "code": code, "id": key,
                                                  "text": text}))
        cleared = when + timedelta(hours=duration)
        events.append((cleared, "fault_cleared", code, f"{key}-c", {
            "type": "fault_cleared", "code": code, "id": f"{key}-c"}))
    for when, kind, code, key, body in sorted(events):
        if when.date() >= silent:
            continue
        at = _us(when)
        payload = orjson.dumps({"ts": when.isoformat().replace("+00:00", "Z"), **body})
        out.events += struct.pack(">hiqii", 7, 8, at, 4, machine_id)
        out.events += _text(kind) + _text(code) + _text(key)
        out.events += struct.pack(">ib", len(payload) + 1, 1) + payload  # jsonb version 1
        out.events += struct.pack(">iq", 8, at + 2_000_000)  # received two seconds later
        out.n_events += 1


def load_history(database_url: str, world: World, *, process_days: int = 90,
                 chunk_interval: str = "7 days",
                 progress: Callable[[str], None] | None = None) -> Loaded:
    """Load the world's telemetry history into ``database_url``.

    Parameters
    ----------
    database_url
        A migrated database.
    world
        The world whose machines to load.
    process_days
        Days before the end with hourly process metrics as well as operating hours.
    chunk_interval
        Chunk width of ``telemetry`` and ``machine_states`` while history is loaded: the
        configured width (an hour for live data) would make tens of thousands of chunks of
        three years. The configured width is restored for the chunks live data creates.
    progress
        Called with a short line now and then (the CLI prints them).

    Raises
    ------
    HistoryExistsError
        When these machines already have operating-hours history before the world's end.
    """
    say = progress or (lambda line: logger.info("%s", line))
    q = queries("demo.world", "sql/history.sql")
    started = time.perf_counter()
    with psycopg.connect(database_url, autocommit=True) as conn:
        serials = [m.serial for m in world.machines]
        first_seen = [datetime.combine(max(world.window_start, m.commissioned_on),
                                       datetime.min.time(), tzinfo=UTC)
                      for m in world.machines]
        conn.execute(q["register_machines"], {"tenants": [TENANT] * len(serials),
                                              "serials": serials, "first_seen": first_seen})
        ids = {serial: id_ for id_, serial in conn.execute(
            q["find_machines"], {"tenant": TENANT, "serials": serials}).fetchall()}
        conn.execute(q["register_metrics"], {"names": list(METRICS)})
        metric_ids = {name: id_ for id_, name in conn.execute(
            q["find_metrics"], {"names": list(METRICS)}).fetchall()}
        row = conn.execute(q["history_rows"], {
            "machines": list(ids.values()),
            "before": datetime.combine(world.end_date, datetime.min.time(), tzinfo=UTC),
        }).fetchone()
        if row is not None and row[0]:
            raise HistoryExistsError(f"the {len(ids)} machines of this world already have"
                                     " history in this database")
        saved = {}
        for table in ("telemetry", "machine_states"):
            current = conn.execute(q["chunk_interval"], {"table": table}).fetchone()
            saved[table] = current[0] if current else None
            conn.execute(q["set_chunk_interval"], {"table": table, "interval": chunk_interval})
        try:
            loaded = _copy_all(database_url, world, ids=ids, metric_ids=metric_ids,
                               process_days=process_days, say=say)
        finally:
            for table, interval in saved.items():
                if interval is not None:
                    conn.execute(q["set_chunk_interval"], {"table": table,
                                                           "interval": interval})
        conn.execute(q["analyze"])
    seconds = time.perf_counter() - started
    return Loaded(len(ids), *loaded, seconds)


def load_world_history(directory: Path, database_url: str, *, process_days: int = 90,
                       progress: Callable[[str], None] | None = None) -> Loaded:
    """Draw the world of ``directory`` again (checked against its files) and load its history.

    Raises :class:`HistoryExistsError` when it is loaded already, ``FileNotFoundError`` or
    ``ValueError`` when ``directory`` is not a world this generator wrote.
    """
    return load_history(database_url, read_world(directory), process_days=process_days,
                        progress=progress)


def _copy_all(database_url: str, world: World, *, ids: dict[str, int],
              metric_ids: dict[str, int], process_days: int,
              say: Callable[[str], None]) -> tuple[int, int, int]:
    q = queries("demo.world", "sql/history.sql")
    totals = [0, 0, 0]
    with (psycopg.connect(database_url) as c_tel, psycopg.connect(database_url) as c_states,
          psycopg.connect(database_url) as c_events,
          c_tel.cursor() as k_tel, c_states.cursor() as k_states, c_events.cursor() as k_events,
          k_tel.copy(q["copy_telemetry"]) as telemetry,
          k_states.copy(q["copy_states"]) as states,
          k_events.copy(q["copy_events"]) as events):
        for copy in (telemetry, states, events):
            copy.write(pgcopy.HEADER)
        started = time.perf_counter()
        step = max(1, len(world.machines) // 10)
        for n, m in enumerate(world.machines, start=1):
            packed = pack_machine(world, m, ids[m.serial], metric_ids, process_days=process_days)
            telemetry.write(packed.telemetry)
            states.write(packed.states)
            events.write(packed.events)
            totals[0] += packed.n_telemetry
            totals[1] += packed.n_states
            totals[2] += packed.n_events
            if n % step == 0 or n == len(world.machines):
                elapsed = time.perf_counter() - started
                say(f"history: {n}/{len(world.machines)} machines, {sum(totals):,} rows,"
                    f" {sum(totals) / max(elapsed, 1e-9):,.0f} rows/s")
        for copy in (telemetry, states, events):
            copy.write(pgcopy.TRAILER)
    return totals[0], totals[1], totals[2]
