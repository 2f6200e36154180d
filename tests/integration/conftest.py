"""Fixtures for tests against the real services.

Each test gets a fresh database cloned from a migrated template (``CREATE DATABASE .. TEMPLATE``)
and its own MQTT tenant and client ids, so tests are isolated from each other and from whatever
else runs on the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql

from core import migrate, timescale
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "oemr_template"


def _server_url(dbname: str) -> str:
    base = os.environ.get("OEMR_DATABASE_URL", Settings().database_url)
    return psycopg.conninfo.make_conninfo(base, dbname=dbname)


@pytest.fixture(scope="session")
def template_db() -> str:
    """A database built from all migrations, rebuilt once per test session."""
    admin = _server_url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("UPDATE pg_database SET datistemplate = false WHERE datname = %s",
                     (TEMPLATE,))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = _server_url(TEMPLATE)
    migrate.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        timescale.apply_storage_policies(conn, Settings(database_url=url,
                                                        telemetry_chunk_interval="1 day"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("UPDATE pg_database SET datistemplate = true WHERE datname = %s",
                     (TEMPLATE,))
    return TEMPLATE


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
    """Host and port of the provisioned Mosquitto."""
    return os.environ.get("OEMR_MQTT_HOST", "127.0.0.1"), int(os.environ.get("OEMR_MQTT_PORT",
                                                                             "18830"))


class IngesterProcess:
    """``oem-retention ingest run`` as a child process, as production runs it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> IngesterProcess:
        """Start it and wait until it is connected to the broker."""
        status = Path(self.env["OEMR_STATE_DIR"]) / "run" / (
            f"ingest-{self.env['OEMR_INGEST_CLIENT_ID']}.json")
        status.unlink(missing_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oem_retention", "ingest", "run"],
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
        "OEMR_INGEST_SHARE_GROUP": f"g{tenant}",
        "OEMR_INGEST_TENANT_FILTER": tenant,
        "OEMR_SPARKPLUG_HOST_ID": f"host-{tenant}",
        "OEMR_SPARKPLUG_TENANT": tenant,
        "OEMR_SPARKPLUG_GROUP_FILTER": tenant,
        "OEMR_INGEST_SESSION_EXPIRY_S": "600",
        "OEMR_INGEST_LINGER_MS": "50",
    }


@pytest.fixture
def start_ingester(ingester_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Factory: ``start_ingester(**env_overrides)`` starts an ingester; all are stopped after."""
    started: list[IngesterProcess] = []

    def start(**overrides: str) -> IngesterProcess:
        env = {**ingester_env, **overrides}
        proc = IngesterProcess(env, tmp_path / f"ingest-{len(started)}.log").start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


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
