"""The business schema's own rules: currency conversion, what it refuses, the serial join."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from psycopg import errors


def _customer(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("""
        INSERT INTO customers (source, external_id, name, industry, country, size_class)
        VALUES ('odoo', 'res.partner,7', 'Acme Packaging GmbH', 'packaging', 'DE', 'medium')
        RETURNING id""").fetchone()
    assert row is not None
    return int(str(row[0]))


def test_to_reporting_takes_the_latest_rate_on_or_before_the_day(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO exchange_rates VALUES ('USD', '2026-01-01', 0.90),
                                              ('USD', '2026-06-01', 0.85)""")
        got = conn.execute("""
            SELECT to_reporting(100.00, 'USD', '2026-03-15', 'EUR'),
                   to_reporting(100.00, 'USD', '2026-06-01', 'EUR'),
                   to_reporting(100.00, 'EUR', '2020-01-01', 'EUR'),
                   to_reporting(100.00, 'USD', '2025-12-31', 'EUR'),
                   to_reporting(100.00, 'CHF', '2026-03-15', 'EUR')""").fetchone()
    # 100 x 0.90; 100 x 0.85 from its first day; same currency untouched; before any rate and
    # an unknown currency: no number rather than a wrong one.
    assert got == (Decimal("90.0000000000"), Decimal("85.0000000000"), Decimal("100.00"),
                   None, None)


@pytest.mark.parametrize(("starts", "ends", "scope", "refused"), [
    ("2026-01-01", "2025-12-31", "customer", True),   # ends before it starts
    ("2026-01-01", "2026-12-31", "machine", True),    # machine scope without a machine
    ("2026-01-01", "2026-12-31", "customer", False),
])
def test_contract_rules(database_url: str, starts: str, ends: str, scope: str,
                        refused: bool) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        customer = _customer(conn)
        insert = """
            INSERT INTO service_contracts (source, external_id, customer_id, scope, starts_on,
                                           ends_on, annual_value, currency, status)
            VALUES ('odoo', 'sale.order,1', %s, %s, %s, %s, 12000, 'EUR', 'active')"""
        if refused:
            with pytest.raises(errors.CheckViolation):
                conn.execute(insert, (customer, scope, starts, ends))
        else:
            conn.execute(insert, (customer, scope, starts, ends))


def test_source_and_external_id_identify_a_row(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        _customer(conn)
        with pytest.raises(errors.UniqueViolation):
            _customer(conn)


def test_installed_base_joins_the_ingested_machine_by_serial(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        customer = _customer(conn)
        conn.execute("INSERT INTO machines (tenant, serial, protocol)"
                     " VALUES ('demo', 'SN-42', 'json')")
        conn.execute("""
            INSERT INTO installed_base (source, external_id, serial, model, customer_id)
            VALUES ('odoo', 'maintenance.equipment,1', 'SN-42', 'MX-500', %s),
                   ('odoo', 'maintenance.equipment,2', 'SN-43', 'MX-500', %s)""",
                     (customer, customer))
        rows = conn.execute("""
            SELECT serial, machine_id IS NOT NULL FROM installed_machines ORDER BY serial
        """).fetchall()
    # SN-43 is in the ERP but has never reported: kept, with no machine.
    assert rows == [("SN-42", True), ("SN-43", False)]
