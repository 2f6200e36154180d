"""The ingester loses nothing and stores nothing twice when things go wrong under load.

Each test publishes ``N`` JSON telemetry messages at QoS 1 (``METRICS`` metrics and a state each,
distinct times) while something breaks: the ingester is killed with SIGKILL, the database goes
away, one of two ingesters sharing a subscription dies. Afterwards exactly ``N * METRICS``
telemetry rows and ``N`` machine_states rows must be stored. A last, smaller test drops the
ingester's database connection while it is reconnecting.

The database outage is played on a second PostgreSQL cluster (``outage``, port 55433) inside the
provisioned TimescaleDB chroot: other people's tests use the main cluster at the same time, so it
is never stopped.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from psycopg import sql

from core.settings import Settings
from oem_retention import schema
from tests.integration.conftest import (
    BOTH_CLIENTS,
    CLIENT_OF,
    IngesterProcess,
    PrivateBroker,
    TelemetryFlood,
    scalar,
    wait_for,
)

N = 20_000
MACHINES = 50
METRICS = 10
# Messages per second: the flood lasts ~7 s, long enough to break things while it is under way
# (the ingester alone stores ~7,000 messages/s here).
RATE = 3_000
# The last tenth of the flood waits until the test has broken something and let it go on.
HOLD_AT = N - N // 10
RSS_CEILING_MB = 200

OUTAGE_CLUSTER = "outage"
OUTAGE_PORT = 55433
OUTAGE_SECONDS = 5.0


# -- what is stored ----------------------------------------------------------------------


def _telemetry_rows(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM telemetry"))


def _stored(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM telemetry),"
                           " (SELECT count(*) FROM machine_states)").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _assert_exactly_stored(url: str, flood: TelemetryFlood, *, timeout: float = 60.0) -> float:
    """Wait until the whole flood is stored, then check nothing is missing, doubled or wrong.

    Returns the seconds it took, from the broker's last PUBACK to the last row stored.
    """
    flood.wait_acked()
    expected = (flood.telemetry_rows, flood.messages)
    deadline = time.monotonic() + timeout
    while (min(got - want for got, want in zip(_stored(url), expected, strict=True)) < 0
           and time.monotonic() < deadline):
        time.sleep(0.1)
    drained = time.monotonic() - flood.finished_at
    # A late duplicate would show up after the counts were first reached.
    time.sleep(1.0)
    with psycopg.connect(url) as conn:
        row = conn.execute("""
            SELECT (SELECT count(*) FROM telemetry),
                   (SELECT count(*) FROM machine_states),
                   (SELECT count(DISTINCT time) FROM machine_states),
                   (SELECT count(*) FROM (SELECT 1 FROM telemetry GROUP BY machine_id, time
                                          HAVING count(*) = %(metrics)s) AS complete),
                   (SELECT sum(value) FROM telemetry),
                   (SELECT count(*) FROM machines),
                   (SELECT count(*) FROM dead_letters)""", {"metrics": flood.metrics}).fetchone()
    assert row is not None
    telemetry, states, state_times, complete, value_sum, machines, dead = row
    n, k = flood.messages, flood.metrics
    assert (telemetry, states) == expected, (
        f"(telemetry, machine_states) rows, waiting up to {timeout:.0f}s after the last PUBACK")
    assert state_times == n, "every message's time once in machine_states"
    assert complete == n, "every message with all its metrics"
    # Message i carries the values i + j/10 for j < k.
    assert value_sum == pytest.approx(k * n * (n - 1) / 2 + n * k * (k - 1) / 20, rel=1e-12)
    assert machines == flood.machines
    assert dead == 0
    return drained


def _flood(tenant: str, *, rate: float = RATE) -> TelemetryFlood:
    # Held at HOLD_AT: the flood is not over before the test broke something, even when the
    # machine (or the broker, saving its store) is slow.
    return TelemetryFlood(tenant, messages=N, machines=MACHINES, metrics=METRICS, rate=rate,
                          hold_at=HOLD_AT)


def _kill_at_commit(ingester: IngesterProcess, url: str, *, timeout: float = 30.0) -> int:
    """kill -9 the moment the next batch's commit becomes visible; returns its state rows then.

    The ingester acknowledges a batch to the broker right after its commit: killed at that
    moment, it most likely leaves stored messages unacknowledged, which the broker redelivers.
    """
    query = "SELECT count(*) FROM machine_states"
    with psycopg.connect(url, autocommit=True) as conn:
        def rows() -> int:
            row = conn.execute(query).fetchone()
            assert row is not None
            return int(row[0])
        before, deadline = rows(), time.monotonic() + timeout
        while (now := rows()) == before:
            assert time.monotonic() < deadline, f"no commit within {timeout}s"
        ingester.kill()
    return now


def _wait_under_way(url: str, flood: TelemetryFlood, *, published: int) -> None:
    """Wait until ``published`` messages are out and the ingester has committed some."""
    wait_for(lambda: flood.published >= published and _telemetry_rows(url) > 0, timeout=60,
             interval=0.05)


def _assert_mid_stream(flood: TelemetryFlood, stored: int) -> None:
    assert flood.published < flood.messages, (
        f"the publisher had already finished, {time.monotonic() - flood.started_at:.1f}s after"
        f" it started, with {stored} messages stored: too late to break anything mid-stream")


def _kill_mid_stream(ingester: IngesterProcess, url: str, flood: TelemetryFlood, *,
                     after_published: int) -> int:
    """kill -9 at a commit once ``after_published`` messages are out, before the flood ends."""
    _wait_under_way(url, flood, published=after_published)
    committed = _kill_at_commit(ingester, url)
    _assert_mid_stream(flood, committed)
    return committed


def _duplicates_skipped(ingester: IngesterProcess) -> int:
    """Messages the ingester found already stored (its counters, after its first batch)."""
    counters = wait_for(lambda: (c := ingester.counters())["batches"] >= 1 and c, timeout=20)
    # Each message makes one machine_states row, unless it was stored before.
    return int(counters["stored_messages"] - counters["state_rows"])


# -- 1. kill -9 ------------------------------------------------------------------------------

KILL_RATE = 2_000
MAX_KILLS = 4


@BOTH_CLIENTS
def test_kill_9_mid_stream_loses_and_doubles_nothing(database_url: str, tenant: str,
                                                     start_ingester: Any, fast_path: str) -> None:
    # Full batches (a second's worth at KILL_RATE): a commit is followed by 2,000 PUBACKs, so a
    # kill at the commit lands before they are sent and the broker redelivers stored messages.
    ingester = start_ingester(OEMR_INGEST_LINGER_MS="1000", OEMR_INGEST_FAST_PATH=fast_path)
    assert ingester.counters()["mqtt_client"] == CLIENT_OF[fast_path]
    flood = _flood(tenant, rate=KILL_RATE).start()
    kills: list[tuple[int, int]] = []
    skipped: list[int] = []  # per life of the ingester after a kill
    try:
        after_published = flood.messages // 10
        # Kill again while the flood lasts, at least until a restart met stored messages again.
        while not kills or (flood.held and flood.published < HOLD_AT
                            and len(kills) < MAX_KILLS and (len(kills) < 2 or not any(skipped))):
            committed = _kill_mid_stream(ingester, database_url, flood,
                                         after_published=after_published)
            kills.append((committed, flood.published))
            time.sleep(0.3)  # publishing goes on into the broker's queue for the dead session
            ingester.start()  # the same client id: the same persistent session
            skipped.append(_duplicates_skipped(ingester))
            after_published = 0
        flood.release()
        drained = _assert_exactly_stored(database_url, flood)
        skipped[-1] = _duplicates_skipped(ingester)
    finally:
        flood.close()
    print(f"\nkill -9 at (messages committed, published) {kills}; already stored messages"
          f" redelivered after each kill {skipped}; stored all {drained:.1f}s after the last"
          " PUBACK")
    # Else the run proved nothing about duplicates: no kill fell between a commit and its acks.
    assert any(skipped), "no restart met already stored messages"


def test_a_paho_whose_internals_differ_runs_stock_and_loses_and_doubles_nothing(
        database_url: str, tenant: str, start_ingester: Any) -> None:
    # paho's _packet_read takes a parameter the fast path does not know (tests/integration/
    # paho_drift.py): the start-up check names it, the ingester runs stock paho, and a kill -9
    # at a commit still loses and doubles nothing: acks go out after the commit on that path too.
    drift = "tests.integration.paho_drift"
    ingester = start_ingester(module=drift, OEMR_INGEST_LINGER_MS="1000")
    counters = ingester.counters()
    assert counters["mqtt_client"] == "stock"
    assert "internals differ" in counters["mqtt_client_why"]
    log = ingester.log.read_text()
    assert ("Client._packet_read(self, max_packets) differs: the fast path expects (self)"
            in log), log[-2000:]
    flood = _flood(tenant, rate=KILL_RATE).start()
    try:
        committed = _kill_mid_stream(ingester, database_url, flood,
                                     after_published=flood.messages // 10)
        time.sleep(0.3)
        ingester.start()
        assert ingester.counters()["mqtt_client"] == "stock"
        skipped = _duplicates_skipped(ingester)
        flood.release()
        drained = _assert_exactly_stored(database_url, flood)
    finally:
        flood.close()
    print(f"\nstock paho after a failed check: killed at {committed} messages committed;"
          f" {skipped} already stored redelivered; all stored {drained:.1f}s after the last PUBACK")


# -- 2. database outage ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutageCluster:
    """A PostgreSQL 17 + TimescaleDB cluster of these tests alone, which they may stop."""

    root: Path
    port: int

    def pg_ctl(self, action: str) -> None:
        """``pg_ctlcluster 17 outage <action>`` inside the chroot."""
        subprocess.run(["chroot", str(self.root), "pg_ctlcluster", "17", OUTAGE_CLUSTER, action,
                        *(["-m", "fast"] if action == "stop" else [])],
                       check=True, capture_output=True, timeout=60)

    def online(self) -> bool:
        """True when the cluster runs."""
        out = subprocess.run(["chroot", str(self.root), "pg_lsclusters", "-h"], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        return any(line.split()[1] == OUTAGE_CLUSTER and "online" in line
                   for line in out.splitlines() if line.strip())

    def url(self, dbname: str) -> str:
        """Connection string of one of its databases."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def wait_accepting(self, timeout: float = 30.0) -> None:
        """Wait until it accepts connections."""
        def accepting() -> bool:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError:
                return False
            return True
        wait_for(accepting, timeout=timeout, interval=0.2)


def _outage_conf(port: int) -> str:
    # As deploy/local/provision.sh configures the main cluster, small: it holds one test's data.
    return "\n".join([
        f"port = {port}",
        "listen_addresses = '127.0.0.1'",
        "shared_preload_libraries = 'timescaledb'",
        "timescaledb.telemetry_level = off",
        "shared_buffers = 128MB",
        "max_connections = 50",
        "max_locks_per_transaction = 256",
        "",
    ])


def _ensure_mounts(root: Path) -> None:
    # PostgreSQL in the chroot needs /proc and a /dev/shm for its shared memory (provision.sh).
    if not os.path.ismount(root / "proc"):
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    (root / "dev" / "shm").mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(root / "dev" / "shm"):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs",
                        str(root / "dev" / "shm")], check=True)


def _create_outage_cluster(cluster: OutageCluster) -> None:
    """Create and configure the cluster if that was not done yet (idempotent)."""
    root = cluster.root
    conf_dir = root / "etc" / "postgresql" / "17" / OUTAGE_CLUSTER
    if not (conf_dir / "postgresql.conf").exists():
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", cluster.port)) == 0:
                pytest.fail(f"port {cluster.port} is taken by something else than the"
                            f" {OUTAGE_CLUSTER} cluster")
        subprocess.run(["chroot", str(root), "pg_createcluster", "17", OUTAGE_CLUSTER,
                        "-p", str(cluster.port), "--", "--auth=trust"],
                       check=True, capture_output=True, timeout=120)
    restart = False
    conf = conf_dir / "conf.d" / "oem-retention-outage.conf"
    want = _outage_conf(cluster.port)
    if not conf.exists() or conf.read_text() != want:
        conf.parent.mkdir(exist_ok=True)
        conf.write_text(want)
        restart = True
    main_conf = conf_dir / "postgresql.conf"
    if "\ninclude_dir = 'conf.d'" not in main_conf.read_text():
        with main_conf.open("a") as out:
            out.write("include_dir = 'conf.d'\n")
        restart = True
    hba = conf_dir / "pg_hba.conf"
    trust = "host all all 127.0.0.1/32 trust # oem-retention: outage tests\n"
    if not hba.read_text().startswith(trust):
        hba.write_text(trust + hba.read_text())
        restart = True
    if restart and cluster.online():
        cluster.pg_ctl("restart")


@pytest.fixture(scope="session")
def outage_cluster() -> Iterator[OutageCluster]:
    """The ``outage`` cluster, created once, started for the session and stopped after it."""
    root = Path(os.environ.get("OEMR_TSDB_ROOT", "/var/lib/oem-retention/timescaledb-root"))
    if not (root / "usr/lib/postgresql/17/bin/postgres").exists():
        pytest.skip(f"no provisioned TimescaleDB chroot at {root} (OEMR_TSDB_ROOT)")
    if os.geteuid() != 0:
        pytest.skip("the outage cluster is run with chroot, which needs root")
    cluster = OutageCluster(root, OUTAGE_PORT)
    # One test session at a time stops and starts it.
    lock_path = Path(os.environ.get("OEMR_STATE_DIR", "/var/lib/oem-retention")) / "run" / (
        "outage-cluster.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        deadline = time.monotonic() + 300
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session holds {lock_path} for over 300s")
                time.sleep(1)
        _ensure_mounts(root)
        _create_outage_cluster(cluster)
        if not cluster.online():
            cluster.pg_ctl("start")
        cluster.wait_accepting()
        try:
            yield cluster
        finally:
            if cluster.online():
                cluster.pg_ctl("stop")


@pytest.fixture
def outage_database_url(outage_cluster: OutageCluster) -> Iterator[str]:
    """A fresh, migrated database on the outage cluster."""
    name = f"oemr_outage_{uuid.uuid4().hex[:10]}"
    admin = outage_cluster.url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = outage_cluster.url(name)
    schema.migrate(url)
    yield url
    if not outage_cluster.online():
        outage_cluster.pg_ctl("start")
        outage_cluster.wait_accepting()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


class ProcessSampler:
    """Samples an ingester's resident memory and pending count every 100 ms, in a thread."""

    def __init__(self, ingester: IngesterProcess) -> None:
        assert ingester.proc is not None
        self._process = psutil.Process(ingester.proc.pid)
        self._ingester = ingester
        self.rss_mb: list[float] = []
        self.pending: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.rss_mb.append(self._process.memory_info().rss / 2**20)
            counters = self._ingester.counters()
            self.pending.append(int(counters["pending"]) + int(counters["writing"]))


def test_database_outage_under_load_loses_nothing_and_memory_stays_bounded(
        outage_cluster: OutageCluster, outage_database_url: str, tenant: str,
        start_ingester: Any) -> None:
    url = outage_database_url
    ingester = start_ingester(OEMR_DATABASE_URL=url)
    flood = _flood(tenant)
    with ProcessSampler(ingester) as sampler:
        flood.start()
        try:
            _wait_under_way(url, flood, published=flood.messages // 10)
            stored_before = _stored(url)[1]
            outage_cluster.pg_ctl("stop")
            stopped_at, acked_at_stop = time.monotonic(), flood.acked
            _assert_mid_stream(flood, stored_before)
            time.sleep(OUTAGE_SECONDS)
            # Under load: the database stays away until the broker took a tenth more (it can
            # stall for seconds while it saves its store).
            wait_for(lambda: flood.acked >= acked_at_stop + N // 10, timeout=60)
            during_outage = flood.acked - acked_at_stop
            outage_cluster.pg_ctl("start")
            restarted_at = time.monotonic()
            flood.release()
            drained = _assert_exactly_stored(url, flood)
            stored_at = time.monotonic()
        finally:
            flood.close()
    counters = ingester.counters()
    assert counters["db_retries"] > 0, "the ingester never saw the outage"
    assert ingester.proc is not None
    assert ingester.proc.poll() is None, "the ingester died"
    # The in-flight window is a batch per writer plus one (the ingester's environment leaves
    # these settings alone).
    window = Settings().receive_maximum
    max_rss, max_pending = max(sampler.rss_mb), max(sampler.pending)
    print(f"\ndatabase down {restarted_at - stopped_at:.1f}s while the broker took"
          f" {during_outage} messages; all stored {stored_at - restarted_at:.1f}s after the"
          f" restart ({drained:.1f}s after the last PUBACK); db_retries {counters['db_retries']};"
          f" ingester RSS {sampler.rss_mb[0]:.0f} MB at start, max {max_rss:.0f} MB"
          f" ({len(sampler.rss_mb)} samples); max pending {max_pending}")
    # The broker's in-flight window is what bounds the ingester's memory during an outage.
    assert max_pending <= window, f"{max_pending} messages held, over the window of {window}"
    assert max_rss < RSS_CEILING_MB


# -- 3. two ingesters on one shared subscription ---------------------------------------------


@BOTH_CLIENTS
def test_shared_subscription_two_ingesters_one_killed(database_url: str, tenant: str,
                                                      start_ingester: Any, fast_path: str) -> None:
    group = f"g{tenant}"
    first = start_ingester(OEMR_INGEST_SHARE_GROUP=group, OEMR_INGEST_FAST_PATH=fast_path)
    # Only the first one is the Sparkplug host: an empty host id means "not a host".
    second = start_ingester(OEMR_INGEST_SHARE_GROUP=group, OEMR_INGEST_FAST_PATH=fast_path,
                            OEMR_INGEST_CLIENT_ID=f"ingest-{tenant}-2", OEMR_SPARKPLUG_HOST_ID="")
    assert [first.counters()["mqtt_client"], second.counters()["mqtt_client"]] == [
        CLIENT_OF[fast_path]] * 2
    flood = _flood(tenant).start()
    try:
        def both_received() -> tuple[int, int] | None:
            received = (first.counters()["received"], second.counters()["received"])
            return received if min(received) > 0 else None
        _wait_under_way(database_url, flood, published=flood.messages * 3 // 10)
        received_before_kill = wait_for(both_received, timeout=10)  # status: every second
        _kill_mid_stream(second, database_url, flood, after_published=0)
        time.sleep(0.5)  # its share of the messages waits in its session meanwhile
        second.start()
        flood.release()
        drained = _assert_exactly_stored(database_url, flood)
    finally:
        flood.close()
    received_after = (first.counters()["received"], second.counters()["received"])
    print(f"\nreceived (first, second) before the kill {received_before_kill}, after the restart"
          f" {received_after}; stored all {drained:.1f}s after the last PUBACK")
    # The restarted one took part again: its queued share and redeliveries came to it.
    assert min(received_after) > 0, f"received {received_after}"
    # And the load was shared, not copied: the first one never saw the whole flood.
    assert received_after[0] < flood.messages, f"received {received_after}"


# -- 4. the database drops the connection while the ingester reconnects ----------------------


def test_connection_dropped_while_the_ingester_reconnects(database_url: str, tenant: str,
                                                          start_ingester: Any) -> None:
    ingester = start_ingester()
    flood = TelemetryFlood(tenant, messages=2_000, machines=MACHINES, metrics=METRICS,
                           rate=2_000, hold_at=1_000).start()
    backends = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'oemr-ingest'")
    try:
        wait_for(lambda: _stored(database_url)[1] == 1_000, timeout=60)
        with psycopg.connect(database_url) as lock_conn, psycopg.connect(
                database_url, autocommit=True) as admin:
            # A reconnecting ingester reads the machines it knows: make it wait there, then drop
            # its connection, as a failover or a restart of the server would.
            lock_conn.execute("LOCK TABLE machines IN ACCESS EXCLUSIVE MODE")
            admin.execute(f"SELECT pg_terminate_backend(pid) FROM ({backends}) AS b")
            flood.release()
            waiting = wait_for(lambda: admin.execute(
                f"{backends} AND wait_event_type = 'Lock'").fetchall(), timeout=60)
            admin.execute("SELECT pg_terminate_backend(%s)", waiting[0])
            time.sleep(0.5)
            lock_conn.rollback()
        assert ingester.proc is not None
        wait_for(lambda: ingester.proc.poll() is not None or _stored(database_url)[1] == 2_000,
                 timeout=60)
        assert ingester.proc.poll() is None, (
            f"the ingester died: {ingester.log.read_text()[-3000:]}")
        _assert_exactly_stored(database_url, flood)
    finally:
        flood.close()
    assert ingester.counters()["db_retries"] >= 2


# -- 5. broker restart -------------------------------------------------------------------


def test_broker_restart_mid_stream_loses_and_doubles_nothing(
        database_url: str, tenant: str, start_ingester: Any, test_broker: PrivateBroker) -> None:
    # The broker keeps sessions and queues on disk (persistence in deploy/local/mosquitto.conf):
    # a restart drops every connection; the ingester reconnects to its session, messages it had
    # not acked come again, and those of the old connection are never acked on the new one.
    ingester = start_ingester()
    flood = _flood(tenant).start()
    try:
        wait_for(lambda: _stored(database_url)[1] >= N // 4, timeout=60)
        test_broker.stop()
        time.sleep(1.0)
        test_broker.start()
        wait_for(lambda: ingester.counters()["mqtt_connected"], timeout=30)
        flood.release()
        drained = _assert_exactly_stored(database_url, flood, timeout=90)
    finally:
        flood.close()
    print(f"\nbroker restarted mid-stream; all stored {drained:.1f}s after the last PUBACK;"
          f" acks skipped for the old connection: {ingester.counters()['acks_skipped']}")


def test_broker_restart_while_the_ingester_is_away_loses_nothing(
        database_url: str, tenant: str, start_ingester: Any, test_broker: PrivateBroker) -> None:
    # The session's subscription must outlive a broker restart: machines keep publishing while
    # the ingester is away, and the broker queues for it. (Mosquitto 2.0 keeps plain
    # subscriptions across a restart but drops shared ones: PUBACK 0x10, nobody got it.)
    ingester = start_ingester()
    first = TelemetryFlood(tenant, messages=10, machines=2, metrics=2).start()
    first.wait_acked()
    wait_for(lambda: _stored(database_url)[1] == 10)
    first.close()
    ingester.stop()
    test_broker.stop()
    test_broker.start()
    flood = TelemetryFlood(tenant, messages=2000, machines=20, metrics=2,
                           start_ms=first.start_ms + 10_000).start()
    try:
        flood.wait_acked()  # and every PUBACK says Success: someone's session took it
        ingester.start()
        wait_for(lambda: _stored(database_url) == (2000 * 2 + 10 * 2, 2010), timeout=60)
    finally:
        flood.close()


# -- 6. the database refuses for a reason that is not the content ------------------------


def test_refused_privilege_stalls_without_loss_and_resumes(
        database_url: str, tenant: str, start_ingester: Any) -> None:
    # A privilege revoked (or a migration that changed a table under a running ingester) is not
    # the messages' fault: nothing may be acked or dead-lettered; ingest resumes once fixed.
    role = f"ingest_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        # An ingester's own role, not the owner: it bypasses the API's row-level security (its
        # COPY is refused under RLS; docs/tenancy.md).
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN BYPASSRLS").format(sql.Identifier(role)))
        for grant in ("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}",
                      "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}",
                      "GRANT ALL ON SCHEMA _timescaledb_internal TO {}"):
            conn.execute(sql.SQL(grant).format(sql.Identifier(role)))
    role_url = psycopg.conninfo.make_conninfo(database_url, user=role)
    try:
        ingester = start_ingester(OEMR_DATABASE_URL=role_url)
        flood = TelemetryFlood(tenant, messages=200, machines=5, metrics=2).start()
        flood.wait_acked()
        wait_for(lambda: _stored(database_url) == (400, 200))
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("REVOKE INSERT ON telemetry, dead_letters FROM {}").format(
                sql.Identifier(role)))
        later = TelemetryFlood(tenant, messages=100, machines=5, metrics=2,
                               start_ms=flood.start_ms + 10_000).start()
        later.wait_acked()
        wait_for(lambda: ingester.counters()["db_retries"] >= 2)
        assert _stored(database_url) == (400, 200)
        assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT INSERT ON telemetry, dead_letters TO {}").format(
                sql.Identifier(role)))
        wait_for(lambda: _stored(database_url) == (600, 300), timeout=30)
        assert scalar(database_url, "SELECT count(*) FROM dead_letters") == 0
        flood.close()
        later.close()
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO postgres").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
