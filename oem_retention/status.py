"""What `oem-retention up` shows: gathered from cheap sources, refreshed every second or so.

The ingester's own counters (its status file), the database's table statistics and the latest
analytics job runs and ERP sync, read on ONE connection held across refreshes (a new one only
after a failure, and then with a growing pause), and the supervised children with the last
warning or error of their logs. Gathering is here; drawing is ``oem_retention.status_view``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from core.errors import first_line
from core.retention import RetentionRun
from core.sql import queries
from ingest.service import health_problems
from oem_retention.supervisor import ChildState

logger = logging.getLogger(__name__)

# The tables whose size the status shows: name -> label, and the label on a narrow terminal.
TABLES = {
    "machines": ("machines registered", "machines registered"),
    "telemetry": ("telemetry rows", "telemetry"),
    "machine_states": ("machine states", "states"),
    "machine_events": ("machine events", "events"),
    "dead_letters": ("dead letters", "dead letters"),
    "customers": ("customers", "customers"),
    "installed_base": ("installed base", "installed"),
    "service_contracts": ("service contracts", "contracts"),
    "invoices": ("invoices", "invoices"),
    "survey_responses": ("survey answers", "surveys"),
    "machine_days": ("machine-days rolled up", "machine-days"),
    "churn_scores": ("churn scores", "scores"),
}
# An ingester that has not written its status for this long is not running (`ingest health`).
STALE_AFTER_S = 10.0
MAX_RETRY_S = 30.0


@dataclass(frozen=True, slots=True)
class IngestView:
    """The ingester's counters from its status file, and its rate of stored telemetry rows."""

    path: Path
    counters: Mapping[str, Any] | None = None  # None: no (readable) status file
    age_s: float | None = None  # how old the counters are
    rows_per_s: float | None = None  # telemetry rows stored per second, over the last minute
    problem: str | None = None

    @property
    def healthy(self) -> bool:
        """Healthy as `oem-retention ingest health` judges it (``health_problems``)."""
        return (self.counters is not None and self.age_s is not None
                and not health_problems(self.counters, age_s=self.age_s,
                                        max_age_s=STALE_AFTER_S))


class IngestReader:
    """Reads the ingester's status file; keeps a minute of samples for the rate."""

    def __init__(self, path: Path, *, window_s: float = 60.0) -> None:
        self.path = path
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._started_at: float | None = None

    def read(self, wall: float) -> IngestView:
        """The counters as of now (``wall``: seconds since the epoch, the file's clock)."""
        try:
            counters = orjson.loads(self.path.read_bytes())
            updated, rows = float(counters["updated_at"]), int(counters["telemetry_rows"])
        except FileNotFoundError:
            return IngestView(self.path, problem="no status file yet: the ingester has not"
                                                 " started (or runs elsewhere)")
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return IngestView(self.path, problem=f"status file unreadable: {exc}")
        if counters.get("started_at") != self._started_at:  # a new ingester counts from zero
            self._samples.clear()
            self._started_at = counters.get("started_at")
        if not self._samples or self._samples[-1][0] != updated:
            self._samples.append((updated, rows))
        while self._samples and self._samples[0][0] < updated - self.window_s:
            self._samples.popleft()
        return IngestView(self.path, counters, max(0.0, wall - updated), self._rate())

    def _rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, r0), (t1, r1) = self._samples[0], self._samples[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 else None


@dataclass(frozen=True, slots=True)
class JobRunView:
    """The latest run of an analytics job (status None: it never ran)."""

    job: str
    status: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class SyncView:
    """The latest ERP sync's report."""

    created_at: datetime
    ok: bool
    sources: Sequence[str]
    failed: Sequence[str]  # source/entity of what did not sync


@dataclass(frozen=True, slots=True)
class DatabaseView:
    """What the database said, or why it said nothing."""

    ok: bool
    problem: str | None = None  # "unreachable: ..." or "error: ..."
    down_since: datetime | None = None
    retry_in_s: float | None = None
    rows: Mapping[str, int | None] = field(default_factory=dict)
    jobs: Sequence[JobRunView] = ()
    sync: SyncView | None = None
    backend_pid: int | None = None


Connection = psycopg.Connection[tuple[Any, ...]]


class DatabaseReader:
    """The status's reads, on one connection held across refreshes.

    A failure closes it; the next attempt waits 1 s, then 2, 4, ... up to ``MAX_RETRY_S``, so a
    database that is down is neither hammered nor waited for on every refresh. ``connects``
    counts the connections made.
    """

    def __init__(self, database_url: str, *, jobs: Sequence[str], connect_timeout: int = 3,
                 statement_timeout_ms: int = 2000) -> None:
        self._url = database_url
        self._jobs = list(jobs)
        self._connect_timeout = connect_timeout
        self._statement_timeout_ms = statement_timeout_ms
        self._conn: Connection | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._problem: str | None = None
        self._down_since: datetime | None = None
        self.connects = 0

    def read(self, now: float, wall: datetime) -> DatabaseView:
        """Read the status; ``now`` (monotonic) paces reconnects, ``wall`` dates an outage."""
        if self._conn is None and now < self._retry_at:
            return self._down(now)
        try:
            conn = self._connection()
            view = self._query(conn)
        except psycopg.Error as exc:
            return self._failed(exc, now, wall)
        self._failures, self._problem, self._down_since = 0, None, None
        return view

    def close(self) -> None:
        """Close the held connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            # autocommit: every read is its own transaction, so the statistics are fresh ones
            # (a transaction keeps a snapshot of them).
            self._conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=self._connect_timeout,
                application_name="oemr-up-status",
                options=f"-c statement_timeout={self._statement_timeout_ms}")
            self.connects += 1
        return self._conn

    def _query(self, conn: Connection) -> DatabaseView:
        q = queries("oem_retention", "sql/status.sql")
        rows = {name: None if n is None else int(n) for name, n in conn.execute(
            q["table_rows"], {"tables": list(TABLES)}).fetchall()}
        jobs = [JobRunView(*row) for row in conn.execute(
            q["latest_job_runs"], {"jobs": self._jobs}).fetchall()]
        last = conn.execute(q["latest_sync"]).fetchone()
        sync = None if last is None else SyncView(last[0], bool(last[1]), list(last[2]),
                                                  list(last[3]))
        return DatabaseView(True, rows=rows, jobs=jobs, sync=sync,
                            backend_pid=conn.info.backend_pid)

    def _failed(self, exc: psycopg.Error, now: float, wall: datetime) -> DatabaseView:
        self.close()
        self._failures += 1
        self._retry_at = now + min(MAX_RETRY_S, 2.0 ** (self._failures - 1))
        kind = "unreachable" if isinstance(exc, psycopg.OperationalError) else "error"
        self._problem = f"{kind}: {first_line(exc)}"
        if self._down_since is None:
            self._down_since = wall
            logger.warning("status: database %s", self._problem)
        return self._down(now)

    def _down(self, now: float) -> DatabaseView:
        return DatabaseView(False, self._problem, self._down_since,
                            max(0.0, self._retry_at - now))


@dataclass(frozen=True, slots=True)
class PlatformStatus:
    """Everything the status shows, at one moment."""

    pid: int
    started_at: datetime
    now: datetime
    log_dir: Path
    children: Sequence[ChildState]
    ingest: IngestView
    database: DatabaseView
    retention: RetentionRun | None = None
    erp_schedule: str = "not configured"  # how the ERP sync is scheduled, in words
    api_url: str | None = None  # where the API answers, when `up` runs it
