"""The demo world against the real database: its files sync cleanly, its history loads."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from demo.fleet import FleetSimulator, load_fleet
from demo.world import HistoryExistsError, World, load_history, write_world
from demo.world import catalogue as cat
from demo.world.files import MACHINES
from erp_connectors.files import sync_files
from erp_connectors.rates import load_exchange_rates
from tests.integration.conftest import mqtt_address, scalar, wait_for

END = date(2026, 5, 1)


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(5, END, customers=25, machines=80, years=1)


def _expected(world: World, process_days: int) -> tuple[int, int, int, int]:
    """Telemetry rows, powered days (one 'off' state each), events, as the loader should write."""
    telemetry = days = events = 0
    process_from = END - timedelta(days=process_days)
    for m in world.machines:
        silent = m.silent_from or date.max
        span = cat.SHIFT_SPAN[m.shifts]
        for k, hours in enumerate(m.weekly_hours):
            monday = world.window_start + timedelta(weeks=m.first_week + k)
            for d in range(world.workdays(m.first_week + k)):
                day = monday + timedelta(days=d)
                if day < silent and hours > 0:
                    days += 1
                    telemetry += span * (3 if day >= process_from else 1)
        events += sum(1 for when, _, _ in m.services if when.date() < silent)
        events += sum(2 for when, _, _ in m.faults if when.date() < silent)
    return telemetry, days, events, len(world.machines)


def test_history_loads_as_planned(database_url: str, world: World, tmp_path: Path) -> None:
    loaded = load_history(database_url, world, process_days=30)
    telemetry, days, events, machines = _expected(world, 30)
    assert (loaded.machines, loaded.telemetry_rows, loaded.event_rows) == (
        machines, telemetry, events)
    with psycopg.connect(database_url) as conn:
        def one(query: str) -> object:
            row = conn.execute(query).fetchone()
            assert row is not None
            return row[0]

        assert one("SELECT count(*) FROM machines WHERE tenant = 'demo'"
                   " AND protocol = 'json'") == machines
        assert one("SELECT count(*) FROM telemetry") == telemetry
        assert one("SELECT count(*) FROM machine_events") == events
        assert one("SELECT count(*) FROM machine_states WHERE state = 'off'") == days
        assert one("SELECT count(*) FROM machine_states") == loaded.state_rows
        assert one("SELECT count(*) FROM machine_events WHERE kind = 'maintenance'") == sum(
            len([s for s in m.services if s[0].date() < (m.silent_from or date.max)])
            for m in world.machines)
        assert one("SELECT id FROM metrics WHERE name = 'operating_hours'") == 1
        assert one("SELECT count(*) FROM metrics WHERE name IN ('spindle_load_pct',"
                   " 'coolant_temp_c') AND kind = 'gauge'") == 2
        # The counter never runs backwards.
        assert one("""SELECT count(*) FROM (
                        SELECT value < lag(value) OVER (PARTITION BY machine_id ORDER BY time)
                               AS down
                        FROM telemetry WHERE metric_id = 1) x WHERE down""") == 0
        last: dict[str, float | None] = dict(conn.execute(
            "SELECT m.serial, (SELECT value FROM telemetry t WHERE t.machine_id = m.id"
            " AND t.metric_id = 1 ORDER BY time DESC LIMIT 1) FROM machines m").fetchall())
        # The chunk width for live data is what it was before the load.
        intervals = conn.execute(
            "SELECT hypertable_name, time_interval FROM timescaledb_information.dimensions"
            " WHERE hypertable_name IN ('telemetry', 'machine_states')"
            " ORDER BY hypertable_name").fetchall()
    write_world(world, tmp_path)
    for machine in orjson.loads((tmp_path / MACHINES).read_bytes()):
        if not machine["silent"] and last[machine["serial"]] is not None:
            assert abs(last[machine["serial"]] - machine["operating_hours"]) < 0.01
    assert [i[1] for i in intervals] == [timedelta(days=1), timedelta(days=1)]
    with pytest.raises(HistoryExistsError):
        load_history(database_url, world)


async def test_world_files_sync_through_the_files_connector_without_rejects(
        database_url: str, world: World, tmp_path: Path) -> None:
    write_world(world, tmp_path)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        results = await sync_files(conn, tmp_path, source="demo")
        rates = await load_exchange_rates(conn, tmp_path / "exchange_rates.csv", source="demo")
        counts = {}
        for entity in world.records:
            cur = await conn.execute(f"SELECT count(*) FROM {entity} WHERE source = 'demo'")
            row = await cur.fetchone()
            assert row is not None
            counts[entity] = row[0]
    assert {r.entity: (r.status, r.rows_rejected, r.error) for r in results} == dict.fromkeys(
        world.records, ("succeeded", 0, None))
    assert counts == {entity: len(records) for entity, records in world.records.items()}
    assert rates.rejects == []


async def test_simulator_continues_the_world_machines_live(
        database_url: str, world: World, tmp_path: Path, tenant: str,
        start_ingester: Any) -> None:
    write_world(world, tmp_path)
    fleet = load_fleet(tmp_path / MACHINES)
    silent = [m for m in orjson.loads((tmp_path / MACHINES).read_bytes()) if m["silent"]]
    assert len(fleet) + len(silent) == len(world.machines)
    start_ingester()
    host, port = mqtt_address()
    sim = FleetSimulator(host=host, port=port, tenant=tenant, interval=0.2, fleet=fleet,
                         client_id=f"sim-{tenant}")
    stop = asyncio.Event()
    task = asyncio.create_task(sim.run(stop=stop))
    try:
        rows = await asyncio.to_thread(wait_for, lambda: scalar(
            database_url, "SELECT count(DISTINCT m.serial) FROM telemetry t JOIN machines m"
            " ON m.id = t.machine_id WHERE m.tenant = %s AND t.metric_id = 1",
            (tenant,)) == len(fleet))
    finally:
        stop.set()
        await task
    assert rows
    with psycopg.connect(database_url) as conn:
        first: dict[str, float] = dict(conn.execute(
            "SELECT m.serial, min(t.value) FROM telemetry t JOIN machines m ON m.id ="
            " t.machine_id WHERE m.tenant = %s AND t.metric_id = 1 GROUP BY m.serial",
            (tenant,)).fetchall())
    # Each counter continues from where its history ended.
    assert first == {m.serial: pytest.approx(m.operating_hours, abs=0.01) for m in fleet}


async def test_the_world_served_by_the_fake_odoo_syncs_without_rejects_and_keeps_its_money(
        database_url: str, world: World, tmp_path: Path) -> None:
    """The demo's path: world -> Odoo-shaped records -> Odoo connector -> the same business."""
    from psycopg_pool import AsyncConnectionPool

    from demo.erp.odoo import FakeOdoo, WorldLoader
    from demo.erp.records import read_records
    from erp_connectors.odoo import OdooConnector
    from erp_connectors.sources import sync_sources

    write_world(world, tmp_path)
    with FakeOdoo(db="demo", login="sync", api_key="k") as fake:
        loader = WorldLoader(fake).load(read_records(tmp_path))
        odoo = OdooConnector(fake.url, "demo", "sync", "k")
        async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
            done = await sync_sources(pool, [odoo], reporting_currency="EUR")
        await odoo.aclose()
    assert {(o.entity, o.status, o.rows_rejected) for o in done.outcomes} == {
        (entity, "succeeded", 0) for entity in world.records}
    # Money per customer, in the world and as stored, customers matched through the loader's ids.
    odoo_id = {world_id: f"{model},{rid}"
               for (entity, world_id), (model, rid) in loader.ids.items() if entity == "customers"}
    expected: dict[str, float] = {}
    for invoice in world.records["invoices"]:
        if invoice["status"] != "cancelled":
            key = odoo_id[invoice["customer_external_id"]]
            expected[key] = round(expected.get(key, 0.0) + float(invoice["net_amount"]), 2)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT c.external_id, sum(i.net_amount) FROM invoices i"
            " JOIN customers c ON c.id = i.customer_id WHERE i.status <> 'cancelled'"
            " GROUP BY 1")
        stored = {row[0]: round(float(row[1]), 2) for row in await cur.fetchall()}
        cur = await conn.execute("SELECT count(*) FROM contract_renewals")
        renewals = await cur.fetchone()
    assert stored == expected
    assert renewals is not None
    assert renewals[0] == len(world.records["contract_renewals"])
