"""CSV files through the sync engine into the business tables, against the real database."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from erp_connectors.files import FILE_NAMES, csv_pages, sync_files, template
from erp_connectors.sync import LOCK_CLASS, Page, SyncBusyError, sync_entity

from .conftest import ROOT, rows, scalar, wait_for

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
CUSTOMERS = "external_id,name,industry,country,size_class,key_account,customer_since\n"


async def snapshot(conn: Conn) -> list[tuple[Any, ...]]:
    """Every synced row with its row version (xmin) and synced_at: what 'changes nothing' means."""
    return await rows(conn, """
        SELECT 'customers', external_id, xmin::text, synced_at FROM customers
        UNION ALL SELECT 'sites', external_id, xmin::text, synced_at FROM sites
        UNION ALL SELECT 'installed_base', external_id, xmin::text, synced_at FROM installed_base
        ORDER BY 1, 2""")


async def rejects(conn: Conn, run_id: int | None = None) -> list[tuple[Any, ...]]:
    return await rows(conn, """
        SELECT entity, line_number, external_id, reason FROM sync_rejects
        WHERE %(run)s::bigint IS NULL OR run_id = %(run)s ORDER BY entity, line_number""",
                      {"run": run_id})


def fill_templates(directory: Path) -> None:
    """The templates as shipped, plus rows a user adds under the same headers."""
    added = {
        "customers": [{"external_id": "C-1003", "name": "Tecno Plast S.p.A.", "country": "IT",
                       "size_class": "enterprise", "key_account": "yes"}],
        "sites": [{"external_id": "S-2003", "customer_external_id": "C-1003",
                   "name": "Tecno Plast Brescia", "country": "IT", "city": "Brescia"}],
        "installed_base": [{"external_id": "IB-3004", "serial": "SN-200001", "model": "PX-400",
                            "customer_external_id": "C-1003", "site_external_id": "S-2003",
                            "commissioned_on": "2025-02-01"}],
    }
    for entity, rows_added in added.items():
        text = template(entity)
        header = next(csv.reader([text.splitlines()[0]]))
        with (directory / FILE_NAMES[entity]).open("w", newline="", encoding="utf-8") as out:
            out.write(text)
            csv.DictWriter(out, fieldnames=header, lineterminator="\n").writerows(rows_added)


async def test_a_filled_in_template_round_trip(database_url: str, conn: Conn,
                                               tmp_path: Path) -> None:
    fill_templates(tmp_path)
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
        results = await sync_files(pool, tmp_path)
    assert [(r.entity, r.status, r.rows_upserted, r.rows_rejected) for r in results] == [
        ("customers", "succeeded", 3, 0), ("sites", "succeeded", 3, 0),
        ("installed_base", "succeeded", 4, 0)]
    assert await rows(conn, """
        SELECT ib.source, ib.external_id, ib.serial, c.external_id, s.external_id,
               ib.commissioned_on::text, ib.warranty_end::text
        FROM installed_base ib JOIN customers c ON c.id = ib.customer_id
        LEFT JOIN sites s ON s.id = ib.site_id ORDER BY ib.external_id""") == [
        ("files", "IB-3001", "SN-100234", "C-1001", "S-2001", "2021-03-15", "2023-03-14"),
        ("files", "IB-3002", "SN-100871", "C-1002", "S-2002", "2023-06-01", "2025-05-31"),
        ("files", "IB-3003", "SN-101002", "C-1002", None, "2024-11-20", "2026-11-19"),
        ("files", "IB-3004", "SN-200001", "C-1003", "S-2003", "2025-02-01", None)]
    assert await rows(conn, """
        SELECT external_id, name, country, size_class, key_account, customer_since::text,
               source_updated_at = '2026-01-15T08:30:00Z'
        FROM customers ORDER BY external_id""") == [
        ("C-1001", "Acme Packaging GmbH", "DE", "medium", False, "2019-04-01", True),
        ("C-1002", "Nordic Food Processing AB", "SE", "large", True, "2016-09-12", None),
        ("C-1003", "Tecno Plast S.p.A.", "IT", "enterprise", True, None, None)]
    assert await rows(conn, "SELECT entity, status, rows_upserted, rows_rejected, error"
                            " FROM sync_runs ORDER BY id") == [
        ("customers", "succeeded", 3, 0, None), ("sites", "succeeded", 3, 0, None),
        ("installed_base", "succeeded", 4, 0, None)]
    # A file read to its end leaves no position behind: the next sync reads it all again.
    assert await rows(conn, "SELECT entity, cursor FROM sync_cursors ORDER BY 1") == [
        ("customers", None), ("installed_base", None), ("sites", None)]


async def test_syncing_the_same_files_twice_changes_nothing(conn: Conn, tmp_path: Path) -> None:
    fill_templates(tmp_path)
    await sync_files(conn, tmp_path, page_size=2)
    before = await snapshot(conn)
    again = await sync_files(conn, tmp_path, page_size=2)
    assert [(r.status, r.records_read, r.rows_upserted, r.rows_rejected) for r in again] == [
        ("succeeded", 3, 0, 0), ("succeeded", 3, 0, 0), ("succeeded", 4, 0, 0)]
    assert await snapshot(conn) == before
    assert len(before) == 10


async def test_a_change_in_the_file_updates_that_row_only(conn: Conn, tmp_path: Path) -> None:
    fill_templates(tmp_path)
    await sync_files(conn, tmp_path)
    before = {row[:2]: row[2:] for row in await snapshot(conn)}
    path = tmp_path / "customers.csv"
    path.write_text(path.read_text().replace("Acme Packaging GmbH", "Acme Packaging SE")
                    .replace("C-1002,Nordic Food Processing AB,food,SE,large,true",
                             "C-1002,Nordic Food Processing AB,food,SE,large,false"))
    [result] = [r for r in await sync_files(conn, tmp_path) if r.entity == "customers"]
    assert result.rows_upserted == 2
    after = {row[:2]: row[2:] for row in await snapshot(conn)}
    changed = {key for key in after if after[key] != before[key]}
    assert changed == {("customers", "C-1001"), ("customers", "C-1002")}
    assert all(after[key][1] > before[key][1] for key in changed)  # synced_at moved
    assert await rows(conn, "SELECT external_id, name, key_account FROM customers"
                            " WHERE external_id IN ('C-1001', 'C-1002') ORDER BY 1") == [
        ("C-1001", "Acme Packaging SE", False), ("C-1002", "Nordic Food Processing AB", False)]


async def test_each_kind_of_bad_row_is_reported_with_its_line(conn: Conn,
                                                              tmp_path: Path) -> None:
    (tmp_path / "customers.csv").write_text(
        CUSTOMERS                                                      # line 1
        + "C-1,Acme,packaging,DE,small,false,2020-01-01\n"             # 2: good
        + "C-2,Short,packaging,DE\n"                                   # 3: too few cells
        + "C-3,Long,packaging,DE,small,false,2020-01-01,x\n"           # 4: too many cells
        + "C-4,,packaging,DE,small,false,2020-01-01\n"                 # 5: no name
        + "C-5,Flag,packaging,DE,small,maybe,2020-01-01\n"             # 6: not a flag
        + "C-6,Date,packaging,DE,small,false,31.12.2024\n"             # 7: not ISO
        + "C-7,Country,packaging,DEU,small,false,2020-01-01\n"         # 8: 3 letters
        + "C-8,Size,packaging,DE,huge,false,2020-01-01\n"              # 9: no such class
        + "C-1,Again,packaging,DE,small,false,2020-01-01\n"            # 10: duplicate
        + "\n"                                                         # 11: blank, skipped
        + 'C-9,"Two\nLines",packaging,AT,small,false,2020-02-29\n'     # 12-13: good
        + "C-10,Day,packaging,DE,small,false,2023-02-29\n"             # 14: no such day
        + ",Nobody,packaging,DE,small,false,2020-01-01\n")             # 15: no external id
    (tmp_path / "installed_base.csv").write_text(
        "external_id,serial,model,customer_external_id,commissioned_on,warranty_end\n"
        + "IB-1,SN-1,PX,C-1,2025-01-01,2024-12-31\n")                  # 2: warranty first
    results = await sync_files(conn, tmp_path, page_size=4)
    assert [(r.entity, r.status, r.rows_upserted, r.rows_rejected) for r in results] == [
        ("customers", "succeeded", 2, 10), ("installed_base", "succeeded", 0, 1)]
    assert await rejects(conn) == [
        ("customers", 3, "C-2", "line 3 has 4 cells but the header has 7"),
        ("customers", 4, "C-3", "line 4 has 8 cells but the header has 7"),
        ("customers", 5, "C-4", "customer C-4: name is missing"),
        ("customers", 6, "C-5",
         "customer C-5: key_account: expected true or false (yes/no, 1/0), got 'maybe'"),
        ("customers", 7, "C-6",
         "customer C-6: customer_since: expected a date as YYYY-MM-DD, got '31.12.2024'"),
        ("customers", 8, "C-7", "customer C-7: country: expected a 2-letter ISO 3166-1 country"
                               " code (DE, US), got 'DEU'"),
        ("customers", 9, "C-8", "customer C-8: size_class: Input should be 'small', 'medium',"
                               " 'large' or 'enterprise'"),
        ("customers", 10, "C-1", "customer C-1 appears again (first at line 2, which is kept)"),
        ("customers", 14, "C-10",
         "customer C-10: customer_since: '2023-02-29' is not a day of the calendar"),
        ("customers", 15, None, "customer (without external_id): external_id is missing"),
        ("installed_base", 2, "IB-1",
         "installed base IB-1: warranty_end 2024-12-31 is before commissioned_on 2025-01-01"),
    ]
    assert await rows(conn, "SELECT external_id, name FROM customers ORDER BY 1") == [
        ("C-1", "Acme"), ("C-9", "Two\nLines")]
    # What was refused is kept as the source gave it, for the person who fixes it.
    assert await rows(conn, "SELECT record FROM sync_rejects WHERE line_number IN (3, 7)"
                            " ORDER BY line_number") == [
        ({"cells": ["C-2", "Short", "packaging", "DE"]},),
        ({"external_id": "C-6", "name": "Date", "industry": "packaging", "country": "DE",
          "size_class": "small", "key_account": "false", "customer_since": "31.12.2024"},)]


async def test_rejects_by_model_carry_the_external_id(conn: Conn, tmp_path: Path) -> None:
    (tmp_path / "customers.csv").write_text(CUSTOMERS + "C-7,X,p,DEU,small,false,\n")
    await sync_files(conn, tmp_path)
    assert await rows(conn, "SELECT external_id FROM sync_rejects") == [("C-7",)]


async def test_a_machine_naming_an_unknown_customer_or_site_is_rejected_with_a_reason(
        conn: Conn, tmp_path: Path) -> None:
    (tmp_path / "customers.csv").write_text(CUSTOMERS + "C-1,Acme,,,,,\n" + "C-2,Beta,,,,,\n")
    (tmp_path / "sites.csv").write_text("external_id,customer_external_id,name\n"
                                        "S-1,C-1,Acme Plant\n" "S-9,C-404,Ghost Plant\n")
    (tmp_path / "installed_base.csv").write_text(
        "external_id,serial,model,customer_external_id,site_external_id\n"
        "SN-1,SN-1,PX,C-1,S-1\n"        # 2: fine
        "SN-9,SN-9,PX,C-404,\n"         # 3: unknown customer
        "SN-8,SN-8,PX,C-1,S-404\n"      # 4: unknown site
        "SN-7,SN-7,PX,C-2,S-1\n")       # 5: a site of another customer
    results = await sync_files(conn, tmp_path, source="odoo")
    assert [(r.entity, r.rows_upserted, r.rows_rejected) for r in results] == [
        ("customers", 2, 0), ("sites", 1, 1), ("installed_base", 1, 3)]
    assert await rejects(conn) == [
        ("installed_base", 3, "SN-9",
         "installed base SN-9 names customer C-404, which is not in odoo"),
        ("installed_base", 4, "SN-8", "installed base SN-8 names site S-404, which is not in odoo"),
        ("installed_base", 5, "SN-7",
         "installed base SN-7 names customer C-2 but site S-1, which belongs to customer C-1"),
        ("sites", 3, "S-9", "site S-9 names customer C-404, which is not in odoo")]
    # Once the customer arrives, the next sync takes the machine: rejects are not final.
    (tmp_path / "customers.csv").write_text(CUSTOMERS + "C-1,Acme,,,,,\n" + "C-2,Beta,,,,,\n"
                                            + "C-404,Late,,,,,\n")
    results = await sync_files(conn, tmp_path, source="odoo")
    assert [(r.entity, r.rows_upserted, r.rows_rejected) for r in results] == [
        ("customers", 1, 0), ("sites", 1, 0), ("installed_base", 1, 2)]
    # Parents are looked up in the same source only.
    assert await rows(conn, "SELECT count(*) FROM customers WHERE source <> 'odoo'") == [(0,)]


async def test_a_file_breaking_the_contract_fails_its_entity_and_the_others_go_on(
        conn: Conn, tmp_path: Path) -> None:
    (tmp_path / "customers.csv").write_text("external_id,name,contry\nC-1,Acme,DE\n")
    (tmp_path / "sites.csv").write_text("external_id,customer_external_id,name\nS-1,C-1,P\n")
    results = await sync_files(conn, tmp_path)
    assert [(r.entity, r.status) for r in results] == [("customers", "failed"),
                                                        ("sites", "succeeded")]
    message = ("customers.csv line 1: unknown column(s) 'contry' (known: country,"
               " customer_since, deleted, external_id, industry, key_account, name, size_class,"
               " source_updated_at)")
    assert results[0].error == message
    assert await rows(conn, "SELECT entity, status, error FROM sync_runs ORDER BY id") == [
        ("customers", "failed", message), ("sites", "succeeded", None)]


class SimulatedCrashError(Exception):
    pass


def crashing_after_first_page(path: Path, entity: str, page_size: int) -> Any:
    """The file's pages, but the process 'dies' once the first page has been handed over."""
    pages = csv_pages(path, entity, page_size=page_size)

    async def crashing(cursor: str | None) -> AsyncIterator[Page]:
        async for page in pages(cursor):
            yield page
            raise SimulatedCrashError("after page 1")

    return crashing


async def test_a_sync_dying_between_pages_resumes_after_the_last_committed_page(
        conn: Conn, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS
                    + "C-1,One,,DE,,,\n"       # 2 \ page 1
                    + "C-2,Two,,DEU,,,\n"      # 3 /   (rejected)
                    + "C-3,Three,,DE,,,\n"     # 4 \ page 2
                    + "C-4,Four,,DE,,,\n"      # 5 /
                    + "C-5,Five,,DE,,,\n")     # 6 - page 3
    with pytest.raises(SimulatedCrashError):
        await sync_entity(conn, source="files", entity="customers",
                          pages=crashing_after_first_page(path, "customers", 2))
    assert await rows(conn, "SELECT external_id FROM customers") == [("C-1",)]
    [(cursor,)] = await rows(conn, "SELECT cursor FROM sync_cursors")
    assert cursor.startswith("sha256:") and cursor.endswith(":3")
    assert await rows(conn, "SELECT status, rows_upserted, rows_rejected, error FROM sync_runs"
                      ) == [("failed", 1, 1, "SimulatedCrashError: after page 1")]
    first = await snapshot(conn)

    result = await sync_entity(conn, source="files", entity="customers",
                               pages=csv_pages(path, "customers", page_size=2))
    # Only pages 2 and 3 were read: page 1 was not applied again.
    assert (result.status, result.pages, result.records_read, result.rows_upserted,
            result.rows_rejected) == ("succeeded", 2, 3, 3, 0)
    assert await rows(conn, "SELECT external_id FROM customers ORDER BY 1") == [
        ("C-1",), ("C-3",), ("C-4",), ("C-5",)]
    assert [row for row in await snapshot(conn) if row[1] == "C-1"] == first
    assert [row[1] for row in await rejects(conn)] == [3]  # reported once, by the first run
    assert await rows(conn, "SELECT cursor FROM sync_cursors") == [(None,)]


async def test_a_file_changed_after_a_crash_is_read_from_the_top(conn: Conn,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS + "C-1,One,,,,,\n" + "C-2,Two,,,,,\n" + "C-3,Three,,,,,\n")
    with pytest.raises(SimulatedCrashError):
        await sync_entity(conn, source="files", entity="customers",
                          pages=crashing_after_first_page(path, "customers", 2))
    # Lines moved: resuming at "line 3" of the new file would skip C-0.
    path.write_text(CUSTOMERS + "C-0,Zero,,,,,\n" + "C-1,One,,,,,\n" + "C-2,Two,,,,,\n"
                    + "C-3,Three,,,,,\n")
    result = await sync_entity(conn, source="files", entity="customers",
                               pages=csv_pages(path, "customers", page_size=2))
    assert (result.records_read, result.rows_upserted) == (4, 2)
    assert await rows(conn, "SELECT external_id FROM customers ORDER BY 1") == [
        ("C-0",), ("C-1",), ("C-2",), ("C-3",)]


async def test_full_ignores_the_stored_cursor(conn: Conn, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS + "C-1,One,,,,,\n" + "C-2,Two,,,,,\n" + "C-3,Three,,,,,\n")
    with pytest.raises(SimulatedCrashError):
        await sync_entity(conn, source="files", entity="customers",
                          pages=crashing_after_first_page(path, "customers", 2))
    result = await sync_entity(conn, source="files", entity="customers", full=True,
                               pages=csv_pages(path, "customers", page_size=2))
    assert (result.records_read, result.rows_upserted) == (3, 1)
    assert await rows(conn, "SELECT full_resync FROM sync_runs ORDER BY id") == [(False,),
                                                                                (True,)]


async def test_a_page_naming_a_record_twice_keeps_the_later(conn: Conn) -> None:
    async def api_like(cursor: str | None) -> AsyncIterator[Page]:
        assert cursor is None
        yield Page(records=[{"external_id": "C-1", "name": "Old"},
                            {"external_id": "C-1", "name": "New"}], cursor="2026-01-01")

    result = await sync_entity(conn, source="odoo", entity="customers", pages=api_like)
    assert (result.rows_upserted, result.rows_rejected) == (1, 0)
    assert await rows(conn, "SELECT name FROM customers") == [("New",)]
    assert await rows(conn, "SELECT cursor FROM sync_cursors") == [("2026-01-01",)]


async def test_one_sync_per_source_and_entity_at_a_time(database_url: str, conn: Conn) -> None:
    async def empty(_cursor: str | None) -> AsyncIterator[Page]:
        return
        yield

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
        await other.execute("SELECT pg_advisory_lock(%s, hashtext('files/customers'))",
                            (LOCK_CLASS,))
        with pytest.raises(SyncBusyError, match="another sync of files/customers is running"):
            await sync_entity(conn, source="files", entity="customers", pages=empty)
        # Another entity is not held up.
        result = await sync_entity(conn, source="files", entity="sites", pages=empty)
        assert result.status == "succeeded"


CHILD = """
import asyncio, sys
from pathlib import Path
import psycopg
from erp_connectors.files import csv_pages
from erp_connectors.sync import sync_entity

async def main(url, path, flag):
    pages = csv_pages(Path(path), "customers", page_size=2)

    async def stalls_after_page_1(cursor):
        async for page in pages(cursor):
            yield page
            Path(flag).touch()
            await asyncio.sleep(3600)  # killed here

    async with await psycopg.AsyncConnection.connect(url) as conn:
        await sync_entity(conn, source="files", entity="customers", pages=stalls_after_page_1)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_kill_9_between_pages_then_resume(database_url: str, conn: Conn,
                                                tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS + "".join(f"C-{i},Customer {i},,,,,\n" for i in range(1, 6)))
    flag = tmp_path / "page-1-handed-over"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, database_url, str(path), str(flag), cwd=ROOT,
        env={**os.environ})
    try:
        # The flag is set when the engine asks for page 2, after committing page 1.
        await asyncio.to_thread(wait_for, lambda: flag.exists() or child.returncode is not None,
                                timeout=30)
        assert child.returncode is None, "the child sync ended before it was killed"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert await rows(conn, "SELECT external_id FROM customers ORDER BY 1") == [("C-1",),
                                                                               ("C-2",)]
    assert await rows(conn, "SELECT status FROM sync_runs") == [("running",)]

    # The killed session's lock goes with its connection, once the server has noticed.
    await asyncio.to_thread(wait_for, lambda: scalar(database_url, """
        SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        (LOCK_CLASS,)) == 0)
    result = await sync_entity(conn, source="files", entity="customers",
                               pages=csv_pages(path, "customers", page_size=2))
    assert (result.status, result.records_read, result.rows_upserted) == ("succeeded", 3, 3)
    assert await rows(conn, "SELECT external_id FROM customers ORDER BY 1") == [
        (f"C-{i}",) for i in range(1, 6)]
    assert await rows(conn, "SELECT id, status, error FROM sync_runs ORDER BY id") == [
        (1, "failed", "interrupted: the process ended before the run finished (found by run 2)"),
        (2, "succeeded", None)]
