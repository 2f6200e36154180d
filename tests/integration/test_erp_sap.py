"""The SAP S/4HANA connector against the fake S/4HANA (real HTTP on loopback) and the real database.

The first tests are pure (OData V2 date parsing, metadata parsing); they live here beside the
connector's other tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
import orjson
import psycopg
import pytest

from demo.erp.sap import FakeS4, Raw
from erp_connectors.http import RetryPolicy
from erp_connectors.sap import (
    OVERLAP,
    SapConnector,
    odata_datetimeoffset,
    parse_metadata,
    parse_odata_date,
    parse_odata_datetime,
    parse_odata_time,
)
from erp_connectors.sync import LOCK_CLASS, SyncResult, sync_entity

from .conftest import ROOT, rows, scalar, wait_for

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05)


# ---------------------------------------------------------------------------------------------
# OData V2 values (pure)


@pytest.mark.parametrize(("text", "expected"), [
    ("/Date(1700000000000)/", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ("/Date(1700000000000+0000)/", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    # The offset is informative: the milliseconds already count from the epoch in UTC.
    ("/Date(1700000000000+0120)/", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ("/Date(1700000000000-0300)/", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ("/Date(0)/", datetime(1970, 1, 1, tzinfo=UTC)),
    ("/Date(-86400000)/", datetime(1969, 12, 31, tzinfo=UTC)),
    ("/Date(253402214400000)/", datetime(9999, 12, 31, tzinfo=UTC)),      # SAP's "forever"
    ("/Date(-62135596800000)/", datetime(1, 1, 1, tzinfo=UTC)),            # 0001-01-01
    ("/Date(1700000000123)/", datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
    ("\\/Date(1700000000000)\\/", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),  # escaped
    (" /Date(1700000000000)/ ", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    (None, None),
])
def test_odata_dates(text: str | None, expected: datetime | None) -> None:
    assert parse_odata_datetime(text) == expected


@pytest.mark.parametrize("text", [
    "/Date()/", "/Date(abc)/", "Date(1700000000000)", "/Date(1700000000000+00)/",
    "2026-01-01T00:00:00", "/Date(1e10)/", "/Date(999999999999999999)/", "", 1700000000000,
])
def test_malformed_odata_dates_are_refused(text: Any) -> None:
    with pytest.raises(ValueError, match=r"OData date|outside the calendar"):
        parse_odata_datetime(text)


def test_odata_date_and_time() -> None:
    assert parse_odata_date("/Date(1767225600000)/") == date(2026, 1, 1)
    assert parse_odata_time("PT14H30M05S") == time(14, 30, 5)
    assert parse_odata_time("PT0H0M0S") == time(0, 0)
    assert parse_odata_time("PT23H59M59S") == time(23, 59, 59)
    assert parse_odata_time(None) is None
    for bad in ("PT24H00M00S", "14:30:05", "PT", "P1DT1H"):
        with pytest.raises(ValueError, match=r"OData time|time of day"):
            parse_odata_time(bad)


def test_metadata_is_parsed_with_navigation_targets() -> None:
    fake = FakeS4()
    sets = parse_metadata(fake.metadata("API_BILLING_DOCUMENT_SRV").encode())
    assert set(sets) == {"A_BillingDocument", "A_BillingDocumentItem"}
    header = sets["A_BillingDocument"]
    assert header.properties["LastChangeDateTime"] == "Edm.DateTimeOffset"
    assert header.properties["TotalNetAmount"] == "Edm.Decimal"
    assert header.navigations == {"to_Item": "A_BillingDocumentItemType"}


# ---------------------------------------------------------------------------------------------
# A world put into the fake, and what it should become


@dataclass
class World:
    """What a test put into the fake: the truth the synced tables are checked against."""

    customers: set[str] = field(default_factory=set)
    sites: set[str] = field(default_factory=set)
    machines: set[str] = field(default_factory=set)
    contracts: dict[str, Decimal] = field(default_factory=dict)  # annual values
    invoices: dict[str, Decimal] = field(default_factory=dict)
    invoice_status: dict[str, str] = field(default_factory=dict)
    lines: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[str, Decimal] = field(default_factory=dict)
    order_lines: dict[str, Decimal] = field(default_factory=dict)


def add_customer(fake: FakeS4, world: World, number: int, country: str = "DE") -> str:
    customer = f"1700{number:04d}"
    fake.put("A_BusinessPartner", {
        "BusinessPartner": customer, "Customer": customer, "BusinessPartnerCategory": "2",
        "BusinessPartnerFullName": f"Customer {number} GmbH", "Industry": "PACK"})
    fake.put("A_BusinessPartnerAddress", {
        "BusinessPartner": customer, "AddressID": f"{number}1", "Country": country,
        "CityName": f"City {number}"})
    world.customers.add(customer)
    world.sites.add(f"{customer}/{number}1")
    return customer


def add_machine(fake: FakeS4, world: World, number: int, customer: str) -> str:
    equipment = f"{10000000 + number}"
    fake.put("Equipment", {
        "Equipment": equipment, "ValidityEndDate": date(9999, 12, 31),
        "ValidityStartDate": date(2024, 1, 1), "SerialNumber": f"SN-{number:05d}",
        "Material": "PX-400", "OperationStartDate": date(2024, 3, 1)})
    fake.put("EquipmentPartner", {"Equipment": equipment, "PartnerFunction": "AG",
                                  "EquipmentPartnerObjectNmbr": "1",
                                  "Partner": customer.zfill(10)})
    fake.put("EquipmentWarranty", {"Equipment": equipment, "WarrantyType": "1",
                                   "WarrantyEndDate": date(2026, 2, 28)})
    world.machines.add(equipment)
    return equipment


def add_contract(fake: FakeS4, world: World, number: int, customer: str, *, years: int = 1,
                 yearly: Decimal = Decimal("12000.00")) -> str:
    contract = f"{4000000 + number}"
    fake.put("A_ServiceContract", {
        "ServiceContract": contract, "ServiceContractType": "SC1", "SoldToParty": customer,
        "ServiceContractStartDateTime": datetime(2025, 1, 1, tzinfo=UTC),
        "ServiceContractEndDateTime": datetime(2024 + years, 12, 31, 23, 59, 59, tzinfo=UTC),
        "ServiceContractNetAmount": yearly * years, "TransactionCurrency": "EUR",
        "ServiceContractIsReleased": True})
    world.contracts[contract] = yearly
    return contract


# SAP's standard billing types and what each does to revenue (the test's own truth): an invoice
# cancellation (S1) reverses an invoice, a credit memo cancellation (S2) reverses a credit memo.
SIGNS = {"F2": 1, "L2": 1, "G2": -1, "RE": -1, "S1": -1, "S2": 1}


def add_invoice(fake: FakeS4, world: World, number: int, customer: str, *,
                kind: str = "F2", items: tuple[Decimal, ...] = (Decimal("100.50"),
                                                                Decimal("49.50")),
                cancelled: bool = False, stamped: bool = True) -> str:
    document = f"{90000000 + number}"
    sign = SIGNS.get(kind, 1)
    fake.put("A_BillingDocument", {
        "BillingDocument": document, "BillingDocumentType": kind, "SoldToParty": customer,
        "BillingDocumentDate": date(2026, 1, 1 + number % 28), "TransactionCurrency": "EUR",
        "TotalNetAmount": sum(items, Decimal(0)), "BillingDocumentIsCancelled": cancelled},
        stamp=stamped)
    for i, amount in enumerate(items, start=1):
        fake.put("A_BillingDocumentItem", {
            "BillingDocument": document, "BillingDocumentItem": f"{i * 10}",
            "SalesDocumentItemCategory": "TAN" if i == 1 else "TAD", "Material": f"P-{i}",
            "BillingDocumentItemText": f"Item {i}", "BillingQuantity": Decimal("2.000"),
            "NetAmount": amount}, stamp=stamped)
        world.lines[f"{document}/{i * 10}"] = sign * amount
    world.invoices[document] = sign * sum(items, Decimal(0))
    world.invoice_status[document] = ("cancelled" if cancelled else
                                      {"F2": "open", "L2": "open", "G2": "credited",
                                       "S1": "cancelled", "S2": "cancelled"}.get(kind, "unmapped"))
    return document


def add_order(fake: FakeS4, world: World, number: int, customer: str, *,
              order_type: str = "OR") -> str:
    order = f"{1000 + number}"
    amounts = (Decimal("30.00"), Decimal("12.25"))
    fake.put("A_SalesOrder", {
        "SalesOrder": order, "SalesOrderType": order_type, "SoldToParty": customer,
        "SalesOrderDate": date(2026, 1, 10), "TransactionCurrency": "EUR",
        "TotalNetAmount": sum(amounts, Decimal(0)), "OverallSDProcessStatus": "A"})
    for i, amount in enumerate(amounts, start=1):
        fake.put("A_SalesOrderItem", {
            "SalesOrder": order, "SalesOrderItem": f"{i * 10}", "Material": f"P-{i}",
            "RequestedQuantity": Decimal(i), "NetAmount": amount})
        if order_type == "OR":
            world.order_lines[f"{order}/{i * 10}"] = amount
    if order_type == "OR":
        world.orders[order] = sum(amounts, Decimal(0))
    return order


def populate(fake: FakeS4, *, customers: int = 4) -> World:
    world = World()
    # A supplier only (no customer number): not read.
    fake.put("A_BusinessPartner", {"BusinessPartner": "30000001",
                                   "BusinessPartnerFullName": "Steel Supplier AG"})
    number = 0
    for c in range(1, customers + 1):
        customer = add_customer(fake, world, c, country=("DE", "FR", "IT")[c % 3])
        for _ in range(2):
            number += 1
            add_machine(fake, world, number, customer)
            add_invoice(fake, world, number, customer)
            add_order(fake, world, number, customer)
            fake.advance(1)
        add_contract(fake, world, c, customer, years=1 + c % 2)
    first = sorted(world.customers)[0]
    add_invoice(fake, world, 90, first, kind="G2", items=(Decimal("20.00"),))
    add_invoice(fake, world, 91, first, cancelled=True)
    add_invoice(fake, world, 92, first, kind="S1")
    add_order(fake, world, 93, first, order_type="ZX")  # a type not mapped: not read
    return world


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def fake() -> Iterator[FakeS4]:
    server = FakeS4(page_size=1000).start()
    yield server
    server.stop()


def connector(fake: FakeS4, *, page_size: int = 3, password: str | None = None,
              policy: RetryPolicy = FAST) -> SapConnector:
    return SapConnector(fake.url, fake.user, password or fake.password, page_size=page_size,
                        policy=policy)


async def sync(conn: Conn, sap: SapConnector, *, full: bool = False,
               entities: tuple[str, ...] | None = None) -> dict[str, SyncResult]:
    results = {}
    for entity, pages in sap.page_sources().items():
        if entities is None or entity in entities:
            results[entity] = await sync_entity(conn, source=sap.source, entity=entity,
                                                pages=pages, full=full)
    return results


async def live(conn: Conn, table: str, column: str | None = None) -> dict[str, Any]:
    """external_id -> column (or None) of the table's rows not marked deleted."""
    value = column or "NULL"
    return dict(await rows(conn, f"SELECT external_id, {value} FROM {table}"
                                 " WHERE source = 'sap' AND deleted_at IS NULL"))


async def check_equals_source(conn: Conn, world: World) -> None:
    assert set(await live(conn, "customers")) == world.customers
    assert set(await live(conn, "sites")) == world.sites
    assert set(await live(conn, "installed_base")) == world.machines
    assert await live(conn, "service_contracts", "annual_value") == world.contracts
    assert await live(conn, "invoices", "net_amount") == world.invoices
    assert await live(conn, "invoices", "status") == world.invoice_status
    assert await live(conn, "invoice_lines", "net_amount") == world.lines
    assert await live(conn, "orders", "net_amount") == world.orders
    assert await live(conn, "order_lines", "net_amount") == world.order_lines


# ---------------------------------------------------------------------------------------------
# Syncs


async def test_a_full_sync_equals_what_the_source_holds(conn: Conn, fake: FakeS4) -> None:
    world = populate(fake)
    sap = connector(fake)
    try:
        results = await sync(conn, sap)
    finally:
        await sap.aclose()
    assert {e: (r.status, r.rows_rejected, r.error) for e, r in results.items()} == dict.fromkeys(
        results, ("succeeded", 0, None))
    await check_equals_source(conn, world)
    # Sums, against what the test put in.
    assert await rows(conn, "SELECT count(*), sum(net_amount) FROM invoice_lines") == [
        (len(world.lines), sum(world.lines.values()))]
    assert await rows(conn, "SELECT sum(net_amount) FROM orders") == [
        (sum(world.orders.values()),)]
    # The mapping: customer attributes, machines with their customer and warranty, line kinds.
    assert await rows(conn, """
        SELECT c.external_id, c.name, c.country, c.industry, c.customer_since::text
        FROM customers c ORDER BY 1 LIMIT 1""") == [
        ("17000001", "Customer 1 GmbH", "FR", "PACK", "2026-01-05")]
    assert await rows(conn, """
        SELECT ib.serial, ib.model, c.external_id, ib.commissioned_on::text,
               ib.warranty_end::text
        FROM installed_base ib JOIN customers c ON c.id = ib.customer_id
        WHERE ib.external_id = '10000001'""") == [
        ("SN-00001", "PX-400", "17000001", "2024-03-01", "2026-02-28")]
    assert await rows(conn, "SELECT kind, count(*) FROM invoice_lines GROUP BY 1 ORDER BY 1") == [
        ("field_service", len(world.invoices) - 1), ("spare_parts", len(world.invoices))]
    assert await rows(conn, "SELECT DISTINCT starts_on::text, status, scope, currency"
                            " FROM service_contracts") == [
        ("2025-01-01", "active", "customer", "EUR")]
    # Each service's $metadata was read once, before its data.
    assert fake.count("$metadata") == 5
    # A read from the start asks for everything; the cursor keeps the newest change.
    cursor = await rows(conn, "SELECT cursor FROM sync_cursors WHERE entity = 'invoices'")
    # (Less an overlap, for changes committed after the read.)
    assert orjson.loads(cursor[0][0]) == {"since": (fake.now - OVERLAP).isoformat()}


async def test_an_incremental_sync_rewrites_only_what_changed(conn: Conn, fake: FakeS4) -> None:
    world = populate(fake)
    sap = connector(fake)
    try:
        await sync(conn, sap)
        before = fake.count()
        fake.advance(60)
        customer = sorted(world.customers)[1]
        fake.put("A_BusinessPartner", {"BusinessPartner": customer,
                                       "BusinessPartnerFullName": "Renamed AG"})
        changed = sorted(world.invoices)[2]
        fake.put("A_BillingDocumentItem", {"BillingDocument": changed,
                                           "BillingDocumentItem": "10",
                                           "NetAmount": Decimal("1000.00")})
        fake.put("A_BillingDocument", {"BillingDocument": changed,
                                       "TotalNetAmount": Decimal("1049.50")})
        world.invoices[changed] = Decimal("1049.50")
        world.lines[f"{changed}/10"] = Decimal("1000.00")
        add_invoice(fake, world, 95, customer)
        results = await sync(conn, sap)
    finally:
        await sap.aclose()
    upserted = {e: r.rows_upserted for e, r in results.items()}
    assert upserted == {"customers": 1, "sites": 1, "installed_base": 0, "service_contracts": 0,
                        "invoices": 2, "invoice_lines": 3, "orders": 0, "order_lines": 0}
    assert await rows(conn, "SELECT entity, rows_upserted FROM sync_runs WHERE id > 8"
                            " ORDER BY id") == list(upserted.items())
    await check_equals_source(conn, world)
    # Incremental reads filter by the change timestamp with ge (ties are read again).
    incremental = [unquote_plus(target) for _, target in fake.requests[before:]]
    assert any("LastChangeDateTime ge datetimeoffset'" in t for t in incremental)
    assert any("(LastChangeDate ge datetime'2026-01-04T00:00:00' or CreationDate ge" in t
               for t in incremental)


async def test_a_delete_is_seen_by_a_full_sync_only(conn: Conn, fake: FakeS4) -> None:
    world = populate(fake)
    sap = connector(fake)
    try:
        await sync(conn, sap)
        gone = sorted(world.invoices)[0]
        fake.delete("A_BillingDocument", gone)
        machine = sorted(world.machines)[0]
        fake.delete("Equipment", machine, date(9999, 12, 31))
        fake.advance(5)
        incremental = await sync(conn, sap, entities=("invoices", "invoice_lines",
                                                      "installed_base"))
        assert {r.rows_deleted for r in incremental.values()} == {0}
        assert gone in await live(conn, "invoices")
        full = await sync(conn, sap, full=True, entities=("installed_base", "invoices",
                                                          "invoice_lines"))
    finally:
        await sap.aclose()
    assert {e: r.rows_deleted for e, r in full.items()} == {
        "installed_base": 1, "invoices": 1, "invoice_lines": 2}
    del world.invoices[gone], world.invoice_status[gone]
    world.lines = {k: v for k, v in world.lines.items() if not k.startswith(gone)}
    world.machines.discard(machine)
    await check_equals_source(conn, world)
    # Marked, not removed: the row is kept for the history it anchors.
    assert await rows(conn, "SELECT deleted_at IS NOT NULL FROM invoices WHERE external_id = %s",
                      (gone,)) == [(True,)]


async def test_paging_with_ties_at_the_page_boundary(conn: Conn, fake: FakeS4) -> None:
    """Seven invoices changed in the same second, pages of 3 asked for, the server pages by 2."""
    fake.page_size = 2
    world = World()
    customer = add_customer(fake, world, 1)
    for n in range(1, 8):
        add_invoice(fake, world, n, customer, items=(Decimal(n),))
    sap = connector(fake, page_size=3)
    try:
        first = (await sync(conn, sap, entities=("customers", "invoices")))["invoices"]
        assert (first.records_read, first.rows_upserted) == (7, 7)
        assert fake.count("$skiptoken=") >= 2  # the server's __next links were followed
        # Another invoice in that same second: a gt filter would skip it, ge does not.
        add_invoice(fake, world, 8, customer, items=(Decimal(8),))
        second = (await sync(conn, sap, entities=("invoices",)))["invoices"]
    finally:
        await sap.aclose()
    assert (second.records_read, second.rows_upserted) == (8, 1)
    assert await live(conn, "invoices", "net_amount") == world.invoices
    assert await rows(conn, "SELECT count(*), count(DISTINCT external_id) FROM invoices") == [
        (8, 8)]


async def test_a_release_without_a_mapped_property_stops_that_entity_clearly(
        conn: Conn, fake: FakeS4) -> None:
    world = populate(fake)
    fake.drop_property("A_BillingDocument", "TotalNetAmount")
    sap = connector(fake)
    try:
        results = await sync(conn, sap)
    finally:
        await sap.aclose()
    assert results["invoices"].status == "failed"
    assert results["invoices"].error == (
        "SAP /sap/opu/odata/sap/API_BILLING_DOCUMENT_SRV/A_BillingDocument: property"
        " TotalNetAmount is not in the service's $metadata; this system's release or"
        " configuration differs from what the connector maps (docs/erp-sap.md)")
    # Nothing of it was read; the other entities went on.
    asked = [unquote_plus(target) for _, target in fake.requests]
    assert not [t for t in asked if "A_BillingDocument?" in t and "TotalNetAmount" in t]
    assert results["invoice_lines"].status == "succeeded"
    assert set(await live(conn, "customers")) == world.customers


async def test_a_wrong_password_is_a_clear_error(conn: Conn, fake: FakeS4) -> None:
    populate(fake)
    sap = connector(fake, password="wrong")
    try:
        results = await sync(conn, sap, entities=("customers", "invoices"))
    finally:
        await sap.aclose()
    assert {r.status for r in results.values()} == {"failed"}
    error = results["customers"].error or ""
    assert "HTTP 401 (check the credentials)" in error
    assert "/sap/opu/odata/sap/API_BUSINESS_PARTNER/$metadata" in error
    assert fake.count() == 2  # one refused request per entity, no retries


async def test_throttling_and_unavailability_are_retried(conn: Conn, fake: FakeS4) -> None:
    world = World()
    customer = add_customer(fake, world, 1)
    for n in range(1, 5):
        add_invoice(fake, world, n, customer)
    sap = connector(fake, page_size=2)
    try:
        fake.throttle(1, retry_after=1)
        fake.unavailable(2)
        result = (await sync(conn, sap, entities=("customers", "invoices")))["invoices"]
        assert (result.status, result.rows_upserted) == ("succeeded", 4)
        # 3 refused (the customers' first requests), then for each entity metadata and pages:
        # the invoices share one millisecond, so the first page (2) is followed by that
        # millisecond in key order (2, 2, 0) and a last request from the next one.
        assert fake.count() == 3 + 2 + 6
        # Throttled for longer than the attempts: the entity stops, resumable.
        fake.unavailable(10)
        [failed] = (await sync(conn, sap, entities=("invoices",))).values()
    finally:
        await sap.aclose()
    assert failed.status == "failed"
    assert "failed 4 times, last: HTTP 503: /IWFND/CM_BEC/503: Service temporarily unavailable" \
        in (failed.error or "")
    assert await live(conn, "invoices", "net_amount") == world.invoices


async def test_malformed_records_become_rejects_with_reasons(conn: Conn, fake: FakeS4) -> None:
    world = World()
    customer = add_customer(fake, world, 1)
    add_invoice(fake, world, 1, customer)
    add_invoice(fake, world, 2, customer)
    fake.put("A_BillingDocument", {"BillingDocument": "90000002",
                                   "BillingDocumentDate": Raw("/Date(yesterday)/")})
    add_invoice(fake, world, 3, customer, kind="ZF9")
    add_invoice(fake, world, 4, customer)
    fake.put("A_BillingDocument", {"BillingDocument": "90000004", "TransactionCurrency": "EUX"})
    add_invoice(fake, world, 5, "17009999")
    fake.put("A_BillingDocumentItem", {"BillingDocument": "90000001",
                                       "BillingDocumentItem": "10",
                                       "NetAmount": Raw("12,50")})
    add_machine(fake, world, 1, customer)
    fake.put("Equipment", {"Equipment": "10000002", "ValidityEndDate": date(9999, 12, 31),
                           "SerialNumber": "SN-2", "Material": "PX"})
    sap = connector(fake)
    try:
        results = await sync(conn, sap, entities=("customers", "installed_base", "invoices",
                                                  "invoice_lines"))
    finally:
        await sap.aclose()
    assert {e: (r.rows_upserted, r.rows_rejected) for e, r in results.items()} == {
        "customers": (1, 0), "installed_base": (1, 1), "invoices": (1, 4),
        "invoice_lines": (1, 9)}
    # The lines of the refused documents wait for their header; a line that is itself
    # malformed says why.
    assert await rows(conn, "SELECT external_id FROM sync_rejects WHERE entity ="
                            " 'invoice_lines' AND reason LIKE '%%which is not in sap'"
                            " ORDER BY 1") == [(f"{d}/{i}",) for d in (90000002, 90000004, 90000005)
                                               for i in (10, 20)]
    assert await rows(conn, "SELECT entity, external_id, reason FROM sync_rejects WHERE"
                            " reason NOT LIKE 'invoice line %%'"
                            " ORDER BY entity, external_id") == [
        ("installed_base", "10000002",
         "equipment 10000002: no customer among its partners (partner function AG)"),
        ("invoice_lines", "90000001/10",
         "billing document item 90000001/10: NetAmount: '12,50' is not a decimal"),
        *(("invoice_lines", f"90000003/{i}",
           f"billing document item 90000003/{i}: billing document type ZF9 has no mapping"
           " (known: F2, G2, L2, RE, S1, S2)") for i in (10, 20)),
        ("invoices", "90000002",
         "billing document 90000002: BillingDocumentDate: '/Date(yesterday)/' is not an OData"
         " date (/Date(milliseconds)/)"),
        ("invoices", "90000003", "billing document 90000003: billing document type ZF9 has no"
                                 " mapping (known: F2, G2, L2, RE, S1, S2)"),
        ("invoices", "90000004", "invoice 90000004: currency: 'EUX' is not an ISO 4217 currency"
                                 " code (EUR, USD)"),
        ("invoices", "90000005", "invoice 90000005 names customer 17009999, which is not in sap"),
    ]


async def test_reads_need_no_csrf_token_but_writes_do(conn: Conn, fake: FakeS4) -> None:
    world = populate(fake, customers=1)
    sap = connector(fake)
    try:
        await sync(conn, sap)
    finally:
        await sap.aclose()
    await check_equals_source(conn, world)
    assert {method for method, _ in fake.requests} == {"GET"}
    # What a writer would meet: a token is fetched with a GET and sent back with the write.
    url = f"{fake.url}/sap/opu/odata/sap/API_SALES_ORDER_SRV/A_SalesOrder"
    async with httpx.AsyncClient(auth=(fake.user, fake.password)) as client:
        refused = await client.post(url, json={"SalesOrder": "9"})
        assert (refused.status_code, refused.headers["x-csrf-token"]) == (403, "Required")
        fetched = await client.get(url, params={"$top": "0"}, headers={"x-csrf-token": "fetch"})
        token = fetched.headers["x-csrf-token"]
        created = await client.post(url, json={"SalesOrder": "9"},
                                    headers={"x-csrf-token": token})
    assert created.status_code == 201


CHILD = """
import asyncio, sys
from pathlib import Path
import psycopg
from erp_connectors.sap import SapConnector
from erp_connectors.sync import sync_entity

async def main(db, url, user, password, flag):
    sap = SapConnector(url, user, password, page_size=3)
    pages = sap.pages("invoice_lines")

    async def stalls_after_page_2(cursor):
        n = 0
        async for page in pages(cursor):
            yield page
            n += 1
            if n == 2:
                Path(flag).touch()
                await asyncio.sleep(3600)  # killed here

    async with await psycopg.AsyncConnection.connect(db) as conn:
        await sync_entity(conn, source="sap", entity="invoice_lines", pages=stalls_after_page_2)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_kill_9_midway_then_resume(database_url: str, conn: Conn, fake: FakeS4,
                                         tmp_path: Path) -> None:
    fake.page_size = 2  # the server pages too: a page ends inside a $top answer
    world = World()
    customer = add_customer(fake, world, 1)
    for n in range(1, 10):
        add_invoice(fake, world, n, customer, items=(Decimal(n), Decimal(100 + n)))
        fake.advance(1)
    sap = connector(fake, page_size=4)
    await sync(conn, sap, entities=("customers", "invoices"))
    flag = tmp_path / "page-2-committed"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, database_url, fake.url, fake.user, fake.password,
        str(flag), cwd=ROOT, env={**os.environ})
    try:
        await asyncio.to_thread(wait_for, lambda: flag.exists() or child.returncode is not None,
                                timeout=30)
        assert child.returncode is None, "the child sync ended before it was killed"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    # Two pages: the server's two answers to the first $top=3, three documents' two lines.
    assert len(await live(conn, "invoice_lines")) == 6
    [(stored,)] = await rows(conn, "SELECT cursor FROM sync_cursors WHERE entity ="
                                   " 'invoice_lines'")
    position = orjson.loads(stored)
    # Inside a run: from the millisecond of the last record committed (the 3rd document).
    third = fake.rows("A_BillingDocument")[2]["LastChangeDateTime"]
    assert position["since"] is None
    assert position["after"] == ["from", third.isoformat(), None]
    # Meanwhile the source changes: one document changed, one new; neither may be lost.
    fake.advance(10)
    changed = sorted(world.invoices)[0]
    fake.put("A_BillingDocumentItem", {"BillingDocument": changed, "BillingDocumentItem": "10",
                                       "NetAmount": Decimal("7.77")})
    world.lines[f"{changed}/10"] = Decimal("7.77")
    add_invoice(fake, world, 10, customer, items=(Decimal(10), Decimal(110)))
    await asyncio.to_thread(wait_for, lambda: scalar(database_url, """
        SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        (LOCK_CLASS,)) == 0)
    try:
        await sync(conn, sap, entities=("invoices",))  # the new document's header first
        before = fake.count()
        [resumed] = (await sync(conn, sap, entities=("invoice_lines",))).values()
        assert resumed.status == "succeeded"
        # It went on from the stored position rather than from the start.
        resumed_from = f"LastChangeDateTime ge {odata_datetimeoffset(third)}"
        assert resumed_from in unquote_plus(fake.requests[before][1])
        [again] = (await sync(conn, sap, entities=("invoice_lines",))).values()
    finally:
        await sap.aclose()
    assert await live(conn, "invoice_lines", "net_amount") == world.lines
    assert await rows(conn, "SELECT count(*), count(DISTINCT external_id) FROM invoice_lines"
                      ) == [(len(world.lines), len(world.lines))]
    assert again.rows_upserted == 0
    assert await rows(conn, "SELECT status FROM sync_runs WHERE entity = 'invoice_lines'"
                            " ORDER BY id") == [("failed",), ("succeeded",), ("succeeded",)]


# ---------------------------------------------------------------------------------------------
# Review findings: null stamps, signs, sub-millisecond stamps, overlap, time zone, line rejects


async def test_records_without_a_change_stamp_do_not_hide_the_others(conn: Conn,
                                                                     fake: FakeS4) -> None:
    """SAP sorts a null LastChangeDateTime first: a page ending on one must not drop the rest."""
    world = World()
    customer = add_customer(fake, world, 1)
    for n in (1, 2, 3):
        add_invoice(fake, world, n, customer)
        fake.advance(1)
    for n in (8, 9):
        add_invoice(fake, world, n, customer, stamped=False)
    assert sum(r["LastChangeDateTime"] is None for r in fake.rows("A_BillingDocument")) == 2
    sap = connector(fake, page_size=2)
    try:
        first = await sync(conn, sap, entities=("customers", "sites", "invoices", "invoice_lines"))
        full = await sync(conn, sap, full=True, entities=("invoices", "invoice_lines"))
    finally:
        await sap.aclose()
    assert first["invoices"].records_read == len(world.invoices)
    assert {e: (r.status, r.rows_deleted) for e, r in full.items()} == {
        "invoices": ("succeeded", 0), "invoice_lines": ("succeeded", 0)}
    await check_equals_source(conn, world)


async def test_credit_memos_and_cancellations_reduce_revenue_once(conn: Conn,
                                                                  fake: FakeS4) -> None:
    world = World()
    customer = add_customer(fake, world, 1)
    add_invoice(fake, world, 1, customer, items=(Decimal("100.00"),))
    add_invoice(fake, world, 2, customer, kind="G2", items=(Decimal("20.00"), Decimal("10.00")))
    add_invoice(fake, world, 3, customer, kind="L2", items=(Decimal("10.00"),))
    # An invoice cancelled by an S1, a credit memo cancelled by an S2: each pair nets to zero.
    add_invoice(fake, world, 4, customer, items=(Decimal("50.00"),), cancelled=True)
    add_invoice(fake, world, 5, customer, kind="S1", items=(Decimal("50.00"),))
    add_invoice(fake, world, 6, customer, kind="G2", items=(Decimal("5.00"),), cancelled=True)
    add_invoice(fake, world, 7, customer, kind="S2", items=(Decimal("5.00"),))
    sap = connector(fake)
    try:
        await sync(conn, sap, entities=("customers", "sites", "invoices", "invoice_lines"))
    finally:
        await sap.aclose()
    await check_equals_source(conn, world)
    assert await live(conn, "invoices", "net_amount") == {
        "90000001": Decimal("100.00"), "90000002": Decimal("-30.00"),
        "90000003": Decimal("10.00"), "90000004": Decimal("50.00"),
        "90000005": Decimal("-50.00"), "90000006": Decimal("-5.00"),
        "90000007": Decimal("5.00")}
    revenue = Decimal("100.00") - Decimal("30.00") + Decimal("10.00")
    # Whether a report sums every document or leaves the cancelled ones out, revenue is right.
    assert await rows(conn, "SELECT sum(net_amount), sum(net_amount) FILTER"
                            " (WHERE status <> 'cancelled') FROM invoices") == [
        (revenue, revenue)]
    assert await rows(conn, "SELECT sum(l.net_amount), sum(l.net_amount) FILTER"
                            " (WHERE i.status <> 'cancelled') FROM invoice_lines l"
                            " JOIN invoices i ON i.id = l.invoice_id") == [(revenue, revenue)]


async def test_stamps_finer_than_a_millisecond_neither_skip_nor_stall(conn: Conn,
                                                                      fake: FakeS4) -> None:
    """SAP stamps to 100 ns and serves milliseconds: five documents in one millisecond, their
    stamps rising as their keys fall, read in pages of two."""
    world = World()
    customer = add_customer(fake, world, 1)
    fake.advance(0.5)
    for n in (5, 4, 3, 2, 1):
        fake.advance(0.0001)  # 100 microseconds
        add_invoice(fake, world, n, customer)
    stamps = {r["LastChangeDateTime"].replace(microsecond=r["LastChangeDateTime"].microsecond
                                              // 1000 * 1000)
              for r in fake.rows("A_BillingDocument")}
    assert len(stamps) == 1  # one millisecond as served
    sap = connector(fake, page_size=2)
    try:
        results = await sync(conn, sap, entities=("customers", "sites", "invoices",
                                                  "invoice_lines"))
        fake.advance(60)
        add_invoice(fake, world, 6, customer)
        again = await sync(conn, sap, entities=("invoices", "invoice_lines"))
    finally:
        await sap.aclose()
    assert {e: (r.status, r.error) for e, r in results.items()} == dict.fromkeys(
        results, ("succeeded", None))
    assert {e: r.rows_upserted for e, r in again.items()} == {"invoices": 1,
                                                               "invoice_lines": 2}
    await check_equals_source(conn, world)


async def test_an_incremental_sync_rereads_an_overlap(conn: Conn, fake: FakeS4) -> None:
    """A change stamped before the newest one seen but committed after the read (a long LUW)."""
    world = World()
    customer = add_customer(fake, world, 1)
    for n in range(1, 4):
        add_invoice(fake, world, n, customer)
        fake.advance(60)
    newest = max(r["LastChangeDateTime"] for r in fake.rows("A_BillingDocument"))
    sap = connector(fake)
    # The same system under another source name, with an overlap of one minute only.
    short = SapConnector(fake.url, fake.user, fake.password, source="sap_short",
                         overlap=timedelta(minutes=1), policy=FAST)
    try:
        for connected in (sap, short):
            await sync(conn, connected, entities=("customers", "invoices"))
        [(cursor,)] = await rows(conn, "SELECT cursor FROM sync_cursors WHERE entity ="
                                       " 'invoices' AND source = 'sap'")
        assert orjson.loads(cursor) == {"since": (newest - timedelta(minutes=5)).isoformat()}
        # Stamped two minutes before the newest change, committed only now.
        late = fake.now
        fake.now = newest - timedelta(minutes=2)
        add_invoice(fake, world, 4, customer)
        fake.now = late
        [result] = (await sync(conn, sap, entities=("invoices",))).values()
        [short_result] = (await sync(conn, short, entities=("invoices",))).values()
    finally:
        await sap.aclose()
        await short.aclose()
    assert result.rows_upserted == 1
    assert short_result.rows_upserted == 0  # one minute of overlap was not enough
    assert await live(conn, "invoices", "net_amount") == world.invoices


async def test_contract_days_are_days_in_the_systems_time_zone(conn: Conn, fake: FakeS4) -> None:
    world = World()
    customer = add_customer(fake, world, 1)
    # 2025-01-01 00:00 to 2025-12-31 23:59:59 in Germany (CET, UTC+1).
    fake.put("A_ServiceContract", {
        "ServiceContract": "4000001", "ServiceContractType": "SC1", "SoldToParty": customer,
        "ServiceContractStartDateTime": datetime(2024, 12, 31, 23, tzinfo=UTC),
        "ServiceContractEndDateTime": datetime(2025, 12, 31, 22, 59, 59, tzinfo=UTC),
        "ServiceContractNetAmount": Decimal("12000.00"), "TransactionCurrency": "EUR",
        "ServiceContractIsReleased": True})
    with pytest.raises(ValueError, match="Europe/Berlinn"):
        SapConnector(fake.url, fake.user, fake.password, timezone="Europe/Berlinn")
    sap = SapConnector(fake.url, fake.user, fake.password, timezone="Europe/Berlin",
                       policy=FAST)
    try:
        await sync(conn, sap, entities=("customers", "sites", "service_contracts"))
    finally:
        await sap.aclose()
    assert await rows(conn, "SELECT starts_on::text, ends_on::text, annual_value"
                            " FROM service_contracts") == [
        ("2025-01-01", "2025-12-31", Decimal("12000.00"))]


async def test_line_rejects_name_lines_so_a_full_sync_keeps_them(conn: Conn,
                                                                 fake: FakeS4) -> None:
    world = World()
    customer = add_customer(fake, world, 1)
    for n in range(1, 4):
        add_invoice(fake, world, n, customer)
    sap = connector(fake)
    try:
        await sync(conn, sap, entities=("customers", "sites", "invoices", "invoice_lines"))
        # The document is still there, but its change stamp cannot be read.
        fake.put("A_BillingDocument", {"BillingDocument": "90000002",
                                       "LastChangeDateTime": Raw("/Date(soon)/")}, stamp=False)
        full = await sync(conn, sap, full=True, entities=("invoice_lines",))
    finally:
        await sap.aclose()
    assert (full["invoice_lines"].rows_rejected, full["invoice_lines"].rows_deleted) == (2, 0)
    assert await rows(conn, "SELECT external_id, reason FROM sync_rejects ORDER BY 1") == [
        (f"90000002/{i}", "A_BillingDocument 90000002: change timestamp: '/Date(soon)/' is"
                          " not an OData date (/Date(milliseconds)/)") for i in (10, 20)]
    assert await live(conn, "invoice_lines", "net_amount") == world.lines
