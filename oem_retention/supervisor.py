"""Child processes: started with their output in a log file each, restarted when they die, stopped.

A child that exits is started again after a delay that doubles with each exit in a row (2 s,
4 s, ... up to a minute), so a child that cannot start (a wrong setting, the broker down) does
not spin; one that ran for a minute before it died counts as a first failure again. The
supervisor never blocks to wait for a restart: :meth:`Supervisor.poll` is called every second or
so and does what is due. Time is passed in (``now``, monotonic seconds), so what is due is
decided by the caller's clock, and tests can run the supervisor on a clock of their own.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

FIRST_DELAY_S = 2.0
MAX_DELAY_S = 60.0
# A child that ran this long before it exited was working: its next exit is a first failure.
STEADY_AFTER_S = 60.0


def restart_delay(failures: int) -> float:
    """Seconds before starting a child again after its ``failures``-th quick exit in a row."""
    if failures < 1:
        raise ValueError(f"failures counts exits, from 1; got {failures}")
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** min(failures - 1, 16))


_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")


class LogTail:
    """The last warning or error line of a growing log file, read a piece at a time.

    Only what is written after the tail is made counts (an old run's errors are not today's).
    A Python traceback counts by its last line, the exception. ``max_read`` bounds one read: a
    child that wrote more since is looked at by its last ``max_read`` bytes.
    """

    def __init__(self, path: Path, *, max_read: int = 1 << 20) -> None:
        self.path = path
        self.max_read = max_read
        self.offset = path.stat().st_size if path.exists() else 0
        self.last_problem: str | None = None
        self._partial = b""
        self._in_traceback = False

    def poll(self) -> str | None:
        """Read what was appended since the last call; return the last problem line so far."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return self.last_problem
        if size < self.offset:  # truncated or replaced: read the new file from its start
            self.offset, self._partial = 0, b""
        if size - self.offset > self.max_read:
            self.offset, self._partial = size - self.max_read, b""
        if size == self.offset:
            return self.last_problem
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        self.offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            self._take(raw.decode("utf-8", "replace").rstrip())
        return self.last_problem

    def _take(self, line: str) -> None:
        if line.startswith("Traceback (most recent call last)"):
            self._in_traceback = True
        elif self._in_traceback:
            if line and not line[0].isspace():
                self.last_problem, self._in_traceback = line, False
        elif _PROBLEM.search(line):
            self.last_problem = line


ChildStateName = Literal["running", "restarting", "stopped"]


@dataclass(frozen=True, slots=True)
class ChildState:
    """A child as the status shows it."""

    name: str
    state: ChildStateName
    pid: int | None
    restarts: int
    running_s: float | None  # how long the current process has run
    restart_in_s: float | None  # when restarting: how long until it is started again
    last_exit: int | None  # exit code of the previous process (negative: killed by that signal)
    last_problem: str | None  # the last warning or error line of its log
    log: Path


@dataclass(slots=True)
class Child:
    """One supervised command and what became of it."""

    name: str
    command: Sequence[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0
    restart_at: float | None = None
    last_exit: int | None = None
    tail: LogTail = field(init=False)

    def __post_init__(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.tail = LogTail(self.log)

    def state(self, now: float) -> ChildState:
        """What the status shows of it at ``now``."""
        alive = self.process is not None and self.process.returncode is None
        name: ChildStateName = ("running" if alive else
                                "restarting" if self.restart_at is not None else "stopped")
        return ChildState(
            self.name, name, self.process.pid if alive and self.process else None, self.restarts,
            now - self.started_at if alive else None,
            max(0.0, self.restart_at - now) if self.restart_at is not None else None,
            self.last_exit, self.tail.poll(), self.log)


class Supervisor:
    """Runs the children; ``poll`` restarts what died, ``stop`` ends them all.

    ``say`` is told each event a person watching should see (a child died, one had to be
    killed); it is logged as well.
    """

    def __init__(self, commands: Mapping[str, Sequence[str]], *, log_dir: Path,
                 env: Mapping[str, str] | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.log_dir = log_dir
        self.children = [Child(name, list(command), log_dir / f"{name}.log")
                         for name, command in commands.items()]
        self._env = None if env is None else dict(env)
        self._say = say
        self.stopping = False

    def start(self, now: float) -> None:
        """Start every child."""
        for child in self.children:
            self._spawn(child, now)

    def poll(self, now: float) -> None:
        """Notice children that exited and schedule their restart; start those that are due."""
        if self.stopping:
            return
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self._spawn(child, now)
                continue
            if child.process is None or child.process.poll() is None:
                continue
            child.last_exit = child.process.returncode
            quick = now - child.started_at < STEADY_AFTER_S
            child.failures = child.failures + 1 if quick else 1
            delay = restart_delay(child.failures)
            child.restart_at = now + delay
            self._event(f"{child.name} exited with {child.last_exit}: restarting it in"
                        f" {delay:.0f} s (log: {child.log})", warning=True)

    def states(self, now: float) -> list[ChildState]:
        """Every child's state at ``now``, in start order."""
        return [child.state(now) for child in self.children]

    def stop(self, *, timeout: float = 20.0) -> None:
        """SIGTERM every child (the last started first), wait up to ``timeout``, kill the rest."""
        self.stopping = True
        running = [c for c in reversed(self.children)
                   if c.process is not None and c.process.poll() is None]
        logger.info("stopping %s", ", ".join(c.name for c in running) or "nothing: none runs")
        for child in self.children:
            child.restart_at = None
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._event(f"{child.name} did not stop in {timeout:.0f} s: killing it",
                            warning=True)
                child.process.kill()
                child.process.wait()
            child.last_exit = child.process.returncode
            logger.info("%s stopped with %s", child.name, child.last_exit)

    def _spawn(self, child: Child, now: float) -> None:
        with child.log.open("ab") as log:
            log.write(f"--- {datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z oem-retention up starts"
                      f" {child.name}: {' '.join(child.command)}\n".encode())
            log.flush()
            # The child's own output goes to its log: the terminal belongs to the status.
            child.process = subprocess.Popen(child.command, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT,
                                             env=self._env)
        child.started_at, child.restart_at = now, None
        logger.info("started %s (pid %s): %s", child.name, child.process.pid,
                    " ".join(child.command))

    def _event(self, message: str, *, warning: bool = False) -> None:
        logger.log(logging.WARNING if warning else logging.INFO, "%s", message)
        if self._say is not None:
            self._say(message)
