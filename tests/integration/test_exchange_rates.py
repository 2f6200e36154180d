"""Exchange rates from a file into exchange_rates, and to_reporting() on them, in the database."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from openpyxl import Workbook

from erp_connectors.files import TEMPLATE_WORKBOOK, FileContractError
from erp_connectors.rates import load_exchange_rates

from .conftest import ROOT, rows

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
HEADER = "currency,valid_from,rate\n"


async def to_reporting(conn: Conn, amount: str, currency: str, day: date,
                       reporting: str = "EUR") -> Decimal | None:
    [(value,)] = await rows(conn, "SELECT to_reporting(%s::numeric, %s, %s, %s)",
                            (amount, currency, day, reporting))
    return value  # type: ignore[no-any-return]


async def test_rates_load_and_convert_as_worked_out_by_hand(conn: Conn, tmp_path: Path) -> None:
    path = tmp_path / "exchange_rates.csv"
    path.write_text(HEADER + "USD,2024-01-01,0.91\n" + "USD,2024-07-01,0.925\n"
                    + "usd,2025-01-01,0.96150000\n" + "CHF,2024-01-01,1.0625\n")
    result = await load_exchange_rates(conn, path)
    assert (result.rows_read, result.rows_upserted, result.rejects) == (4, 4, [])
    # amount x rate of the latest valid_from on or before the day.
    assert await to_reporting(conn, "1000.00", "USD", date(2024, 1, 1)) == Decimal("910")
    assert await to_reporting(conn, "1000.00", "USD", date(2024, 6, 30)) == Decimal("910")
    assert await to_reporting(conn, "1000.00", "USD", date(2024, 7, 1)) == Decimal("925")
    assert await to_reporting(conn, "200", "USD", date(2026, 3, 1)) == Decimal("192.3")
    assert await to_reporting(conn, "80", "CHF", date(2024, 2, 29)) == Decimal("85")
    # Before the first rate there is none: NULL, not a guess.
    assert await to_reporting(conn, "1000.00", "USD", date(2023, 12, 31)) is None
    assert await to_reporting(conn, "1000.00", "GBP", date(2024, 3, 1)) is None
    # The reporting currency itself needs no rate.
    assert await to_reporting(conn, "1000.00", "EUR", date(2000, 1, 1)) == Decimal("1000.00")
    assert await rows(conn, "SELECT entity, status, rows_upserted, rows_rejected"
                            " FROM sync_runs") == [("exchange_rates", "succeeded", 4, 0)]


async def test_loading_again_writes_only_what_changed(conn: Conn, tmp_path: Path) -> None:
    path = tmp_path / "exchange_rates.csv"
    path.write_text(HEADER + "USD,2024-01-01,0.91\n" + "USD,2024-07-01,0.925\n")
    await load_exchange_rates(conn, path)
    again = await load_exchange_rates(conn, path)
    assert again.rows_upserted == 0
    path.write_text(HEADER + "USD,2024-01-01,0.91\n" + "USD,2024-07-01,0.93\n")
    corrected = await load_exchange_rates(conn, path)
    assert corrected.rows_upserted == 1
    assert await to_reporting(conn, "100", "USD", date(2024, 8, 1)) == Decimal("93")


async def test_each_bad_line_is_rejected_with_its_line_and_the_rest_loaded(
        conn: Conn, tmp_path: Path) -> None:
    path = tmp_path / "exchange_rates.csv"
    path.write_text(HEADER
                    + "USD,2024-01-01,0.91\n"          # 2: good
                    + "XYZ,2024-01-01,1.5\n"           # 3: no such currency
                    + "GBP,2024-01-01,0\n"             # 4: not > 0
                    + "GBP,2024-01-01,-1.2\n"          # 5: negative
                    + "GBP,01.01.2024,1.17\n"          # 6: date format
                    + "GBP,2024-01-01,\"1,17\"\n"      # 7: decimal comma
                    + "GBP,2024-01-01,0.123456789\n"   # 8: more decimals than stored
                    + "usd,2024-01-01,0.92\n"          # 9: same day again
                    + "GBP,2024-01-01\n"               # 10: too few cells
                    + "GBP,2024-02-01,1.17\n")         # 11: good
    result = await load_exchange_rates(conn, path)
    assert (result.rows_read, result.rows_upserted, len(result.rejects)) == (10, 2, 8)
    expected = [
        (3, "exchange rate XYZ 2024-01-01: currency: 'XYZ' is not an ISO 4217 currency code"
            " (EUR, USD)"),
        (4, "exchange rate GBP 2024-01-01: rate: Input should be greater than 0"),
        (5, "exchange rate GBP 2024-01-01: rate: Input should be greater than 0"),
        (6, "exchange rate GBP 01.01.2024: valid_from: expected a date as YYYY-MM-DD, got"
            " '01.01.2024'"),
        (7, "exchange rate GBP 2024-01-01: rate: expected a number with a point as decimal"
            " separator (1234.50), got '1,17'"),
        (8, "exchange rate GBP 2024-01-01: rate: Decimal input should have no more than 8"
            " decimal places"),
        (9, "exchange rate USD 2024-01-01 appears again (first at line 2, which is kept)"),
        (10, "line 10 has 2 cells but the header has 3"),
    ]
    assert [(r.line_number, r.reason) for r in result.rejects] == expected
    assert await rows(conn, "SELECT line_number, reason FROM sync_rejects"
                            " WHERE entity = 'exchange_rates' ORDER BY line_number") == expected
    assert await rows(conn, "SELECT currency, valid_from, rate FROM exchange_rates"
                            " ORDER BY 1, 2") == [
        ("GBP", date(2024, 2, 1), Decimal("1.17")), ("USD", date(2024, 1, 1), Decimal("0.91"))]


@pytest.mark.parametrize(("text", "message"), [
    ("currency,rate\nUSD,0.9\n", "exchange_rates.csv line 1: required column(s) valid_from"
                                 " missing"),
    ("currency,valid_from,rate,source\n", "exchange_rates.csv line 1: unknown column(s)"
                                          " 'source' (known: currency, rate, valid_from)"),
])
async def test_a_file_breaking_the_contract_loads_nothing(conn: Conn, tmp_path: Path,
                                                          text: str, message: str) -> None:
    path = tmp_path / "exchange_rates.csv"
    path.write_text(text)
    with pytest.raises(FileContractError) as info:
        await load_exchange_rates(conn, path)
    assert str(info.value) == message
    assert await rows(conn, "SELECT count(*) FROM sync_runs") == [(0,)]


async def test_rates_from_a_sheet_with_typed_cells(conn: Conn, tmp_path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.worksheets[0]
    sheet.title = "customers"  # another sheet in the same import workbook
    rates = workbook.create_sheet("exchange_rates")
    rates.append(["currency", "valid_from", "rate"])
    rates.append(["SEK", date(2025, 1, 1), 0.0865])
    rates.append(["SEK", date(2025, 7, 1), -0.09])
    workbook.save(tmp_path / "import.xlsx")
    result = await load_exchange_rates(conn, tmp_path)  # found in the directory's workbook
    assert (result.rows_upserted, [(r.line_number, r.reason) for r in result.rejects]) == (
        1, [(3, "exchange rate SEK 2025-07-01: rate: Input should be greater than 0")])
    assert await to_reporting(conn, "1000", "SEK", date(2025, 3, 1)) == Decimal("86.5")


async def test_the_template_rates_load(conn: Conn) -> None:
    templates = ROOT / "erp_connectors" / "templates"
    from_csv = await load_exchange_rates(conn, templates / "exchange_rates.csv")
    from_workbook = await load_exchange_rates(conn, templates / TEMPLATE_WORKBOOK)
    assert (from_csv.rows_upserted, from_csv.rejects) == (2, [])
    assert (from_workbook.rows_read, from_workbook.rows_upserted, from_workbook.rejects) == (
        2, 0, [])


async def test_a_directory_without_rates_is_a_clear_error(conn: Conn, tmp_path: Path) -> None:
    with pytest.raises(FileContractError, match="holds no exchange rates"):
        await load_exchange_rates(conn, tmp_path)
