"""The sync engine on every entity, fed by an in-test page source, against the real database.

The page source stands in for a connector only in the sense that a connector *is* a page
source; what is tested is the engine: binding parents, rejects, deletes and the sweep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from erp_connectors.sync import ENTITIES, Page, PageSource, SyncResult, sync_entity

from .conftest import rows

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# One record of every entity, parents first, all naming each other.
WORLD: dict[str, list[dict[str, Any]]] = {
    "customers": [{"external_id": "C1", "name": "Kunststoff Meier GmbH", "country": "DE",
                   "industry": "packaging", "size_class": "medium", "key_account": True},
                  {"external_id": "C2", "name": "Ferro SpA", "country": "IT"}],
    "sites": [{"external_id": "S1", "customer_external_id": "C1", "name": "Werk Ulm"},
              {"external_id": "S2", "customer_external_id": "C2", "name": "Brescia"}],
    "contacts": [{"external_id": "P1", "customer_external_id": "C1", "site_external_id": "S1",
                  "name": "Anna Meier", "role": "Head of maintenance"}],
    "machine_models": [{"external_id": "M1", "model": "PX-400", "service_interval_hours": 2000,
                        "service_interval_days": 365, "parts_value_per_1000h": "812.50",
                        "currency": "EUR"}],
    "installed_base": [{"external_id": "IB1", "serial": "SN-1", "model": "PX-400",
                        "customer_external_id": "C1", "site_external_id": "S1",
                        "commissioned_on": "2023-04-01", "warranty_end": "2025-03-31"}],
    "service_contracts": [{"external_id": "SC1", "customer_external_id": "C1",
                           "installed_base_external_id": "IB1", "scope": "machine",
                           "starts_on": "2025-04-01", "ends_on": "2026-03-31",
                           "annual_value": 12000, "currency": "EUR", "status": "active",
                           "auto_renew": "yes", "notice_period_days": "90"}],
    "contract_renewals": [{"external_id": "R1", "contract_external_id": "SC1",
                           "decided_on": "2026-01-02", "outcome": "renewed",
                           "previous_ends_on": "2026-03-31", "new_ends_on": "2027-03-31",
                           "previous_value": "12000", "new_value": "12600"}],
    "invoices": [{"external_id": "I1", "customer_external_id": "C1", "issued_on": "2026-01-10",
                  "due_on": "2026-02-09", "paid_on": "2026-02-20", "currency": "EUR",
                  "net_amount": 0.1 + 0.2, "status": "paid"}],
    "invoice_lines": [{"external_id": "IL1", "invoice_external_id": "I1", "kind": "spare_parts",
                       "quantity": "3", "unit_price": "0.1", "net_amount": "0.30",
                       "installed_base_external_id": "IB1"},
                      {"external_id": "IL2", "invoice_external_id": "I1",
                       "kind": "service_contract", "net_amount": 0, "contract_external_id": "SC1"}],
    "orders": [{"external_id": "O1", "customer_external_id": "C1", "kind": "spare_parts",
                "ordered_on": "2026-01-05", "status": "delivered", "currency": "CHF",
                "net_amount": "99.90"}],
    "order_lines": [{"external_id": "OL1", "order_external_id": "O1", "part_number": "W-7",
                     "quantity": 2, "unit_price": "49.95", "net_amount": "99.90",
                     "installed_base_external_id": "IB1"}],
    "survey_responses": [{"external_id": "N1", "customer_external_id": "C1",
                          "contact_external_id": "P1", "answered_at": "2026-02-01T09:30:00Z",
                          "score": "6", "comment": "slow spare parts"}],
}


def source_of(*pages: list[dict[str, Any]]) -> PageSource:
    """A page source yielding ``pages``; cursor ``"p<n>"`` after page n, None after the last."""

    async def pages_from(cursor: str | None) -> AsyncIterator[Page]:
        start = 0 if cursor is None else int(cursor[1:])
        for n in range(start, len(pages)):
            yield Page(pages[n], None if n == len(pages) - 1 else f"p{n + 1}")

    return pages_from


async def sync_world(conn: Conn, world: dict[str, list[dict[str, Any]]], *,
                     full: bool = False) -> dict[str, SyncResult]:
    return {entity: await sync_entity(conn, source="erp", entity=entity,
                                      pages=source_of(world.get(entity, [])), full=full)
            for entity in ENTITIES}


async def test_every_entity_is_stored_with_its_parents_bound(conn: Conn) -> None:
    results = await sync_world(conn, WORLD)
    assert {e: (r.status, r.rows_upserted, r.rows_rejected) for e, r in results.items()} == {
        e: ("succeeded", len(WORLD[e]), 0) for e in ENTITIES}
    # Every reference resolves to the row whose external id was named.
    assert await rows(conn, """
        SELECT c.external_id, ib.external_id, sc.external_id, r.external_id, il.external_id,
               ol.external_id, n.external_id, p.external_id, st.external_id
        FROM service_contracts sc
        JOIN customers c ON c.id = sc.customer_id
        JOIN installed_base ib ON ib.id = sc.installed_base_id
        JOIN sites st ON st.id = ib.site_id
        JOIN contract_renewals r ON r.contract_id = sc.id
        JOIN invoice_lines il ON il.contract_id = sc.id
        JOIN order_lines ol ON ol.installed_base_id = ib.id
        JOIN survey_responses n ON n.customer_id = c.id
        JOIN contacts p ON p.id = n.contact_id""") == [
        ("C1", "IB1", "SC1", "R1", "IL2", "OL1", "N1", "P1", "S1")]
    # Numbers keep their decimal value (0.1 + 0.2 as a float is 0.30000000000000004).
    assert await rows(conn, "SELECT net_amount FROM invoices") == [(Decimal("0.30"),)]
    assert await rows(conn, "SELECT parts_value_per_1000h, service_interval_hours"
                            " FROM machine_models") == [(Decimal("812.50"), 2000)]
    assert await rows(conn, "SELECT auto_renew, notice_period_days FROM service_contracts") == [
        (True, 90)]
    assert await rows(conn, "SELECT score FROM survey_responses") == [(6,)]


async def test_a_second_sync_of_the_same_data_writes_nothing(conn: Conn) -> None:
    await sync_world(conn, WORLD)
    before = await rows(conn, "SELECT xmin::text, synced_at FROM invoice_lines ORDER BY id")
    again = await sync_world(conn, WORLD, full=True)
    assert {e: r.rows_upserted for e, r in again.items()} == dict.fromkeys(ENTITIES, 0)
    assert {e: r.rows_deleted for e, r in again.items()} == dict.fromkeys(ENTITIES, 0)
    assert await rows(conn, "SELECT xmin::text, synced_at FROM invoice_lines ORDER BY id") == (
        before)


async def test_a_changed_value_rewrites_only_its_row(conn: Conn) -> None:
    await sync_world(conn, WORLD)
    changed = dict(WORLD)
    changed["invoices"] = [{**WORLD["invoices"][0], "net_amount": "0.31"}]
    results = await sync_world(conn, changed)
    assert {e: r.rows_upserted for e, r in results.items() if r.rows_upserted} == {"invoices": 1}


@pytest.mark.parametrize(("entity", "record", "reason"), [
    ("invoices", {**WORLD["invoices"][0], "external_id": "I9", "customer_external_id": "C404"},
     "invoice I9 names customer C404, which is not in erp"),
    ("installed_base", {**WORLD["installed_base"][0], "external_id": "IB9",
                        "customer_external_id": "C2"},
     "installed base IB9 names customer C2 but site S1, which belongs to customer C1"),
    ("survey_responses", {**WORLD["survey_responses"][0], "external_id": "N9",
                          "customer_external_id": "C2"},
     "survey response N9 names customer C2 but contact P1, which belongs to customer C1"),
    ("order_lines", {**WORLD["order_lines"][0], "external_id": "OL9",
                     "installed_base_external_id": "IB404"},
     "order line OL9 names installed base IB404, which is not in erp"),
    ("service_contracts", {**WORLD["service_contracts"][0], "external_id": "SC9",
                           "ends_on": "2025-03-31"},
     "service contract SC9: ends_on 2025-03-31 is before starts_on 2025-04-01"),
    ("order_lines", {**WORLD["order_lines"][0], "external_id": "OL9", "quantity": "-2"},
     "order line OL9: quantity: Input should be greater than 0"),
    ("invoice_lines", {**WORLD["invoice_lines"][0], "external_id": "IL9", "quantity": -1},
     "invoice line IL9: quantity: Input should be greater than or equal to 0"),
    ("orders", {**WORLD["orders"][0], "external_id": "O9", "currency": "EURO"},
     "order O9: currency: 'EURO' is not an ISO 4217 currency code (EUR, USD)"),
    ("contract_renewals", {**WORLD["contract_renewals"][0], "external_id": "R9",
                           "new_ends_on": "2026-03-31"},
     "contract renewal R9: new_ends_on 2026-03-31 is not after previous_ends_on 2026-03-31"),
])
async def test_a_bad_record_is_rejected_with_its_reason_and_the_rest_is_stored(
        conn: Conn, entity: str, record: dict[str, Any], reason: str) -> None:
    world = dict(WORLD)
    world[entity] = [*WORLD[entity], record]
    results = await sync_world(conn, world)
    assert (results[entity].rows_upserted, results[entity].rows_rejected) == (
        len(WORLD[entity]), 1)
    assert await rows(conn, "SELECT entity, external_id, reason, record->>'external_id'"
                            " FROM sync_rejects") == [(entity, record["external_id"], reason,
                                                       record["external_id"])]


async def test_a_record_the_source_marks_deleted_is_kept_and_marked(conn: Conn) -> None:
    await sync_world(conn, WORLD)
    gone = dict(WORLD)
    gone["contacts"] = [{**WORLD["contacts"][0], "deleted": True}]
    await sync_world(conn, gone)
    first = await rows(conn, "SELECT deleted_at FROM contacts")
    assert first[0][0] is not None
    await sync_world(conn, gone)  # deleted again: the first deletion time stays
    assert await rows(conn, "SELECT deleted_at FROM contacts") == first
    await sync_world(conn, WORLD)  # back in the source
    assert await rows(conn, "SELECT deleted_at FROM contacts") == [(None,)]


async def test_a_complete_read_marks_what_it_did_not_see_as_deleted(conn: Conn) -> None:
    await sync_world(conn, WORLD)
    # A full read without IL2 and C2 (and C2's site): those are gone from the source.
    smaller = dict(WORLD)
    smaller["invoice_lines"] = WORLD["invoice_lines"][:1]
    smaller["customers"] = WORLD["customers"][:1]
    smaller["sites"] = WORLD["sites"][:1]
    results = await sync_world(conn, smaller, full=True)
    assert {e: r.rows_deleted for e, r in results.items() if r.rows_deleted} == {
        "invoice_lines": 1, "customers": 1, "sites": 1}
    assert await rows(conn, "SELECT external_id FROM invoice_lines WHERE deleted_at IS NOT NULL"
                            " UNION ALL SELECT external_id FROM customers"
                            " WHERE deleted_at IS NOT NULL ORDER BY 1") == [("C2",), ("IL2",)]
    assert await rows(conn, "SELECT rows_deleted FROM sync_runs WHERE entity = 'customers'"
                            " ORDER BY id") == [(0,), (1,)]


async def test_a_resumed_read_deletes_nothing(conn: Conn) -> None:
    """A run that starts from a stored cursor has not seen the pages before it."""
    pages = [[WORLD["customers"][0]], [WORLD["customers"][1]]]
    await sync_entity(conn, source="erp", entity="customers", pages=source_of(*pages))
    await conn.execute("UPDATE sync_cursors SET cursor = 'p1'")
    await conn.commit()
    result = await sync_entity(conn, source="erp", entity="customers", pages=source_of(*pages))
    assert (result.status, result.records_read, result.rows_deleted) == ("succeeded", 1, 0)
    assert await rows(conn, "SELECT count(*) FROM customers WHERE deleted_at IS NULL") == [(2,)]


async def test_an_empty_answer_does_not_delete_everything(conn: Conn) -> None:
    await sync_world(conn, WORLD)
    result = await sync_entity(conn, source="erp", entity="customers", pages=source_of([]),
                               full=True)
    assert (result.status, result.rows_deleted) == ("succeeded", 0)
    assert await rows(conn, "SELECT count(*) FROM customers WHERE deleted_at IS NULL") == [(2,)]


async def test_a_rejected_record_is_not_swept(conn: Conn) -> None:
    """Still in the source, only broken there: its last good row stays live."""
    await sync_world(conn, WORLD)
    broken = {**WORLD["orders"][0], "currency": "XXY"}
    result = await sync_entity(conn, source="erp", entity="orders", pages=source_of([broken]),
                               full=True)
    assert (result.rows_rejected, result.rows_deleted) == (1, 0)
    assert await rows(conn, "SELECT currency, deleted_at FROM orders") == [("CHF", None)]


async def test_sources_do_not_see_each_others_rows(conn: Conn) -> None:
    await sync_world(conn, WORLD)
    result = await sync_entity(conn, source="other", entity="invoices",
                               pages=source_of(WORLD["invoices"]))
    assert result.rows_rejected == 1
    assert await rows(conn, "SELECT reason FROM sync_rejects") == [
        ("invoice I1 names customer C1, which is not in other",)]
    # And a full read of one source never marks another's rows deleted.
    await sync_entity(conn, source="other", entity="customers",
                      pages=source_of([{"external_id": "X1", "name": "X"}]), full=True)
    assert await rows(conn, "SELECT count(*) FROM customers WHERE deleted_at IS NULL") == [(3,)]


def incremental(records: list[dict[str, Any]]) -> PageSource:
    """A source read once: after its page the cursor says 'done' and nothing more comes."""

    async def pages_from(cursor: str | None) -> AsyncIterator[Page]:
        if cursor is None:
            yield Page(records, "done")

    return pages_from


async def test_a_record_whose_parent_comes_later_is_written_when_it_does(conn: Conn) -> None:
    """The cursor moves past a record rejected for a missing parent: it must not be lost."""
    await sync_world(conn, WORLD)
    late = {**WORLD["invoices"][0], "external_id": "I-LATE", "customer_external_id": "C-NEW"}
    first = await sync_entity(conn, source="erp", entity="invoices", pages=incremental([late]))
    assert (first.rows_upserted, first.rows_rejected) == (0, 1)
    assert await rows(conn, "SELECT external_id, reason FROM sync_pending") == [
        ("I-LATE", "invoice I-LATE names customer C-NEW, which is not in erp")]
    # Still no customer: tried again, still waiting, no second reject row.
    again = await sync_entity(conn, source="erp", entity="invoices", pages=incremental([late]))
    assert (again.records_read, again.rows_upserted, again.rows_rejected) == (0, 0, 0)
    assert await rows(conn, "SELECT count(*) FROM sync_rejects") == [(1,)]
    # The customer arrives; the invoices' source has nothing new, the waiting invoice binds.
    await sync_entity(conn, source="erp", entity="customers", pages=source_of(
        [*WORLD["customers"], {"external_id": "C-NEW", "name": "Neu GmbH"}]))
    last = await sync_entity(conn, source="erp", entity="invoices", pages=incremental([late]))
    assert (last.records_read, last.rows_upserted) == (0, 1)
    assert await rows(conn, "SELECT c.external_id FROM invoices i JOIN customers c"
                            " ON c.id = i.customer_id WHERE i.external_id = 'I-LATE'") == [
        ("C-NEW",)]
    assert await rows(conn, "SELECT count(*) FROM sync_pending") == [(0,)]


async def test_a_newer_version_replaces_the_waiting_one(conn: Conn) -> None:
    await sync_world(conn, WORLD)
    late = {**WORLD["invoices"][0], "external_id": "I-LATE", "customer_external_id": "C-NEW"}
    await sync_entity(conn, source="erp", entity="invoices", pages=source_of([late]))
    fixed = {**late, "customer_external_id": "C2"}  # the ERP corrected the customer
    await sync_entity(conn, source="erp", entity="invoices", pages=source_of([fixed]))
    assert await rows(conn, "SELECT count(*) FROM sync_pending") == [(0,)]
    await sync_entity(conn, source="erp", entity="customers", pages=source_of(
        [*WORLD["customers"], {"external_id": "C-NEW", "name": "Neu GmbH"}]))
    await sync_entity(conn, source="erp", entity="invoices", pages=source_of([fixed]))
    assert await rows(conn, "SELECT c.external_id FROM invoices i JOIN customers c"
                            " ON c.id = i.customer_id WHERE i.external_id = 'I-LATE'") == [
        ("C2",)]


async def test_a_waiting_record_gone_from_the_source_waits_no_more(conn: Conn) -> None:
    await sync_world(conn, WORLD)
    late = {**WORLD["invoices"][0], "external_id": "I-LATE", "customer_external_id": "C-NEW"}
    await sync_entity(conn, source="erp", entity="invoices", pages=source_of([late]))
    await sync_entity(conn, source="erp", entity="invoices", pages=source_of(WORLD["invoices"]),
                      full=True)
    assert await rows(conn, "SELECT count(*) FROM sync_pending") == [(0,)]


async def test_a_machine_of_another_customer_does_not_wait(conn: Conn) -> None:
    """A mix-up in the source is a reject, not a record waiting for a parent."""
    await sync_world(conn, WORLD)
    wrong = {**WORLD["installed_base"][0], "external_id": "IB9", "customer_external_id": "C2"}
    await sync_entity(conn, source="erp", entity="installed_base", pages=source_of([wrong]))
    assert await rows(conn, "SELECT count(*) FROM sync_pending") == [(0,)]
