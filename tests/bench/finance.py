"""Time the finance reads (analytics' functions behind /api/v1/finance) on a loaded database.

Run from the repository root, against the demo's database or any other holding a world::

    set -a && . /var/lib/oem-retention/env && set +a
    .venv/bin/python -m tests.bench.finance [--on 2026-12-07] [--repeat 5] [--database-url URL]

Read-only: nothing is written (the pay-per-use terms are read if migration 022 is there).
Figures, not pass/fail: per read, the median of ``--repeat`` runs in milliseconds and the rows
it answered. ``--on`` is the day the reads answer as of (default: the latest scoring day).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import psycopg

from analytics import billing, churn, customer_value, receivables, renewals
from core.paging import PageRequest
from core.settings import Settings

Read = Callable[[psycopg.AsyncConnection[Any]], Awaitable[int]]


def _reads(on: date, currency: str) -> dict[str, Read]:
    pipe = renewals.PipelineFilter(on=on, reporting_currency=currency, within_days=90)
    work = billing.UnbilledFilter(on=on, reporting_currency=currency,
                                  since=on - timedelta(days=365))
    owed = receivables.ReceivablesFilter(on=on, reporting_currency=currency)
    month = on.replace(day=1)
    usage = billing.BillableFilter(first_month=(month - timedelta(days=300)).replace(day=1),
                                   last_month=month)

    async def page(fetch: Awaitable[Any]) -> int:
        return len((await fetch).items)

    async def count(fetch: Awaitable[list[Any] | dict[Any, Any]]) -> int:
        return len(await fetch)

    return {
        "renewals page (90 days, 50 by revenue at risk)": lambda c: page(renewals.pipeline(
            c, PageRequest(limit=50, sort="revenue_at_risk", descending=True), where=pipe)),
        "revenue at risk by month x country (365 days)": lambda c: count(
            renewals.at_risk_by_month(c, where=renewals.PipelineFilter(
                on=on, reporting_currency=currency, within_days=365, due="notice"),
                by_dimension="country")),
        "revenue at risk by segment (12 months, tier)": lambda c: count(
            churn.revenue_at_risk_by_segment(c, segment="tier", since=on - timedelta(days=365),
                                             until=on)),
        "receivables page (50 by overdue amount)": lambda c: page(receivables.per_customer(
            c, PageRequest(limit=50, sort="overdue_amount", descending=True), where=owed)),
        "clv page (50 by total)": lambda c: page(customer_value.values_page(
            c, PageRequest(limit=50, sort="total_clv", descending=True), on=on,
            reporting_currency=currency)),
        "clv by segment (country)": lambda c: count(customer_value.values_by_segment(
            c, on=on, reporting_currency=currency, dimension="country")),
        "unbilled page (a year, 50 newest)": lambda c: page(billing.unbilled(
            c, PageRequest(limit=50, sort="occurred_at", descending=True), where=work)),
        "unbilled summary (a year)": lambda c: _items(billing.unbilled_total(c, where=work)),
        "billable usage page (11 months)": lambda c: page(billing.billable(
            c, PageRequest(limit=50, sort="contract"), where=usage)),
    }


async def _items(total: Awaitable[billing.UnbilledTotal]) -> int:
    return (await total).items


async def main(url: str, on: date | None, repeat: int, currency: str) -> None:
    """Print each read's median time and row count."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if on is None:
            cur = await conn.execute("SELECT max(scored_on) FROM churn_scores")
            row = await cur.fetchone()
            on = row[0] if row and row[0] else date.today()
        print(f"finance reads on {on} ({currency}), median of {repeat} runs")
        for name, read in _reads(on, currency).items():
            times, rows = [], 0
            for _ in range(repeat):
                start = time.perf_counter()
                try:
                    rows = await read(conn)
                except psycopg.errors.UndefinedTable:
                    rows = -1
                    break
                times.append(time.perf_counter() - start)
            shown = f"{statistics.median(times) * 1000:8.1f} ms" if times else " no table"
            print(f"  {name:<50} {shown}  {rows} rows")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--on", type=date.fromisoformat, default=None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = Settings()
    asyncio.run(main(args.database_url or settings.database_url, args.on, args.repeat,
                     settings.reporting_currency))
