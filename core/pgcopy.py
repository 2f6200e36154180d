"""PostgreSQL's binary COPY format for the telemetry and machine_states tables.

Rows are packed straight into the format (several times faster than adapting row tuples): a
header, then per row a field count and each field as length + big-endian value, then a trailer.
A timestamptz is microseconds since 2000-01-01 UTC; an enum travels as its label. The ingester
writes live telemetry with it, the demo world's loader the history.
"""

from __future__ import annotations

import struct
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
