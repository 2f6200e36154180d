"""Interop: a Sparkplug B edge node written with pysparkplug, a library we did not write.

pysparkplug 0.6.1 pins paho-mqtt < 2 and our ingester needs paho 2, so the edge node runs as a
subprocess (``spb_edge_node.py``) in its own venv, ``.venv-spb``, created here when missing.
The expected rows are the values the test hands the edge node, written out by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT, mqtt_address, publisher, scalar, wait_for
from tests.integration.test_sparkplug import Inbox, rows, telemetry
from tests.sparkplug_payloads import decode

SPB_VENV = ROOT / ".venv-spb"
SPB_PYTHON = SPB_VENV / "bin" / "python"
PYSPARKPLUG = "pysparkplug==0.6.1"
# Its versions and hashes (deploy/local/lock.sh writes it).
SPB_LOCK = Path(__file__).with_name("spb_edge_node.lock")
EDGE_NODE = Path(__file__).with_name("spb_edge_node.py")
NODE, DEVICE = "edge-py", "lathe-1"

# name, pysparkplug datatype, alias, DBIRTH value, DDATA value, and what the database holds
# for each (metric name as stored; None: not a numeric sample).
METRICS: list[tuple[str, str, int | None, Any, Any, str | None, float | None, float | None]] = [
    ("Spindle/Speed", "DOUBLE", 1, 1450.25, 1500.5, "Spindle/Speed", 1450.25, 1500.5),
    ("Motor/Temp", "FLOAT", 2, 40.5, 41.25, "Motor/Temp", 40.5, 41.25),
    ("Axis/Offset", "INT8", 3, -5, -128, "Axis/Offset", -5.0, -128.0),
    ("Axis/Error", "INT16", 4, -87, 32767, "Axis/Error", -87.0, 32767.0),
    ("Counter/Delta", "INT32", 5, -100_000, -2_147_483_648, "Counter/Delta", -100000.0,
     -2147483648.0),
    ("Energy/Net", "INT64", 6, -5_000_000_000, 9_007_199_254_740_991, "Energy/Net",
     -5000000000.0, 9007199254740991.0),
    ("Counter/Small", "UINT8", 7, 200, 255, "Counter/Small", 200.0, 255.0),
    ("Counter/Medium", "UINT16", 8, 65_000, 1, "Counter/Medium", 65000.0, 1.0),
    ("Counter/Parts", "UINT32", 9, 4_000_000_000, 4_000_000_001, "Counter/Parts",
     4000000000.0, 4000000001.0),
    ("Counter/Cycles", "UINT64", 10, 2**60, 2**60 + 2**8, "Counter/Cycles",
     1152921504606846976.0, 1152921504606847232.0),
    ("Door/Open", "BOOLEAN", 11, False, True, "Door/Open", 0.0, 1.0),
    ("Operating Hours", "DOUBLE", 12, 1234.5, 1235.0, "operating_hours", 1234.5, 1235.0),
    ("Machine/State", "STRING", 13, "running", "idle", None, None, None),
    ("Operator", "STRING", None, "Ana", "Ben", None, None, None),
]


def _has_pysparkplug() -> bool:
    if not SPB_PYTHON.exists():
        return False
    check = subprocess.run(
        [str(SPB_PYTHON), "-c", "import pysparkplug; print(pysparkplug.__version__)"],
        capture_output=True, text=True, check=False)
    return check.returncode == 0 and check.stdout.strip() == PYSPARKPLUG.split("==")[1]


@pytest.fixture(scope="session")
def spb_python() -> Path:
    """The Python of ``.venv-spb``, with pysparkplug installed (created if missing)."""
    if not _has_pysparkplug():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(SPB_VENV)], check=True,
                       timeout=120)
        subprocess.run([str(SPB_PYTHON), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "--require-hashes", "--no-deps", "-r",
                        str(SPB_LOCK)], check=True, timeout=300)
    assert _has_pysparkplug(), f"{PYSPARKPLUG} is not importable in {SPB_VENV}"
    return SPB_PYTHON


class EdgeNode:
    """``spb_edge_node.py`` running in ``.venv-spb``."""

    def __init__(self, python: Path, group: str, spec: dict[str, Any]) -> None:
        host, port = mqtt_address()
        self.proc = subprocess.Popen(
            [str(python), str(EDGE_NODE), host, str(port), group, NODE, DEVICE, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_published(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # the script gives up after 15 s
        assert line == "published", f"edge node: {line!r} {self.finish()}"

    def command(self, text: str) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.proc.wait(timeout=20)

    def finish(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        return err


@pytest.fixture
def edge_node(spb_python: Path, tenant: str) -> Iterator[Any]:
    """Factory: ``edge_node(birth_ms, data_ms)`` starts the pysparkplug edge node."""
    started: list[EdgeNode] = []

    def start(birth_ms: int, data_ms: int) -> EdgeNode:
        spec = {"birth_ms": birth_ms, "data_ms": data_ms, "metrics": [
            {"name": name, "datatype": datatype, "alias": alias, "birth": birth, "data": data}
            for name, datatype, alias, birth, data, *_ in METRICS]}
        node = EdgeNode(spb_python, tenant, spec)
        started.append(node)
        return node

    yield start
    for node in started:
        node.finish()


def _expected(birth_ms: int, data_ms: int) -> dict[tuple[str, int], float]:
    expected: dict[tuple[str, int], float] = {}
    for *_, stored, at_birth, at_data in METRICS:
        if stored is not None:
            assert at_birth is not None
            assert at_data is not None
            expected[(stored, birth_ms)] = at_birth
            expected[(stored, data_ms)] = at_data
    return expected


@pytest.fixture
def host_state_cleared(ingester_env: dict[str, str]) -> Iterator[None]:
    """Clears the ingester's retained STATE from the broker afterwards."""
    yield
    pub = publisher()
    pub.publish(f"spBv1.0/STATE/{ingester_env['OEMR_SPARKPLUG_HOST_ID']}", b"", qos=1,
                retain=True).wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()


def _check_values(database_url: str, tenant: str, birth_ms: int, data_ms: int) -> None:
    serial = f"{tenant}/{NODE}/{DEVICE}"
    expected = _expected(birth_ms, data_ms)
    wait_for(lambda: len(telemetry(database_url, serial)) >= len(expected))
    assert telemetry(database_url, serial) == expected
    assert rows(database_url, """
        SELECT (extract(epoch FROM s.time) * 1000)::bigint, s.state::text
        FROM machine_states s JOIN machines m ON m.id = s.machine_id
        WHERE m.serial = %s ORDER BY s.time""", (serial,)) == [(birth_ms, "running"),
                                                             (data_ms, "idle")]
    assert rows(database_url, """
        SELECT tenant, protocol, spb_edge_node, spb_device, online FROM machines""") == [
        (tenant, "sparkplug", NODE, DEVICE, True)]
    assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0
    assert scalar(database_url, "SELECT count(*) FROM sparkplug_gaps") == 0


def test_pysparkplug_edge_node_values_and_its_will(
        database_url: str, tenant: str, host_state_cleared: None, start_ingester: Any,
        edge_node: Any) -> None:
    start_ingester()
    now = int(time.time() * 1000)
    birth_ms, data_ms = now - 60_000, now - 30_000
    node = edge_node(birth_ms, data_ms)
    node.wait_published()
    _check_values(database_url, tenant, birth_ms, data_ms)

    # The node's process ends without a DISCONNECT: the broker publishes its will, the NDEATH
    # with the bdSeq of this connection's NBIRTH, and the machine goes offline.
    assert node.command("die") == 0
    wait_for(lambda: scalar(database_url, "SELECT online FROM machines") is False)
    assert [kind for kind, in rows(database_url,
                                   "SELECT kind FROM machine_events ORDER BY time")] == [
        "online", "offline"]
    assert scalar(database_url, "SELECT payload->>'bdSeq' FROM machine_events"
                                " WHERE kind = 'offline'") == "0"


def test_pysparkplug_clean_disconnect(database_url: str, tenant: str, host_state_cleared: None,
                                      start_ingester: Any, edge_node: Any) -> None:
    start_ingester()
    inbox = Inbox(f"spBv1.0/{tenant}/NBIRTH/{NODE}", f"spBv1.0/{tenant}/NDEATH/{NODE}")
    now = int(time.time() * 1000)
    birth_ms, data_ms = now - 60_000, now - 30_000
    node = edge_node(birth_ms, data_ms)
    node.wait_published()
    _check_values(database_url, tenant, birth_ms, data_ms)

    assert node.command("disconnect") == 0
    [(ndeath, _)] = wait_for(lambda: inbox.on(f"spBv1.0/{tenant}/NDEATH/{NODE}"), timeout=10)
    [(nbirth, _)] = inbox.on(f"spBv1.0/{tenant}/NBIRTH/{NODE}")
    inbox.close()

    def bd_seq(raw: bytes) -> int:
        [value] = [m.long_value for m in decode(raw).metrics if m.name == "bdSeq"]
        return int(value)

    # pysparkplug 0.6.1 sets up the will of its *next* connection right after the births, and
    # its clean disconnect sends that bdSeq. Sparkplug 3.0: an NDEATH counts only with the
    # bdSeq of the current NBIRTH, so the host keeps the machine online.
    assert (bd_seq(nbirth), bd_seq(ndeath)) == (0, 1)
    # To know the ingester has processed the NDEATH, a marker follows it: published once the
    # NDEATH reached us (so the broker had routed it to the ingester too), on a topic of the
    # same subscription, and dead-lettered by the ingester.
    pub = publisher()
    pub.publish(f"spBv1.0/{tenant}/NDATA/{NODE}", b"\x00 marker", qos=1).wait_for_publish(10)
    wait_for(lambda: scalar(database_url, "SELECT count(*) FROM dead_letters") == 1)
    pub.disconnect()
    pub.loop_stop()
    assert scalar(database_url, "SELECT online FROM machines") is True
    assert [kind for kind, in rows(database_url, "SELECT kind FROM machine_events")] == [
        "online"]
