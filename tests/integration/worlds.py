"""A demo world in a test database, the way the platform gets one: business data through the
files connector, telemetry history by COPY, then the usage rollup."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from analytics.rollups import refresh_machine_days
from demo.world import World, load_history, write_world
from erp_connectors.files import sync_files
from erp_connectors.rates import load_exchange_rates
from tests.integration.conftest import _server_url


async def load_demo_world(url: str, world: World, directory: Path, *,
                          telemetry_until: datetime | None = None,
                          process_days: int = 90) -> None:
    """Load ``world`` into the database at ``url`` (its files written to ``directory``).

    ``telemetry_until``: machine data from then on is left out (the world as known on a day).
    ``process_days``: days before the end with the hourly process metrics (no feature, KPI or
    rollup reads them: 0 loads operating hours, states and events only).
    """
    write_world(world, directory)
    load_history(url, world, process_days=process_days)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if telemetry_until is not None:
            for table in ("telemetry", "machine_states", "machine_events"):
                await conn.execute(sql.SQL("DELETE FROM {} WHERE time >= %s").format(
                    sql.Identifier(table)), (telemetry_until,))
        results = await sync_files(conn, directory, source="demo")
        assert all(r.rows_rejected == 0 and r.error is None for r in results), results
        await load_exchange_rates(conn, directory / "exchange_rates.csv", source="demo")
        await refresh_machine_days(conn)


@contextmanager
def demo_world_database(template_db: str, world: World, directory: Path) -> Iterator[str]:
    """A database of its own holding ``world``, for a module's read-mostly tests; dropped after."""
    name = f"oemr_test_world_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    url = _server_url(name)
    try:
        asyncio.run(load_demo_world(url, world, directory))
        yield url
    finally:
        with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
