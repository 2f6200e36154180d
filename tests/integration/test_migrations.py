"""The schema built from all migrations and definitions, and the runner's refusals."""

from __future__ import annotations

import psycopg
import pytest

from core import migrate, timescale
from core.errors import MigrationError
from core.settings import Settings
from oem_retention import schema

EXPECTED_COLUMNS = {
    "machines": ["id", "tenant", "serial", "protocol", "spb_group", "spb_edge_node", "spb_device",
                 "first_seen_at", "online", "online_changed_at"],
    "metrics": ["id", "name", "unit", "kind", "created_at"],
    "telemetry": ["time", "machine_id", "metric_id", "value"],
    "machine_states": ["time", "machine_id", "state"],
    "machine_events": ["time", "machine_id", "kind", "code", "event_key", "payload",
                       "received_at"],
    "dead_letters": ["id", "first_received_at", "last_received_at", "times_received", "topic",
                     "payload", "payload_size", "reason", "digest"],
    "sparkplug_gaps": ["id", "detected_at", "spb_group", "spb_edge_node", "cause",
                       "expected_seq", "received_seq", "missing", "rebirth_requested"],
    "schema_migrations": ["version", "name", "checksum", "applied_at"],
    # 003: the business side
    "contacts": [
        "id", "source", "external_id", "customer_id", "site_id", "name", "role", "email", "phone",
        "source_updated_at", "synced_at", "deleted_at"
    ],
    "contract_renewals": [
        "id", "source", "external_id", "contract_id", "decided_on", "outcome", "previous_ends_on",
        "new_ends_on", "previous_value", "new_value", "synced_at", "source_updated_at", "deleted_at"
    ],
    "customers": [
        "id", "source", "external_id", "name", "industry", "country", "size_class", "key_account",
        "customer_since", "source_updated_at", "synced_at", "deleted_at"
    ],
    "exchange_rates": ["currency", "valid_from", "rate"],
    "installed_base": [
        "id", "source", "external_id", "serial", "model", "customer_id", "site_id",
        "commissioned_on", "warranty_end", "source_updated_at", "synced_at", "deleted_at"
    ],
    "installed_machines": [
        "installed_base_id", "serial", "model", "customer_id", "site_id", "commissioned_on",
        "warranty_end", "machine_id", "online", "first_seen_at"
    ],
    "invoice_lines": [
        "id", "source", "external_id", "invoice_id", "kind", "product_code", "description",
        "quantity", "unit_price", "net_amount", "installed_base_id", "contract_id", "synced_at",
        "source_updated_at", "deleted_at"
    ],
    "invoices": [
        "id", "source", "external_id", "customer_id", "number", "issued_on", "due_on", "paid_on",
        "currency", "net_amount", "status", "source_updated_at", "synced_at", "deleted_at"
    ],
    "machine_models": [
        "id", "source", "external_id", "model", "service_interval_hours", "service_interval_days",
        "parts_value_per_1000h", "currency", "synced_at", "source_updated_at", "deleted_at"
    ],
    "order_lines": [
        "id", "source", "external_id", "order_id", "part_number", "description", "quantity",
        "unit_price", "net_amount", "installed_base_id", "synced_at",
        "source_updated_at", "deleted_at"
    ],
    "orders": [
        "id", "source", "external_id", "customer_id", "kind", "number", "ordered_on", "status",
        "currency", "net_amount", "source_updated_at", "synced_at", "deleted_at"
    ],
    "service_contracts": [
        "id", "source", "external_id", "customer_id", "installed_base_id", "scope",
        "contract_number", "tier", "starts_on", "ends_on", "notice_period_days", "auto_renew",
        "annual_value", "currency", "status", "source_updated_at", "synced_at", "deleted_at"
    ],
    "sites": [
        "id", "source", "external_id", "customer_id", "name", "country", "city",
        "source_updated_at", "synced_at", "deleted_at"
    ],
    "survey_responses": [
        "id", "source", "external_id", "customer_id", "contact_id", "answered_at", "score",
        "comment", "synced_at", "source_updated_at", "deleted_at"
    ],
    "analytics_job_runs": ["id", "job", "started_at", "finished_at", "status", "detail"],
    "sync_cursors": ["source", "entity", "cursor", "updated_at"],
    "sync_rejects": [
        "id", "run_id", "source", "entity", "external_id", "line_number", "reason", "record",
        "rejected_at"
    ],
    "sync_runs": [
        "id", "source", "entity", "full_resync", "started_at", "finished_at", "status",
        "rows_upserted", "rows_rejected", "error", "records_read", "rows_deleted"
    ],
    "sync_reports": ["id", "created_at", "sources", "full_resync", "ok", "report"],
    "sync_pending": ["source", "entity", "external_id", "record", "line_number", "reason",
                     "first_rejected_at", "last_tried_at"],
    # 006: analytics rollups and churn scores
    "machine_days": ["machine_id", "day", "operating_hours", "running_hours", "fault_hours",
                     "samples", "faults", "services", "last_seen", "refreshed_at"],
    "rollup_watermarks": ["rollup", "through", "refreshed_at"],
    "schema_definitions": ["name", "source", "checksum", "applied_at"],
    "churn_scores": ["customer_id", "scored_on", "horizon_days", "probability", "method",
                     "reasons", "model_version", "annual_value", "currency", "created_at"],
    # 009: customer lifetime values
    "customer_values": ["customer_id", "valued_on", "method", "p_alive", "expected_purchases_12m",
                        "expected_spend_per_purchase", "parts_clv", "contract_annual_value",
                        "contract_renewals", "contract_expected_lifetime_years",
                        "contract_derl_value", "total_clv", "currency", "discount_rate",
                        "horizon_months", "inputs", "parameters", "created_at"],
    # 011: behavioural segment memberships
    "segment_memberships": ["customer_id", "kind", "assigned_on", "segment", "inputs",
                            "created_at"],
    # 014: trained churn models
    "churn_models": ["id", "version", "method", "trained_until", "horizon_days", "churn_events",
                     "training_rows", "sklearn_version", "trained_at", "model"],
    # 015: UTC days with late data, for the rollup to recompute
    "rollup_late_days": ["day", "earliest", "marked_at", "marked_xid"],
    # 016: KPI snapshots
    "kpi_snapshots": ["taken_on", "period_kind", "period_start", "period_last", "dimension",
                      "segment", "kpi", "value", "numerator", "denominator", "unit", "counts",
                      "currency", "created_at"],
    # views
    "dead_letter_sources": ["source", "distinct_messages", "times_received", "first_received_at",
                            "last_received_at", "latest_reason", "latest_topic"],
    "sparkplug_gap_days": ["spb_group", "spb_edge_node", "day", "seq_gaps", "seq_numbers_missing",
                           "data_without_birth", "rebirths_requested"],
}


def test_schema_from_all_migrations(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("""
            SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = 'public' ORDER BY table_name, ordinal_position""").fetchall()
        hypertables = {r[0] for r in conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables")}
        indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
        states = conn.execute("SELECT enum_range(NULL::machine_state)::text").fetchone()
        reserved = conn.execute("SELECT name FROM metrics WHERE id = 1").fetchone()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    assert columns == EXPECTED_COLUMNS
    assert hypertables == {"telemetry", "machine_states", "machine_events"}
    assert {"telemetry_machine_metric_time", "machine_states_machine_time",
            "machine_events_machine_key", "machines_sparkplug_key"} <= indexes
    assert states == ("{running,idle,fault,off}",)
    assert reserved == ("operating_hours",)


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
