"""The fleet list at 100,000 machines: how long the rating takes and what a page costs.

Builds a synthetic installed base into a database of its own (created here, dropped after
unless ``--keep``), rates it with ``analytics.fleet.refresh_fleet_status``, then runs the fleet
list's own query (``analytics.fleet.list_machines``) as the API's role under row-level
security, for every sort, first page and a deep page, with and without filters, and prints the
median time and the plan's top node of each. Figures, not pass/fail (docs/api-fleet.md keeps
them).

    python -m tests.bench.fleet --machines 100000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from analytics import fleet
from core.paging import PageRequest
from core.settings import Settings
from core.sql import queries
from oem_retention import schema

BUILD = ("customers", "sites", "installed_base", "machines", "machine_days", "states",
         "contracts", "analyze")


def _q() -> dict[str, str]:
    return queries("tests.bench", "sql/fleet.sql")


async def _build(url: str, machines: int) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for step in BUILD:
            started = time.perf_counter()
            await conn.execute(_q()[step], {"machines": machines})
            print(f"build {step}: {time.perf_counter() - started:.1f} s")


async def _timed_page(url: str, page: PageRequest, filters: fleet.FleetFilter, *,
                      customer: int | None = None, runs: int = 5) -> tuple[float, int]:
    times = []
    count = 0
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for _ in range(runs):
            async with conn.transaction():
                if customer is None:
                    await conn.execute(_q()["as_api"])
                else:
                    await conn.execute(_q()["as_customer"], {"customer_id": str(customer)})
                started = time.perf_counter()
                got = await fleet.list_machines(conn, page, filters)
                times.append(time.perf_counter() - started)
                count = len(got.items)
    return statistics.median(times) * 1000, count


async def _measure(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        done = await fleet.refresh_fleet_status(conn)
        print(f"refresh_fleet_status: {done.written} machines in "
              f"{time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        await fleet.refresh_fleet_status(conn)
        print(f"refresh_fleet_status again: {time.perf_counter() - started:.1f} s")
        await conn.execute("ANALYZE fleet_status")
        cur = await conn.execute(_q()["sizes"])
        print("sizes:", await cur.fetchone())
        cur = await conn.execute("SELECT serial, utilisation_key, trend_key, last_seen_key,"
                                 " customer_name, installed_base_id FROM fleet_status"
                                 " ORDER BY installed_base_id OFFSET 50000 LIMIT 1")
        middle: Any = await cur.fetchone()
    after = {"serial": middle[0], "utilisation": middle[1], "utilisation_trend": middle[2],
             "last_seen": middle[3], "customer": middle[4]}
    none = fleet.FleetFilter()
    cases = [("no filter", none), ("band at_risk", fleet.FleetFilter(band=("at_risk",))),
             ("country DE + uncovered", fleet.FleetFilter(country=("DE",),
                                                          coverage=("uncovered",))),
             ("search 'er 0042'", fleet.FleetFilter(search="er 0042"))]
    for sort, value in after.items():
        for descending in (False, True):
            for label, filters in cases:
                first = PageRequest(limit=50, sort=sort, descending=descending)
                deep = PageRequest(limit=50, sort=sort, descending=descending,
                                   after=(value, middle[5]))
                ms1, n1 = await _timed_page(url, first, filters)
                ms2, n2 = await _timed_page(url, deep, filters)
                print(f"{'-' if descending else ''}{sort:18} {label:24} first page {ms1:7.1f} ms"
                      f" ({n1} rows), page after row 50,000 {ms2:7.1f} ms ({n2} rows)")
    ms, n = await _timed_page(url, PageRequest(limit=50, sort="serial"),
                              fleet.FleetFilter(portal_customer=4242), customer=4242)
    print(f"portal user (customer 4242), serial, first page: {ms:.1f} ms ({n} rows)")
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await conn.execute(_q()["as_api"])
        started = time.perf_counter()
        summary = await fleet.fleet_summary(conn, none)
        print(f"summary: {(time.perf_counter() - started) * 1000:.1f} ms, {summary.health_band}")


def main() -> None:
    """Build, rate, measure; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--reuse", metavar="URL", help="measure a database kept before")
    args = parser.parse_args()
    if args.reuse:
        asyncio.run(_measure(args.reuse))
        return
    settings = Settings()
    name = f"oemr_bench_fleet_{uuid.uuid4().hex[:8]}"
    admin = settings.database_url.rsplit("/", 1)[0] + "/postgres"
    url = settings.database_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        schema.migrate(url)
        asyncio.run(_build(url, args.machines))
        asyncio.run(_measure(url))
    finally:
        if args.keep:
            print("kept", url)
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


if __name__ == "__main__":
    main()
