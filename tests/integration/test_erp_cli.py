"""`oem-retention erp ...` as a user runs it: a real process, real files, the real database."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from .conftest import ROOT, scalar, wait_for

TEMPLATES = ROOT / "erp_connectors" / "templates"


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oem_retention", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def erp_dir(tmp_path: Path) -> Path:
    """The shipped CSV templates as a user's export directory."""
    directory = tmp_path / "export"
    directory.mkdir()
    for csv in TEMPLATES.glob("*.csv"):
        if csv.name != "exchange_rates.csv":
            shutil.copy(csv, directory / csv.name)
    return directory


@pytest.fixture
def env(database_url: str, erp_dir: Path, tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OEMR_")}
    return {**base, "OEMR_DATABASE_URL": database_url, "OEMR_ERP_FILES_DIR": str(erp_dir),
            "OEMR_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200"}


def template_rows(entity: str) -> int:
    return len((TEMPLATES / f"{entity}.csv").read_text().splitlines()) - 1


def test_erp_sync_imports_the_files_and_stores_its_report(env: dict[str, str],
                                                          database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        # A machine the ingester knows that no ERP has: the report must name it.
        conn.execute("INSERT INTO machines (tenant, serial, protocol)"
                     " VALUES ('demo', 'SN-STRAY-1', 'json')")
    done = cli(env, "erp", "sync")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all entities synced" in done.stdout
    assert "machines reporting telemetry that no ERP's installed base has" in done.stdout
    assert "SN-STRAY-1" in done.stdout
    for entity in ("customers", "installed_base", "invoice_lines", "survey_responses"):
        assert scalar(database_url, f"SELECT count(*) FROM {entity}") == template_rows(entity)

    shown = cli(env, "erp", "report", "--json")
    assert shown.returncode == 0, shown.stderr
    report: dict[str, Any] = orjson.loads(shown.stdout)
    assert report["ok"] is True
    assert report["sources"] == ["files"]
    by_entity = {e["entity"]: e for e in report["entities"]}
    assert by_entity["invoices"]["rows_upserted"] == template_rows("invoices")
    stray = next(c for c in report["checks"] if c["check"] == "machines_without_erp")
    assert (stray["total"], stray["sample"][0]["serial"]) == (1, "SN-STRAY-1")

    again = cli(env, "erp", "sync", "--source", "files")
    assert again.returncode == 0
    written = scalar(database_url, "SELECT sum(rows_upserted) FROM sync_runs"
                                   " WHERE id > (SELECT max(id) - 12 FROM sync_runs)")
    assert written == 0


def test_a_bad_row_is_reported_and_the_exit_code_says_so(env: dict[str, str],
                                                         erp_dir: Path) -> None:
    invoices = erp_dir / "invoices.csv"
    lines = invoices.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("external_id")] = "INV-BAD"
    row[header.index("customer_external_id")] = "C-404"
    invoices.write_text("\n".join([*lines, ",".join(row)]) + "\n")
    done = cli(env, "erp", "sync")
    assert done.returncode == 0, done.stdout  # a rejected row is reported, not a failed sync
    assert f"line {len(lines) + 1}: invoice INV-BAD names customer C-404, which is not in" \
           " files" in " ".join(done.stdout.split())


def test_a_broken_file_fails_its_entity_with_exit_code_1(env: dict[str, str],
                                                         erp_dir: Path) -> None:
    (erp_dir / "orders.csv").write_text("external_id,nonsense\nO-1,x\n")
    done = cli(env, "erp", "sync")
    assert done.returncode == 1
    out = " ".join(done.stdout.split())
    assert "files/orders: orders.csv line 1: " in out
    assert "some entities did not sync" in out


def test_an_unreadable_workbook_fails_the_source_and_says_why(env: dict[str, str],
                                                              erp_dir: Path) -> None:
    (erp_dir / "export.xlsx").write_bytes(b"not a zip at all")
    done = cli(env, "erp", "sync")
    assert done.returncode == 1
    out = " ".join(done.stdout.split())
    assert "files/(all): " in out
    assert "export.xlsx" in out


def test_no_source_configured_is_said_plainly(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "OEMR_ERP_FILES_DIR"}
    done = cli(env, "erp", "sync")
    assert done.returncode == 2
    assert "no ERP source configured" in done.stdout
    unknown = cli({**env, "OEMR_ERP_FILES_DIR": "/tmp"}, "erp", "sync", "--source", "navision")
    assert unknown.returncode == 1
    assert "unknown source(s) navision" in unknown.stdout


def test_exchange_rates_load(env: dict[str, str], database_url: str) -> None:
    done = cli(env, "erp", "rates", str(TEMPLATES / "exchange_rates.csv"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert scalar(database_url, "SELECT count(*) FROM exchange_rates") == template_rows(
        "exchange_rates")


def test_rates_exported_with_the_files_come_in_with_them(env: dict[str, str], erp_dir: Path,
                                                        database_url: str) -> None:
    shutil.copy(TEMPLATES / "exchange_rates.csv", erp_dir / "exchange_rates.csv")
    done = cli(env, "erp", "sync")
    assert done.returncode == 0, done.stdout + done.stderr
    assert scalar(database_url, "SELECT count(*) FROM exchange_rates") == template_rows(
        "exchange_rates")


def test_a_broken_rates_file_fails_alone(env: dict[str, str], erp_dir: Path,
                                         database_url: str) -> None:
    (erp_dir / "exchange_rates.csv").write_text("currency,valid_from\nUSD,2026-01-01\n")
    done = cli(env, "erp", "sync")
    assert done.returncode == 1
    out = " ".join(done.stdout.split())
    assert "files/exchange_rates: exchange_rates.csv line 1: required column(s) rate missing" in out
    assert scalar(database_url, "SELECT count(*) FROM customers") == template_rows("customers")


async def test_rejects_are_reported_under_their_own_source(database_url: str,
                                                           tmp_path: Path) -> None:
    from psycopg_pool import AsyncConnectionPool

    from erp_connectors.files import FilesConnector
    from erp_connectors.sources import sync_sources

    for name, row in (("a", "A-1,,DE"), ("b", "B-1,Other,DEU")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "customers.csv").write_text(f"external_id,name,country\n{row}\n")
    connectors = [FilesConnector(tmp_path / "a", "a"), FilesConnector(tmp_path / "b", "b")]
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
        done = await sync_sources(pool, connectors, reporting_currency="EUR")
    assert [(e["source"], [x["reason"] for x in e["reject_examples"]])
            for e in done.report["entities"]] == [
        ("a", ["customer A-1: name is missing"]),
        ("b", ["customer B-1: country: expected a 2-letter ISO 3166-1 country code (DE, US),"
               " got 'DEU'"])]


def test_the_schedule_syncs_at_once_and_stops_on_sigterm(env: dict[str, str],
                                                        database_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "oem_retention", "erp", "schedule"],
                            env={**env, "OEMR_ERP_SYNC_INTERVAL_MINUTES": "60"}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: scalar(database_url, "SELECT count(*) FROM sync_reports") == 1,
                 timeout=60)
        assert scalar(database_url, "SELECT count(*) FROM customers") == template_rows(
            "customers")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
