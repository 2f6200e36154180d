"""``oem-retention demo`` as a user runs it: processes, the real database, the session's broker."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import orjson
import psutil
import psycopg
import pytest

from demo.world.files import MACHINES
from tests.integration.conftest import ROOT, kill_tree, scalar, wait_for

CLI = [sys.executable, "-m", "oem_retention"]
TINY = ["--size", "small", "--customers", "12", "--machines", "30", "--years", "1",
        "--seed", "5", "--end-date", "2026-05-01"]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env={**env, "COLUMNS": "200"}, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def rows_of(directory: Path, entity: str) -> list[dict[str, str]]:
    with (directory / f"{entity}.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class Served:
    """A `demo erp ...` process: the settings it printed, stopped with Ctrl-C."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log: IO[bytes] = log.open("wb")
        self.path = log
        self.proc = subprocess.Popen([*CLI, *args], env=env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def settings(self) -> dict[str, str]:
        text = wait_for(lambda: ("Ctrl-C stops it." in self._text() and self._text())
                        or (self.proc.poll() is not None and self._text()), timeout=60)
        assert self.proc.poll() is None, text
        return dict(line.removeprefix("export ").split("=", 1) for line in text.splitlines()
                    if line.startswith("export "))

    def _text(self) -> str:
        return self.path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=20)
        self.log.close()
        return code


@pytest.fixture
def world(tmp_path: Path, ingester_env: dict[str, str]) -> Path:
    directory = tmp_path / "world"
    done = run(ingester_env, "demo", "generate", "--out", str(directory), *TINY)
    assert done.returncode == 0, done.stderr
    assert "world: seed 5, 12 customers, 30 machines, 1 years to 2026-05-01" in done.stdout
    return directory


def test_generate_load_and_a_world_served_by_the_fake_sap_synced_by_the_cli(
        world: Path, database_url: str, ingester_env: dict[str, str], tmp_path: Path) -> None:
    loaded = run(ingester_env, "demo", "load", "--world", str(world))
    assert loaded.returncode == 0, loaded.stderr
    assert "history: 30 machines" in loaded.stdout
    machines = scalar(database_url, "SELECT count(*) FROM machines WHERE tenant = 'demo'")
    samples = scalar(database_url, "SELECT count(*) FROM telemetry")
    assert machines == 30
    assert samples > 0
    again = run(ingester_env, "demo", "load", "--world", str(world))
    assert again.returncode == 0, again.stderr
    assert "already have history in this database; nothing loaded" in again.stdout
    assert scalar(database_url, "SELECT count(*) FROM telemetry") == samples

    sap = Served(ingester_env, tmp_path / "sap.log", "demo", "erp", "sap", "--world", str(world),
                 "--port", "0", "--ids-out", str(tmp_path / "ids.json"))
    try:
        settings = sap.settings()
        assert set(settings) == {"OEMR_ERP_SAP_URL", "OEMR_ERP_SAP_USER",
                                 "OEMR_ERP_SAP_PASSWORD", "OEMR_ERP_SAP_TIMEZONE"}
        synced = run({**ingester_env, **settings}, "erp", "sync", "--source", "sap")
    finally:
        code = sap.stop()
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "all entities synced" in synced.stdout
    assert code == 0
    ids = orjson.loads((tmp_path / "ids.json").read_bytes())
    # Through the platform's default SAP mapping: the spare-parts orders only, the invoice
    # lines' kinds as SAP's standard item categories tell them (machines, retrofits: other).
    world_invoices = rows_of(world, "invoices")
    assert scalar(database_url, "SELECT count(*) FROM invoices WHERE source = 'sap'") == len(
        world_invoices)
    assert scalar(database_url, "SELECT count(*) FROM orders WHERE source = 'sap'") == sum(
        1 for o in rows_of(world, "orders") if o["kind"] == "spare_parts")
    with psycopg.connect(database_url) as conn:
        by_kind = dict(conn.execute("SELECT kind, count(*) FROM invoice_lines WHERE source ="
                                    " 'sap' GROUP BY kind").fetchall())
        names = dict(conn.execute("SELECT external_id, name FROM customers"
                                  " WHERE source = 'sap'").fetchall())
    want: dict[str, int] = {}
    for line in rows_of(world, "invoice_lines"):
        kind = line["kind"] if line["kind"] in ("spare_parts", "field_service",
                                                "service_contract") else "other"
        want[kind] = want.get(kind, 0) + 1
    assert by_kind == want
    # A customer's SAP number is its world id: truth.json reads against the database as it is.
    customers = rows_of(world, "customers")
    assert ids["customers"] == {c["external_id"]: c["external_id"] for c in customers}
    assert names == {c["external_id"]: c["name"] for c in customers}

def test_bad_input_gets_a_clear_error(tmp_path: Path, ingester_env: dict[str, str],
                                      world: Path) -> None:
    too_few = run(ingester_env, "demo", "generate", "--out", str(tmp_path / "w2"), "--customers",
                  "40", "--machines", "20")
    assert too_few.returncode == 2
    assert "a world needs at least 10 customers, a machine per customer" in too_few.stdout
    nothing = run(ingester_env, "demo", "erp", "odoo", "--world", str(tmp_path / "none"))
    assert nothing.returncode == 2
    assert "holds no world files" in nothing.stdout
    other = run(ingester_env, "demo", "up", *TINY[:-2], "--end-date", "2026-06-01", "--world",
                str(world))
    assert other.returncode == 2
    assert "holds another world: end_date 2026-05-01 (asked: 2026-06-01)" in other.stdout


@pytest.fixture
def up_env(ingester_env: dict[str, str]) -> Iterator[dict[str, str]]:
    # The world's machines are of tenant demo; the session's broker is this session's alone.
    yield {**ingester_env, "OEMR_INGEST_TENANT_FILTER": "demo", "COLUMNS": "120",
           "OEMR_ERP_SYNC_INTERVAL_MINUTES": "15"}


def test_demo_up_brings_the_whole_demo_up_and_ctrl_c_stops_it(
        up_env: dict[str, str], database_url: str, tmp_path: Path) -> None:
    world = tmp_path / "world"
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen([*CLI, "demo", "up", *TINY, "--world", str(world), "--odoo-port",
                             "0", "--interval", "0.5"], env=up_env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        # The world's business data, through the fake Odoo and the Odoo connector: its 12
        # customers on the books and those it lost before the window.
        wait_for((world / "customers.csv").exists, timeout=60)
        with (world / "customers.csv").open(newline="") as f:
            customers = sum(1 for _ in csv.DictReader(f))
        assert customers >= 12
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM customers WHERE source ="
                                              " 'odoo'") == customers, timeout=120)
        assert scalar(database_url, "SELECT count(*) FROM machines WHERE tenant = 'demo'") == 30
        assert scalar(database_url, "SELECT count(*) FROM exchange_rates") > 0
        # Its machines live: samples stored now for the world's serials, after the history.
        live = {m["serial"] for m in orjson.loads((world / MACHINES).read_bytes())
                if not m["silent"]}
        wait_for(lambda: scalar(database_url, "SELECT count(DISTINCT m.serial) FROM telemetry t"
                                              " JOIN machines m ON m.id = t.machine_id WHERE"
                                              " t.time > now() - interval '5 minutes'")
                 == len(live), timeout=60)
        children = psutil.Process(proc.pid).children(recursive=True)
        names = sorted(next(a for a in c.cmdline() if a in {"ingest", "fleet", "analytics",
                                                            "schedule", "api"}) for c in children)
        assert names == ["analytics", "api", "fleet", "ingest", "schedule"]
        # The demo's users log in to the API, with the passwords kept in the state directory.
        state = Path(up_env["OEMR_STATE_DIR"])
        users = dict(line.split(" ", 1) for line in
                     (state / "demo-users.txt").read_text().splitlines())
        assert sorted(users) == ["admin", "finance", "service", "viewer"]
        assert (state / "demo-users.txt").stat().st_mode & 0o077 == 0
        api = f"http://127.0.0.1:{up_env['OEMR_API_PORT']}/api/v1"
        wait_for(lambda: _answers(f"{api}/health/ready"), timeout=60)
        token = httpx.post(f"{api}/auth/token", json={"username": "finance",
                                                      "password": users["finance"]}).json()
        me = httpx.get(f"{api}/auth/me",
                       headers={"Authorization": f"Bearer {token['access_token']}"}).json()
        assert me["role"] == "finance" and me["subject"] == "finance"
        # The analytics ran on the world (stopping it midway would cancel the job).
        daily = wait_for(lambda: scalar(database_url, "SELECT status FROM analytics_job_runs"
                                                      " WHERE job = 'daily' AND status <>"
                                                      " 'running'"), timeout=180)
        assert daily == "succeeded"
        assert (world / "odoo_ids.json").exists()
        assert not (tmp_path / "world.tmp").exists()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=40) == 0
        assert not any(_running(child) for child in children)
    finally:
        kill_tree(proc)
        log.close()
    output = (tmp_path / "up.log").read_text()
    assert "world: seed 5, 12 customers, 30 machines" in output
    assert "history: 30 machines" in output
    assert "fake Odoo at http://127.0.0.1:" in output
    assert "all entities synced" in output
    assert f"API users: admin / {users['admin']}" in output
    assert f"API: http://127.0.0.1:{up_env['OEMR_API_PORT']}/api/v1/docs" in output
    assert "stopped" in output
    assert "Traceback" not in output


def _running(child: psutil.Process) -> bool:
    try:
        return child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
