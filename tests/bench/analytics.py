"""Analytics: a full recompute against one scan of telemetry, and an incremental refresh.

Run from the repository root::

    set -a && . /var/lib/oem-retention/env && set +a
    .venv/bin/python -m tests.bench.analytics [--machines N] [--years N] [--explain]

Figures, not pass/fail. A fresh database gets a demo world (``demo.world``): its business
files synced with the files connector (``sync_files``, ``load_exchange_rates``) and its telemetry
history bulk-loaded (``load_history``); then ``VACUUM ANALYZE`` (what autovacuum would leave).
Everything below runs in this process, on one connection, each measurement twice, the second
(warm cache) taken:

0. baseline: ``SELECT count(*), sum(value) FROM telemetry``, a sequential scan of the whole
   table, with parallel workers as the server is configured (the ratio's denominator) and, for
   reference, forced to a plain single-process scan;
1. full recompute: what the daily run computes, from scratch: ``refresh_machine_days(since=<first
   day>, helpers=<--rollup-helpers connections>)``, then for the last day ``value_customers``,
   ``assign_segments``, ``score_customers`` and ``take_snapshot`` (the day's KPIs); and apart,
   not in the total, ``kpi_table`` for the last 12 months (cut all, and by country), a report a
   user asks for. Scores use a model trained before (``train``, timed apart: the weekly job).
   Each part's seconds and the total's ratio to (0). The very first refresh (into an empty
   ``machine_days``, before training, which reads it) is timed apart; the two recomputes after
   it compute every machine-day again and find them unchanged (a refresh writes changed rows
   only);
2. incremental: one new hour of telemetry for every machine (its counter one hour on, and the
   two process metrics) by binary COPY, then ``refresh_machine_days`` from its watermark, then
   ``score_customers`` again (reported apart); twice, one new hour each time.

The issue's world is 5,000 machines with a year of hourly telemetry, about 45 M samples. The demo
world sends only in powered hours (a shift span of 8, 16 or 22 hours on workdays), so a year of
it is ~27 M rows; ``--years 2`` (the default) gives ~42 M, the nearest to 45 M. ``--explain``
adds a third, untimed recompute with ``auto_explain`` and prints the plans of the statements
slower than ``--explain-over`` seconds, to show where the time goes; ``--no-jit`` measures with
``SET jit = off`` in the session, to compare (the default is the server's configuration; the
incremental refresh is also measured with jit off after the rest, two more hours).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from analytics.churn import ChurnModel, score_customers, train
from analytics.customer_value import value_customers
from analytics.kpi import ALL, Cut, kpi_table
from analytics.kpi_snapshot import take_snapshot
from analytics.periods import Period
from analytics.rollups import refresh_machine_days
from analytics.segments import assign_segments
from core import pgcopy
from core.settings import Settings
from core.sql import queries
from demo.world import World, load_history, write_world
from erp_connectors.files import sync_files
from erp_connectors.rates import load_exchange_rates
from tests.bench.ingest import fresh_database, kept_database

END = date(2026, 5, 1)
SEED = 7
TARGET_RATIO = 3.0
TARGET_INCREMENTAL_S = 1.0
KPI_MONTHS = 12
_HOUR_US = 3_600_000_000

Conn = psycopg.AsyncConnection[Any]
T = TypeVar("T")


def _q() -> dict[str, str]:
    return queries("tests.bench", "sql/analytics.sql")


def say(line: str) -> None:
    print(line)
    sys.stdout.flush()


async def timed(work: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await work()
    return result, time.perf_counter() - started


async def _one(conn: Conn, query: str, params: dict[str, Any] | None = None) -> tuple[Any, ...]:
    cur = await conn.execute(query, params)
    row: tuple[Any, ...] | None = await cur.fetchone()
    assert row is not None
    return row


# -- the world -----------------------------------------------------------------------------------


async def load_world(url: str, world: World, *, process_days: int) -> None:
    with tempfile.TemporaryDirectory(prefix="oemr-bench-") as tmp:
        directory = Path(tmp)
        write_world(world, directory)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            results = await sync_files(conn, directory, source="demo")
            failed = [r for r in results if r.error is not None or r.rows_rejected]
            if failed:
                raise RuntimeError(f"business data did not sync cleanly: {failed}")
            await load_exchange_rates(conn, directory / "exchange_rates.csv", source="demo")
            say(f"business data synced in {time.perf_counter() - started:.1f} s"
                f" ({sum(r.rows_upserted for r in results):,} rows)")
    loaded = await asyncio.to_thread(load_history, url, world, process_days=process_days,
                                     progress=lambda line: say(f"    {line}"))
    say(f"history loaded in {loaded.seconds:.1f} s: {loaded.telemetry_rows:,} telemetry,"
        f" {loaded.state_rows:,} state and {loaded.event_rows:,} event rows"
        f" ({loaded.rows_per_second:,.0f} rows/s)")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        _, seconds = await timed(lambda: conn.execute(_q()["vacuum_analyze"]))
        say(f"VACUUM ANALYZE in {seconds:.1f} s")


# -- 0. baseline ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Baseline:
    parallel_s: float
    plain_s: float
    workers: int
    rows: int


async def baseline(conn: Conn) -> Baseline:
    q = _q()

    async def scan() -> int:
        return int((await _one(conn, q["scan_telemetry"]))[0])

    workers = int((await _one(conn, q["parallel_workers"]))[0])
    runs = [await timed(scan) for _ in range(2)]
    await conn.execute(q["no_parallel_workers"])
    plain = [await timed(scan) for _ in range(2)]
    await conn.execute(q["reset_parallel_workers"])
    say(f"(0) scan of telemetry: {runs[0][1]:.2f} s, {runs[1][1]:.2f} s with up to {workers}"
        f" parallel workers; {plain[0][1]:.2f} s, {plain[1][1]:.2f} s plain")
    return Baseline(runs[1][1], plain[1][1], workers, runs[1][0])


# -- 1. full recompute ---------------------------------------------------------------------------


@dataclass(slots=True)
class Recompute:
    parts: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)  # timed, not in the total
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def kpi_periods(end: date, months: int = KPI_MONTHS) -> list[Period]:
    """The last ``months`` whole months before ``end``."""
    last = Period.containing("month", end - timedelta(days=1))
    if last.end > end:
        last = last.previous()
    periods = [last]
    while len(periods) < months:
        periods.insert(0, periods[0].previous())
    return periods


async def recompute(conn: Conn, *, first_day: date, end: date, model: ChurnModel,
                    currency: str, kpi_months: int = KPI_MONTHS,
                    helpers: Sequence[Conn] = ()) -> Recompute:
    """What the daily run computes, from scratch: every machine-day, then the day's values,
    segments, scores and KPI snapshot; then, apart, a KPI table of ``kpi_months`` months."""
    out = Recompute()
    periods = kpi_periods(end, kpi_months)
    done, out.parts["rollup"] = await timed(lambda: refresh_machine_days(
        conn, since=first_day, helpers=helpers))
    out.notes.append(f"rollup from {done.from_day} on {1 + len(helpers)} connection(s):"
                     f" {done.rows_changed:,} machine-days written")
    say(f"    rollup {out.parts['rollup']:.1f} s")
    value, out.parts["customer value"] = await timed(lambda: value_customers(
        conn, on=end, reporting_currency=currency))
    _, out.parts["segments"] = await timed(lambda: assign_segments(
        conn, on=end, reporting_currency=currency))
    scores, out.parts["scores"] = await timed(lambda: score_customers(
        conn, on=end, model=model, reporting_currency=currency))
    snapshot, out.parts["kpi snapshot"] = await timed(lambda: take_snapshot(
        conn, on=end, reporting_currency=currency))
    say(f"    value {out.parts['customer value']:.1f} s, segments {out.parts['segments']:.1f} s,"
        f" scores {out.parts['scores']:.1f} s, kpi snapshot {out.parts['kpi snapshot']:.1f} s")
    out.notes.append(f"{len(scores):,} customers scored ({model.method_});"
                     f" {value.customers:,} valued ({value.parts_method}, {value.contract_method});"
                     f" KPI snapshot of {end}: {snapshot.values:,} values; by dimension "
                     + ", ".join(f"{d} {t:.1f} s" for d, t in
                                 snapshot.seconds_by_dimension.items()))
    kpis, out.extra["kpi table, 12 months, all"] = await timed(lambda: kpi_table(
        conn, periods, ALL, reporting_currency=currency))
    by_country, out.extra["kpi table, 12 months, by country"] = await timed(lambda: kpi_table(
        conn, periods, Cut("country"), reporting_currency=currency))
    out.notes.append(f"KPI tables {periods[0]}..{periods[-1]}: {len(kpis):,} values (all),"
                     f" {len(by_country):,} (by country)")
    return out


# -- 2. incremental ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incremental:
    hour: datetime
    rows: int
    copy_s: float
    refresh_s: float
    from_day: date
    rows_changed: int
    score_s: float


async def new_hour(conn: Conn) -> tuple[datetime, int, float]:
    """One more hour of telemetry for every machine, by binary COPY as the ingester writes it."""
    q = _q()
    cur = await conn.execute(q["latest_counters"])
    latest = await cur.fetchall()
    cur = await conn.execute(q["metric_ids"], {"names": ["operating_hours", "spindle_load_pct",
                                                         "coolant_temp_c"]})
    ids = {name: id_ for id_, name in await cur.fetchall()}
    last = max(t for _, t, _ in latest)
    hour = last.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    at = (hour - pgcopy.EPOCH) // timedelta(microseconds=1)
    pack = pgcopy.TELEMETRY_ROW.pack
    data = bytearray(pgcopy.HEADER)
    for machine_id, _, counter in latest:
        # Ran the whole hour at a steady load.
        for metric, value in (("operating_hours", counter + 1.0), ("spindle_load_pct", 70.0),
                              ("coolant_temp_c", 25.2)):
            data += pack(4, 8, at, 4, machine_id, 4, ids[metric], 8, value)
    data += pgcopy.TRAILER
    started = time.perf_counter()
    async with conn.transaction(), conn.cursor() as c, c.copy(q["copy_telemetry"]) as copy:
        await copy.write(data)
    return hour, 3 * len(latest), time.perf_counter() - started


async def incremental(conn: Conn, *, model: ChurnModel, currency: str) -> Incremental:
    hour, rows, copy_s = await new_hour(conn)
    done, refresh_s = await timed(lambda: refresh_machine_days(conn))
    _, score_s = await timed(lambda: score_customers(conn, on=hour.date(), model=model,
                                                     reporting_currency=currency))
    return Incremental(hour, rows, copy_s, refresh_s, done.from_day, done.rows_changed, score_s)


# -- where the time goes -------------------------------------------------------------------------


async def explain_recompute(conn: Conn, *, over_s: float, **kwargs: Any) -> list[str]:
    """A recompute with auto_explain on: the plans of statements slower than ``over_s``."""
    plans: list[str] = []

    def keep(notice: psycopg.errors.Diagnostic) -> None:
        if notice.message_primary and "plan:" in notice.message_primary:
            plans.append(notice.message_primary)

    conn.add_notice_handler(keep)
    for setting in ("LOAD 'auto_explain'",
                    f"SET auto_explain.log_min_duration = {int(over_s * 1000)}",
                    "SET auto_explain.log_analyze = on", "SET auto_explain.log_buffers = on",
                    "SET auto_explain.log_nested_statements = on",
                    "SET client_min_messages = log"):
        await conn.execute(setting)  # session settings only; no value from outside is formatted
    try:
        await recompute(conn, **kwargs)
    finally:
        await conn.execute("RESET client_min_messages")
        await conn.execute("RESET auto_explain.log_min_duration")
        conn.remove_notice_handler(keep)
    return plans


def _trimmed(plan: str, lines: int) -> str:
    """The plan's first ``lines`` lines (the query text and the top nodes) and its JIT summary."""
    text = plan.splitlines()
    # The query text comes first: its first line names it, the plan starts at the first node.
    top = next((i for i, line in enumerate(text) if "(cost=" in line), 0)
    jit = next((i for i, line in enumerate(text) if line.startswith("JIT:")), len(text))
    body = text[top:jit]
    head = [*text[:2], "...", *body[:lines]]
    if len(body) > lines:
        head.append(f"    ... {len(body) - lines} more plan lines")
    return "\n".join(head + text[jit:])


# -- the run -------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "target met" if ok else "above target"


def print_table(base: Baseline, runs: list[Recompute], *, empty_s: float, train_s: float,
                increments: list[Incremental]) -> None:
    first, second = runs[0], runs[-1]
    say("")
    say(f"{'measure':<44}{'run 1 s':>10}{'run 2 s':>10}{'x scan':>9}")
    say(f"{'(0) scan of telemetry (parallel as configured)':<44}{'':>10}"
        f"{base.parallel_s:>10.2f}{1:>9.2f}")
    say(f"{'    plain scan (no parallel workers)':<44}{'':>10}{base.plain_s:>10.2f}"
        f"{base.plain_s / base.parallel_s:>9.2f}")
    for part, seconds in second.parts.items():
        say(f"{'(1) ' + part:<44}{first.parts[part]:>10.2f}{seconds:>10.2f}"
            f"{seconds / base.parallel_s:>9.2f}")
    ratio = second.total / base.parallel_s
    say(f"{'(1) full recompute, total':<44}{first.total:>10.2f}{second.total:>10.2f}"
        f"{ratio:>9.2f}   target <= {TARGET_RATIO:g}: {_verdict(ratio <= TARGET_RATIO)}")
    say(f"    ratio to the plain scan: {second.total / base.plain_s:.2f}")
    for part, seconds in second.extra.items():
        say(f"{'    ' + part:<44}{first.extra[part]:>10.2f}{seconds:>10.2f}"
            f"{seconds / base.parallel_s:>9.2f}")
    say(f"{'    rollup into an empty machine_days':<44}{'':>10}{empty_s:>10.2f}"
        f"{empty_s / base.parallel_s:>9.2f}")
    say(f"{'    churn model training (weekly job)':<44}{'':>10}{train_s:>10.2f}"
        f"{train_s / base.parallel_s:>9.2f}")
    for note in second.notes:
        say(f"    {note}")
    say(f"{'(2) incremental, one new hour':<44}{'hour 1 s':>10}{'hour 2 s':>10}")
    a, b = increments[0], increments[-1]
    say(f"{'    COPY of the hour':<44}{a.copy_s:>10.3f}{b.copy_s:>10.3f}")
    say(f"{'    refresh_machine_days (watermark)':<44}{a.refresh_s:>10.3f}{b.refresh_s:>10.3f}"
        f"   target < {TARGET_INCREMENTAL_S:g} s:"
        f" {_verdict(b.refresh_s < TARGET_INCREMENTAL_S)}")
    say(f"{'    score_customers':<44}{a.score_s:>10.3f}{b.score_s:>10.3f}")
    for inc in increments:
        say(f"    hour {inc.hour:%Y-%m-%d %H:%M} UTC: {inc.rows:,} rows; refresh from"
            f" {inc.from_day}, {inc.rows_changed:,} machine-days written")


async def measure(url: str, world: World, args: argparse.Namespace, currency: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if args.no_jit:
            await conn.execute(_q()["jit_off"])
        telemetry, states, events, machines, customers, size = await _one(
            conn, _q()["table_sizes"])
        say(f"database: {telemetry:,} telemetry rows ({size}), {states:,} states,"
            f" {events:,} events, {machines:,} machines, {customers:,} customers")
        base = await baseline(conn)
        helpers = [await psycopg.AsyncConnection.connect(url, autocommit=True)
                   for _ in range(args.rollup_helpers)]
        # The first rollup before training: features read machine_days.
        done, first_s = await timed(lambda: refresh_machine_days(conn, since=world.window_start,
                                                                 helpers=helpers))
        say(f"first rollup: {first_s:.1f} s, {done.rows_changed:,} rows written (machine_days"
            f" was empty unless the database was reused)")
        model, train_s = await timed(lambda: train(conn, cutoff=END,
                                                   reporting_currency=currency))
        say(f"churn model trained until {END} in {train_s:.1f} s: {model.method_},"
            f" {model.churn_events_} churn events")
        runs = []
        for n in (1, 2):
            run = await recompute(conn, first_day=world.window_start, end=END, model=model,
                                  currency=currency, kpi_months=args.kpi_months,
                                  helpers=helpers)
            say(f"(1) full recompute {n}: " + ", ".join(
                f"{part} {s:.1f} s" for part, s in run.parts.items()) + f"; {run.total:.1f} s")
            runs.append(run)
        increments = []
        for n in (1, 2):
            inc = await incremental(conn, model=model, currency=currency)
            say(f"(2) new hour {n}: COPY {inc.copy_s:.3f} s, refresh {inc.refresh_s:.3f} s,"
                f" scores {inc.score_s:.3f} s")
            increments.append(inc)
        for helper in helpers:
            await helper.close()
        no_jit = []
        if not args.no_jit:
            await conn.execute(_q()["jit_off"])
            for n in (1, 2):
                inc = await incremental(conn, model=model, currency=currency)
                say(f"(2) new hour {n}, jit off: COPY {inc.copy_s:.3f} s, refresh"
                    f" {inc.refresh_s:.3f} s, scores {inc.score_s:.3f} s")
                no_jit.append(inc)
            await conn.execute(_q()["reset_jit"])
        print_table(base, runs, empty_s=first_s, train_s=train_s, increments=increments)
        if no_jit:
            a, b = no_jit
            say(f"{'    the same with SET jit = off: refresh':<44}{a.refresh_s:>10.3f}"
                f"{b.refresh_s:>10.3f}")
            say(f"{'                                 score_customers':<44}{a.score_s:>10.3f}"
                f"{b.score_s:>10.3f}")
        if args.explain:
            plans = await explain_recompute(conn, over_s=args.explain_over,
                                            first_day=world.window_start, end=END, model=model,
                                            currency=currency, kpi_months=args.kpi_months)
            say(f"\nstatements over {args.explain_over:g} s in a recompute (auto_explain,"
                f" timing on, so slower than above): {len(plans)}")
            for plan in plans:
                say("\n" + _trimmed(plan, args.explain_lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--machines", type=int, default=5_000)
    parser.add_argument("--customers", type=int, default=None,
                        help="default: a fifth of the machines (the demo world's ratio)")
    parser.add_argument("--years", type=int, default=2)
    parser.add_argument("--process-days", type=int, default=90,
                        help="days before the end with hourly process metrics too")
    parser.add_argument("--kpi-months", type=int, default=KPI_MONTHS,
                        help="months of KPIs in a recompute (the issue's: 12)")
    parser.add_argument("--explain", action="store_true",
                        help="print the plans of the slow statements of a recompute")
    parser.add_argument("--explain-over", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--explain-lines", type=int, default=60,
                        help="lines of each plan printed (then its JIT summary)")
    parser.add_argument("--rollup-helpers", type=int, default=1, metavar="N",
                        help="more connections computing rollup slices at once (default 1: two"
                             " in all, one per core of the reference machine)")
    parser.add_argument("--database", metavar="NAME",
                        help="keep the loaded world in this database and reuse it on the next"
                             " run (default: a fresh database, dropped afterwards)")
    parser.add_argument("--no-jit", action="store_true",
                        help="SET jit = off for the measuring session (to compare)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    customers = args.customers or max(10, args.machines // 5)
    started = time.perf_counter()
    world = World.generate(SEED, END, customers=customers, machines=args.machines,
                           years=args.years)
    say(f"analytics bench: world seed {SEED}, {customers:,} customers, {args.machines:,}"
        f" machines, {args.years} year(s) to {END}, drawn in {time.perf_counter() - started:.1f}"
        f" s; reporting currency {settings.reporting_currency}")
    if args.database:
        url, fresh = kept_database(settings, args.database)
        if fresh:
            asyncio.run(load_world(url, world, process_days=args.process_days))
        else:
            say(f"reusing the world loaded in database {args.database}")
        asyncio.run(measure(url, world, args, settings.reporting_currency))
        return
    with fresh_database(settings) as url:
        asyncio.run(load_world(url, world, process_days=args.process_days))
        asyncio.run(measure(url, world, args, settings.reporting_currency))


if __name__ == "__main__":
    main()
