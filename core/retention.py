"""The retention job: raw telemetry past ``OEMR_TELEMETRY_RETENTION`` goes, where no policy does it.

A server with the Timescale license runs a background retention policy (set by ``db migrate``);
the Apache edition has none, so the platform's supervisor calls :func:`run_retention` every hour
and ``oem-retention db retention`` calls it by hand. What it drops is decided by
``core.timescale.drop_expired_telemetry`` (only what the usage rollup has taken in).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from core import timescale
from core.errors import first_line
from core.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionRun:
    """How one turn of the retention job ended.

    ``dropped`` is None when the server runs a retention policy of its own (nothing to do
    here) or when the turn failed; ``error`` says why it failed.
    """

    at: datetime
    dropped: int | None = None
    error: str | None = None

    @property
    def by_policy(self) -> bool:
        """The server's own retention policy does the work."""
        return self.dropped is None and self.error is None

    def line(self) -> str:
        """One line on what the turn did, for a status display."""
        if self.error is not None:
            return f"failed: {self.error}"
        if self.dropped is None:
            return "done by the server's retention policy"
        return f"dropped {self.dropped} chunk(s)"


def run_retention(settings: Settings, *, connect_timeout: int = 3,
                  lock_timeout_ms: int = 5000) -> RetentionRun:
    """Drop expired telemetry chunks unless the server's policy does; never raises a driver error.

    A failure (the database down, a lock not granted within ``lock_timeout_ms``) is logged and
    returned: the next turn tries again, and the caller goes on supervising.
    """
    at = datetime.now(UTC)
    try:
        with psycopg.connect(settings.database_url, autocommit=True,
                             connect_timeout=connect_timeout) as conn:
            # Dropping a chunk waits for every reader of it (a KPI snapshot, a backtest): the
            # supervisor that calls this must not stand still that long. The next turn retries.
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(lock_timeout_ms)))
            if timescale.detect(conn).retention_policies:
                return RetentionRun(at)
            dropped = timescale.drop_expired_telemetry(conn, settings)
    except psycopg.Error as exc:
        logger.warning("retention job failed, next try in an hour: %s", exc)
        return RetentionRun(at, error=first_line(exc))
    if dropped:
        logger.info("retention: dropped %s telemetry chunk(s) older than %s", dropped,
                    settings.telemetry_retention)
    return RetentionRun(at, dropped=dropped)
