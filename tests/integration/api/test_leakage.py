"""Leakage through the API, checked against Python over the raw rows: machines no contract
covers, warranties ending with nothing to follow, customers buying fewer parts than their
operating hours imply (docs/api-maintenance.md)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from analytics import leakage
from core.paging import PageRequest
from tests.integration.api.conftest import REPORTING, WorldApi
from tests.integration.api.test_maintenance import every_page
from tests.integration.api_server import problem


def _today() -> date:
    return datetime.now(UTC).date()


def _covered_on(url: str, day_of: dict[int, date]) -> set[int]:
    """Installed-base ids a live contract covers on their day (machine or customer scope)."""
    with psycopg.connect(url) as conn:
        contracts = conn.execute(
            "SELECT customer_id, scope, installed_base_id, starts_on, ends_on, status,"
            " deleted_at FROM service_contracts").fetchall()
        base = dict(conn.execute("SELECT id, customer_id FROM installed_base").fetchall())
    covered = set()
    for ib, day in day_of.items():
        for customer, scope, machine, starts, ends, status, deleted in contracts:
            live = deleted is None and status not in ("draft", "cancelled") \
                and starts <= day <= ends
            mine = (scope == "machine" and machine == ib) or \
                (scope == "customer" and customer == base[ib])
            if live and mine:
                covered.add(ib)
    return covered


def _installed(url: str) -> dict[int, dict[str, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id, serial, customer_id, commissioned_on, warranty_end FROM installed_base"
            " WHERE deleted_at IS NULL").fetchall()
    return {r[0]: {"serial": r[1], "customer_id": r[2], "commissioned_on": r[3],
                   "warranty_end": r[4]} for r in rows}


def test_uncovered_machines_equal_the_contracts_rows(world_api: WorldApi) -> None:
    today = _today()
    installed = _installed(world_api.database_url)
    running = {ib: today for ib, m in installed.items()
               if m["commissioned_on"] is None or m["commissioned_on"] <= today}
    expected = set(running) - _covered_on(world_api.database_url, running)
    with world_api.api.client("finance") as client:
        items = every_page(client, "/leakage/uncovered", limit=100)
        assert {i["installed_base_id"] for i in items} == expected
        assert len(items) == len(expected) > 0
        for item in items:
            warranty = installed[item["installed_base_id"]]["warranty_end"]
            assert item["in_warranty"] == (warranty is not None and warranty >= today)
        by_customer = every_page(client, "/leakage/uncovered", sort="-customer", limit=17)
        assert {i["installed_base_id"] for i in by_customer} == expected
        names = [i["customer_name"] for i in by_customer]
        assert names == sorted(names, reverse=True)
        customer = items[0]["customer_id"]
        assert {i["installed_base_id"] for i in every_page(
            client, "/leakage/uncovered", customer_id=customer)} == \
            {ib for ib in expected if installed[ib]["customer_id"] == customer}

    async def own() -> set[int]:
        async with await psycopg.AsyncConnection.connect(world_api.database_url) as conn:
            page = await leakage.uncovered_page(conn, PageRequest(limit=5000, sort="serial"),
                                                filters=leakage.LeakageFilters(), today=today)
            return {r["installed_base_id"] for r in page.items}
    assert asyncio.run(own()) == expected


@pytest.mark.parametrize("days", [30, 365])
def test_warranties_ending_without_a_contract(world_api: WorldApi, days: int) -> None:
    today = _today()
    installed = _installed(world_api.database_url)
    ending = {ib: m["warranty_end"] + timedelta(days=1) for ib, m in installed.items()
              if m["warranty_end"] and today <= m["warranty_end"] <= today + timedelta(days)}
    expected = set(ending) - _covered_on(world_api.database_url, ending)
    with world_api.api.client("viewer") as client:
        items = every_page(client, "/leakage/warranty-ending", days=days, limit=7)
    assert {i["installed_base_id"] for i in items} == expected

    async def own() -> list[int]:
        async with await psycopg.AsyncConnection.connect(world_api.database_url) as conn:
            page = await leakage.warranty_ending_page(
                conn, PageRequest(limit=5000, sort="warranty_end"),
                filters=leakage.LeakageFilters(), today=today, days=days)
            return [r["installed_base_id"] for r in page.items]
    assert asyncio.run(own()) == [i["installed_base_id"] for i in items]
    ends = [i["warranty_end"] for i in items]
    assert ends == sorted(ends)
    for item in items:
        end = installed[item["installed_base_id"]]["warranty_end"]
        assert item["days_left"] == (end - today).days
    if days == 365:
        assert expected, "the world has no warranty ending uncovered within a year"


def _rates(url: str) -> dict[str, list[tuple[date, Decimal]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT currency, valid_from, rate FROM exchange_rates"
                            " ORDER BY currency, valid_from").fetchall()
    rates: dict[str, list[tuple[date, Decimal]]] = defaultdict(list)
    for currency, since, rate in rows:
        rates[currency.strip()].append((since, rate))
    return rates


def _convert(rates: dict[str, list[tuple[date, Decimal]]], amount: Decimal, currency: str,
             day: date) -> Decimal:
    if currency.strip() == REPORTING:
        return amount
    return amount * [r for since, r in rates[currency.strip()] if since <= day][-1]


def expected_gaps(url: str, today: date, days: int) -> dict[int, dict[str, Decimal]]:
    """Parts expected from the hours and parts bought per customer, in Python over the rows."""
    first = today - timedelta(days=days - 1)
    rates = _rates(url)
    with psycopg.connect(url) as conn:
        value = {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT model, parts_value_per_1000h, currency FROM machine_models"
            " WHERE deleted_at IS NULL AND parts_value_per_1000h IS NOT NULL"
            " ORDER BY synced_at, id")}
        hours: dict[int, float] = defaultdict(float)
        for machine_id, h in conn.execute(
                "SELECT machine_id, operating_hours FROM machine_days"
                " WHERE day BETWEEN %s AND %s", (first, today)):
            hours[machine_id] += h
        machines = conn.execute(
            "SELECT ib.customer_id, ib.model, min(m.id) FROM installed_base ib"
            " JOIN machines m ON m.serial = ib.serial WHERE ib.deleted_at IS NULL"
            " GROUP BY ib.id").fetchall()
        lines = conn.execute(
            "SELECT i.customer_id, l.net_amount, i.currency, i.issued_on FROM invoice_lines l"
            " JOIN invoices i ON i.id = l.invoice_id WHERE l.kind = 'spare_parts'"
            " AND l.deleted_at IS NULL AND i.deleted_at IS NULL"
            " AND i.status NOT IN ('draft', 'cancelled') AND i.issued_on BETWEEN %s AND %s",
            (first, today)).fetchall()
    gaps: dict[int, dict[str, Decimal]] = defaultdict(
        lambda: {"expected": Decimal(0), "bought": Decimal(0)})
    for customer, model, machine in machines:
        if model in value:
            per_1000h, currency = value[model]
            amount = per_1000h * Decimal(repr(hours[machine])) / 1000
            gaps[customer]["expected"] += _convert(rates, amount, currency, today)
    for customer, amount, currency, day in lines:
        if customer in gaps:
            gaps[customer]["bought"] += _convert(rates, amount, currency, day)
    return {c: g for c, g in gaps.items() if g["expected"] > g["bought"]}


def test_parts_gap_equals_the_rows(world_api: WorldApi) -> None:
    today = _today()
    expected = expected_gaps(world_api.database_url, today, 365)
    assert expected
    with world_api.api.client("finance") as client:
        items = every_page(client, "/leakage/parts-gap", limit=13)
        exported = client.get("/leakage/parts-gap", params={"format": "csv"})
        shorter = every_page(client, "/leakage/parts-gap", days=90)
        by_name = every_page(client, "/leakage/parts-gap", sort="customer", limit=9)
    assert [i["customer_name"] for i in by_name] == sorted(i["customer_name"] for i in items)
    assert {i["customer_id"] for i in items} == set(expected)
    gaps = [Decimal(i["gap"]) for i in items]
    assert gaps == sorted(gaps, reverse=True)
    for item in items:
        want = expected[item["customer_id"]]
        assert item["currency"] == REPORTING
        assert Decimal(item["expected_parts"]) == pytest.approx(want["expected"],
                                                               abs=Decimal("0.011"))
        assert Decimal(item["bought_parts"]) == pytest.approx(want["bought"],
                                                             abs=Decimal("0.006"))
        assert Decimal(item["gap"]) == pytest.approx(want["expected"] - want["bought"],
                                                    abs=Decimal("0.011"))
    rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert [(int(r["customer_id"]), r["gap"]) for r in rows] == \
        [(i["customer_id"], i["gap"]) for i in items]
    assert {i["customer_id"] for i in shorter} == set(expected_gaps(world_api.database_url,
                                                                    today, 90))

    async def own() -> list[tuple[int, str]]:
        async with await psycopg.AsyncConnection.connect(world_api.database_url) as conn:
            page = await leakage.parts_gap_page(
                conn, PageRequest(limit=5000, sort="gap", descending=True),
                filters=leakage.LeakageFilters(), today=today, days=365,
                reporting_currency=REPORTING)
            return [(r["customer_id"], str(r["gap"])) for r in page.items]
    assert asyncio.run(own()) == [(i["customer_id"], i["gap"]) for i in items]


def test_leakage_roles_and_bad_input(world_api: WorldApi) -> None:
    api = world_api.api
    with psycopg.connect(world_api.database_url) as conn:
        customer = conn.execute("SELECT min(customer_id) FROM installed_base").fetchone()[0]
    with api.client("customer", customer_id=customer) as portal:
        for path in ("/leakage/uncovered", "/leakage/warranty-ending", "/leakage/parts-gap"):
            assert "may not" in problem(portal.get(path), 403)["detail"]
    with api.client("service") as client:
        for path, params in (("/leakage/warranty-ending", {"days": -1}),
                             ("/leakage/warranty-ending", {"days": "soon"}),
                             ("/leakage/parts-gap", {"days": 5}),
                             ("/leakage/parts-gap", {"sort": "value"}),
                             ("/leakage/uncovered", {"region": "de"}),
                             ("/leakage/uncovered", {"format": "pdf"})):
            problem(client.get(path, params=params), 422)
        problem(client.get("/leakage/uncovered", params={"cursor": "x"}), 400)
