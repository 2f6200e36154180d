"""The CSV column contract: what a line becomes, where it was, and what is refused and why."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openpyxl import load_workbook
from pydantic import ValidationError

from erp_connectors.files import (
    ENTITY_MODELS,
    FILE_NAMES,
    TEMPLATE_WORKBOOK,
    Columns,
    EntityFile,
    FileContractError,
    Row,
    cell_text,
    parse_sheet,
    read_rows,
    sheet_names,
    template,
)
from erp_connectors.models import CustomerRecord, InstalledBaseRecord, describe
from erp_connectors.rates import ExchangeRateRecord
from erp_connectors.sync import ENTITIES
from erp_connectors.templates.workbook import build_template_workbook

TEMPLATES = Path(__file__).resolve().parents[2] / "erp_connectors" / "templates"

CUSTOMER_HEADER = "external_id,name,country,key_account,customer_since\n"


def rows(text: str | bytes, entity: str = "customers") -> list[Row]:
    data = text.encode() if isinstance(text, str) else text
    return list(read_rows(io.BytesIO(data), entity=entity, name="customers.csv"))


def reason_of(record: dict[str, str], model: type = CustomerRecord) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(record)
    return describe(info.value)


def test_records_keep_their_line_numbers_across_blank_lines_and_multiline_cells() -> None:
    got = rows(CUSTOMER_HEADER
               + "C-1,Acme,DE,true,2020-01-01\n"      # line 2
               + "\n"                                 # line 3: blank, skipped
               + 'C-2,"Nordic\nFood AB",SE,,\n'       # lines 4-5
               + ",,,,\n"                             # line 6: empty cells, skipped
               + "C-3,Sud,FR,no,\n")                  # line 7
    assert [(r.line_number, r.end_line) for r in got] == [(2, 2), (4, 5), (7, 7)]
    assert [r.record for r in got] == [
        {"external_id": "C-1", "name": "Acme", "country": "DE", "key_account": "true",
         "customer_since": "2020-01-01"},
        # An empty cell is an absent value: the model's default applies.
        {"external_id": "C-2", "name": "Nordic\nFood AB", "country": "SE"},
        {"external_id": "C-3", "name": "Sud", "country": "FR", "key_account": "no"},
    ]


def test_semicolons_crlf_and_a_byte_order_mark_as_excel_writes_them() -> None:
    data = "\ufeffexternal_id;name;country\r\nC-1;Müller, Söhne KG;de\r\n".encode()
    [row] = rows(data)
    assert row.record == {"external_id": "C-1", "name": "Müller, Söhne KG", "country": "de"}
    assert CustomerRecord.model_validate(row.record).country == "DE"


def test_a_line_with_too_few_or_too_many_cells_is_rejected_with_its_line() -> None:
    got = rows(CUSTOMER_HEADER + "C-1,Acme,DE\n" + "C-2,Acme,DE,true,2020-01-01,surplus\n"
               + "C-3,Acme,DE,true,2020-01-01,,\n")
    assert [(r.line_number, r.reject.reason if r.reject else None) for r in got] == [
        (2, "line 2 has 3 cells but the header has 5"),
        (3, "line 3 has 6 cells but the header has 5"),
        # Trailing empty cells (Excel pads rows) are not a problem.
        (4, None),
    ]
    assert got[0].reject is not None
    assert got[0].reject.record == {"cells": ["C-1", "Acme", "DE"]}


def test_a_line_the_csv_reader_cannot_read_is_rejected_and_reading_goes_on() -> None:
    got = rows(CUSTOMER_HEADER + 'C-1,"Acme"s,DE,,\n' + "C-2,B,DE,,\n")
    assert got[0].reject is not None
    assert (got[0].line_number, got[0].reject.reason) == (
        2, "line 2 is not valid CSV: ',' expected after '\"'")
    assert (got[1].line_number, got[1].record) == (
        3, {"external_id": "C-2", "name": "B", "country": "DE"})


def test_an_external_id_seen_before_is_rejected_and_the_first_kept() -> None:
    got = rows(CUSTOMER_HEADER + "C-1,Acme,DE,,\n" + "C-2,B,DE,,\n" + "C-1,Acme 2,DE,,\n")
    assert got[2].reject is not None
    assert got[2].reject.reason == "customer C-1 appears again (first at line 2, which is kept)"
    assert got[2].reject.line_number == 4


@pytest.mark.parametrize(("text", "message"), [
    ("", "customers.csv is empty: its first line must be the header"),
    ("external_id,country\n", "customers.csv line 1: required column(s) name missing"),
    ("external_id,name,contry\n",
     "customers.csv line 1: unknown column(s) 'contry' (known: country, customer_since, deleted,"
     " external_id, industry, key_account, name, size_class, source_updated_at)"),
    ("external_id,name,name\n", "customers.csv line 1: column(s) name appear more than once"),
    (CUSTOMER_HEADER + 'C-1,"Acme,DE,,\nC-2,B,DE,,\n',
     "customers.csv line 2: a quote opened here is never closed"),
    (b"external_id,name\nC-1,M\xfcller\n", "customers.csv line 2 is not UTF-8 text: save the"
     " file as 'CSV UTF-8' (Excel) or convert it"),
])
def test_a_file_breaking_the_contract_as_a_whole_is_refused(text: str | bytes,
                                                            message: str) -> None:
    with pytest.raises(FileContractError) as info:
        rows(text)
    assert str(info.value) == message


@pytest.mark.parametrize("entity", list(FILE_NAMES))
def test_the_templates_are_valid_files(entity: str) -> None:
    got = rows(template(entity), entity)
    assert got
    assert all(r.reject is None for r in got)


@pytest.mark.parametrize(("record", "reason"), [
    ({"external_id": "C-1"}, "name is missing"),
    ({"external_id": "C-1", "name": "A", "country": "DEU"},
     "country: expected a 2-letter ISO 3166-1 country code (DE, US), got 'DEU'"),
    ({"external_id": "C-1", "name": "A", "country": "D1"},
     "country: expected a 2-letter ISO 3166-1 country code (DE, US), got 'D1'"),
    ({"external_id": "C-1", "name": "A", "customer_since": "31.12.2024"},
     "customer_since: expected a date as YYYY-MM-DD, got '31.12.2024'"),
    ({"external_id": "C-1", "name": "A", "customer_since": "45292"},  # an Excel day number
     "customer_since: expected a date as YYYY-MM-DD, got '45292'"),
    ({"external_id": "C-1", "name": "A", "customer_since": "2024-02-30"},
     "customer_since: '2024-02-30' is not a day of the calendar"),
    ({"external_id": "C-1", "name": "A", "key_account": "maybe"},
     "key_account: expected true or false (yes/no, 1/0), got 'maybe'"),
    ({"external_id": "C-1", "name": "A", "size_class": "huge"},
     "size_class: Input should be 'small', 'medium', 'large' or 'enterprise'"),
    ({"external_id": "C-1", "name": "A", "source_updated_at": "yesterday"},
     "source_updated_at: expected a time as ISO 8601 (2026-03-01T12:00:00Z), got 'yesterday'"),
    ({"external_id": "C-1", "name": "A", "vat": "DE123"}, "vat is not a known field"),
    # Strict: a number where text belongs is refused, not turned into text.
    ({"external_id": 17, "name": "A"}, "external_id: Input should be a valid string"),
])
def test_a_bad_value_is_named_with_what_was_expected(record: dict[str, str],
                                                     reason: str) -> None:
    assert reason_of(record) == reason


def test_a_warranty_ending_before_commissioning_is_refused() -> None:
    record = {"external_id": "IB-1", "serial": "SN-1", "model": "PX", "customer_external_id":
              "C-1", "commissioned_on": "2025-01-01", "warranty_end": "2024-12-31"}
    assert reason_of(record, InstalledBaseRecord) == (
        "warranty_end 2024-12-31 is before commissioned_on 2025-01-01")


def test_values_as_the_contract_writes_them() -> None:
    got = CustomerRecord.model_validate({
        "external_id": " C-1 ", "name": "Acme", "country": "de", "key_account": "Yes",
        "customer_since": "2020-02-29", "source_updated_at": "2026-03-01 12:00:00"})
    assert (got.external_id, got.country, got.key_account, got.customer_since) == (
        "C-1", "DE", True, date(2020, 2, 29))
    # Without a zone a time is UTC (as Odoo writes them); with one it is kept.
    assert got.source_updated_at == datetime(2026, 3, 1, 12, tzinfo=UTC)
    zoned = CustomerRecord.model_validate({"external_id": "C-1", "name": "A",
                                           "source_updated_at": "2026-03-01T12:00:00+01:00"})
    assert zoned.source_updated_at == datetime(2026, 3, 1, 12,
                                               tzinfo=timezone(timedelta(hours=1)))


csv_cell = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                    max_size=12)


@given(st.lists(st.tuples(st.from_regex(r"[A-Z]-[0-9]{1,6}", fullmatch=True), csv_cell,
                          csv_cell),
                min_size=1, max_size=20, unique_by=lambda r: r[0]))
def test_any_csv_written_by_the_csv_module_reads_back_with_its_lines(
        written: list[tuple[str, str, str]]) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out)  # lines end in CRLF, as Excel and most exports write them
    writer.writerow(["external_id", "name", "industry"])
    starts = []
    for row in written:
        starts.append(out.getvalue().count("\n") + 1)
        writer.writerow(row)
    got = rows(out.getvalue())
    expected = [
        (start, {k: v.strip() for k, v in zip(("external_id", "name", "industry"), row,
                                              strict=True) if v.strip()})
        for start, row in zip(starts, written, strict=True)]
    assert [(r.line_number, r.record) for r in got] == expected


@pytest.mark.parametrize("entity", list(FILE_NAMES))
def test_every_template_record_is_valid_for_its_model(entity: str) -> None:
    model = ENTITY_MODELS[entity]
    for row in rows(template(entity), entity):
        assert row.record is not None
        model.model_validate(row.record)


def test_every_entity_of_the_engine_has_a_file_contract_with_its_columns() -> None:
    assert list(FILE_NAMES) == list(ENTITIES)
    for entity, spec in ENTITIES.items():
        columns = Columns.of(entity)
        assert {*columns.required, *columns.optional} == set(spec.model.model_fields)
        assert "external_id" in columns.required and "deleted" in columns.optional


@pytest.mark.parametrize(("value", "text"), [
    (None, None), ("", None), ("   ", None), (" C-1 ", "C-1"), ("0042", "0042"),
    (True, "true"), (False, "false"), (7, "7"), (-3, "-3"), (4950.0, "4950"),
    (1234.4999999999998, "1234.5"), (0.1 + 0.2, "0.3"), (1e-7, "0.0000001"),
    (1e20, "100000000000000000000"), (-0.5, "-0.5"), (float("nan"), "nan"),
    (datetime(2025, 4, 1), "2025-04-01"), (datetime(2025, 4, 1, 9, 30), "2025-04-01T09:30:00"),
    (date(2024, 2, 29), "2024-02-29"), (time(9, 30), "09:30:00"),
])
def test_a_cell_reads_as_the_csv_text_of_its_value(value: object, text: str | None) -> None:
    assert cell_text(value) == text


@given(st.integers(-(10**15) + 1, 10**15 - 1), st.integers(0, 12))
def test_a_number_excel_shows_reads_back_as_that_number(digits: int, places: int) -> None:
    typed = Decimal(digits).scaleb(-places)
    text = cell_text(float(typed))  # the binary double Excel stores for what was typed
    assert text is not None
    assert Decimal(text) == typed
    assert "e" not in text.lower()
    assert not text.endswith(".0") and not (("." in text) and text.endswith("0"))


def sheet(*lines: tuple[object, ...]) -> list[Row]:
    return list(parse_sheet(lines, entity="customers", name="x.xlsx sheet customers"))


def test_sheet_rows_keep_their_row_numbers_and_empty_rows_are_skipped() -> None:
    got = sheet(("external_id", "name", None, None),  # formatted, empty columns after
                ("C-1", "Acme", None), (), (None, None, None, None), ("C-2", 17.0),
                ("C-3", "X", "beyond"), ("C-1", "Again"))
    assert [(r.line_number, r.record) for r in got if r.record] == [
        (2, {"external_id": "C-1", "name": "Acme"}), (5, {"external_id": "C-2", "name": "17"})]
    assert [(r.line_number, r.reject.reason) for r in got if r.reject] == [
        (6, "x.xlsx sheet customers row 6 has values beyond the header's 2 columns"),
        (7, "customer C-1 appears again in x.xlsx sheet customers (first at row 2, which is"
            " kept)")]


@pytest.mark.parametrize(("lines", "message"), [
    ((), "x.xlsx sheet customers row 1 is empty: it must be the header (the column names)"),
    (((None, None), ("C-1", "A")),
     "x.xlsx sheet customers row 1 is empty: it must be the header (the column names)"),
    ((("external_id", None, "name"),),
     "x.xlsx sheet customers row 1: unknown column(s) '' (known: country, customer_since,"
     " deleted, external_id, industry, key_account, name, size_class, source_updated_at)"),
])
def test_a_sheet_without_a_proper_header_is_refused(lines: tuple[tuple[object, ...], ...],
                                                    message: str) -> None:
    with pytest.raises(FileContractError) as info:
        sheet(*lines)
    assert str(info.value) == message


def test_a_file_that_is_not_a_workbook_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "customers.xlsx"
    path.write_bytes(b"\xd0\xcf\x11\xe0 an old .xls")
    with pytest.raises(FileContractError, match=r"customers.xlsx is not an Excel workbook"):
        sheet_names(path)


def test_the_committed_template_workbook_is_built_from_the_csv_templates() -> None:
    committed = load_workbook(TEMPLATES / TEMPLATE_WORKBOOK, read_only=True)
    built = build_template_workbook()
    assert committed.sheetnames == built.sheetnames == [*ENTITY_MODELS, "exchange_rates"]
    for name in built.sheetnames:
        assert ([[cell_text(v) for v in r] for r in committed[name].iter_rows(values_only=True)]
                == [[cell_text(v) for v in r] for r in built[name].iter_rows(values_only=True)]
                ), name
    committed.close()


def test_the_docs_give_every_column_of_every_file() -> None:
    docs = (TEMPLATES.parents[1] / "docs" / "erp-files.md").read_text()
    sections = dict(re.findall(r"^### `?(\w+)\.csv`?\n(.*?)(?=^##)", docs, re.M | re.S))
    assert set(sections) == {*ENTITY_MODELS, "exchange_rates"}
    for entity, model in {**ENTITY_MODELS, "exchange_rates": ExchangeRateRecord}.items():
        listed = re.findall(r"^\| `(\w+)`(\*?)", sections[entity], re.M)
        assert {name for name, _ in listed} == set(model.model_fields), entity
        required = {name for name, star in listed if star}
        assert required == {n for n, f in model.model_fields.items() if f.is_required()}, entity


def test_a_damaged_sheet_is_refused_naming_the_last_row_read(tmp_path: Path) -> None:
    path = tmp_path / "import.xlsx"
    with zipfile.ZipFile(TEMPLATES / TEMPLATE_WORKBOOK) as source, \
            zipfile.ZipFile(path, "w") as damaged:
        for name in source.namelist():
            data = source.read(name)
            if name == "xl/worksheets/sheet1.xml":  # customers, cut after its second row
                data = data[:data.index(b'<row r="3"') + 12]
            damaged.writestr(name, data)
    got = EntityFile("customers", path, "customers").rows()
    assert next(got).record is not None
    with pytest.raises(FileContractError) as info:
        list(got)
    assert str(info.value).startswith(
        "import.xlsx sheet customers cannot be read after row 2: the workbook is damaged (")
