"""ERP rows for API tests, written the way a machine builder sends them: CSV files of the files
contract (docs/erp-files.md), synced by the files connector."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Sequence
from pathlib import Path

import psycopg

from erp_connectors.files import sync_files
from erp_connectors.sync import SyncResult

CUSTOMER_COLUMNS = ("external_id", "name", "industry", "country", "size_class", "key_account",
                    "customer_since", "source_updated_at")
INSTALLED_COLUMNS = ("external_id", "serial", "model", "customer_external_id",
                     "site_external_id", "commissioned_on", "warranty_end", "source_updated_at")


def _write(path: Path, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)


def sync_erp(url: str, directory: Path, *, customers: Sequence[Sequence[str]],
             installed: Sequence[Sequence[str]], source: str = "files") -> list[SyncResult]:
    """Write customers.csv and installed_base.csv into ``directory`` and sync them into ``url``."""
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / "customers.csv", CUSTOMER_COLUMNS, customers)
    _write(directory / "installed_base.csv", INSTALLED_COLUMNS, installed)

    async def sync() -> list[SyncResult]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await sync_files(conn, directory, source=source)

    return asyncio.run(sync())


def customer(external_id: str, name: str) -> list[str]:
    """A customers.csv row."""
    return [external_id, name, "packaging", "DE", "medium", "false", "2020-01-01", ""]


def machine(external_id: str, serial: str, customer_external_id: str) -> list[str]:
    """An installed_base.csv row."""
    return [external_id, serial, "PX-400", customer_external_id, "", "2021-03-15",
            "2023-03-14", ""]
