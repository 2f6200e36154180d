"""The schema built from all migrations and definitions, and the runner's refusals."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from core import migrate, timescale
from core.errors import MigrationError
from core.settings import Settings
from oem_retention import schema
from tests.integration import schema_snapshot


@pytest.fixture(scope="module")
def built_url() -> Iterator[str]:
    """An empty database built by `db migrate`'s entry point (not the tests' template, whose
    storage policies are the tests' own settings)."""
    with schema_snapshot.built_database() as url:
        yield url


def check_against_snapshot(actual: str) -> None:
    diff = schema_snapshot.differences(schema_snapshot.checked_in(), actual)
    if diff:
        pytest.fail(f"the schema that migrations and definitions build differs from"
                    f" {schema_snapshot.SNAPSHOT.name}. If the change is intended, regenerate it"
                    f" with `{schema_snapshot.REGENERATE}` and commit it.\n{diff}",
                    pytrace=False)


def test_schema_from_all_migrations_and_definitions(built_url: str) -> None:
    with psycopg.connect(built_url) as conn:
        actual = schema_snapshot.describe(conn)
        reserved = conn.execute("SELECT name FROM metrics WHERE id = 1").fetchone()
    check_against_snapshot(actual)
    assert reserved == ("operating_hours",)


def test_snapshot_fails_on_a_changed_column_type(built_url: str) -> None:
    with psycopg.connect(built_url) as conn:
        # In a transaction rolled back at the end: the module's database stays as built.
        conn.execute("ALTER TABLE kpi_snapshots ALTER COLUMN unit TYPE varchar(20)")
        changed = schema_snapshot.describe(conn)
        conn.rollback()
        assert schema_snapshot.describe(conn) != changed
    with pytest.raises(pytest.fail.Exception) as failure:
        check_against_snapshot(changed)
    message = str(failure.value)
    assert "-column kpi_snapshots.unit text NOT NULL\n" in message
    assert "+column kpi_snapshots.unit character varying(20) NOT NULL\n" in message
    assert schema_snapshot.REGENERATE in message
    # The diff names that one line and nothing else.
    assert sum(line.startswith(("-column", "+column")) for line in message.splitlines()) == 2


def test_second_run_applies_nothing(database_url: str) -> None:
    run = schema.migrate(database_url)
    assert run.migrations == ()
    assert run.definitions == ()


def test_changed_landed_migration_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        schema.migrate(database_url)


def test_migration_from_newer_code_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x')")
    with pytest.raises(MigrationError, match="newer version"):
        schema.migrate(database_url)


def test_migration_numbered_below_an_applied_one_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = 1")
    with pytest.raises(MigrationError, match="out of order"):
        schema.migrate(database_url)


def test_failed_migration_leaves_nothing_behind(database_url: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = migrate.available()
    broken = migrate.Migration(900, "broken", "CREATE TABLE half_done (x int); SELECT 1/0;")
    monkeypatch.setattr(migrate, "available", lambda: [*shipped, broken])
    with pytest.raises(MigrationError, match="900_broken failed"):
        schema.migrate(database_url)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (
            max(m.version for m in shipped),)


def test_capabilities_of_the_apache_edition(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        caps = timescale.apply_storage_policies(conn, Settings(database_url=database_url))
        interval = conn.execute("""
            SELECT time_interval FROM timescaledb_information.dimensions
            WHERE hypertable_name = 'telemetry'""").fetchone()
    assert caps.hypertables
    if caps.license == "apache":
        assert not (caps.compression or caps.retention_policies or caps.continuous_aggregates)
    assert interval is not None and str(interval[0]) == "1:00:00"


def test_retention_fallback_drops_old_chunks(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO telemetry VALUES (now() - interval '200 days', 1, 1, 1.0),
                                         (now() - interval '1 day', 1, 1, 2.0)""")
        settings = Settings(database_url=database_url, telemetry_retention="90 days")
        # Not rolled up yet: kept, however old.
        assert timescale.drop_expired_telemetry(conn, settings) == 0
        conn.execute("INSERT INTO rollup_watermarks (rollup, through)"
                     " VALUES ('machine_days', now() - interval '150 days')")
        # Rolled up to 150 days ago: the 200-day-old chunk goes, the rest stays.
        dropped = timescale.drop_expired_telemetry(conn, settings)
        left = conn.execute("SELECT array_agg(value) FROM telemetry").fetchone()
    assert dropped == 1
    assert left == ([2.0],)
