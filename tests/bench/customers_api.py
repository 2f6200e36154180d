"""The reads behind the customer and segment routes: seconds per call on a database.

Run from the repository root, with the env loaded::

    .venv/bin/python -m tests.bench.customers_api [--on 2026-12-07] [--customer 68]

Figures, not pass/fail. Read-only (every call's transaction is rolled back), on
``OEMR_DATABASE_URL`` (the demo's database: the standard world), with dict rows as the API's
connections have them; each call three times, the best and all three printed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from analytics import customers, segment_kpis
from analytics.kpi import DIMENSIONS
from core.paging import PageRequest
from core.settings import Settings


async def _best(name: str, call: Callable[[], Awaitable[Any]]) -> None:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    print(f"{name:50s} {min(times):6.3f} s  ({', '.join(f'{t:.3f}' for t in times)})")


async def _run(url: str, *, on: date, customer: int, currency: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        by_name = PageRequest(limit=50, sort="name")
        by_revenue = PageRequest(limit=50, sort="revenue_12m", descending=True)
        cuts = [d for d in DIMENSIONS if d != "all"]
        calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("customer list, a page of 50 by name", lambda: customers.list_customers(
                conn, by_name, on=on, reporting_currency=currency)),
            ("customer list, by revenue, country DE", lambda: customers.list_customers(
                conn, by_revenue, on=on, reporting_currency=currency,
                where=customers.CustomerFilter(country="DE"))),
            (f"360 of customer {customer}", lambda: customers.customer_360(
                conn, customer, on=on, reporting_currency=currency)),
            ("its invoices, a page of 50", lambda: customers.invoices_page(
                conn, customer, PageRequest(limit=50, sort="issued_on", descending=True),
                on=on)),
            ("segments and their customers, every cut", lambda: segment_kpis.segment_counts(
                conn, on=on)),
            ("every KPI per country, month, with trends", lambda: segment_kpis.segment_kpis(
                conn, dimension="country", period_kind="month")),
            ("slipping by country, 4 quarters", lambda: segment_kpis.slipping_segments(
                conn, dimensions=["country"], period_kind="quarter", on=on, periods=4,
                reporting_currency=currency)),
            ("slipping, every cut, 4 quarters", lambda: segment_kpis.slipping_segments(
                conn, dimensions=cuts, period_kind="quarter", on=on, periods=4,
                reporting_currency=currency)),
        ]
        for name, call in calls:
            await _best(name, call)
        await conn.rollback()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--on", type=date.fromisoformat, default=datetime.now(UTC).date())
    parser.add_argument("--customer", type=int, default=68)
    args = parser.parse_args()
    settings = Settings()
    asyncio.run(_run(settings.database_url, on=args.on, customer=args.customer,
                     currency=settings.reporting_currency))


if __name__ == "__main__":
    main()
