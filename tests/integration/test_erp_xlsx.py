"""Files of every entity, as CSV and as XLSX, through the sync engine into the real database.

The same rows are written as CSV files, as one workbook per entity and as one workbook with a
sheet per entity; each layout must store the same rows and report the same bad rows at the
same line (CSV) or row (sheet) numbers.
"""

from __future__ import annotations

import csv
import shutil
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from openpyxl import Workbook
from psycopg import sql

from erp_connectors.files import (
    ENTITY_MODELS,
    TEMPLATE_WORKBOOK,
    FileContractError,
    FilesConnector,
    sync_files,
    xlsx_pages,
)
from erp_connectors.sync import Page, sync_entity

from .conftest import ROOT, rows

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
TEMPLATES = ROOT / "erp_connectors" / "templates"
Table = list[list[Any]]  # a header and rows of cells, as a sheet or a CSV file holds them


def write_csv(directory: Path, tables: dict[str, Table]) -> None:
    for entity, table in tables.items():
        with (directory / f"{entity}.csv").open("w", newline="", encoding="utf-8") as out:
            csv.writer(out, lineterminator="\n").writerows(
                [["" if cell is None else cell for cell in line] for line in table])


def write_sheets(directory: Path, tables: dict[str, Table],
                 name: str = "import.xlsx") -> Path:
    workbook = Workbook()
    workbook.remove(workbook.worksheets[0])
    for entity, table in tables.items():
        sheet = workbook.create_sheet(entity)
        for line in table:
            sheet.append(line)
    workbook.save(directory / name)
    return directory / name


def store_numbers_as_excel_does(path: Path, numbers: dict[int, str]) -> None:
    """Put number cells' stored text in place of placeholder numbers.

    openpyxl writes a float with 15 significant digits, but Excel stores the shortest text that
    reads back to the same binary double (1234.4999999999998), which is what a reader sees.
    """
    with zipfile.ZipFile(path) as original:
        parts = {name: original.read(name) for name in original.namelist()}
    for name in [n for n in parts if n.startswith("xl/worksheets/")]:
        for placeholder, stored in numbers.items():
            parts[name] = parts[name].replace(f"<v>{placeholder}</v>".encode(),
                                              f"<v>{stored}</v>".encode())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as patched:
        for name, data in parts.items():
            patched.writestr(name, data)


def write_workbooks(directory: Path, tables: dict[str, Table]) -> None:
    """One workbook per entity, its one sheet named as Excel names it."""
    for entity, table in tables.items():
        workbook = Workbook()
        sheet = workbook.worksheets[0]
        assert sheet.title == "Sheet"
        for line in table:
            sheet.append(line)
        workbook.save(directory / f"{entity}.xlsx")


LAYOUTS: dict[str, Callable[[Path, dict[str, Table]], object]] = {
    "csv": write_csv, "xlsx-sheets": write_sheets, "xlsx-per-entity": write_workbooks}


def where(layout: str, entity: str) -> str:
    """How a connector's own rejects name the place of a row."""
    return {"csv": "", "xlsx-sheets": f" in import.xlsx sheet {entity}",
            "xlsx-per-entity": f" in {entity}.xlsx sheet Sheet"}[layout]


def place(layout: str) -> str:
    return "line" if layout == "csv" else "row"


# Good parents, then one row per kind of bad row (the line numbers are in the comments).
BAD_ROWS: dict[str, Table] = {
    "customers": [["external_id", "name", "country"],
                  ["C-1", "Acme", "DE"],                                           # 2
                  ["C-2", "Beta", "AT"]],                                          # 3
    "installed_base": [["external_id", "serial", "model", "customer_external_id"],
                       ["IB-1", "SN-1", "PX-400", "C-1"]],                         # 2
    "service_contracts": [
        ["external_id", "customer_external_id", "installed_base_external_id", "scope",
         "starts_on", "ends_on", "annual_value", "currency", "status"],
        ["SC-1", "C-1", "IB-1", "machine", "2024-01-01", "2024-12-31", "1000.50", "EUR",
         "active"],                                                                # 2: good
        ["SC-2", "C-1", None, "machine", "2024-01-01", "2024-12-31", "100", "EUR",
         "active"],                                                                # 3
        ["SC-3", "C-1", None, "customer", "2024-06-01", "2024-05-31", "100", "EUR",
         "active"],                                                                # 4
        ["SC-4", "C-2", None, "customer", "2024-01-01", "2024-12-31", "100", "EUROS",
         "active"],                                                                # 5
        ["SC-1", "C-2", None, "customer", "2024-01-01", "2024-12-31", "100", "EUR",
         "active"]],                                                               # 6
    "contract_renewals": [
        ["external_id", "contract_external_id", "decided_on", "outcome", "previous_ends_on",
         "new_ends_on"],
        ["CR-1", "SC-1", "2024-11-01", "renewed", "2024-12-31", "2025-12-31"],    # 2: good
        ["CR-2", "SC-1", "2024-11-02", "renewed", "2024-12-31", "2024-12-31"]],   # 3
    "invoices": [
        ["external_id", "customer_external_id", "issued_on", "currency", "net_amount",
         "status"],
        ["INV-1", "C-1", "2024-02-01", "EUR", "1000.50", "open"],                  # 2: good
        ["INV-2", "C-404", "2024-02-01", "EUR", "10", "open"],                     # 3
        ["INV-3", "C-1", "2024-02-30", "EUR", "10", "open"],                       # 4
        ["INV-4", "C-1", "2024-02-01", "EUR", "12,50", "open"]],                   # 5
    "invoice_lines": [
        ["external_id", "invoice_external_id", "kind", "quantity", "net_amount"],
        ["IL-1", "INV-1", "spare_parts", "2", "1000.50"],                          # 2: good
        ["IL-2", "INV-1", "spare_parts", "-1", "-10"]],                            # 3
}


def expected_rejects(layout: str) -> list[tuple[str, int, str | None, str]]:
    return [
        ("contract_renewals", 3, "CR-2", "contract renewal CR-2: new_ends_on 2024-12-31 is not"
                                         " after previous_ends_on 2024-12-31"),
        ("invoice_lines", 3, "IL-2",
         "invoice line IL-2: quantity: Input should be greater than or equal to 0"),
        ("invoices", 3, "INV-2", "invoice INV-2 names customer C-404, which is not in files"),
        ("invoices", 4, "INV-3", "invoice INV-3: issued_on: '2024-02-30' is not a day of the"
                                 " calendar"),
        ("invoices", 5, "INV-4", "invoice INV-4: net_amount: expected a number with a point as"
                                 " decimal separator (1234.50), got '12,50'"),
        ("service_contracts", 3, "SC-2", "service contract SC-2: scope is machine but"
                                         " installed_base_external_id is empty"),
        ("service_contracts", 4, "SC-3", "service contract SC-3: ends_on 2024-05-31 is before"
                                         " starts_on 2024-06-01"),
        ("service_contracts", 5, "SC-4", "service contract SC-4: currency: 'EUROS' is not an ISO"
                                         " 4217 currency code (EUR, USD)"),
        ("service_contracts", 6, "SC-1",
         f"service contract SC-1 appears again{where(layout, 'service_contracts')} (first at"
         f" {place(layout)} 2, which is kept)"),
    ]


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_each_kind_of_bad_row_is_reported_with_its_line_or_row(
        conn: Conn, tmp_path: Path, layout: str) -> None:
    LAYOUTS[layout](tmp_path, BAD_ROWS)
    results = await sync_files(conn, tmp_path, page_size=2)
    assert [(r.entity, r.status, r.rows_upserted, r.rows_rejected) for r in results] == [
        ("customers", "succeeded", 2, 0), ("installed_base", "succeeded", 1, 0),
        ("service_contracts", "succeeded", 1, 4), ("contract_renewals", "succeeded", 1, 1),
        ("invoices", "succeeded", 1, 3), ("invoice_lines", "succeeded", 1, 1)]
    assert await rows(conn, "SELECT entity, line_number, external_id, reason FROM sync_rejects"
                            " ORDER BY entity, line_number") == expected_rejects(layout)
    # The good rows are in, with their values as written.
    assert await rows(conn, """
        SELECT sc.external_id, ib.external_id, sc.annual_value, sc.ends_on
        FROM service_contracts sc LEFT JOIN installed_base ib ON ib.id = sc.installed_base_id
        """) == [("SC-1", "IB-1", Decimal("1000.50"), date(2024, 12, 31))]
    assert await rows(conn, "SELECT il.quantity, i.external_id FROM invoice_lines il"
                            " JOIN invoices i ON i.id = il.invoice_id") == [(2, "INV-1")]


async def template_rows(conn: Conn) -> dict[str, list[tuple[Any, ...]]]:
    """Every synced table's rows, without the ids and times a sync assigns."""
    got = {}
    for table in ENTITY_MODELS:
        cur = await conn.execute(sql.SQL(
            "SELECT to_jsonb(t) - 'id' - 'synced_at' - 'customer_id' - 'site_id'"
            " - 'installed_base_id' - 'contract_id' - 'invoice_id' - 'order_id' - 'contact_id'"
            " FROM {} t ORDER BY external_id").format(sql.Identifier(table)))
        got[table] = [row[0] for row in await cur.fetchall()]
    await conn.rollback()
    return got


async def test_the_template_workbook_and_the_template_csvs_store_the_same_rows(
        database_url: str, tmp_path: Path) -> None:
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    for entity in ENTITY_MODELS:
        shutil.copy(TEMPLATES / f"{entity}.csv", csv_dir)
    stored = {}
    for name, path in (("csv", csv_dir), ("xlsx", TEMPLATES / TEMPLATE_WORKBOOK)):
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            results = await sync_files(conn, path, source="templates")
            assert [(r.entity, r.status, r.rows_rejected) for r in results] == [
                (entity, "succeeded", 0) for entity in ENTITY_MODELS], name
            assert all(r.rows_upserted > 0 for r in results)
            stored[name] = await template_rows(conn)
            await conn.execute("TRUNCATE customers, machine_models, sync_runs, sync_cursors"
                               " CASCADE")
            await conn.commit()
    # Every template line is a row, and the typed workbook cells stored the same values.
    for entity in ENTITY_MODELS:
        lines = (TEMPLATES / f"{entity}.csv").read_text().count("\n") - 1
        assert len(stored["csv"][entity]) == lines, entity
    assert stored["xlsx"] == stored["csv"]


async def test_typed_cells_read_as_their_csv_text(conn: Conn, tmp_path: Path) -> None:
    write_sheets(tmp_path, {
        "customers": [["external_id", "name", "key_account", "customer_since",
                       "source_updated_at"],
                      [1001, "Acme", True, datetime(2019, 4, 1), "2026-01-15T08:30:00Z"],
                      ["C-2", "  Beta  ", False, date(2020, 2, 29), datetime(2026, 1, 2, 3, 4)]],
        "invoices": [["external_id", "customer_external_id", "issued_on", "currency",
                      "net_amount", "status"],
                     # Binary floats as Excel stores them: what it shows is what we store.
                     ["INV-1", 1001, datetime(2025, 4, 1), "EUR", 900001, "open"],
                     ["INV-2", "C-2", date(2025, 4, 2), "EUR", 900002, "open"],
                     ["INV-3", "C-2", date(2025, 4, 3), "EUR", 4950.0, "open"],
                     # A date typed as a number (a cell formatted as General) is refused.
                     ["INV-4", "C-2", 45292, "EUR", 1, "open"]],
        # Text columns show the text exactly: part numbers typed as numbers, a float's noise.
        "invoice_lines": [["external_id", "invoice_external_id", "kind", "quantity",
                           "net_amount", "product_code", "description"],
                          ["IL-1", "INV-1", "spare_parts", 3, 1234.5, 4711.0, 900001],
                          ["IL-2", "INV-1", "spare_parts", 0.001, 1e-2, 10**15, 900002]]})
    store_numbers_as_excel_does(tmp_path / "import.xlsx", {
        900001: repr(1234.4999999999998), 900002: repr(0.1 + 0.2)})
    results = await sync_files(conn, tmp_path)
    assert [(r.entity, r.rows_upserted, r.rows_rejected) for r in results] == [
        ("customers", 2, 0), ("invoices", 3, 1), ("invoice_lines", 2, 0)]
    assert await rows(conn, "SELECT external_id, name, key_account, customer_since::text,"
                            " source_updated_at FROM customers ORDER BY 1") == [
        ("1001", "Acme", True, "2019-04-01",
         datetime.fromisoformat("2026-01-15T08:30:00+00:00")),
        ("C-2", "Beta", False, "2020-02-29", datetime.fromisoformat("2026-01-02T03:04:00+00:00"))]
    assert await rows(conn, "SELECT external_id, issued_on::text, net_amount::text"
                            " FROM invoices ORDER BY 1") == [
        ("INV-1", "2025-04-01", "1234.50"), ("INV-2", "2025-04-02", "0.30"),
        ("INV-3", "2025-04-03", "4950.00")]
    assert await rows(conn, "SELECT quantity::text, net_amount::text, product_code, description"
                            " FROM invoice_lines ORDER BY 1") == [
        ("0.001", "0.01", "1000000000000000", "0.3"), ("3.000", "1234.50", "4711", "1234.5")]
    assert await rows(conn, "SELECT line_number, reason FROM sync_rejects") == [
        (5, "invoice INV-4: issued_on: expected a date as YYYY-MM-DD, got '45292'")]


async def test_values_beyond_the_header_are_rejected_naming_the_sheet(conn: Conn,
                                                                      tmp_path: Path) -> None:
    write_sheets(tmp_path, {"customers": [["external_id", "name"], ["C-1", "Acme"], [],
                                          ["C-2", "Beta", "stray"], [None, None, None]]})
    [result] = await sync_files(conn, tmp_path)
    assert (result.rows_upserted, result.rows_rejected) == (1, 1)
    assert await rows(conn, "SELECT line_number, external_id, reason FROM sync_rejects") == [
        (4, "C-2", "import.xlsx sheet customers row 4 has values beyond the header's 2 columns")]


@pytest.mark.parametrize(("tables", "message"), [
    ({"customers": [[], ["C-1", "Acme"]]},
     "import.xlsx sheet customers row 1 is empty: it must be the header (the column names)"),
    ({"customers": [["C-1", "Acme"]]},
     "import.xlsx sheet customers row 1: required column(s) external_id, name missing;"
     " unknown column(s) 'C-1', 'Acme' (known: country, customer_since, deleted, external_id,"
     " industry, key_account, name, size_class, source_updated_at)"),
    ({"customers": [["external_id", "name", "vat"]]},
     "import.xlsx sheet customers row 1: unknown column(s) 'vat' (known: country,"
     " customer_since, deleted, external_id, industry, key_account, name, size_class,"
     " source_updated_at)"),
])
async def test_a_sheet_breaking_the_contract_fails_its_entity(
        conn: Conn, tmp_path: Path, tables: dict[str, Table], message: str) -> None:
    write_sheets(tmp_path, {**tables, "sites": [["external_id", "customer_external_id", "name"]]})
    results = await sync_files(conn, tmp_path)
    assert [(r.entity, r.status, r.error) for r in results] == [
        ("customers", "failed", message), ("sites", "succeeded", None)]


async def test_a_file_that_is_not_a_workbook_fails_its_entity(conn: Conn,
                                                               tmp_path: Path) -> None:
    (tmp_path / "customers.xlsx").write_text("external_id,name\nC-1,Acme\n")
    write_csv(tmp_path, {"sites": [["external_id", "customer_external_id", "name"]]})
    results = await sync_files(conn, tmp_path)
    assert [(r.entity, r.status) for r in results] == [("customers", "failed"),
                                                        ("sites", "succeeded")]
    assert results[0].error == (
        "customers.xlsx is not an Excel workbook (.xlsx): File is not a zip file; save it as"
        " 'Excel Workbook (.xlsx)' or as 'CSV UTF-8'")


async def test_a_workbook_of_several_sheets_none_named_for_the_entity_is_refused(
        conn: Conn, tmp_path: Path) -> None:
    workbook = Workbook()
    workbook.create_sheet("Tabelle2")
    workbook.save(tmp_path / "customers.xlsx")
    [result] = await sync_files(conn, tmp_path)
    assert result.error == "customers.xlsx has no sheet named customers (its sheets: Sheet,"\
                           " Tabelle2)"


async def test_an_entity_given_twice_fails_and_the_others_go_on(conn: Conn,
                                                                tmp_path: Path) -> None:
    customers = {"customers": [["external_id", "name"], ["C-1", "Acme"]]}
    write_csv(tmp_path, customers)
    write_sheets(tmp_path, {**customers, "sites": [["external_id", "customer_external_id",
                                                    "name"]]})
    assert list(FilesConnector(tmp_path).page_sources()) == ["customers", "sites"]
    results = await sync_files(conn, tmp_path)
    assert [(r.entity, r.status, r.error) for r in results] == [
        ("customers", "failed", "customers is given 2 times (customers.csv, import.xlsx sheet"
                                " customers): keep one, or the rows of one would silently"
                                " replace the other's"),
        ("sites", "succeeded", None)]


async def test_only_the_entities_present_are_synced(conn: Conn, tmp_path: Path) -> None:
    write_sheets(tmp_path, {
        "Customers ": [["external_id", "name"], ["C-1", "Acme"]],  # Excel-ish sheet name
        "Notes": [["anything"]],
        "invoices": [["external_id", "customer_external_id", "issued_on", "currency",
                      "net_amount", "status"], ["INV-1", "C-1", date(2025, 1, 2), "EUR", 10,
                                                "open"]]})
    (tmp_path / "~$import.xlsx").write_bytes(b"an Excel lock file")
    connector = FilesConnector(tmp_path, source="erp-x")
    assert list(connector.page_sources()) == ["customers", "invoices"]
    results = [await sync_entity(conn, source=connector.source, entity=entity, pages=pages)
               for entity, pages in connector.page_sources().items()]
    await connector.aclose()
    assert [(r.entity, r.rows_upserted) for r in results] == [("customers", 1),
                                                              ("invoices", 1)]
    assert await rows(conn, "SELECT source, external_id FROM invoices") == [("erp-x", "INV-1")]


class SimulatedCrashError(Exception):
    pass


def crashing_after_first_page(pages: Any) -> Any:
    async def crashing(cursor: str | None) -> AsyncIterator[Page]:
        async for page in pages(cursor):
            yield page
            raise SimulatedCrashError("after page 1")

    return crashing


def customers(*ids: int) -> Table:
    return [["external_id", "name"], *[[f"C-{i}", f"Customer {i}"] for i in ids]]


async def test_a_workbook_sync_dying_between_pages_resumes_after_the_last_page(
        conn: Conn, tmp_path: Path) -> None:
    path = write_sheets(tmp_path, {"customers": customers(1, 2, 3, 4, 5)})
    with pytest.raises(SimulatedCrashError):
        await sync_entity(conn, source="files", entity="customers",
                          pages=crashing_after_first_page(xlsx_pages(path, "customers",
                                                                     page_size=2)))
    [(cursor,)] = await rows(conn, "SELECT cursor FROM sync_cursors")
    assert cursor.startswith("sha256:") and cursor.endswith(":3")  # rows 2-3 committed
    result = await sync_entity(conn, source="files", entity="customers",
                               pages=xlsx_pages(path, "customers", page_size=2))
    assert (result.status, result.pages, result.records_read, result.rows_upserted) == (
        "succeeded", 2, 3, 3)
    assert await rows(conn, "SELECT external_id FROM customers ORDER BY 1") == [
        (f"C-{i}",) for i in range(1, 6)]
    # It resumed, so it was not a complete read: nothing may be swept on its word.
    assert result.rows_deleted == 0
    assert await rows(conn, "SELECT cursor FROM sync_cursors") == [(None,)]


async def test_a_workbook_changed_after_a_crash_is_read_from_the_top(conn: Conn,
                                                                     tmp_path: Path) -> None:
    path = write_sheets(tmp_path, {"customers": customers(1, 2, 3)})
    with pytest.raises(SimulatedCrashError):
        await sync_entity(conn, source="files", entity="customers",
                          pages=crashing_after_first_page(xlsx_pages(path, "customers",
                                                                     page_size=2)))
    write_sheets(tmp_path, {"customers": customers(0, 1, 2, 3)})
    result = await sync_entity(conn, source="files", entity="customers",
                               pages=xlsx_pages(path, "customers", page_size=2))
    assert (result.records_read, result.rows_upserted) == (4, 2)
    assert await rows(conn, "SELECT external_id FROM customers ORDER BY 1") == [
        ("C-0",), ("C-1",), ("C-2",), ("C-3",)]


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_a_row_removed_from_the_file_is_marked_deleted_by_the_next_complete_read(
        conn: Conn, tmp_path: Path, layout: str) -> None:
    LAYOUTS[layout](tmp_path, {"customers": customers(1, 2, 3)})
    await sync_files(conn, tmp_path)
    LAYOUTS[layout](tmp_path, {"customers": customers(1, 3)})
    [result] = await sync_files(conn, tmp_path)
    assert (result.rows_upserted, result.rows_deleted) == (0, 1)
    assert await rows(conn, "SELECT external_id, deleted_at IS NOT NULL FROM customers"
                            " ORDER BY 1") == [("C-1", False), ("C-2", True), ("C-3", False)]
    # The row comes back when the line does.
    LAYOUTS[layout](tmp_path, {"customers": customers(1, 2, 3)})
    await sync_files(conn, tmp_path)
    assert await rows(conn, "SELECT count(*) FROM customers WHERE deleted_at IS NOT NULL") == [
        (0,)]


async def test_a_line_refused_for_a_bad_value_does_not_delete_its_row(conn: Conn,
                                                                       tmp_path: Path) -> None:
    write_sheets(tmp_path, {"customers": [["external_id", "name", "country"],
                                          ["C-1", "Acme", "DE"], ["C-2", "Beta", "AT"]]})
    await sync_files(conn, tmp_path)
    write_sheets(tmp_path, {"customers": [["external_id", "name", "country"],
                                          ["C-1", "Acme", "DE"], ["C-2", "Beta", "AUT"]]})
    [result] = await sync_files(conn, tmp_path)
    assert (result.rows_rejected, result.rows_deleted) == (1, 0)
    assert await rows(conn, "SELECT count(*) FROM customers WHERE deleted_at IS NULL") == [(2,)]


async def test_a_deleted_flag_in_the_file_marks_the_row(conn: Conn, tmp_path: Path) -> None:
    write_sheets(tmp_path, {"customers": [["external_id", "name", "deleted"],
                                          ["C-1", "Acme", False], ["C-2", "Beta", True]]})
    await sync_files(conn, tmp_path)
    assert await rows(conn, "SELECT external_id, deleted_at IS NOT NULL FROM customers"
                            " ORDER BY 1") == [("C-1", False), ("C-2", True)]


def test_a_missing_directory_is_a_contract_error(tmp_path: Path) -> None:
    with pytest.raises(FileContractError, match="does not exist"):
        FilesConnector(tmp_path / "nowhere").page_sources()
