"""Repeatable definitions in a real database: applied when they change, in dependency order,
dropped and recreated with their dependants where CREATE OR REPLACE cannot do it, all in one
transaction (core/migrate.py).

The definitions under test live in a package of the test's own, written to a temporary
directory and passed to the runner beside the shipped ones, exactly as a domain's are.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core import migrate
from core.errors import MigrationError
from oem_retention import schema

COUNT_INT = """\
CREATE OR REPLACE FUNCTION probe_count(on_day date) RETURNS integer
LANGUAGE sql STABLE AS $$ SELECT extract(day FROM on_day)::integer $$;
"""
COUNT_INT_TIMES_TEN = COUNT_INT.replace("::integer $$", "::integer * 10 $$")
COUNT_BIGINT = COUNT_INT.replace("integer", "bigint")
VIEW_ON_COUNT = """\
-- depends on: probe_count
CREATE OR REPLACE VIEW probe_view AS SELECT probe_count(date '2026-03-07') AS n, 1 AS one;
"""
VIEW_ON_VIEW = """\
-- depends on: probe_view
CREATE OR REPLACE VIEW probe_total AS SELECT n + 1 AS n_plus_one FROM probe_view;
"""


@dataclass
class Package:
    """A definitions package of the test's own, importable by name."""

    name: str
    folder: Path

    def write(self, definition: str, text: str) -> None:
        (self.folder / f"{definition}.sql").write_text(text, encoding="utf-8")

    def remove(self, definition: str) -> None:
        (self.folder / f"{definition}.sql").unlink()

    def migrate(self, url: str) -> dict[str, str]:
        """Run the runner with the shipped definitions and these; what it did, by name."""
        run = migrate.migrate(url, definitions=[*schema.DEFINITIONS, self.name])
        return {c.definition.name: c.action for c in run.definitions}


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Package]:
    name = f"probe_definitions_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text('"""Definitions of one test."""\n', encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield Package(name, folder)


def one(url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def functions(url: str, name: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT oid::bigint, pg_get_function_identity_arguments(oid),"
            " pg_get_function_result(oid) FROM pg_proc WHERE proname = %s ORDER BY oid",
            (name,)).fetchall()


def columns(url: str, relation: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum", (relation,)).fetchall()


def recorded(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT name, checksum FROM schema_definitions").fetchall())


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_new_definition_is_applied_recorded_and_left_alone_after(database_url: str,
                                                                   package: Package) -> None:
    package.write("probe_count", COUNT_INT)
    assert package.migrate(database_url) == {"probe_count": "applied"}
    assert one(database_url, "SELECT probe_count(date '2026-03-07')") == 7
    assert recorded(database_url)["probe_count"] == sha256(COUNT_INT)
    assert package.migrate(database_url) == {}


def test_a_changed_body_is_replaced_in_place(database_url: str, package: Package) -> None:
    package.write("probe_count", COUNT_INT)
    package.write("probe_view", VIEW_ON_COUNT)
    package.migrate(database_url)
    [(oid, _, _)] = functions(database_url, "probe_count")
    view = one(database_url, "SELECT 'probe_view'::regclass::oid::bigint")

    package.write("probe_count", COUNT_INT_TIMES_TEN)
    assert package.migrate(database_url) == {"probe_count": "replaced"}
    # The same function and view (CREATE OR REPLACE, nothing dropped), with the new body.
    assert functions(database_url, "probe_count") == [(oid, "on_day date", "integer")]
    assert one(database_url, "SELECT 'probe_view'::regclass::oid::bigint") == view
    assert one(database_url, "SELECT n FROM probe_view") == 70
    assert recorded(database_url)["probe_count"] == sha256(COUNT_INT_TIMES_TEN)


def test_a_changed_return_type_drops_and_recreates_the_dependants(database_url: str,
                                                                  package: Package) -> None:
    package.write("probe_count", COUNT_INT)
    package.write("probe_view", VIEW_ON_COUNT)
    package.write("probe_total", VIEW_ON_VIEW)
    package.migrate(database_url)
    assert columns(database_url, "probe_total") == [("n_plus_one", "integer")]

    package.write("probe_count", COUNT_BIGINT)
    # CREATE OR REPLACE refuses a new return type, and the view on the function (and the view
    # on that view) would stop a DROP FUNCTION: all three go and come back, in order.
    assert package.migrate(database_url) == {"probe_count": "dropped and recreated",
                                             "probe_view": "dropped and recreated",
                                             "probe_total": "dropped and recreated"}
    assert [r[2] for r in functions(database_url, "probe_count")] == ["bigint"]
    assert columns(database_url, "probe_view") == [("n", "bigint"), ("one", "integer")]
    assert columns(database_url, "probe_total") == [("n_plus_one", "bigint")]
    assert one(database_url, "SELECT n_plus_one FROM probe_total") == 8
    assert package.migrate(database_url) == {}


def test_a_changed_argument_list_leaves_one_function(database_url: str,
                                                     package: Package) -> None:
    package.write("probe_count", COUNT_INT)
    package.write("probe_view", VIEW_ON_COUNT)
    package.migrate(database_url)

    package.write("probe_count", """\
CREATE OR REPLACE FUNCTION probe_count(on_day date, times integer) RETURNS integer
LANGUAGE sql STABLE AS $$ SELECT extract(day FROM on_day)::integer * times $$;
""")
    package.write("probe_view", VIEW_ON_COUNT.replace("'2026-03-07')", "'2026-03-07', 3)"))
    # Replaced as such, the new argument list would be a second function beside the old one,
    # which the old view (and any caller) would go on using.
    changes = package.migrate(database_url)
    assert changes == {"probe_count": "dropped and recreated",
                       "probe_view": "dropped and recreated"}
    assert [r[1] for r in functions(database_url, "probe_count")] == [
        "on_day date, times integer"]
    assert one(database_url, "SELECT n FROM probe_view") == 21


def test_a_view_whose_columns_change_is_recreated_with_its_dependants(
        database_url: str, package: Package) -> None:
    package.write("probe_count", COUNT_INT)
    package.write("probe_view", VIEW_ON_COUNT)
    package.write("probe_total", VIEW_ON_VIEW)
    package.migrate(database_url)

    package.write("probe_view", VIEW_ON_COUNT.replace(", 1 AS one", ""))
    assert package.migrate(database_url) == {"probe_view": "dropped and recreated",
                                             "probe_total": "dropped and recreated"}
    assert columns(database_url, "probe_view") == [("n", "integer")]
    assert one(database_url, "SELECT n_plus_one FROM probe_total") == 8


def test_a_view_that_becomes_a_function(database_url: str, package: Package) -> None:
    package.write("probe_count", "CREATE OR REPLACE VIEW probe_count AS SELECT 1 AS n;\n")
    package.migrate(database_url)
    package.write("probe_count", COUNT_INT)
    assert package.migrate(database_url) == {"probe_count": "dropped and recreated"}
    assert one(database_url, "SELECT to_regclass('probe_count')") is None
    assert one(database_url, "SELECT probe_count(date '2026-03-07')") == 7


def test_a_view_a_migration_dropped_comes_back_from_its_file(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A numbered migration that must change a column under a view drops the view and need not
    # repeat it: the runner applies every definition whose object is missing.
    shipped = migrate.available()
    # (A column a row-level security policy reads, like the serial, would need its policy
    # dropped and made again as well: PostgreSQL refuses otherwise.)
    widen = migrate.Migration(900, "widen_models", """
        DROP VIEW installed_machines;
        ALTER TABLE installed_base ALTER COLUMN model TYPE varchar(80);""")
    monkeypatch.setattr(migrate, "available", lambda: [*shipped, widen])
    run = schema.migrate(database_url)
    assert [m.name for m in run.migrations] == ["widen_models"]
    assert [(c.definition.name, c.action) for c in run.definitions] == [
        ("installed_machines", "recreated (was missing)")]
    assert ("model", "character varying(80)") in columns(database_url, "installed_machines")


def test_a_failing_definition_leaves_every_definition_as_it_was(database_url: str,
                                                                package: Package) -> None:
    package.write("probe_count", COUNT_INT)
    package.migrate(database_url)
    package.write("probe_count", COUNT_INT_TIMES_TEN)
    package.write("probe_view", "-- depends on: probe_count\n"
                  "CREATE OR REPLACE VIEW probe_view AS SELECT probe_count(1) AS n;\n")
    with pytest.raises(MigrationError, match=r"definition .*/probe_view\.sql failed"):
        package.migrate(database_url)
    assert one(database_url, "SELECT probe_count(date '2026-03-07')") == 7
    assert recorded(database_url)["probe_count"] == sha256(COUNT_INT)
    assert "probe_view" not in recorded(database_url)


def test_an_object_outside_the_definitions_stops_a_rebuild_and_says_so(
        database_url: str, package: Package) -> None:
    package.write("probe_count", COUNT_INT)
    package.migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE VIEW by_hand AS SELECT probe_count(current_date) AS n")
    package.write("probe_count", COUNT_BIGINT)
    with pytest.raises(MigrationError, match=r"view by_hand depends on function probe_count"
                                             r".*make that a definition"):
        package.migrate(database_url)
    assert [r[2] for r in functions(database_url, "probe_count")] == ["integer"]


def test_a_definition_the_code_no_longer_ships_is_refused(database_url: str,
                                                          package: Package) -> None:
    package.write("probe_count", COUNT_INT)
    package.migrate(database_url)
    package.remove("probe_count")
    with pytest.raises(MigrationError, match="probe_count, which this code does not ship"):
        package.migrate(database_url)


def test_a_definition_file_is_checked_before_any_migration_runs(
        database_url: str, package: Package, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = migrate.available()
    pending = migrate.Migration(900, "pending", "CREATE TABLE pending_table (x int);")
    monkeypatch.setattr(migrate, "available", lambda: [*shipped, pending])
    package.write("probe_count", COUNT_INT)
    package.write("probe_view", VIEW_ON_COUNT.replace("-- depends on: probe_count\n", ""))
    with pytest.raises(MigrationError, match="uses probe_count but does not say so"):
        package.migrate(database_url)
    assert one(database_url, "SELECT to_regclass('pending_table')") is None


def test_a_definition_is_retired_by_a_migration_that_drops_it(
        database_url: str, package: Package, monkeypatch: pytest.MonkeyPatch) -> None:
    package.write("probe_count", COUNT_INT)
    package.migrate(database_url)
    package.remove("probe_count")
    shipped = migrate.available()
    retire = migrate.Migration(900, "retire_probe_count", """
        DROP FUNCTION probe_count;
        DELETE FROM schema_definitions WHERE name = 'probe_count';""")
    monkeypatch.setattr(migrate, "available", lambda: [*shipped, retire])
    assert package.migrate(database_url) == {}
    assert functions(database_url, "probe_count") == []
