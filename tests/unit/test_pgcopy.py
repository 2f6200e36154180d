"""The binary COPY layout: what the packer writes, and how a drifted table is described."""

from __future__ import annotations

import re

import pytest

from core import pgcopy
from core.pgcopy import Column, layout_problems
from core.sql import queries


def _table(table: str, layout: tuple[tuple[str, str], ...]) -> list[Column]:
    return [Column(table, name, type_, required=True) for name, type_ in layout]


def _as_migrated() -> list[Column]:
    return _table("telemetry", pgcopy.TELEMETRY_COLUMNS) + _table(
        "machine_states", pgcopy.STATE_COLUMNS)


def test_the_migrated_layout_has_no_problem() -> None:
    assert layout_problems(_as_migrated()) == []


@pytest.mark.parametrize(("table", "column", "drifted", "expected"), [
    ("telemetry", "metric_id", "bigint", "integer"),
    ("telemetry", "value", "numeric", "double precision"),
    ("telemetry", "time", "timestamp without time zone", "timestamp with time zone"),
    ("machine_states", "state", "text", "machine_state"),
])
def test_a_changed_type_is_named_with_the_type_written(table: str, column: str, drifted: str,
                                                      expected: str) -> None:
    columns = [Column(c.table, c.name, drifted, c.required)
               if (c.table, c.name) == (table, column) else c for c in _as_migrated()]
    assert layout_problems(columns) == [
        f"{table}.{column} is {drifted}; the binary COPY writes {expected} (core/pgcopy.py)"]


def test_missing_tables_and_columns_and_required_extra_columns() -> None:
    columns = [c for c in _table("telemetry", pgcopy.TELEMETRY_COLUMNS) if c.name != "value"]
    columns += [Column("telemetry", "quality", "smallint", required=True),
                Column("telemetry", "note", "text", required=False)]
    assert layout_problems(columns) == [
        "telemetry.value is missing; the binary COPY writes it as double precision"
        " (core/pgcopy.py)",
        "telemetry.quality (smallint) is NOT NULL without a default, and the binary COPY does"
        " not write it (core/pgcopy.py)",
        "table machine_states is missing"]


def test_rows_are_packed_as_the_layout_says() -> None:
    # Field count, then each field's length: 8 for timestamptz and float8, 4 for int4.
    sizes = {"timestamp with time zone": 8, "integer": 4, "double precision": 8}
    row = pgcopy.TELEMETRY_ROW.pack(4, 8, 1, 4, 2, 4, 3, 8, 4.5)
    assert row[:2] == len(pgcopy.TELEMETRY_COLUMNS).to_bytes(2, "big")
    pos = 2
    for _, type_ in pgcopy.TELEMETRY_COLUMNS:
        length = int.from_bytes(row[pos:pos + 4], "big")
        assert length == sizes[type_]
        pos += 4 + length
    assert pos == len(row)
    assert pgcopy.STATE_ROW.size == 2 + 4 + 8 + 4 + 4 + 4  # the label's bytes follow


@pytest.mark.parametrize(("block", "table"), [
    ("copy_telemetry", "telemetry"), ("copy_telemetry_stage", "telemetry"),
    ("copy_states", "machine_states"), ("copy_states_stage", "machine_states")])
def test_copy_statements_list_the_layout_columns(block: str, table: str) -> None:
    statement = queries("ingest", "sql/store.sql")[block]
    listed = re.search(r"\(([^)]*)\) FROM STDIN \(FORMAT BINARY\)", statement)
    assert listed is not None, statement
    assert [c.strip() for c in listed.group(1).split(",")] == [
        name for name, _ in pgcopy.LAYOUTS[table]]
