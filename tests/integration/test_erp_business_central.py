"""The Business Central connector against a fake BC API v2.0 on loopback and the real database.

Every expected count and sum is computed from what the test itself put into the fake.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from demo.erp.business_central import FakeBusinessCentral
from erp_connectors.business_central import BusinessCentralConnector, Cursor
from erp_connectors.http import RetryPolicy
from erp_connectors.sync import Page, PageSource, SyncResult, sync_entity

from .conftest import ROOT, rows, scalar, wait_for

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
T0 = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)
FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05)
ENTITY_ORDER = ("customers", "machine_models", "invoices", "invoice_lines", "orders",
                "order_lines")

# The documented default rules, stated here on their own: item category -> line kind.
ITEMS = [  # number, category, BC item type
    ("PX-400", "MACHINE", "Inventory"), ("PX-800", "MACHINE", "Inventory"),
    ("P-GRIP-01", "PARTS", "Inventory"), ("P-BELT-07", "PARTS", "Inventory"),
    ("SVC-VISIT", "SERVICE", "Service"), ("SC-GOLD", "CONTRACT", "Service"),
    ("KIT-R2", "RETROFIT", "Inventory"), ("MUG", "MERCH", "Inventory"),
]
KIND_OF_CATEGORY = {"MACHINE": "new_machine", "PARTS": "spare_parts",
                    "SERVICE": "field_service", "CONTRACT": "service_contract",
                    "RETROFIT": "retrofit", "MERCH": "other"}


@pytest.fixture
def fake() -> Iterator[FakeBusinessCentral]:
    with FakeBusinessCentral() as server:
        yield server


def connector(fake: FakeBusinessCentral, **overrides: Any) -> BusinessCentralConnector:
    options: dict[str, Any] = {
        "api_url": fake.url, "tenant": fake.tenant, "environment": fake.environment,
        "company_id": fake.company_id, "client_id": fake.client_id,
        "client_secret": fake.client_secret, "token_url": fake.token_url, "page_size": 4,
        "retry": FAST, **overrides}
    return BusinessCentralConnector(**options)


async def sync_all(conn: Conn, bc: BusinessCentralConnector, *, full: bool = False,
                   only: tuple[str, ...] = ENTITY_ORDER) -> dict[str, SyncResult]:
    sources = bc.page_sources()
    return {entity: await sync_entity(conn, source=bc.source, entity=entity,
                                      pages=sources[entity], full=full) for entity in only}


def money(value: Any) -> Decimal:
    return Decimal(str(value))


@dataclass
class World:
    """What a test put into the fake, by the test's own reckoning."""

    customers: list[dict[str, Any]] = field(default_factory=list)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # by number
    invoices: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)


def item_line(world: World, number: str, quantity: int, price: str) -> dict[str, Any]:
    item = world.items[number]
    return {"lineType": "Item", "itemId": item["id"], "lineObjectNumber": number,
            "description": item["displayName"], "quantity": quantity,
            "unitPrice": float(price), "netAmount": float(Decimal(price) * quantity)}


def seed(fake: FakeBusinessCentral, *, customers: int = 6) -> World:
    """Customers, items, invoices of every status with lines of every kind, orders."""
    world = World()
    countries = itertools.cycle(["DE", "US", "SE", "IT"])
    for i in range(customers):
        world.customers.append(fake.add("customers", {
            "number": f"C{10000 + i}", "displayName": f"Customer {i} GmbH", "type": "Company",
            "addressLine1": f"Street {i}", "city": "Berlin", "country": next(countries),
            "currencyCode": "EUR", "blocked": " "}, modified=T0 + timedelta(minutes=i)))
    for j, (number, category, kind) in enumerate(ITEMS):
        world.items[number] = fake.add("items", {
            "number": number, "displayName": f"{number} description", "type": kind,
            "itemCategoryCode": category, "unitPrice": 10.0 * (j + 1)},
            modified=T0 + timedelta(minutes=j))
    statuses = itertools.cycle(["Draft", "Open", "Paid", "Canceled", "Corrective"])
    for i, customer in enumerate(world.customers):
        for k in range(2):
            lines = [item_line(world, "P-GRIP-01", 2 + k, "12.50"),
                     item_line(world, ["PX-400", "SC-GOLD", "KIT-R2", "MUG"][(i + k) % 4], 1,
                               "1000.10"),
                     {"lineType": "Comment", "description": "delivered with manual"},
                     {"lineType": "Resource", "lineObjectNumber": "TECH-1",
                      "description": "technician", "quantity": 3, "unitPrice": 80.0,
                      "netAmount": 240.0}]
            net = sum((money(ln["netAmount"]) for ln in lines if "netAmount" in ln),
                      Decimal(0))
            world.invoices.append(fake.add("salesInvoices", {
                "number": f"INV{1000 + 2 * i + k}", "invoiceDate": "2026-01-05",
                "postingDate": "2026-01-05", "dueDate": "2026-02-04",
                "customerId": customer["id"], "customerNumber": customer["number"],
                "customerName": customer["displayName"], "currencyCode": "EUR",
                "orderNumber": "", "totalAmountExcludingTax": float(net),
                "totalAmountIncludingTax": float(net * Decimal("1.19")),
                "remainingAmount": 0.0, "status": next(statuses),
                "salesInvoiceLines": lines}, modified=T0 + timedelta(hours=1, minutes=i * 2 + k)))
    for i, customer in enumerate(world.customers[:3]):
        order_lines = [
            [item_line(world, "P-BELT-07", 5, "7.25")],                        # spare parts
            [item_line(world, "SVC-VISIT", 1, "450.00"),
             item_line(world, "P-GRIP-01", 1, "12.50")],                       # service
            [item_line(world, "PX-800", 1, "250000.00")],                      # a machine sale
        ][i]
        net = sum((money(ln["netAmount"]) for ln in order_lines), Decimal(0))
        world.orders.append(fake.add("salesOrders", {
            "number": f"SO{100 + i}", "orderDate": "2026-01-07", "customerId": customer["id"],
            "customerNumber": customer["number"], "customerName": customer["displayName"],
            "currencyCode": "EUR", "totalAmountExcludingTax": float(net),
            "totalAmountIncludingTax": float(net), "fullyShipped": i == 0,
            "status": "Released" if i == 0 else "Open", "salesOrderLines": order_lines},
            modified=T0 + timedelta(hours=2, minutes=i)))
    return world


def billable(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [ln for ln in lines if ln["lineType"] != "Comment"]


def expected_kind(world: World, line: dict[str, Any]) -> str:
    if line["lineType"] == "Resource":
        return "field_service"
    category = {i["id"]: i["itemCategoryCode"] for i in world.items.values()}[line["itemId"]]
    return KIND_OF_CATEGORY[category]


async def test_a_full_sync_brings_every_entity_with_its_counts_and_sums(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    world = seed(fake)
    bc = connector(fake)
    try:
        results = await sync_all(conn, bc)
    finally:
        await bc.aclose()
    assert {e: (r.status, r.rows_rejected, r.error) for e, r in results.items()} == (
        dict.fromkeys(ENTITY_ORDER, ("succeeded", 0, None)))
    after_sales = world.orders[:2]  # the third order sells a machine
    all_lines = [ln for inv in world.invoices for ln in billable(inv["salesInvoiceLines"])]
    assert {e: r.rows_upserted for e, r in results.items()} == {
        "customers": len(world.customers), "machine_models": 2,
        "invoices": len(world.invoices), "invoice_lines": len(all_lines),
        "orders": len(after_sales),
        "order_lines": sum(len(o["salesOrderLines"]) for o in after_sales)}
    # Pages of 4: several requests per set, and one token for the whole sync.
    assert results["customers"].pages == 2
    assert bc.tokens_fetched == 1
    assert fake.tokens_issued == 1

    assert await rows(conn, "SELECT external_id, name, country FROM customers"
                            " WHERE source = 'business_central' ORDER BY name") == sorted(
        ((c["id"], c["displayName"], c["country"]) for c in world.customers),
        key=lambda r: r[1])
    assert await rows(conn, "SELECT model FROM machine_models ORDER BY 1") == [
        ("PX-400",), ("PX-800",)]
    [(count, total)] = await rows(conn, "SELECT count(*), sum(net_amount) FROM invoices")
    assert (count, total) == (len(world.invoices), sum(
        (money(i["totalAmountExcludingTax"]) for i in world.invoices), Decimal(0)))
    # A Corrective invoice was posted to cancel a credit memo: the pair counts for nothing.
    status_of = {"Draft": "draft", "Open": "open", "Paid": "paid", "Canceled": "cancelled",
                 "Corrective": "cancelled"}
    assert await rows(conn, """
        SELECT i.number, c.external_id, i.status, i.issued_on, i.due_on, i.paid_on, i.currency
        FROM invoices i JOIN customers c ON c.id = i.customer_id ORDER BY i.number""") == [
        (inv["number"], inv["customerId"], status_of[inv["status"]], date(2026, 1, 5),
         date(2026, 2, 4),
         date.fromisoformat(inv["lastModifiedDateTime"][:10]) if inv["status"] == "Paid"
         else None, "EUR") for inv in sorted(world.invoices, key=lambda i: i["number"])]
    by_kind: dict[str, Decimal] = {}
    for ln in all_lines:
        kind = expected_kind(world, ln)
        by_kind[kind] = by_kind.get(kind, Decimal(0)) + money(ln["netAmount"])
    assert dict(await rows(conn, "SELECT kind, sum(net_amount) FROM invoice_lines"
                                 " GROUP BY kind")) == by_kind
    # Lines hang on their own invoice.
    assert await rows(conn, """
        SELECT count(*) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id""") == [
        (len(all_lines),)]
    assert await rows(conn, """
        SELECT i.external_id, sum(l.net_amount) = i.net_amount FROM invoices i
        JOIN invoice_lines l ON l.invoice_id = i.id GROUP BY i.id HAVING
        sum(l.net_amount) <> i.net_amount""") == []
    assert await rows(conn, "SELECT number, kind, status, net_amount FROM orders ORDER BY 1"
                      ) == [("SO100", "spare_parts", "delivered", Decimal("36.25")),
                            ("SO101", "service", "confirmed", Decimal("462.50"))]
    assert await rows(conn, "SELECT part_number, quantity FROM order_lines ORDER BY 1") == [
        ("P-BELT-07", Decimal(5)), ("P-GRIP-01", Decimal(1)), ("SVC-VISIT", Decimal(1))]


async def test_an_incremental_sync_rewrites_only_what_changed(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    world = seed(fake)
    bc = connector(fake)
    try:
        await sync_all(conn, bc)
        first_requests = fake.count("customers")
        # Nothing changed: the incremental run reads the newest records again (ge) and writes
        # nothing.
        again = await sync_all(conn, bc)
        assert {e: r.rows_upserted for e, r in again.items()} == dict.fromkeys(ENTITY_ORDER, 0)
        assert fake.count("customers") - first_requests == 1

        fake.modify("customers", world.customers[0]["id"], displayName="Renamed AG")
        fake.modify("customers", world.customers[3]["id"], country="FR")
        paid = world.invoices[1]  # Open
        fake.modify("salesInvoices", paid["id"], status="Paid", remainingAmount=0.0)
        draft = world.invoices[0]
        fake.add_line("salesInvoices", draft["id"], item_line(world, "P-BELT-07", 4, "7.25"))
        fake.modify("salesInvoices", draft["id"], totalAmountExcludingTax=float(
            money(draft["totalAmountExcludingTax"]) + Decimal("29.00")))
        new_customer = fake.add("customers", {"number": "C20000", "displayName": "Newcomer",
                                              "country": "AT"})
        changed = await sync_all(conn, bc)
    finally:
        await bc.aclose()
    assert {e: r.rows_upserted for e, r in changed.items()} == {
        "customers": 3, "machine_models": 0, "invoices": 2, "invoice_lines": 1, "orders": 0,
        "order_lines": 0}
    # Only the changed records came back, and the newest of the last run again (`ge`).
    assert changed["customers"].records_read == 4
    assert await rows(conn, "SELECT entity, rows_upserted FROM sync_runs"
                            " WHERE entity IN ('customers', 'invoices') ORDER BY id") == [
        ("customers", len(world.customers)), ("invoices", len(world.invoices)),
        ("customers", 0), ("invoices", 0),
        ("customers", 3), ("invoices", 2)]
    # The draft's lines still add up to its header.
    assert await rows(conn, """
        SELECT sum(l.net_amount), i.net_amount FROM invoices i
        JOIN invoice_lines l ON l.invoice_id = i.id WHERE i.external_id = %s
        GROUP BY i.id""", (draft["id"],)) == [(money(draft["totalAmountExcludingTax"])
                                               + Decimal("29.00"),) * 2]
    today = datetime.now(UTC).date()
    assert await rows(conn, "SELECT status, paid_on FROM invoices WHERE external_id = %s",
                      (paid["id"],)) == [("paid", today)]
    assert await rows(conn, "SELECT name, country FROM customers WHERE external_id IN"
                            " (%s, %s, %s) ORDER BY name",
                      (world.customers[0]["id"], world.customers[3]["id"],
                       new_customer["id"])) == [
        ("Customer 3 GmbH", "FR"), ("Newcomer", "AT"), ("Renamed AG", "DE")]


async def test_deletions_are_caught_by_a_full_sync_only(conn: Conn,
                                                        fake: FakeBusinessCentral) -> None:
    world = seed(fake)
    lonely = fake.add("customers", {"number": "C99999", "displayName": "No business yet"})
    bc = connector(fake)
    try:
        await sync_all(conn, bc)
        draft = world.invoices[0]
        assert draft["status"] == "Draft"
        fake.delete("salesInvoices", draft["id"])
        fake.delete("customers", lonely["id"])
        kept_lines = world.invoices[5]["salesInvoiceLines"]
        fake.delete_line("salesInvoices", world.invoices[5]["id"], kept_lines[0]["id"])
        incremental = await sync_all(conn, bc)
        assert sum(r.rows_deleted for r in incremental.values()) == 0
        assert await rows(conn, "SELECT count(*) FROM invoices WHERE deleted_at IS NOT NULL"
                          ) == [(0,)]
        full = await sync_all(conn, bc, full=True)
    finally:
        await bc.aclose()
    draft_lines = len(billable(draft["salesInvoiceLines"]))
    assert {e: r.rows_deleted for e, r in full.items()} == {
        "customers": 1, "machine_models": 0, "invoices": 1, "invoice_lines": draft_lines + 1,
        "orders": 0, "order_lines": 0}
    assert await rows(conn, "SELECT external_id FROM invoices WHERE deleted_at IS NOT NULL"
                      ) == [(draft["id"],)]
    assert await rows(conn, "SELECT external_id FROM customers WHERE deleted_at IS NOT NULL"
                      ) == [(lonely["id"],)]
    assert (kept_lines[0]["id"],) in await rows(
        conn, "SELECT external_id FROM invoice_lines WHERE deleted_at IS NOT NULL")
    # Kept, marked: history stays countable.
    assert await rows(conn, "SELECT count(*) FROM invoices") == [(len(world.invoices),)]


@pytest.mark.parametrize(("count", "page_size", "requests"), [(0, 5, 1), (5, 5, 1), (6, 5, 2),
                                                               (10, 5, 2)])
async def test_paging_edges(conn: Conn, fake: FakeBusinessCentral, count: int,
                            page_size: int, requests: int) -> None:
    for i in range(count):
        fake.add("customers", {"number": f"C{i}", "displayName": f"C {i}"},
                 modified=T0 + timedelta(seconds=i))
    bc = connector(fake, page_size=page_size)
    try:
        [result] = (await sync_all(conn, bc, only=("customers",))).values()
    finally:
        await bc.aclose()
    assert (result.status, result.records_read, result.rows_upserted) == (
        "succeeded", count, count)
    assert fake.count("customers") == requests
    # Even an empty answer leaves a cursor behind: the next run is incremental.
    [(stored,)] = await rows(conn, "SELECT cursor FROM sync_cursors")
    cursor = Cursor.loads(stored)
    assert cursor.next_link is None
    assert cursor.since is not None
    if count:
        assert cursor.since == (T0 + timedelta(seconds=count - 1)).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z")


async def test_equal_times_across_a_page_boundary_lose_nothing(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    same = T0 + timedelta(hours=5)
    for i in range(4):
        fake.add("customers", {"number": f"C{i}", "displayName": f"C {i}"}, modified=same)
    bc = connector(fake, page_size=2)
    try:
        await sync_all(conn, bc, only=("customers",))
        # BC stamps in milliseconds: two more records land on the very same time after the
        # run, one on each side of the old page boundary in key order.
        late = [fake.add("customers", {"id": key, "number": f"L{key[:2]}",
                                       "displayName": f"Late {key[:2]}"}, modified=same)
                for key in ("00000000-0000-0000-0000-000000000001",
                            "ffffffff-ffff-ffff-ffff-ffffffffffff")]
        [result] = (await sync_all(conn, bc, only=("customers",))).values()
    finally:
        await bc.aclose()
    assert (result.records_read, result.rows_upserted) == (6, 2)
    assert await rows(conn, "SELECT count(*) FROM customers") == [(6,)]
    assert {r["id"] for r in late} <= {r[0] for r in await rows(
        conn, "SELECT external_id FROM customers")}


async def test_throttling_is_waited_out_as_retry_after_says(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    seed(fake)
    fake.throttle(2, retry_after=7)
    # The connector's waits, observed through its retry policy's sleep, with the requests the
    # fake had received when each began: each 429 is waited out for the 7 s it asked (the
    # policy's own backoff is 0.005-0.02 s), before the next request. No time passes.
    waits: list[tuple[float, int]] = []

    async def sleep(seconds: float) -> None:
        waits.append((seconds, fake.count("customers")))

    bc = connector(fake, retry=replace(FAST, sleep=sleep))
    try:
        [result] = (await sync_all(conn, bc, only=("customers",))).values()
    finally:
        await bc.aclose()
    assert (result.status, result.rows_upserted) == ("succeeded", 6)
    assert waits == [(7.0, 1), (7.0, 2)]
    assert fake.count("customers") == 2 + 2  # two pages, two refusals


async def test_a_gateway_error_is_retried(conn: Conn, fake: FakeBusinessCentral) -> None:
    seed(fake)
    fake.fail(3, status=503)
    bc = connector(fake)
    try:
        [result] = (await sync_all(conn, bc, only=("customers",))).values()
    finally:
        await bc.aclose()
    assert (result.status, result.rows_upserted) == ("succeeded", 6)
    assert fake.count("customers") == 2 + 3


async def test_a_gateway_error_that_lasts_stops_the_entity_and_resumes_later(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    seed(fake)
    bc = connector(fake)
    try:
        fake.fail(100)
        [failed] = (await sync_all(conn, bc, only=("customers",))).values()
        assert failed.status == "failed"
        assert failed.error is not None
        assert "failed 4 times" in failed.error
        assert "HTTP 503" in failed.error
        fake.fail(0)
        [result] = (await sync_all(conn, bc, only=("customers",))).values()
    finally:
        await bc.aclose()
    assert (result.status, result.rows_upserted) == ("succeeded", 6)


def expiring_tokens_after_first_page(pages: PageSource,
                                     fake: FakeBusinessCentral) -> PageSource:
    async def wrapped(cursor: str | None) -> AsyncIterator[Page]:
        first = True
        async for page in pages(cursor):
            yield page
            if first:
                fake.expire_tokens()
                first = False

    return wrapped


async def test_a_token_expiring_mid_sync_is_refreshed_once(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    world = seed(fake, customers=10)
    bc = connector(fake)
    try:
        result = await sync_entity(conn, source=bc.source, entity="customers",
                                   pages=expiring_tokens_after_first_page(
                                       bc.page_sources()["customers"], fake))
    finally:
        await bc.aclose()
    assert (result.status, result.pages, result.rows_upserted) == ("succeeded", 3,
                                                                   len(world.customers))
    assert bc.tokens_fetched == 2
    # Three pages and the one request the expired token had refused.
    assert fake.count("customers") == 4


async def test_a_refused_secret_fails_every_entity_of_the_source_with_the_reason(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    seed(fake)
    bc = connector(fake, client_secret="wrong")
    try:
        results = await sync_all(conn, bc)
    finally:
        await bc.aclose()
    assert {r.status for r in results.values()} == {"failed"}
    for result in results.values():
        assert result.error is not None
        assert f"the token endpoint refused app {fake.client_id}" in result.error
        assert "AADSTS7000215: Invalid client secret provided" in result.error
        assert "HTTP 401" in result.error
    assert fake.count() == 0  # no API request went out without a token
    assert await rows(conn, "SELECT count(*) FROM sync_runs WHERE status = 'failed'") == [(6,)]


async def test_a_missing_entity_set_stops_that_entity_only(conn: Conn,
                                                           fake: FakeBusinessCentral) -> None:
    world = seed(fake)
    fake.remove_entity_set("salesOrders")
    bc = connector(fake)
    try:
        results = await sync_all(conn, bc)
    finally:
        await bc.aclose()
    assert {e: r.status for e, r in results.items()} == {
        "customers": "succeeded", "machine_models": "succeeded", "invoices": "succeeded",
        "invoice_lines": "succeeded", "orders": "failed", "order_lines": "failed"}
    error = results["orders"].error
    assert error is not None
    assert "HTTP 404" in error
    assert "BadRequest_ResourceNotFound: Resource not found for the segment 'salesOrders'" in (
        error)
    assert results["invoices"].rows_upserted == len(world.invoices)


async def test_records_that_cannot_be_mapped_or_validated_are_rejected_with_reasons(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    world = seed(fake, customers=2)
    customer = world.customers[0]
    fake.add("customers", {"id": "c0ffee00-0000-0000-0000-000000000001", "number": "C-NONAME",
                           "displayName": ""})
    fake.add("customers", {"id": "c0ffee00-0000-0000-0000-000000000002", "number": "C-GER",
                           "displayName": "Three Letters", "country": "GER"})
    base = {"customerId": customer["id"], "customerNumber": customer["number"],
            "invoiceDate": "2026-01-05", "dueDate": "2026-02-04", "currencyCode": "EUR",
            "totalAmountExcludingTax": 10.0, "status": "Open", "salesInvoiceLines": []}
    bad = {
        "INV-WEIRD": {"status": "Weird"},
        "INV-NOCUR": {"currencyCode": ""},
        "INV-NODATE": {"invoiceDate": "0001-01-01"},
        "INV-XYZ": {"currencyCode": "XYZ"},
        "INV-GHOST": {"customerId": "deadbeef-0000-0000-0000-000000000000"},
    }
    ids = {}
    for number, change in bad.items():
        ids[number] = fake.add("salesInvoices", {**base, "number": number, **change})["id"]
    bc = connector(fake)
    try:
        results = await sync_all(conn, bc, only=("customers", "invoices"))
    finally:
        await bc.aclose()
    assert {e: (r.rows_upserted, r.rows_rejected) for e, r in results.items()} == {
        "customers": (2, 2), "invoices": (len(world.invoices), 5)}
    got = dict(await rows(conn, "SELECT external_id, reason FROM sync_rejects"))
    assert got == {
        "c0ffee00-0000-0000-0000-000000000001":
            "customer c0ffee00-0000-0000-0000-000000000001: name is missing",
        "c0ffee00-0000-0000-0000-000000000002":
            "customer c0ffee00-0000-0000-0000-000000000002: country: expected a 2-letter"
            " ISO 3166-1 country code (DE, US), got 'GER'",
        ids["INV-WEIRD"]: f"sales invoice INV-WEIRD ({ids['INV-WEIRD']}): status 'Weird' is"
                          " not one of Draft, In Review, Open, Paid, Canceled, Corrective",
        ids["INV-NOCUR"]: f"sales invoice INV-NOCUR ({ids['INV-NOCUR']}): currencyCode is"
                          " empty (the company's local currency): set local_currency for"
                          " this source",
        ids["INV-NODATE"]: f"invoice {ids['INV-NODATE']}: issued_on is missing",
        ids["INV-XYZ"]: f"invoice {ids['INV-XYZ']}: currency: 'XYZ' is not an ISO 4217"
                        " currency code (EUR, USD)",
        ids["INV-GHOST"]: f"invoice {ids['INV-GHOST']} names customer"
                          " deadbeef-0000-0000-0000-000000000000, which is not in"
                          " business_central",
    }
    # The refused record is kept as BC sent it, without OData annotations.
    [(record,)] = await rows(conn, "SELECT record FROM sync_rejects WHERE external_id = %s",
                             (ids["INV-WEIRD"],))
    assert record["number"] == "INV-WEIRD"
    assert "@odata.etag" not in record


async def test_local_currency_fills_an_empty_currency_code(conn: Conn,
                                                           fake: FakeBusinessCentral) -> None:
    world = seed(fake, customers=1)
    fake.modify("salesInvoices", world.invoices[0]["id"], currencyCode="")
    bc = connector(fake, local_currency="EUR")
    try:
        results = await sync_all(conn, bc, only=("customers", "invoices"))
    finally:
        await bc.aclose()
    assert results["invoices"].rows_rejected == 0
    assert await rows(conn, "SELECT currency FROM invoices WHERE external_id = %s",
                      (world.invoices[0]["id"],)) == [("EUR",)]


CHILD = """
import asyncio, sys
import psycopg
from erp_connectors.business_central import BusinessCentralConnector
from erp_connectors.http import RetryPolicy
from erp_connectors.sync import sync_entity

async def main(url, api_url, tenant, environment, company_id, client_id, secret, token_url):
    bc = BusinessCentralConnector(
        api_url=api_url, tenant=tenant, environment=environment, company_id=company_id,
        client_id=client_id, client_secret=secret, token_url=token_url, page_size=5,
        retry=RetryPolicy(attempts=2, base_delay_s=0.01))
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await sync_entity(conn, source=bc.source, entity="customers",
                          pages=bc.page_sources()["customers"])

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.parametrize("link_survives", [True, False], ids=["link-kept", "link-expired"])
async def test_kill_9_midway_then_resume(database_url: str, conn: Conn,
                                         fake: FakeBusinessCentral, link_survives: bool) -> None:
    for i in range(23):
        fake.add("customers", {"number": f"C{i:03d}", "displayName": f"Customer {i}"},
                 modified=T0 + timedelta(minutes=23 - i))  # time runs against key order
    fake.hold_after(2)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, database_url, fake.url, fake.tenant, fake.environment,
        fake.company_id, fake.client_id, fake.client_secret, fake.token_url, cwd=ROOT,
        env={**os.environ})
    try:
        # Page 3 is asked for only once page 2 is committed: the child is held there.
        await asyncio.to_thread(wait_for, lambda: fake.held.is_set()
                                or child.returncode is not None, timeout=30)
        assert child.returncode is None, "the child sync ended before it was killed"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
        fake.release.set()
    assert await rows(conn, "SELECT count(*) FROM customers") == [(10,)]
    [(stored,)] = await rows(conn, "SELECT cursor FROM sync_cursors")
    assert Cursor.loads(stored).next_link is not None
    # While it was down: a record on a page already read changes, one is added where the
    # resumed run will not look (its key sorts first), one not yet read is deleted.
    read = {r[0] for r in await rows(conn, "SELECT external_id FROM customers")}
    on_read_page = next(r for r in fake.records("customers") if r["id"] in read)
    fake.modify("customers", on_read_page["id"], displayName="Changed while down")
    fake.add("customers", {"id": "00000000-0000-0000-0000-000000000000", "number": "C-NEW",
                           "displayName": "Added while down"})
    fake.delete("customers", next(r["id"] for r in fake.records("customers")
                                  if r["id"] not in read))
    if not link_survives:
        fake.expire_next_links()
    await asyncio.to_thread(wait_for, lambda: scalar(database_url, """
        SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
                                                     ) == 0)
    bc = connector(fake, page_size=5)
    try:
        resumed = await sync_entity(conn, source=bc.source, entity="customers",
                                    pages=bc.page_sources()["customers"])
        assert resumed.status == "succeeded"
        if link_survives:
            # Only the pages after the committed ones: 12 records left of 23, in 3 pages.
            assert (resumed.pages, resumed.records_read) == (3, 12)
        else:
            # The link is dead: everything from the run's lower bound (here: the start) again.
            assert resumed.records_read == 23
        # Whatever the resumed run could not see (a change on a page read before the kill),
        # the next incremental run sees.
        final = await sync_entity(conn, source=bc.source, entity="customers",
                                  pages=bc.page_sources()["customers"])
        assert final.status == "succeeded"
    finally:
        await bc.aclose()
    source = sorted((r["id"], r["displayName"]) for r in fake.records("customers"))
    assert sorted(await rows(conn, "SELECT external_id, name FROM customers"
                                   " WHERE deleted_at IS NULL")) == source
    assert await rows(conn, "SELECT count(*), count(DISTINCT external_id) FROM customers") == [
        (23, 23)]
    assert await rows(conn, "SELECT status FROM sync_runs ORDER BY id") == [
        ("failed",), ("succeeded",), ("succeeded",)]


async def test_a_change_to_a_page_already_read_during_a_run_is_caught_next_time(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    world = seed(fake, customers=8)
    first_key, last_key = (sorted(c["id"] for c in world.customers)[i] for i in (0, -1))
    bc = connector(fake)

    def changing_while_paging(pages: PageSource) -> PageSource:
        async def wrapped(cursor: str | None) -> AsyncIterator[Page]:
            changed = False
            async for page in pages(cursor):
                yield page
                if not changed:
                    # BC pages by key: the first record's change stays behind us, the last
                    # one's, a moment later, is read on the next page.
                    fake.modify("customers", first_key, displayName="Changed behind")
                    await asyncio.sleep(0.01)  # BC's clock moves on between two changes
                    fake.modify("customers", last_key, displayName="Changed ahead")
                    changed = True

        return wrapped

    try:
        await sync_entity(conn, source=bc.source, entity="customers",
                          pages=changing_while_paging(bc.page_sources()["customers"]))
        assert await rows(conn, "SELECT name FROM customers WHERE external_id = %s",
                          (first_key,)) != [("Changed behind",)]
        await sync_all(conn, bc, only=("customers",))
    finally:
        await bc.aclose()
    assert await rows(conn, "SELECT external_id, name FROM customers WHERE external_id IN"
                            " (%s, %s) ORDER BY name", (first_key, last_key)) == [
        (last_key, "Changed ahead"), (first_key, "Changed behind")]


REVENUE = """
    SELECT c.external_id, sum(i.net_amount) FROM invoices i JOIN customers c ON c.id = i.customer_id
    WHERE i.deleted_at IS NULL AND i.status <> 'cancelled' GROUP BY 1"""


def credit_memo(customer: dict[str, Any], invoice: dict[str, Any] | None, number: str,
                status: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """A credit memo as BC serves it: positive amounts, the invoice it applies to."""
    net = sum((money(ln["netAmount"]) for ln in lines if "netAmount" in ln), Decimal(0))
    return {"number": number, "creditMemoDate": "2026-01-20", "postingDate": "2026-01-20",
            "dueDate": "2026-01-20", "customerId": customer["id"],
            "customerNumber": customer["number"], "customerName": customer["displayName"],
            "currencyCode": "EUR", "totalAmountExcludingTax": float(net),
            "totalTaxAmount": float(net * Decimal("0.19")),
            "totalAmountIncludingTax": float(net * Decimal("1.19")), "status": status,
            "invoiceId": invoice["id"] if invoice else "00000000-0000-0000-0000-000000000000",
            "invoiceNumber": invoice["number"] if invoice else "",
            "salesCreditMemoLines": lines}


async def test_credit_memos_lower_revenue_and_cancelled_pairs_count_for_nothing(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    world = seed(fake, customers=2)
    first, second = world.customers
    # Statuses cycle: the first customer has a Draft and an Open invoice, the second a Paid and
    # a Canceled one.
    draft, open_, paid, canceled = world.invoices
    assert [i["status"] for i in world.invoices] == ["Draft", "Open", "Paid", "Canceled"]
    # A partial credit on the open invoice: two grips back.
    partial = fake.add("salesCreditMemos", credit_memo(
        first, open_, "CM1001", "Open", [item_line(world, "P-GRIP-01", 2, "12.50"),
                                               {"lineType": "Comment", "description": "damaged"}]))
    # The canceled invoice was cancelled by a corrective credit memo of its whole amount.
    corrective_cm = fake.add("salesCreditMemos", credit_memo(
        second, canceled, "CM1002", "Corrective",
        [{k: v for k, v in ln.items() if k not in ("id", "documentId", "sequence")}
         for ln in billable(canceled["salesInvoiceLines"])]))
    # A credit on the paid invoice, itself cancelled later by a corrective invoice.
    cancelled_cm = fake.add("salesCreditMemos", credit_memo(
        second, paid, "CM1003", "Canceled", [item_line(world, "SVC-VISIT", 1, "40.00")]))
    corrective_inv = fake.add("salesInvoices", {
        "number": "INV2000", "invoiceDate": "2026-01-21", "postingDate": "2026-01-21",
        "dueDate": "2026-01-21", "customerId": second["id"], "customerNumber": second["number"],
        "customerName": second["displayName"], "currencyCode": "EUR",
        "totalAmountExcludingTax": 40.0, "totalAmountIncludingTax": 47.6,
        "remainingAmount": 0.0, "status": "Corrective",
        "salesInvoiceLines": [item_line(world, "SVC-VISIT", 1, "40.00")]})
    credits = [partial, corrective_cm, cancelled_cm]
    bc = connector(fake)
    try:
        results = await sync_all(conn, bc, only=("customers", "invoices", "invoice_lines"))
    finally:
        await bc.aclose()
    assert {e: (r.status, r.rows_rejected) for e, r in results.items()} == dict.fromkeys(
        ("customers", "invoices", "invoice_lines"), ("succeeded", 0))
    assert results["invoices"].rows_upserted == len(world.invoices) + 1 + len(credits)
    credit_total = money(partial["totalAmountExcludingTax"])
    assert credit_total == Decimal("25.00")
    # Revenue: what was invoiced, less what was credited; a cancelled document and the
    # corrective one that cancels it count for nothing.
    assert dict(await rows(conn, REVENUE)) == {
        first["id"]: money(draft["totalAmountExcludingTax"])
        + money(open_["totalAmountExcludingTax"]) - credit_total,
        second["id"]: money(paid["totalAmountExcludingTax"])}
    assert await rows(conn, """
        SELECT external_id, number, status, net_amount, issued_on, paid_on FROM invoices
        WHERE number LIKE 'CM%%' OR number = 'INV2000' ORDER BY number""") == [
        (f"credit-memo:{partial['id']}", "CM1001", "credited", -credit_total,
         date(2026, 1, 20), None),
        (f"credit-memo:{corrective_cm['id']}", "CM1002", "cancelled",
         -money(corrective_cm["totalAmountExcludingTax"]), date(2026, 1, 20), None),
        (f"credit-memo:{cancelled_cm['id']}", "CM1003", "cancelled", Decimal("-40.00"),
         date(2026, 1, 20), None),
        (corrective_inv["id"], "INV2000", "cancelled", Decimal("40.00"), date(2026, 1, 21),
         None)]
    # Credit lines are negative, of their kind, and add up to their (negative) header.
    assert await rows(conn, """
        SELECT l.external_id, l.kind, l.quantity, l.net_amount FROM invoice_lines l
        JOIN invoices i ON i.id = l.invoice_id WHERE i.number = 'CM1001'""") == [
        (f"credit-memo:{partial['salesCreditMemoLines'][0]['id']}", "spare_parts", Decimal(2),
         -credit_total)]
    assert await rows(conn, """
        SELECT i.number FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id
        GROUP BY i.id HAVING sum(l.net_amount) <> i.net_amount""") == []
    assert await rows(conn, "SELECT count(*) FROM invoice_lines") == [(
        sum(len(billable(d["salesInvoiceLines"])) for d in [*world.invoices, corrective_inv])
        + sum(len(billable(c["salesCreditMemoLines"])) for c in credits),)]


async def test_credit_memos_sync_incrementally_and_deletions_by_a_full_sync(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    world = seed(fake, customers=2)
    first = world.customers[0]
    bc = connector(fake)
    try:
        await sync_all(conn, bc, only=("customers", "invoices", "invoice_lines"))
        draft = fake.add("salesCreditMemos", credit_memo(
            first, world.invoices[1], "CM1", "Draft",
            [item_line(world, "P-GRIP-01", 1, "12.50")]))
        changed = await sync_all(conn, bc, only=("invoices", "invoice_lines"))
        assert {e: r.rows_upserted for e, r in changed.items()} == {
            "invoices": 1, "invoice_lines": 1}
        fake.modify("salesCreditMemos", draft["id"], status="Open")
        changed = await sync_all(conn, bc, only=("invoices", "invoice_lines"))
        assert {e: r.rows_upserted for e, r in changed.items()} == {
            "invoices": 1, "invoice_lines": 0}
        assert await rows(conn, "SELECT status, net_amount FROM invoices WHERE external_id"
                                " = %s", (f"credit-memo:{draft['id']}",)) == [
            ("credited", Decimal("-12.50"))]
        fake.delete("salesCreditMemos", draft["id"])
        full = await sync_all(conn, bc, only=("invoices", "invoice_lines"), full=True)
    finally:
        await bc.aclose()
    assert {e: r.rows_deleted for e, r in full.items()} == {"invoices": 1, "invoice_lines": 1}
    assert await rows(conn, "SELECT external_id FROM invoices WHERE deleted_at IS NOT NULL"
                      ) == [(f"credit-memo:{draft['id']}",)]


async def test_a_malformed_line_costs_only_itself_in_a_full_sync(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    world = seed(fake)
    invoice = world.invoices[5]
    invoice_lines = billable(invoice["salesInvoiceLines"])
    service_order = world.orders[1]
    order_lines = service_order["salesOrderLines"]
    bc = connector(fake)
    try:
        await sync_all(conn, bc)
        fake.garble_line("salesInvoices", invoice["id"], invoice_lines[0]["id"], "garbled")
        fake.garble_line("salesOrders", service_order["id"], order_lines[1]["id"], None)
        full = await sync_all(conn, bc, full=True)
    finally:
        await bc.aclose()
    assert {e: r.rows_rejected for e, r in full.items() if r.rows_rejected} == {
        "invoice_lines": 1, "order_lines": 1}
    # The document's other lines are still live: the reject names no row of its document.
    assert await rows(conn, "SELECT external_id FROM invoice_lines l WHERE deleted_at IS NULL"
                            " AND invoice_id = (SELECT id FROM invoices WHERE external_id = %s)"
                            " ORDER BY 1", (invoice["id"],)) == sorted(
        (ln["id"],) for ln in invoice_lines[1:])
    assert await rows(conn, "SELECT external_id FROM order_lines WHERE deleted_at IS NULL"
                            " AND order_id = (SELECT id FROM orders WHERE external_id = %s)",
                      (service_order["id"],)) == [(order_lines[0]["id"],)]
    assert await rows(conn, "SELECT entity, external_id, reason FROM sync_rejects ORDER BY 1"
                      ) == [
        ("invoice_lines", None, f"sales invoice {invoice['number']} ({invoice['id']}): line 1"
                                " is not a JSON object"),
        ("order_lines", None, f"sales order {service_order['number']} ({service_order['id']}):"
                              " line 2 is not a JSON object")]
    # The garbled line itself cannot be named, so the sweep marks its old row: the reject
    # keeps what BC sent.
    assert await rows(conn, "SELECT count(*) FROM invoice_lines WHERE deleted_at IS NOT NULL"
                      ) == [(1,)]


async def test_paid_on_is_given_for_paid_invoices_only(fake: FakeBusinessCentral) -> None:
    world = seed(fake, customers=3)
    bc = connector(fake, page_size=100)
    try:
        records = [r async for page in bc.page_sources()["invoices"](None)
                   for r in page.records]
    finally:
        await bc.aclose()
    by_id = {r["external_id"]: r for r in records}
    for invoice in world.invoices:
        record = by_id[invoice["id"]]
        if invoice["status"] == "Paid":
            assert record["paid_on"] == invoice["lastModifiedDateTime"][:10]
        else:
            # Absent, not None: the engine may then keep what it has (docs).
            assert "paid_on" not in record


async def test_a_later_edit_of_a_paid_invoice_keeps_its_paid_on(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    world = seed(fake, customers=3)
    paid = next(i for i in world.invoices if i["status"] == "Paid")
    bc = connector(fake)
    try:
        await sync_all(conn, bc, only=("customers", "invoices"))
        fake.modify("salesInvoices", paid["id"], orderNumber="SO-LATE-EDIT",
                    modified=datetime.fromisoformat("2026-03-01T09:00:00+00:00"))
        await sync_all(conn, bc, only=("customers", "invoices"))
    finally:
        await bc.aclose()
    assert await rows(conn, "SELECT paid_on FROM invoices WHERE external_id = %s",
                      (paid["id"],)) == [(date.fromisoformat(paid["lastModifiedDateTime"][:10]),)]


async def test_invoices_resume_inside_the_credit_memos_and_read_an_old_cursor(
        conn: Conn, fake: FakeBusinessCentral) -> None:
    world = seed(fake, customers=2)  # 4 invoices: one page of 4
    credits = [fake.add("salesCreditMemos", credit_memo(
        world.customers[0], world.invoices[1], f"CM{i}", "Open",
        [item_line(world, "P-GRIP-01", 1, "12.50")]), modified=T0 + timedelta(days=1, minutes=i))
        for i in range(10)]  # three pages of 4

    def failing_after_first_credit_page(pages: PageSource) -> PageSource:
        async def wrapped(cursor: str | None) -> AsyncIterator[Page]:
            async for page in pages(cursor):
                yield page
                if page.cursor is not None and "salesCreditMemos" in page.cursor:
                    fake.fail(100)  # BC goes away after the first page of credit memos

        return wrapped

    bc = connector(fake)
    try:
        await sync_all(conn, bc, only=("customers",))
        failed = await sync_entity(conn, source=bc.source, entity="invoices",
                                   pages=failing_after_first_credit_page(
                                       bc.page_sources()["invoices"]))
        assert failed.status == "failed"
        # What was committed stays: the invoices and the first page of credit memos.
        assert await rows(conn, "SELECT count(*) FROM invoices") == [(len(world.invoices) + 4,)]
        fake.fail(0)
        before = (fake.count("salesInvoices"), fake.count("salesCreditMemos"))
        resumed = await sync_entity(conn, source=bc.source, entity="invoices",
                                    pages=bc.page_sources()["invoices"])
        # The invoices from where they completed (the newest again, `ge`), the credit memos
        # from the committed link: two pages.
        assert (resumed.status, resumed.rows_upserted) == ("succeeded", 6)
        assert (fake.count("salesInvoices") - before[0],
                fake.count("salesCreditMemos") - before[1]) == (1, 2)
        # A cursor stored before credit memos were read is the invoices' own: they go on
        # incrementally, the credit memos are read from the start.
        old = Cursor(since="2026-01-10T09:02:00.000Z").dumps()
        await conn.execute("UPDATE sync_cursors SET cursor = %s WHERE entity = 'invoices'",
                           (old,))
        await conn.commit()
        upgraded = await sync_entity(conn, source=bc.source, entity="invoices",
                                     pages=bc.page_sources()["invoices"])
    finally:
        await bc.aclose()
    newer = [i for i in world.invoices if i["lastModifiedDateTime"] >= "2026-01-10T09:02"]
    assert upgraded.records_read == len(newer) + len(credits)
    assert await rows(conn, "SELECT count(*), sum(net_amount) FROM invoices"
                            " WHERE external_id LIKE 'credit-memo:%%'") == [
        (len(credits), Decimal("-12.50") * len(credits))]
