"""The Odoo connector against the fake Odoo on loopback and the real database."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from demo.erp.odoo import FakeOdoo, WorldLoader
from demo.erp.records import read_records
from erp_connectors.http import RetryPolicy
from erp_connectors.odoo import OdooConnector, ref
from erp_connectors.sync import ENTITIES, LOCK_CLASS, SyncResult, sync_entity

from .conftest import ROOT, rows, scalar, wait_for

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
FAST = RetryPolicy(attempts=4, base_delay_s=0.05, max_delay_s=0.2, max_retry_after_s=5)
OLD = "2026-01-01 09:00:00"


def world() -> dict[str, list[dict[str, Any]]]:
    """A small machine builder in the files connector's format (every field as text)."""
    return {
        "customers": [
            {"external_id": "C-1", "name": "Acme Molding GmbH", "industry": "Plastics",
             "country": "DE", "size_class": "large", "key_account": "true",
             "customer_since": "2019-04-01"},
            {"external_id": "C-2", "name": "Tecno Plast S.p.A.", "industry": "Packaging",
             "country": "IT", "size_class": "medium"},
            {"external_id": "C-3", "name": "Nordpack AB", "country": "DE"}],
        "sites": [
            {"external_id": "S-1", "customer_external_id": "C-1", "name": "Acme Plant 1",
             "country": "DE", "city": "Stuttgart"},
            {"external_id": "S-2", "customer_external_id": "C-2", "name": "Brescia",
             "country": "IT", "city": "Brescia"}],
        "contacts": [
            {"external_id": "P-1", "customer_external_id": "C-1", "site_external_id": "S-1",
             "name": "Jana Vogel", "role": "Maintenance lead", "email": "jv@acme.example"},
            {"external_id": "P-2", "customer_external_id": "C-2", "name": "Luca Neri",
             "phone": "+39 030 1234"}],
        "machine_models": [
            {"external_id": "M-1", "model": "PX-400", "service_interval_hours": "2000",
             "service_interval_days": "365", "parts_value_per_1000h": "1250.50",
             "currency": "EUR"},
            {"external_id": "M-2", "model": "PX-800", "service_interval_hours": "1500"}],
        "installed_base": [
            {"external_id": "IB-1", "serial": "SN-1001", "model": "PX-400",
             "customer_external_id": "C-1", "site_external_id": "S-1",
             "commissioned_on": "2021-03-01", "warranty_end": "2023-03-01"},
            {"external_id": "IB-2", "serial": "SN-1002", "model": "PX-800",
             "customer_external_id": "C-2", "site_external_id": "S-2",
             "commissioned_on": "2022-06-15"},
            {"external_id": "IB-3", "serial": "SN-1003", "model": "PX-400",
             "customer_external_id": "C-3"}],
        "service_contracts": [
            {"external_id": "K-1", "customer_external_id": "C-1",
             "installed_base_external_id": "IB-1", "scope": "machine",
             "contract_number": "SUB/001", "tier": "Premium", "starts_on": "2023-01-01",
             "ends_on": "2023-12-31", "notice_period_days": "60", "auto_renew": "true",
             "annual_value": "12000.00", "currency": "EUR", "status": "active"},
            {"external_id": "K-2", "customer_external_id": "C-2", "scope": "customer",
             "contract_number": "SUB/002", "tier": "Basic", "starts_on": "2022-01-01",
             "ends_on": "2022-12-31", "annual_value": "4000.10", "currency": "EUR",
             "status": "active"}],
        "contract_renewals": [
            {"external_id": "R-1", "contract_external_id": "K-1", "decided_on": "2023-11-15",
             "outcome": "upgraded", "previous_ends_on": "2023-12-31",
             "new_ends_on": "2030-12-31", "previous_value": "12000.00",
             "new_value": "13500.00"},
            {"external_id": "R-2", "contract_external_id": "K-2", "decided_on": "2022-12-31",
             "outcome": "lapsed", "previous_ends_on": "2022-12-31"}],
        "invoices": [
            {"external_id": "I-1", "customer_external_id": "C-1", "number": "INV/2024/0001",
             "issued_on": "2024-01-10", "due_on": "2024-02-09", "paid_on": "2024-02-01",
             "currency": "EUR", "net_amount": "13500.00", "status": "paid"},
            {"external_id": "I-2", "customer_external_id": "C-2", "number": "INV/2024/0002",
             "issued_on": "2024-03-05", "due_on": "2024-04-04", "currency": "EUR",
             "net_amount": "830.40", "status": "open"},
            {"external_id": "I-3", "customer_external_id": "C-2", "number": "RINV/2024/0001",
             "issued_on": "2024-03-20", "currency": "EUR", "net_amount": "-120.00",
             "status": "credited"}],
        "invoice_lines": [
            {"external_id": "L-1", "invoice_external_id": "I-1", "kind": "service_contract",
             "product_code": "SVC-PREM", "description": "Premium service 2024",
             "quantity": "1", "unit_price": "13500.00", "net_amount": "13500.00",
             "installed_base_external_id": "IB-1", "contract_external_id": "K-1"},
            {"external_id": "L-2", "invoice_external_id": "I-2", "kind": "spare_parts",
             "product_code": "SP-4711", "description": "Screw barrel seal", "quantity": "4",
             "unit_price": "180.10", "net_amount": "720.40",
             "installed_base_external_id": "IB-2"},
            {"external_id": "L-3", "invoice_external_id": "I-2", "kind": "field_service",
             "product_code": "FS-HOUR", "description": "Technician hour", "quantity": "1",
             "unit_price": "110.00", "net_amount": "110.00"},
            {"external_id": "L-4", "invoice_external_id": "I-3", "kind": "spare_parts",
             "product_code": "SP-4711", "description": "Returned seal", "quantity": "1",
             "unit_price": "120.00", "net_amount": "-120.00"}],
        "orders": [
            {"external_id": "O-1", "customer_external_id": "C-2", "kind": "spare_parts",
             "number": "S00001", "ordered_on": "2024-02-28", "status": "delivered",
             "currency": "EUR", "net_amount": "720.40"},
            {"external_id": "O-2", "customer_external_id": "C-1", "kind": "service",
             "number": "S00002", "ordered_on": "2024-05-02", "status": "confirmed",
             "currency": "EUR", "net_amount": "990.00"}],
        "order_lines": [
            {"external_id": "OL-1", "order_external_id": "O-1", "part_number": "SP-4711",
             "description": "Screw barrel seal", "quantity": "4", "unit_price": "180.10",
             "net_amount": "720.40", "installed_base_external_id": "IB-2"},
            {"external_id": "OL-2", "order_external_id": "O-2", "part_number": "FS-DAY",
             "description": "Inspection day", "quantity": "1", "unit_price": "990.00",
             "net_amount": "990.00"}],
        "survey_responses": [
            {"external_id": "N-1", "customer_external_id": "C-1", "contact_external_id": "P-1",
             "answered_at": "2024-06-01T10:00:00Z", "score": "9", "comment": "Great support"},
            {"external_id": "N-2", "customer_external_id": "C-2",
             "answered_at": "2024-06-03T08:30:00Z", "score": "4"}],
    }


def write_world(directory: Path, records: dict[str, list[dict[str, Any]]]) -> Path:
    """The world as the CSV directory the standalone fake serves."""
    for entity, records_of in records.items():
        header = list(ENTITIES[entity].model.model_fields)
        with (directory / f"{entity}.csv").open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
            writer.writeheader()
            writer.writerows(records_of)
    return directory


@pytest.fixture
def odoo() -> Iterator[FakeOdoo]:
    with FakeOdoo(db="demo", login="admin", api_key="k-123") as fake:
        yield fake


@pytest.fixture
def loaded(odoo: FakeOdoo, tmp_path: Path) -> WorldLoader:
    # Through the CSV files, as the standalone demo server reads them.
    return WorldLoader(odoo, at=OLD).load(read_records(write_world(tmp_path, world())))


def connector(odoo: FakeOdoo, **kw: Any) -> OdooConnector:
    options: dict[str, Any] = {"db": "demo", "login": "admin", "api_key": "k-123",
                               "policy": FAST, **kw}
    return OdooConnector(odoo.url, **options)


async def sync_all(conn: Conn, odoo: OdooConnector, *, full: bool = False,
                   only: tuple[str, ...] | None = None) -> dict[str, SyncResult]:
    results = {}
    try:
        for entity, pages in odoo.page_sources().items():
            if only is None or entity in only:
                results[entity] = await sync_entity(conn, source=odoo.source, entity=entity,
                                                    pages=pages, full=full)
    finally:
        await odoo.aclose()
    return results


async def one(conn: Conn, query: str, params: Any = None) -> Any:
    return (await rows(conn, query, params))[0][0]


def total(records: list[dict[str, Any]], name: str) -> Decimal:
    return sum((Decimal(r[name]) for r in records), Decimal(0))


async def test_full_sync_of_every_entity(conn: Conn, odoo: FakeOdoo,
                                         loaded: WorldLoader) -> None:
    w = world()
    results = await sync_all(conn, connector(odoo, page_size=2))
    assert list(results) == list(ENTITIES)
    assert {e: (r.status, r.rows_rejected) for e, r in results.items()} == dict.fromkeys(
        ENTITIES, ("succeeded", 0))
    renewed = [r for r in w["contract_renewals"] if r["outcome"] != "lapsed"]
    expected = {e: len(w[e]) for e in ENTITIES}
    # Each renewal is an order of its own in Odoo, so a contract of its own here.
    expected["service_contracts"] += len(renewed)
    for entity, count in expected.items():
        assert await one(conn, f"SELECT count(*) FROM {entity}") == count, entity
        assert results[entity].rows_upserted == count, entity
    assert await one(conn, "SELECT sum(net_amount) FROM invoices") == total(w["invoices"],
                                                                            "net_amount")
    assert await one(conn, "SELECT sum(net_amount) FROM invoice_lines") == total(
        w["invoice_lines"], "net_amount")
    assert await one(conn, "SELECT sum(net_amount) FROM orders") == total(w["orders"],
                                                                          "net_amount")
    assert await one(conn, "SELECT sum(net_amount) FROM order_lines") == total(
        w["order_lines"], "net_amount")
    assert await one(conn, "SELECT sum(annual_value) FROM service_contracts") == total(
        w["service_contracts"], "annual_value") + total(renewed, "new_value")
    assert await one(conn, "SELECT sum(score) FROM survey_responses") == sum(
        int(r["score"]) for r in w["survey_responses"])

    ids = loaded.ids
    acme = ref(*ids[("customers", "C-1")])
    assert await rows(conn, """
        SELECT name, industry, country, size_class, key_account, customer_since::text
        FROM customers WHERE external_id = %s""", (acme,)) == [
        ("Acme Molding GmbH", "Plastics", "DE", "large", True, "2019-04-01")]
    assert await rows(conn, """
        SELECT ib.serial, ib.model, c.external_id, s.name, ib.commissioned_on::text,
               ib.warranty_end::text
        FROM installed_base ib JOIN customers c ON c.id = ib.customer_id
        LEFT JOIN sites s ON s.id = ib.site_id ORDER BY ib.serial""") == [
        ("SN-1001", "PX-400", acme, "Acme Plant 1", "2021-03-01", "2023-03-01"),
        ("SN-1002", "PX-800", ref(*ids[("customers", "C-2")]), "Brescia", "2022-06-15", None),
        ("SN-1003", "PX-400", ref(*ids[("customers", "C-3")]), None, None, None)]
    assert await rows(conn, """
        SELECT c.name, s.name, p.role, p.email, p.phone FROM contacts p
        JOIN customers c ON c.id = p.customer_id LEFT JOIN sites s ON s.id = p.site_id
        ORDER BY p.name""") == [
        ("Acme Molding GmbH", "Acme Plant 1", "Maintenance lead", "jv@acme.example", None),
        ("Tecno Plast S.p.A.", None, None, None, "+39 030 1234")]
    assert await rows(conn, """
        SELECT model, service_interval_hours, service_interval_days, parts_value_per_1000h,
               currency FROM machine_models ORDER BY model""") == [
        ("PX-400", 2000, 365, Decimal("1250.50"), "EUR"), ("PX-800", 1500, None, None, None)]
    assert await rows(conn, """
        SELECT status, paid_on::text, number FROM invoices ORDER BY issued_on""") == [
        ("paid", "2024-02-01", "INV/2024/0001"), ("open", None, "INV/2024/0002"),
        ("credited", None, "RINV/2024/0001")]
    assert await rows(conn, """
        SELECT kind, product_code, quantity, net_amount, ib.serial, k.contract_number
        FROM invoice_lines l LEFT JOIN installed_base ib ON ib.id = l.installed_base_id
        LEFT JOIN service_contracts k ON k.id = l.contract_id ORDER BY l.net_amount""") == [
        ("spare_parts", "SP-4711", Decimal("1.000"), Decimal("-120.00"), None, None),
        ("field_service", "FS-HOUR", Decimal("1.000"), Decimal("110.00"), None, None),
        ("spare_parts", "SP-4711", Decimal("4.000"), Decimal("720.40"), "SN-1002", None),
        ("service_contract", "SVC-PREM", Decimal("1.000"), Decimal("13500.00"), "SN-1001",
         "SUB/001")]
    assert await rows(conn, """
        SELECT k.contract_number, r.outcome, r.previous_ends_on::text, r.new_ends_on::text,
               r.previous_value, r.new_value
        FROM contract_renewals r JOIN service_contracts k ON k.id = r.contract_id
        ORDER BY 1""") == [
        ("SUB/001", "upgraded", "2023-12-31", "2030-12-31", Decimal("12000.00"),
         Decimal("13500.00")),
        ("SUB/002", "lapsed", "2022-12-31", None, Decimal("4000.10"), None)]
    assert await rows(conn, """
        SELECT contract_number, status, scope, tier, notice_period_days, auto_renew
        FROM service_contracts ORDER BY 1""") == [
        ("SUB/001", "expired", "machine", "Premium", 60, True),
        ("SUB/001/R", "active", "machine", "Premium", 60, True),
        ("SUB/002", "expired", "customer", "Basic", 90, False)]
    assert await rows(conn, """
        SELECT c.name, p.name, r.score, r.comment FROM survey_responses r
        JOIN customers c ON c.id = r.customer_id LEFT JOIN contacts p ON p.id = r.contact_id
        ORDER BY r.answered_at""") == [
        ("Acme Molding GmbH", "Jana Vogel", 9, "Great support"),
        ("Tecno Plast S.p.A.", None, 4, None)]
    assert await rows(conn, "SELECT kind, status FROM orders ORDER BY ordered_on") == [
        ("spare_parts", "delivered"), ("service", "confirmed")]


async def test_incremental_sync_rewrites_only_what_changed(conn: Conn, odoo: FakeOdoo,
                                                           loaded: WorldLoader) -> None:
    await sync_all(conn, connector(odoo))
    ids = loaded.ids
    odoo.write("res.partner", ids[("customers", "C-2")][1], {"name": "Tecno Plast SpA"})
    line = odoo.get("account.move.line", ids[("invoice_lines", "L-3")][1])
    new_line = odoo.create("account.move.line", {
        k: v for k, v in line.items() if k not in ("id", "create_date", "write_date",
                                                   "display_name")} | {"price_subtotal": 55.5})
    invoice = ids[("invoices", "I-2")][1]
    odoo.write("account.move", invoice, {"state": "cancel"})  # a cancellation is a status
    results = await sync_all(conn, connector(odoo))
    assert {e: r.rows_upserted for e, r in results.items() if r.rows_upserted} == {
        "customers": 1, "invoices": 1, "invoice_lines": 1}
    assert await rows(conn, "SELECT entity, rows_upserted FROM sync_runs WHERE id > %s"
                      " AND rows_upserted > 0 ORDER BY id", (len(ENTITIES),)) == [
        ("customers", 1), ("invoices", 1), ("invoice_lines", 1)]
    assert await one(conn, "SELECT status FROM invoices WHERE external_id = %s",
                     (ref("account.move", invoice),)) == "cancelled"
    assert await one(conn, "SELECT net_amount FROM invoice_lines WHERE external_id = %s",
                     (ref("account.move.line", new_line),)) == Decimal("55.50")
    # Nothing changed since: nothing written.
    again = await sync_all(conn, connector(odoo))
    assert sum(r.rows_upserted for r in again.values()) == 0


async def test_archived_records_are_marked_deleted(conn: Conn, odoo: FakeOdoo,
                                                   loaded: WorldLoader) -> None:
    await sync_all(conn, connector(odoo))
    machine = loaded.ids[("installed_base", "IB-3")][1]
    odoo.archive("maintenance.equipment", machine)
    results = await sync_all(conn, connector(odoo), only=("installed_base",))
    assert results["installed_base"].rows_upserted == 1
    assert await rows(conn, "SELECT serial FROM installed_base WHERE deleted_at IS NOT NULL"
                      ) == [("SN-1003",)]
    # A full sync reads archived records too: the row stays, marked, and nothing else goes.
    results = await sync_all(conn, connector(odoo), full=True, only=("installed_base",))
    assert (results["installed_base"].rows_deleted,
            await one(conn, "SELECT count(*) FROM installed_base WHERE deleted_at IS NULL")
            ) == (0, 2)


async def test_records_sharing_a_write_date_across_pages(conn: Conn, odoo: FakeOdoo) -> None:
    stamp = "2026-02-02 10:00:00"
    created = [odoo.create("res.partner", {"name": f"Customer {i}", "is_company": True,
                                           "customer_rank": 1}, write_date=stamp)
               for i in range(53)]
    results = await sync_all(conn, connector(odoo, page_size=7, overlap_s=0),
                             only=("customers",))
    assert (results["customers"].pages, results["customers"].records_read) == (8, 53)
    assert await one(conn, "SELECT count(DISTINCT external_id) FROM customers") == 53
    # More records with the very same write_date but higher ids, after the cursor: found.
    later = [odoo.create("res.partner", {"name": f"Late {i}", "is_company": True,
                                         "customer_rank": 1}, write_date=stamp)
             for i in range(9)]
    results = await sync_all(conn, connector(odoo, page_size=7, overlap_s=0),
                             only=("customers",))
    assert (results["customers"].records_read, results["customers"].rows_upserted) == (9, 9)
    assert sorted(r[0] for r in await rows(conn, "SELECT external_id FROM customers")) == sorted(
        ref("res.partner", i) for i in created + later)


async def test_throttling_and_dropped_connections_are_retried(conn: Conn, odoo: FakeOdoo,
                                                              loaded: WorldLoader) -> None:
    odoo.fail_next(2, status=429, retry_after=1)
    odoo.fail_next(1, status=503)
    odoo.drop_next(1)
    before = odoo.request_count
    started = asyncio.get_running_loop().time()
    patient = RetryPolicy(attempts=6, base_delay_s=0.05, max_delay_s=0.2, max_retry_after_s=5)
    results = await sync_all(conn, connector(odoo, policy=patient), only=("customers",))
    assert (results["customers"].status, results["customers"].rows_upserted) == ("succeeded",
                                                                                 3)
    assert asyncio.get_running_loop().time() - started >= 2  # Retry-After: 1, twice
    # login + countries + one page, and the four failed attempts before them.
    assert odoo.request_count - before == 3 + 4


async def test_access_error_stops_one_entity_and_the_others_go_on(
        conn: Conn, odoo: FakeOdoo, loaded: WorldLoader) -> None:
    odoo.deny("account.move.line")
    results = await sync_all(conn, connector(odoo))
    failed = {e: r.error for e, r in results.items() if r.status == "failed"}
    assert list(failed) == ["invoice_lines"]
    assert failed["invoice_lines"] is not None
    assert "odoo.exceptions.AccessError: You are not allowed to access 'Journal Item'" \
        " (account.move.line) records" in failed["invoice_lines"]
    assert await one(conn, "SELECT count(*) FROM invoices") == len(world()["invoices"])
    assert await one(conn, "SELECT count(*) FROM order_lines") == len(world()["order_lines"])


async def test_refused_login(conn: Conn, odoo: FakeOdoo, loaded: WorldLoader) -> None:
    results = await sync_all(conn, connector(odoo, api_key="wrong"), only=("customers",))
    assert results["customers"].status == "failed"
    assert results["customers"].error == (
        f"Odoo refused login 'admin' on database 'demo' at {odoo.url}: check the login and the"
        " API key")


async def test_a_renamed_field_fails_with_odoos_message(conn: Conn, odoo: FakeOdoo,
                                                        loaded: WorldLoader) -> None:
    from erp_connectors.odoo import OdooFields
    results = await sync_all(conn, connector(odoo, fields=OdooFields(
        customer_size_class="x_studio_size")), only=("customers",))
    assert results["customers"].error is not None
    assert "builtins.ValueError: Invalid field 'x_studio_size' on model 'res.partner'" in \
        results["customers"].error


async def test_malformed_records_become_rejects_with_reasons(conn: Conn, odoo: FakeOdoo,
                                                             loaded: WorldLoader) -> None:
    orphan = odoo.create("maintenance.equipment", {"name": "PX-400 SN-9", "serial_no": "SN-9",
                                                   "model": "PX-400"})
    no_currency = odoo.create("account.move", {
        "move_type": "out_invoice", "state": "posted", "payment_state": "not_paid",
        "name": "INV/X", "invoice_date": "2024-01-01",
        "commercial_partner_id": odoo.m2o("res.partner", 1), "amount_untaxed": 10.0})
    bad_date = odoo.create("account.move", {
        "move_type": "out_invoice", "state": "posted", "payment_state": "not_paid",
        "name": "INV/Y", "invoice_date": "2024-05-01", "invoice_date_due": "2024-04-01",
        "commercial_partner_id": odoo.m2o("res.partner", 1), "amount_untaxed": 10.0,
        "currency_id": odoo.m2o("res.currency", 1)})
    results = await sync_all(conn, connector(odoo),
                             only=("customers", "sites", "installed_base", "invoices"))
    assert {e: r.rows_rejected for e, r in results.items()} == {
        "customers": 0, "sites": 0, "installed_base": 1, "invoices": 2}
    assert await rows(conn, "SELECT external_id, reason FROM sync_rejects ORDER BY id") == [
        (f"maintenance.equipment,{orphan}",
         f"maintenance.equipment,{orphan}: the customer is empty (x_customer_id)"),
        (f"account.move,{no_currency}",
         f"account.move,{no_currency}: the currency is empty (currency_id)"),
        (f"account.move,{bad_date}",
         f"invoice account.move,{bad_date}: due_on 2024-04-01 is before issued_on"
         " 2024-05-01")]


CHILD = """
import asyncio, sys
import psycopg
from erp_connectors.odoo import OdooConnector
from erp_connectors.sync import sync_entity

async def main(url, odoo_url):
    odoo = OdooConnector(odoo_url, db="demo", login="admin", api_key="k-123", page_size=10)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await sync_entity(conn, source="odoo", entity="invoice_lines",
                          pages=odoo.page_sources()["invoice_lines"])

asyncio.run(main(*sys.argv[1:]))
"""


async def test_kill_9_midway_then_resume(database_url: str, conn: Conn, odoo: FakeOdoo,
                                         loaded: WorldLoader) -> None:
    await sync_all(conn, connector(odoo), only=("customers", "sites", "installed_base",
                                                "service_contracts", "invoices"))
    move = odoo.m2o("account.move", loaded.ids[("invoices", "I-2")][1])
    # Many lines, several sharing each write_date.
    for i in range(200):
        odoo.create("account.move.line", {
            "move_id": move, "move_type": "out_invoice", "display_type": "product",
            "name": f"Part {i}", "quantity": 1.0, "price_unit": float(i),
            "price_subtotal": float(i)}, write_date=f"2026-03-01 00:00:{i // 7:02d}")
    # A few pages come at once (two requests each: a full page's last second is read again
    # by id), then every answer takes a minute: the child is mid-sync.
    odoo.slow_down(after=odoo.request_count + 12, seconds=60)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, database_url, odoo.url, cwd=ROOT, env={**os.environ})
    try:
        await asyncio.to_thread(wait_for, lambda: scalar(
            database_url, "SELECT count(*) FROM invoice_lines") >= 40
            or child.returncode is not None, timeout=30)
        assert child.returncode is None, "the child sync ended before it was killed"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    odoo.slow_down(after=1 << 30, seconds=0)
    stored = await one(conn, "SELECT count(*) FROM invoice_lines")
    assert 40 <= stored < 204
    assert await one(conn, "SELECT status FROM sync_runs WHERE entity = 'invoice_lines'"
                     ) == "running"
    # The killed session's sync lock goes with its connection, once the server has noticed.
    await asyncio.to_thread(wait_for, lambda: scalar(database_url, """
        SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        (LOCK_CLASS,)) == 0)
    results = await sync_all(conn, connector(odoo, page_size=10), only=("invoice_lines",))
    assert results["invoice_lines"].status == "succeeded"
    source = {ref("account.move.line", i): Decimal(str(odoo.get("account.move.line", i)[
        "price_subtotal"])) for i in odoo.ids("account.move.line")}
    for external_id, row in source.items():
        if odoo.get("account.move.line", int(external_id.split(",")[1]))[
                "move_type"] == "out_refund":
            source[external_id] = -row
    assert dict(await rows(conn, "SELECT external_id, net_amount FROM invoice_lines")) == source
    assert await one(conn, "SELECT count(*) - count(DISTINCT external_id) FROM invoice_lines"
                     ) == 0


def customer(odoo: FakeOdoo, name: str, stamp: str) -> int:
    return odoo.create("res.partner", {"name": name, "is_company": True, "customer_rank": 1},
                       write_date=stamp)


async def test_records_written_within_one_second_are_paged_to_the_end(
        conn: Conn, odoo: FakeOdoo) -> None:
    # Odoo keeps microseconds and serves seconds: within one second, ids and stamps disagree.
    micros = [900_000, 100_000, 500_000, 300_000, 700_000]
    created = [customer(odoo, f"C{i}", f"2026-02-02 10:00:00.{m:06d}")
               for i, m in enumerate(micros)]
    created += [customer(odoo, f"D{i}", f"2026-02-02 10:00:0{1 + i // 3}.{(9 - i) * 1000:06d}")
                for i in range(7)]
    async with asyncio.timeout(30):  # the old keyset served the same page forever
        results = await sync_all(conn, connector(odoo, page_size=2, overlap_s=0),
                                 only=("customers",))
    assert (results["customers"].status, results["customers"].records_read) == (
        "succeeded", len(created))
    assert sorted(r[0] for r in await rows(conn, "SELECT external_id FROM customers")) == sorted(
        ref("res.partner", i) for i in created)
    # Written later in a second already read, with a smaller stamp: found from the cursor.
    late = customer(odoo, "Late", "2026-02-02 10:00:03.000001")
    async with asyncio.timeout(30):
        again = await sync_all(conn, connector(odoo, page_size=2, overlap_s=0),
                               only=("customers",))
    assert (again["customers"].records_read, again["customers"].rows_upserted) == (1, 1)
    assert await one(conn, "SELECT count(*) FROM customers WHERE external_id = %s",
                     (ref("res.partner", late),)) == 1


async def test_the_fake_compares_stamps_as_postgresql_does(odoo: FakeOdoo) -> None:
    rid = customer(odoo, "C", "2026-02-02 10:00:00.400000")
    served = odoo.dispatch({"service": "object", "method": "execute_kw", "args": [
        "demo", 2, "k-123", "res.partner", "search_read",
        [[("write_date", "=", "2026-02-02 10:00:00")]], {"fields": ["write_date"]}]})
    assert served == []
    later = odoo.dispatch({"service": "object", "method": "execute_kw", "args": [
        "demo", 2, "k-123", "res.partner", "search_read",
        [[("write_date", ">", "2026-02-02 10:00:00")]], {"fields": ["write_date"]}]})
    assert later == [{"id": rid, "write_date": "2026-02-02 10:00:00"}]


async def test_paging_without_progress_stops_with_a_clear_error(conn: Conn,
                                                               odoo: FakeOdoo) -> None:
    for i in range(5):
        customer(odoo, f"C{i}", f"2026-02-02 10:00:00.{i:06d}")
    odoo.ignore_leaves("id")  # a server that drops the id condition serves one page forever
    async with asyncio.timeout(30):
        results = await sync_all(conn, connector(odoo, page_size=2, overlap_s=0),
                                 only=("customers",))
    assert results["customers"].status == "failed"
    assert results["customers"].error is not None
    assert "customers: paging makes no progress" in results["customers"].error
    assert "2026-02-02 10:00:00, id 2" in results["customers"].error


@pytest.mark.parametrize("is_subscription", [False, True])
async def test_an_upsell_is_no_contract_renewal_or_order(
        conn: Conn, odoo: FakeOdoo, loaded: WorldLoader, is_subscription: bool) -> None:
    # Odoo 17 computes is_subscription False for an upsell; a customised one may not.
    parent_id = loaded.ids[("service_contracts", "K-1")][1]
    parent = odoo.get("sale.order", parent_id)
    upsell = odoo.create("sale.order", {
        "name": "SUB/001/U", "state": "sale", "subscription_state": "7_upsell",
        "is_subscription": is_subscription, "partner_id": parent["partner_id"],
        "plan_id": parent["plan_id"], "subscription_id": odoo.m2o("sale.order", parent_id),
        "date_order": "2023-06-01 00:00:00", "recurring_total": 1500.0,
        "amount_untaxed": 1500.0, "currency_id": parent["currency_id"]})
    odoo.create("sale.order.line", {
        "order_id": odoo.m2o("sale.order", upsell), "display_type": False, "name": "Extra",
        "product_uom_qty": 1.0, "price_unit": 1500.0, "price_subtotal": 1500.0})
    # Confirming it adds its recurring lines to the parent: the parent's value grows.
    odoo.write("sale.order", parent_id, {"recurring_total": parent["recurring_total"] + 1500})
    results = await sync_all(conn, connector(odoo))
    assert {e: r.rows_rejected for e, r in results.items() if r.rows_rejected} == {}
    upsell_ref = ref("sale.order", upsell)
    for table in ("service_contracts", "contract_renewals", "orders"):
        assert await one(conn, f"SELECT count(*) FROM {table} WHERE external_id = %s",
                         (upsell_ref,)) == 0, table
    assert await one(conn, "SELECT count(*) FROM order_lines") == len(world()["order_lines"])
    assert await one(conn, "SELECT count(*) FROM contract_renewals") == len(
        world()["contract_renewals"])
    assert await one(conn, "SELECT annual_value FROM service_contracts WHERE external_id = %s",
                     (ref("sale.order", parent_id),)) == Decimal("13500.00")


async def test_a_churned_contracts_status_comes_from_odoo_not_the_sync_day(
        conn: Conn, odoo: FakeOdoo, loaded: WorldLoader) -> None:
    parent = odoo.get("sale.order", loaded.ids[("service_contracts", "K-2")][1])
    reasons = odoo.close_reasons

    def churned(name: str, end: str, reason: str | None, written: str) -> int:
        return odoo.create("sale.order", {
            "name": name, "state": "sale", "subscription_state": "6_churn",
            "is_subscription": True, "partner_id": parent["partner_id"],
            "plan_id": parent["plan_id"], "start_date": "2025-01-01", "end_date": end,
            "recurring_total": 100.0, "currency_id": parent["currency_id"],
            "close_reason_id": odoo.m2o("sale.order.close.reason", reasons[reason])
            if reason else False}, write_date=written)

    # set_close writes the closing day into end_date: the reason says why it closed.
    churned("END", "2026-01-10", "close_reason_end_of_contract", "2026-01-10 08:00:00")
    churned("EARLY", "2026-01-10", "close_reason_unknown", "2026-01-10 08:00:00")
    # No reason: the end date against the day the churn was written, never today.
    churned("RAN", "2026-01-10", None, "2026-01-12 08:00:00")
    churned("CUT", "2099-12-31", None, "2026-01-12 08:00:00")
    await sync_all(conn, connector(odoo), only=("customers", "service_contracts"))
    assert await rows(conn, """
        SELECT contract_number, status FROM service_contracts
        WHERE contract_number IN ('END', 'EARLY', 'RAN', 'CUT') ORDER BY 1""") == [
        ("CUT", "terminated"), ("EARLY", "terminated"), ("END", "expired"), ("RAN", "expired")]


async def test_a_closed_run_leaves_no_prefetch_behind(
        odoo: FakeOdoo, caplog: pytest.LogCaptureFixture) -> None:
    import contextlib
    import gc
    for i in range(6):
        customer(odoo, f"C{i}", f"2026-02-02 10:00:0{i}")
    odoo_connector = connector(odoo, page_size=2, overlap_s=0)
    pages = odoo_connector.page_sources()["customers"]
    try:
        await odoo_connector._country_codes()  # login and countries first: the next two
        # requests are the first page and its prefetch, which waits long enough to be denied.
        odoo.slow_down(after=odoo.request_count + 1, seconds=0.5)
        # The prefetch fails while the engine holds a page; the engine then fails and closes.
        async with contextlib.aclosing(pages(None)) as stream:
            async for _page in stream:
                odoo.deny("res.partner")
                await asyncio.sleep(1.5)  # the denied answer has arrived
                # The page, then its last second by id and what follows, both denied.
                assert odoo.requests["res.partner.search_read"] == 3
                break
        # Closed while a prefetch is still on its way: cancelled and finished, not left running.
        odoo.faults.denied.clear()
        odoo.slow_down(after=odoo.request_count, seconds=2)
        async with contextlib.aclosing(pages(None)) as stream:
            async for _page in stream:
                break
        odoo.slow_down(after=1 << 30, seconds=0)
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    finally:
        await odoo_connector.aclose()
    gc.collect()
    await asyncio.sleep(0)
    assert [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()] == []
