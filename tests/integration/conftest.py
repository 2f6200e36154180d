"""Fixtures for tests against the real services.

Each test gets a fresh database cloned from a migrated template (``CREATE DATABASE .. TEMPLATE``)
and its own MQTT tenant and client ids, so tests are isolated from each other and from whatever
else runs on the broker.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql

from core import timescale
from core.settings import Settings
from oem_retention import schema

ROOT = Path(__file__).resolve().parents[2]
# One template per test session: sessions run side by side (helpers, CI) and must not drop
# each other's template.
TEMPLATE = f"oemr_template_{os.getpid()}"


def _server_url(dbname: str) -> str:
    base = os.environ.get("OEMR_DATABASE_URL", Settings().database_url)
    return psycopg.conninfo.make_conninfo(base, dbname=dbname)


def _drop_template(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute("UPDATE pg_database SET datistemplate = false WHERE datname = %s", (name,))
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(name)))


def _drop_orphans(conn: psycopg.Connection[Any]) -> None:
    """Drop the templates of test sessions that died before cleaning up."""
    rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'oemr_template_%%'"
                        " AND datname <> %s", (TEMPLATE,)).fetchall()
    for (name,) in rows:
        pid = int(name.rsplit("_", 1)[1])
        if not Path(f"/proc/{pid}").exists():
            _drop_template(conn, name)


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """A database built by schema.migrate, once per test session, dropped after."""
    admin = _server_url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        _drop_orphans(conn)
        conn.execute("UPDATE pg_database SET datistemplate = false WHERE datname = %s",
                     (TEMPLATE,))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = _server_url(TEMPLATE)
    schema.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        timescale.apply_storage_policies(conn, Settings(database_url=url,
                                                        telemetry_chunk_interval="1 day"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("UPDATE pg_database SET datistemplate = true WHERE datname = %s",
                     (TEMPLATE,))
        # A database someone is connected to cannot be copied, and TimescaleDB's job scheduler
        # (and autovacuum) connect to every database that lets them: close the template.
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
            sql.Identifier(TEMPLATE)))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = %s AND pid <> pg_backend_pid()", (TEMPLATE,))
    yield TEMPLATE
    with psycopg.connect(admin, autocommit=True) as conn:
        _drop_template(conn, TEMPLATE)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
    """An async connection to this test's database (the ERP sync tests' way in)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        yield conn


async def rows(conn: psycopg.AsyncConnection[tuple[Any, ...]], query: str,
               params: Any = None) -> list[tuple[Any, ...]]:
    """All rows of a query, and the transaction it opened ended: a sync needs an idle connection."""
    cur = await conn.execute(query, params)
    got = await cur.fetchall()
    await conn.rollback()
    return got


@pytest.fixture
def database_url(template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"oemr_test_{uuid.uuid4().hex[:10]}"
    admin = _server_url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    yield _server_url(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture
def tenant() -> str:
    """A tenant name of this test alone, so topics never collide with other tests."""
    return f"t{uuid.uuid4().hex[:8]}"


def mqtt_address() -> tuple[str, int]:
    """Host and port of the tests' Mosquitto (see ``test_broker``)."""
    return os.environ.get("OEMR_MQTT_HOST", "127.0.0.1"), int(os.environ.get("OEMR_MQTT_PORT",
                                                                             "18830"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateBroker:
    """Mosquitto run from deploy/local/mosquitto.conf in a directory of its own."""

    def __init__(self, work: Path) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.work = work
        self.port = _free_port()
        template = (ROOT / "deploy" / "local" / "mosquitto.conf").read_text()
        self.conf = work / "mosquitto.conf"
        self.conf.write_text(
            template.replace("@PORT@", str(self.port)).replace("@DATA@", f"{work}/")
            .replace("@PID@", str(work / "mosquitto.pid")).replace("@LOG@", str(work / "log"))
            # Started as root, mosquitto would drop to its own user, which cannot enter
            # pytest's private temporary directory.
            + "\nuser root\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateBroker:
        """Start it and wait until it accepts connections."""
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("test broker did not start:"
                                       f" {(self.work / 'log').read_text()}") from None
                time.sleep(0.05)
            else:
                return self

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistent store and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="session", autouse=True)
def test_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    """A Mosquitto of the test session alone, run from the platform's own configuration.

    Persistent sessions outlive their clients by design, so a broker shared with a running
    platform (or an earlier `up` whose session queues everything) would carry traffic between
    runs. This one starts empty, uses deploy/local/mosquitto.conf (only port, paths and the
    user differ) and is stopped at the end.
    """
    broker = PrivateBroker(tmp_path_factory.mktemp("mosquitto")).start()
    saved = {k: os.environ.get(k) for k in ("OEMR_MQTT_HOST", "OEMR_MQTT_PORT")}
    os.environ["OEMR_MQTT_HOST"], os.environ["OEMR_MQTT_PORT"] = "127.0.0.1", str(broker.port)
    yield broker
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    broker.stop()


class IngesterProcess:
    """``oem-retention ingest run`` as a child process, as production runs it.

    ``module`` is what ``python -m`` runs: a test's wrapper of the CLI can change the process
    first (tests/integration/paho_drift.py).
    """

    def __init__(self, env: dict[str, str], log: Path, *,
                 module: str = "oem_retention") -> None:
        self.env = env
        self.log = log
        self.module = module
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> IngesterProcess:
        """Start it and wait until it is connected to the broker."""
        status = Path(self.env["OEMR_STATE_DIR"]) / "run" / (
            f"ingest-{self.env['OEMR_INGEST_CLIENT_ID']}.json")
        status.unlink(missing_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "ingest", "run"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingester exited: {self.log.read_text()[-2000:]}")
            if status.exists() and orjson.loads(status.read_bytes())["mqtt_connected"]:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"ingester did not connect: {self.log.read_text()[-2000:]}")

    def counters(self) -> dict[str, Any]:
        """The counters from its status file."""
        status = Path(self.env["OEMR_STATE_DIR"]) / "run" / (
            f"ingest-{self.env['OEMR_INGEST_CLIENT_ID']}.json")
        return dict(orjson.loads(status.read_bytes()))

    def kill(self) -> None:
        """kill -9."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def ingester_env(database_url: str, tenant: str, tmp_path: Path) -> dict[str, str]:
    """Environment of an ingester bound to this test's database and tenant."""
    host, port = mqtt_address()
    return {
        **os.environ,
        "OEMR_DATABASE_URL": database_url,
        "OEMR_MQTT_HOST": host,
        "OEMR_MQTT_PORT": str(port),
        "OEMR_STATE_DIR": str(tmp_path / "state"),
        "OEMR_INGEST_CLIENT_ID": f"ingest-{tenant}-1",
        "OEMR_INGEST_TENANT_FILTER": tenant,
        "OEMR_SPARKPLUG_HOST_ID": f"host-{tenant}",
        "OEMR_SPARKPLUG_TENANT": tenant,
        "OEMR_SPARKPLUG_GROUP_FILTER": tenant,
        "OEMR_INGEST_SESSION_EXPIRY_S": "600",
        "OEMR_INGEST_LINGER_MS": "50",
        # `up` runs the API: on a port of the test's own.
        "OEMR_API_PORT": str(_free_port()),
    }


@pytest.fixture
def start_ingester(ingester_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Factory: ``start_ingester(**env_overrides)`` starts an ingester; all are stopped after."""
    started: list[IngesterProcess] = []

    def start(*, module: str = "oem_retention", **overrides: str) -> IngesterProcess:
        env = {**ingester_env, **overrides}
        proc = IngesterProcess(env, tmp_path / f"ingest-{len(started)}.log",
                               module=module).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


# The ingester's two MQTT clients (ingest/broker.py): the end-to-end tests that prove nothing is
# lost run on both (OEMR_INGEST_FAST_PATH), and check the status says which one ran.
BOTH_CLIENTS = pytest.mark.parametrize("fast_path", ["auto", "off"],
                                       ids=["fast-path", "stock-paho"])
CLIENT_OF = {"auto": "fast", "off": "stock"}


def publisher(client_id: str | None = None) -> paho.Client:
    """A connected MQTT 5 client with its network loop running."""
    host, port = mqtt_address()
    client = paho.Client(CallbackAPIVersion.VERSION2,
                         client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                         protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    return client


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill a process and all its descendants if it still runs.

    A failed assertion must not leave `up`'s children running: they would publish and ingest
    into the next tests' broker.
    """
    import psutil

    if proc.poll() is None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
    # Reaped, or its Popen warns (ResourceWarning, an error here) in whichever test runs next.
    proc.wait(timeout=30)


def wait_for(predicate: Any, *, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll until ``predicate()`` is truthy; return its value or fail with the last one."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    assert value, f"condition not met within {timeout}s (last value {value!r})"
    return value


def scalar(database_url: str, query: str, params: Any = None) -> Any:
    """One value from the test's database."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


class TelemetryFlood:
    """``messages`` JSON telemetry messages at QoS 1, published from a background thread.

    Message ``i`` is from machine ``SN-<i % machines>`` at ``start_ms + i`` milliseconds, with
    ``metrics`` metrics and a state, so every message makes ``metrics`` telemetry rows and one
    machine_states row, and no two messages share a key. ``rate`` (messages per second) paces
    the publishing so that a test can act while it is under way; ``None`` is as fast as possible.
    With ``hold_at``, publishing stops before message ``hold_at`` until ``release()``: the flood
    is surely not over when the test breaks something, however slow the machine is.
    ``acked`` counts the PUBACKs: from then on, the broker owns the message.
    """

    def __init__(self, tenant: str, *, messages: int, machines: int = 50, metrics: int = 10,
                 rate: float | None = None, start_ms: int | None = None,
                 hold_at: int | None = None) -> None:
        self.tenant = tenant
        self.messages = messages
        self.machines = machines
        self.metrics = metrics
        self.rate = rate
        self.start_ms = start_ms if start_ms is not None else int(time.time() * 1000) - 600_000
        self.hold_at = hold_at
        self.published = 0
        self.acked = 0
        # PUBACK reason codes other than Success (0x10 is "no matching subscribers": nobody got it).
        self.not_success: dict[int, int] = {}
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._all_acked = threading.Event()
        self._stop = threading.Event()
        self._client = publisher()
        self._client.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._run, name="telemetry-flood", daemon=True)
        self.started_at = 0.0
        self.finished_at = 0.0

    @property
    def telemetry_rows(self) -> int:
        """Rows of ``telemetry`` the whole flood makes."""
        return self.messages * self.metrics

    def payload(self, i: int) -> tuple[str, bytes]:
        """Topic and body of message ``i``."""
        states = ("running", "idle", "fault", "off")
        body = {"ts": self.start_ms + i, "state": states[i % 4],
                "metrics": {f"m{k}": i + k / 10 for k in range(self.metrics)}}
        return (f"oem/{self.tenant}/machines/SN-{i % self.machines:04d}/telemetry",
                orjson.dumps(body))

    def start(self) -> TelemetryFlood:
        """Begin publishing in the background."""
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    @property
    def held(self) -> bool:
        """True while ``hold_at`` holds back the rest."""
        return self.hold_at is not None and not self._released.is_set()

    def release(self) -> None:
        """Publish the rest, past ``hold_at``."""
        self._released.set()

    def wait_acked(self, timeout: float = 60.0) -> float:
        """Wait until the broker has acknowledged every message; seconds the flood took."""
        assert self._all_acked.wait(timeout), (
            f"broker acked {self.acked} of {self.messages} messages within {timeout}s"
            f"{' (held: release() it)' if self.held else ''}")
        assert not self.not_success, f"PUBACK reason codes (code: count) {self.not_success}"
        return self.finished_at - self.started_at

    def close(self) -> None:
        """Stop publishing (if still under way) and disconnect."""
        self._stop.set()
        self._released.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_publish(self, _client: paho.Client, _userdata: Any, _mid: int, reason: Any,
                    _props: Any) -> None:
        with self._lock:
            if reason.value != 0:
                self.not_success[reason.value] = self.not_success.get(reason.value, 0) + 1
            self.acked += 1
            if self.acked == self.messages:
                self.finished_at = time.monotonic()
                self._all_acked.set()

    def _run(self) -> None:
        slice_s = 0.02
        per_slice = self.messages if self.rate is None else max(1, round(self.rate * slice_s))
        next_at = time.monotonic()
        i = 0
        while i < self.messages and not self._stop.is_set():
            end = min(i + per_slice, self.messages)
            if self.hold_at is not None and not self._released.is_set():
                end = min(end, self.hold_at)
                if end <= i:  # held: wait for release(), then keep the pace from then on
                    self._released.wait()
                    next_at = time.monotonic()
                    continue
            for j in range(i, end):
                topic, body = self.payload(j)
                self._client.publish(topic, body, qos=1)
                self.published += 1
            i = end
            next_at += slice_s
            time.sleep(max(0.0, next_at - time.monotonic()))
