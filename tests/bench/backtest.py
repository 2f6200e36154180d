"""The churn-risk backtest on a demo world: the table of docs/churn-risk.md ("Backtest").

Run from the repository root::

    set -a && . /var/lib/oem-retention/env && set +a
    .venv/bin/python -m tests.bench.backtest [--customers 300] [--machines 1500] [--years 3]
        [--cutoff 2025-03-01 --cutoff 2025-05-01 ...] [--rules-at 2025-05-01] [--database NAME]

Figures, not pass/fail. The world is ``World.generate(seed, 2026-05-01, customers=,
machines=, years=)`` (default: the standard world, seed 7). A fresh database (or, with
``--database NAME``, one kept from an earlier run) gets it as the platform does: business
files through ``sync_files`` and ``load_exchange_rates``, telemetry history through
``load_history`` (``--process-days`` of hourly process metrics before the end), then
``refresh_machine_days``. Then, for each cut-off C, ``backtest(conn, cutoff=C,
truth=truth_churn_dates(truth.json))``: trained on the history up to C, scored on the first day
of every month from C to the data's end less 90 days, 180-day horizon, 20% alert rate. With
``--rules-at C`` the same with the rule score forced (a model trained with an unreachable
minimum of churn events). One row per backtest: method (churners in training), scores
(positives), ROC AUC, Brier, precision, recall, churners flagged >= 90 days ahead, median lead,
against the data and, where they differ, against truth.json; and the seconds of each step.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from datetime import date
from typing import Any

import psycopg

from analytics.backtest import Evaluation, backtest, truth_churn_dates
from analytics.churn import train
from analytics.rollups import refresh_machine_days
from core.settings import Settings
from demo.world import World, truth
from tests.bench.analytics import load_world as load_bench_world
from tests.bench.ingest import fresh_database, kept_database

END = date(2026, 5, 1)
CUTOFFS = (date(2025, 3, 1), date(2025, 5, 1), date(2025, 8, 1))
RULES_AT = date(2025, 5, 1)
UNREACHABLE = 10**9  # churn events: a model trained with this minimum is the rule score

Conn = psycopg.AsyncConnection[Any]


def say(line: str) -> None:
    print(line)
    sys.stdout.flush()


async def load_world(url: str, world: World, *, process_days: int) -> None:
    """The world into ``url`` the platform's way (the analytics bench's load), rolled up."""
    await load_bench_world(url, world, process_days=process_days)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        await refresh_machine_days(conn)
        say(f"rollup refreshed in {time.perf_counter() - started:.1f} s")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def row(cutoff: date, method: str, e: Evaluation) -> str:
    """One line of the docs' table (markdown)."""
    ahead = (f"{e.flagged_ahead}/{e.churners} = {_pct(e.flagged_ahead_share)}"
             + (f" ({e.unscored_churners} never scored)" if e.unscored_churners else ""))
    return (f"| {cutoff} | {method} | {e.scores:,} ({e.positives}) |"
            f" {_num(e.roc_auc, '.3f')} | {_num(e.brier, '.4f')} | {_pct(e.precision)} |"
            f" {_pct(e.recall)} | {ahead} | {_num(e.median_lead_days, '.0f')} d |")


async def measure(url: str, world: World, cutoffs: list[date], rules_at: list[date]) -> None:
    truth_dates = truth_churn_dates(truth(world))
    lines = ["| cut-off C | method (churners in training) | scores (positive) | ROC AUC |"
             " Brier | precision | recall | flagged >= 90 d ahead | median lead |",
             "|---|---|---|---|---|---|---|---|---|"]
    async with await psycopg.AsyncConnection.connect(url) as conn:
        runs = [(c, False) for c in cutoffs] + [(c, True) for c in rules_at]
        for cutoff, forced in runs:
            started = time.perf_counter()
            model = (await train(conn, cutoff=cutoff, min_churn_events=UNREACHABLE)
                     if forced else None)
            report = await backtest(conn, cutoff=cutoff, truth=truth_dates, model=model)
            seconds = time.perf_counter() - started
            for line in report.lines():
                say(f"    {line}")
            say(f"backtest at {cutoff}{' (rules forced)' if forced else ''}: {seconds:.1f} s")
            method = ("rules (forced)" if forced
                      else f"{report.method} ({report.churn_events_trained})")
            lines.append(row(cutoff, method, report.data))
            if report.truth is not None and report.truth != report.data:
                lines.append(row(cutoff, f"{method}, against truth.json", report.truth))
    say("")
    for line in lines:
        say(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--machines", type=int, default=1_500)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--process-days", type=int, default=90,
                        help="days before the end with hourly process metrics too")
    parser.add_argument("--cutoff", type=date.fromisoformat, action="append", metavar="DAY",
                        help="a training cut-off (repeat; default: 2025-03-01, 2025-05-01,"
                             " 2025-08-01)")
    parser.add_argument("--rules-at", type=date.fromisoformat, action="append", metavar="DAY",
                        help="a cut-off backtested with the rule score forced (repeat;"
                             " default: 2025-05-01)")
    parser.add_argument("--no-rules", action="store_true", help="no forced-rules backtest")
    parser.add_argument("--database", metavar="NAME",
                        help="keep the loaded world in this database and reuse it on the next"
                             " run (default: a fresh database, dropped afterwards)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    cutoffs = args.cutoff or list(CUTOFFS)
    rules_at = [] if args.no_rules else (args.rules_at or [RULES_AT])
    started = time.perf_counter()
    world = World.generate(args.seed, END, customers=args.customers, machines=args.machines,
                           years=args.years)
    say(f"backtest bench: world seed {args.seed}, {args.customers:,} customers,"
        f" {args.machines:,} machines, {args.years} year(s) to {END}, drawn in"
        f" {time.perf_counter() - started:.1f} s")
    if args.database:
        url, fresh = kept_database(settings, args.database)
        if fresh:
            asyncio.run(load_world(url, world, process_days=args.process_days))
        else:
            say(f"reusing the world loaded in database {args.database}")
        asyncio.run(measure(url, world, cutoffs, rules_at))
        return
    with fresh_database(settings) as url:
        asyncio.run(load_world(url, world, process_days=args.process_days))
        asyncio.run(measure(url, world, cutoffs, rules_at))


if __name__ == "__main__":
    main()
