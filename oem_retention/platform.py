"""The whole platform in one process tree, with a live status: what `oem-retention up` runs.

Children (each an `oem-retention` command of its own, its output in
``$OEMR_STATE_DIR/logs/<name>.log``): the ingester, the ERP sync schedule when a source is
configured, the analytics schedule, and a simulated fleet when asked for. The supervisor restarts
what dies; the hourly retention job runs here (the Apache edition has no retention policy); the
terminal shows the status, redrawn in place every second.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.live import Live

from analytics.jobs import job_table
from core.retention import RetentionRun, run_retention
from core.settings import Settings
from ingest.service import status_path
from oem_retention.status import DatabaseReader, IngestReader, PlatformStatus
from oem_retention.status_view import StatusView
from oem_retention.supervisor import Supervisor
from oem_retention.wiring import configured_sources

logger = logging.getLogger(__name__)

RETENTION_EVERY_S = 3600.0
REFRESH_S = 1.0


def platform_commands(settings: Settings, *, simulate_machines: int, interval: float,
                      tenant: str, fleet: Path | None,
                      python: str = sys.executable) -> dict[str, list[str]]:
    """The children of the platform by name, in start order (they are stopped in reverse)."""
    cmd = [python, "-m", "oem_retention"]
    commands = {"ingest": [*cmd, "ingest", "run"], "api": [*cmd, "api", "serve"]}
    if configured_sources(settings) and settings.erp_sync_interval_minutes:
        commands["erp-sync"] = [*cmd, "erp", "schedule"]
    commands["analytics"] = [*cmd, "analytics", "schedule"]
    if simulate_machines:
        # A world's fleet is its machines: a count would only mislead in the process list.
        commands["simulator"] = [*cmd, "demo", "fleet",
                                 *(["--fleet", str(fleet)] if fleet
                                   else ["--machines", str(simulate_machines)]),
                                 "--interval", str(interval), "--tenant", tenant]
    return commands


def api_url(settings: Settings) -> str:
    """Where `up`'s API answers, as a browser on this machine reaches it."""
    host = settings.api_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (reading the setting, not binding)
        host = "127.0.0.1"
    return f"http://{host}:{settings.api_port}"


def erp_schedule_words(settings: Settings) -> str:
    """How the ERP sync runs under `up`, in words for the status."""
    if not configured_sources(settings):
        return "no ERP source configured"
    if not settings.erp_sync_interval_minutes:
        return "not scheduled (OEMR_ERP_SYNC_INTERVAL_MINUTES is 0)"
    return f"every {settings.erp_sync_interval_minutes} min"


class Platform:
    """The supervised children, the hourly retention job and the status, one turn at a time."""

    def __init__(self, settings: Settings, supervisor: Supervisor) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self.started_at = datetime.now(UTC)
        self.database = DatabaseReader(settings.database_url,
                                       jobs=[j.name for j in job_table(self.started_at, None)])
        self.ingest = IngestReader(status_path(settings))
        self.retention: RetentionRun | None = None
        self._next_retention = 0.0

    def turn(self, now: float) -> PlatformStatus:
        """Restart what is due, run the retention job when due, and read the status."""
        self.supervisor.poll(now)
        if now >= self._next_retention:
            self.retention = run_retention(self.settings)
            self._next_retention = now + RETENTION_EVERY_S
        wall = datetime.now(UTC)
        return PlatformStatus(
            os.getpid(), self.started_at, wall, self.supervisor.log_dir,
            self.supervisor.states(now), self.ingest.read(wall.timestamp()),
            self.database.read(now, wall), self.retention, erp_schedule_words(self.settings),
            api_url(self.settings))

    def close(self) -> None:
        """Stop the children and close the status's connection."""
        self.supervisor.stop()
        self.database.close()


def run_platform(settings: Settings, *, simulate_machines: int = 50, interval: float = 1.0,
                 tenant: str = "demo", fleet: Path | None = None,
                 console: Console | None = None) -> None:
    """Run every process of the platform until SIGINT or SIGTERM, showing their status.

    The database must be migrated (``db migrate``). ``simulate_machines`` > 0 adds a simulated
    fleet publishing every ``interval`` seconds as ``tenant`` (the machines of a demo world's
    ``fleet`` file when given). Blocks; call it from the main thread (it takes the signals).
    """
    console = console if console is not None else Console()
    log_dir = settings.state_dir / "logs"
    commands = platform_commands(settings, simulate_machines=simulate_machines,
                                 interval=interval, tenant=tenant, fleet=fleet)
    with _logging_to(log_dir / "up.log"), _stop_on_signals() as stop:
        supervisor = Supervisor(commands, log_dir=log_dir, say=lambda message: console.print(
            message, style="red", highlight=False, markup=False))
        platform = Platform(settings, supervisor)
        supervisor.start(time.monotonic())
        # Said once before the live status takes the screen: it stays in a log that is not a
        # terminal.
        console.print(f"API: {api_url(settings)}/api/v1/docs", highlight=False)
        try:
            with Live(console=console, auto_refresh=False) as live:
                while not stop.is_set():
                    live.update(StatusView(platform.turn(time.monotonic())), refresh=True)
                    stop.wait(REFRESH_S)
        finally:
            if not console.is_terminal:
                console.line()  # rich ends a terminal's last frame with a newline, not a file's
            platform.close()
    console.print("stopped")


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


@contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """Send the process's log to a file while the status owns the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    # Only handlers writing to the terminal step aside (a test's capture handler stays).
    terminal = [h for h in root.handlers if type(h) is logging.StreamHandler
                and h.stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)]
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = root.level
    for h in terminal:
        root.removeHandler(h)
    root.addHandler(to_file)
    if level == logging.NOTSET or level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for h in terminal:
            root.addHandler(h)
        root.setLevel(level)
