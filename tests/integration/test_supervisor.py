"""The supervisor with real child processes: restarts with backoff, logs to files, stops all.

The supervisor is driven on a clock of the test's own (``now``), so what is due is decided by
the test, not by how fast this machine is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from oem_retention.supervisor import Child, Supervisor
from tests.integration.conftest import wait_for

PY = sys.executable
SLEEPER = [PY, "-c", "import time; time.sleep(600)"]


def _proc(child: Child) -> int:
    assert child.process is not None
    return child.process.pid


def test_a_child_that_dies_is_restarted_after_its_backoff(tmp_path: Path) -> None:
    said: list[str] = []
    supervisor = Supervisor({"ingest": SLEEPER, "analytics": SLEEPER}, log_dir=tmp_path,
                            say=said.append)
    supervisor.start(0.0)
    try:
        ingest, analytics = supervisor.children
        first, other = _proc(ingest), _proc(analytics)
        assert ingest.process is not None
        ingest.process.kill()
        ingest.process.wait()
        supervisor.poll(100.0)  # it had run 100 s: a first failure, 2 s
        assert said == [f"ingest exited with -9: restarting it in 2 s (log: {tmp_path}/ingest.log)"]
        state = supervisor.states(100.5)[0]
        assert (state.state, state.pid, state.restart_in_s, state.last_exit, state.restarts) == (
            "restarting", None, 1.5, -9, 0)
        supervisor.poll(101.9)
        assert _proc(ingest) == first  # not yet
        supervisor.poll(102.0)
        state = supervisor.states(103.0)[0]
        assert (state.state, state.restarts, state.running_s) == ("running", 1, 1.0)
        assert state.pid == _proc(ingest) != first
        assert ingest.process.poll() is None
        assert _proc(analytics) == other  # the others were left alone
        assert supervisor.states(103.0)[1].restarts == 0
    finally:
        supervisor.stop(timeout=10)


def test_a_child_that_keeps_failing_waits_longer_each_time(tmp_path: Path) -> None:
    failing = [PY, "-c", "import sys; print('ERROR cannot start: no broker', file=sys.stderr);"
                         " sys.exit(3)"]
    supervisor = Supervisor({"simulator": failing}, log_dir=tmp_path)
    child = supervisor.children[0]
    now = 0.0
    supervisor.start(now)
    delays = []
    for _ in range(4):
        assert child.process is not None
        child.process.wait()
        now += 1  # it failed within a second of its start
        supervisor.poll(now)
        assert child.restart_at is not None
        delays.append(child.restart_at - now)
        now = child.restart_at
        supervisor.poll(now)
    assert delays == [2, 4, 8, 16]
    assert child.restarts == 4
    # One that ran a minute before it failed was working: a first failure again.
    assert child.process is not None
    child.process.wait()
    now += 61
    supervisor.poll(now)
    assert child.restart_at == now + 2
    state = supervisor.states(now)[0]
    assert (state.state, state.last_exit, state.last_problem) == (
        "restarting", 3, "ERROR cannot start: no broker")
    supervisor.stop()
    assert supervisor.states(now + 100)[0].state == "stopped"


def test_stop_ends_every_child_and_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = [PY, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                          " print('ignoring SIGTERM', flush=True); time.sleep(600)"]
    said: list[str] = []
    supervisor = Supervisor({"polite": SLEEPER, "stubborn": stubborn}, log_dir=tmp_path,
                            say=said.append)
    supervisor.start(0.0)
    # Its own line, not the command in the log's header: the handler is in place.
    wait_for(lambda: "\nignoring SIGTERM\n" in (tmp_path / "stubborn.log").read_text())
    supervisor.stop(timeout=1.0)
    polite, obstinate = supervisor.children
    assert (polite.last_exit, obstinate.last_exit) == (-15, -9)
    assert said == ["stubborn did not stop in 1 s: killing it"]
    supervisor.poll(1000.0)  # stopping: nothing is restarted
    assert [s.state for s in supervisor.states(1000.0)] == ["stopped", "stopped"]


def test_a_childs_output_goes_to_its_log_not_the_terminal(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    talker = [PY, "-c", "import logging; logging.basicConfig(format='%(asctime)s %(levelname)s"
                        " %(name)s: %(message)s'); logging.getLogger('ingest.store')"
                        ".warning('database slow'); print('a plain line', flush=True)"]
    supervisor = Supervisor({"talker": talker}, log_dir=tmp_path / "logs")
    supervisor.start(0.0)
    child = supervisor.children[0]
    assert child.process is not None
    assert child.process.wait(timeout=30) == 0
    log = (tmp_path / "logs" / "talker.log").read_text()
    assert log.startswith("--- ")
    assert f"oem-retention up starts talker: {' '.join(talker)}\n" in log
    assert "a plain line\n" in log
    assert (supervisor.states(1.0)[0].last_problem or "").endswith(
        " WARNING ingest.store: database slow")
    out, err = capfd.readouterr()
    assert "database slow" not in out + err
    assert "a plain line" not in out + err
    supervisor.stop()
