"""What the TimescaleDB server offers, and the storage policies that follow from it.

The Apache-licensed edition (Debian's package, the local provisioning) has hypertables,
time_bucket and drop_chunks; the Timescale-licensed one (the production image) adds continuous
aggregates, compression and background retention policies. Code asks ``Capabilities`` and picks
a path; where a policy is missing, a scheduled job of ours does the same work in plain SQL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from core.settings import Settings
from core.sql import queries

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Features of the connected server."""

    server_version: int
    timescaledb_version: str | None
    license: str | None

    @property
    def hypertables(self) -> bool:
        """Hypertables, time_bucket and drop_chunks (both editions)."""
        return self.timescaledb_version is not None

    @property
    def _community(self) -> bool:
        return self.hypertables and self.license == "timescale"

    @property
    def continuous_aggregates(self) -> bool:
        """Continuous aggregates (Timescale license only)."""
        return self._community

    @property
    def compression(self) -> bool:
        """Native compression and compression policies (Timescale license only)."""
        return self._community

    @property
    def retention_policies(self) -> bool:
        """Background retention policies (Timescale license only)."""
        return self._community


def detect(conn: psycopg.Connection[tuple[object, ...]]) -> Capabilities:
    """Ask the server what it offers."""
    row = conn.execute(queries("core", "sql/timescale.sql")["server"]).fetchone()
    assert row is not None
    version, ts_version, license_ = row
    return Capabilities(int(str(version)), _opt(ts_version), _opt(license_))


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def apply_storage_policies(
    conn: psycopg.Connection[tuple[object, ...]], settings: Settings
) -> Capabilities:
    """Set chunk interval, compression and retention on ``telemetry`` as far as the server allows.

    Idempotent. Where the server has no retention policy, ``drop_expired_telemetry`` is the
    fallback that a scheduled job runs.
    """
    q = queries("core", "sql/timescale.sql")
    caps = detect(conn)
    conn.execute(q["set_chunk_interval"], {"interval": settings.telemetry_chunk_interval})
    if caps.compression:
        conn.execute(q["enable_compression"])
        conn.execute(q["add_compression_policy"], {"after": settings.telemetry_compress_after})
    else:
        logger.info("server has no compression (license %s): telemetry stays uncompressed",
                    caps.license)
    if caps.retention_policies:
        conn.execute(q["add_retention_policy"], {"keep": settings.telemetry_retention})
    return caps


def drop_expired_telemetry(conn: psycopg.Connection[tuple[object, ...]], settings: Settings) -> int:
    """Drop telemetry chunks older than the retention setting; the fallback for Apache servers.

    Only what the daily usage rollup (``machine_days``) has already taken in is dropped: until
    the analytics have rolled a day up, its raw data stays whatever its age.
    """
    row = conn.execute(
        queries("core", "sql/timescale.sql")["drop_old_chunks"],
        {"keep": settings.telemetry_retention},
    ).fetchone()
    return int(str(row[0])) if row else 0
