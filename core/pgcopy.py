"""PostgreSQL's binary COPY format for the telemetry and machine_states tables.

Rows are packed straight into the format (several times faster than adapting row tuples): a
header, then per row a field count and each field as length + big-endian value, then a trailer.
A timestamptz is microseconds since 2000-01-01 UTC; an enum travels as its label. The ingester
writes live telemetry with it, the demo world's loader the history.

The server does not convert binary fields: each must be exactly the column's type, so a table
whose column type drifted (a migration widening an id, a restore from another version) refuses
or misreads every row. ``layout_problems`` compares a table's columns with what is packed here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

HEADER = b"PGCOPY\n\xff\r\n\0" + b"\0\0\0\0" + b"\0\0\0\0"
TRAILER = b"\xff\xff"
# A telemetry row, each field after its length: time (timestamptz), machine_id, metric_id
# (int4), value (float8).
TELEMETRY_ROW = struct.Struct(">hiqiiiiid")
# The start of a machine_states row: time, machine_id, and the length of the state's label,
# which follows.
STATE_ROW = struct.Struct(">hiqiii")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

# The columns the rows above fill, in order, with their types as format_type() names them.
# The COPY statements that send them (ingest/sql/store.sql) list the same columns.
TELEMETRY_COLUMNS = (("time", "timestamp with time zone"), ("machine_id", "integer"),
                     ("metric_id", "integer"), ("value", "double precision"))
STATE_COLUMNS = (("time", "timestamp with time zone"), ("machine_id", "integer"),
                 ("state", "machine_state"))
LAYOUTS = {"telemetry": TELEMETRY_COLUMNS, "machine_states": STATE_COLUMNS}


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a table as the catalogue describes it."""

    table: str
    name: str
    type: str  # as format_type() names it
    required: bool  # NOT NULL without a default: a COPY that leaves it out fails every row


def layout_problems(columns: Iterable[Column],
                    layouts: dict[str, tuple[tuple[str, str], ...]] = LAYOUTS) -> list[str]:
    """What differs between the tables' columns and the rows packed for them; empty if nothing.

    >>> layout_problems([Column("telemetry", "time", "timestamp with time zone", True),
    ...                  Column("telemetry", "machine_id", "integer", True),
    ...                  Column("telemetry", "metric_id", "bigint", True),
    ...                  Column("telemetry", "value", "double precision", True)],
    ...                 {"telemetry": TELEMETRY_COLUMNS})
    ['telemetry.metric_id is bigint; the binary COPY writes integer (core/pgcopy.py)']
    """
    found: dict[str, dict[str, Column]] = {table: {} for table in layouts}
    for column in columns:
        found.setdefault(column.table, {})[column.name] = column
    problems = []
    for table, layout in layouts.items():
        if not found[table]:
            problems.append(f"table {table} is missing")
            continue
        written = dict(layout)
        for name, expected in layout:
            have = found[table].get(name)
            if have is None:
                problems.append(f"{table}.{name} is missing; the binary COPY writes it as"
                                f" {expected} (core/pgcopy.py)")
            elif have.type != expected:
                problems.append(f"{table}.{name} is {have.type}; the binary COPY writes"
                                f" {expected} (core/pgcopy.py)")
        problems += [f"{table}.{c.name} ({c.type}) is NOT NULL without a default, and the binary"
                     " COPY does not write it (core/pgcopy.py)"
                     for c in found[table].values() if c.required and c.name not in written]
    return problems
