"""The one command line of oem-retention."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import orjson
import psycopg
import typer
from rich.console import Console

from core import timescale
from core.errors import OemrError
from core.settings import Settings
from oem_retention import render, schema
from oem_retention.api_commands import api_app
from oem_retention.demo_commands import demo_app

app = typer.Typer(help="oem-retention: after-sales retention for machine builders.",
                  no_args_is_help=True)
db_app = typer.Typer(help="The database: migrations and storage policies.", no_args_is_help=True)
ingest_app = typer.Typer(help="MQTT ingest into TimescaleDB.", no_args_is_help=True)
erp_app = typer.Typer(help="ERP sync: customers, installed base, contracts, invoices, orders.",
                      no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ingest_app, name="ingest")
analytics_app = typer.Typer(help="Retention analytics: rollups, customer value, churn risk.",
                            no_args_is_help=True)
app.add_typer(erp_app, name="erp")
app.add_typer(analytics_app, name="analytics")
app.add_typer(demo_app, name="demo")
app.add_typer(api_app, name="api")
console = Console()


def _settings() -> Settings:
    return Settings()


def _until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)``; SIGINT or SIGTERM sets ``stop``."""

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(run())


def _logging(verbose: bool, *, level: int = logging.INFO) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # One line per HTTP request or scheduler tick drowns what matters.
        for chatty in ("httpx", "httpcore", "apscheduler"):
            logging.getLogger(chatty).setLevel(logging.WARNING)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations and changed SQL definitions, then the storage policies."""
    # What was applied is printed below; the runner's own INFO lines would say it twice.
    _logging(False, level=logging.WARNING)
    settings = _settings()
    try:
        run = schema.migrate(settings.database_url)
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            caps = timescale.apply_storage_policies(conn, settings)
    except (OemrError, psycopg.Error) as exc:
        console.print(f"[red]migration failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    for line in run.report():
        console.print(line, markup=False)
    console.print(
        f"database up to date; TimescaleDB {caps.timescaledb_version} ({caps.license} license):"
        f" compression {'on' if caps.compression else 'not available'},"
        f" retention {'policy' if caps.retention_policies else 'by scheduled job'}")


@db_app.command("retention")
def db_retention() -> None:
    """Drop telemetry chunks older than OEMR_TELEMETRY_RETENTION (for servers without policies)."""
    from core.retention import run_retention

    settings = _settings()
    done = run_retention(settings)
    if done.error is not None:
        console.print(f"[red]retention failed:[/red] {done.error}")
        raise typer.Exit(1)
    if done.by_policy:
        console.print("the server runs a retention policy: nothing to do")
        return
    console.print(f"dropped {done.dropped} telemetry chunk(s) older than"
                  f" {settings.telemetry_retention}")


@ingest_app.command("run")
def ingest_run(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run one ingester until Ctrl-C (several may share the load through a shared subscription)."""
    from ingest.service import serve

    _logging(verbose)
    try:
        asyncio.run(serve(_settings()))
    except OemrError as exc:  # tables it cannot write: refused before taking any message
        typer.echo(f"ingester not started: {exc}", err=True)
        raise typer.Exit(1) from exc


@ingest_app.command("health")
def ingest_health(max_age: float = 10.0) -> None:
    """Print the ingester's counters; exit 1 if it is stale, disconnected or cannot write."""
    from ingest.service import health_problems, status_path

    path = status_path(_settings())
    try:
        status = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        console.print(f"[red]no status at {path}: the ingester is not running[/red]")
        raise typer.Exit(1) from None
    age = time.time() - status["updated_at"]
    console.print_json(data={**status, "age_s": round(age, 1)})
    problems = health_problems(status, age_s=age, max_age_s=max_age)
    for problem in problems:
        console.print(f"[red]unhealthy:[/red] {problem}", highlight=False)
    if problems:
        raise typer.Exit(1)


@ingest_app.command("replay")
def ingest_replay(
    reason: Annotated[str | None, typer.Option(
        help="Only dead letters whose reason contains this text (case-insensitive).")] = None,
    since: Annotated[str | None, typer.Option(
        help="Only those last received since this time (ISO 8601, UTC if no zone) or within"
             " this PostgreSQL interval ('7 days').")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decode and report only.")] = False,
) -> None:
    """Decode dead letters again: store what now decodes (once), keep the rest, re-reasoned.

    With today's decoders and settings; docs/mqtt.md, "Replaying dead letters".
    """
    from ingest.replay import replay

    _logging(False, level=logging.WARNING)
    try:
        report = asyncio.run(replay(_settings(), reason=reason, since=since, dry_run=dry_run))
    except (OemrError, psycopg.Error) as exc:
        console.print(f"[red]replay failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    for line in report.lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@ingest_app.command("quality")
def ingest_quality(
    since: Annotated[str, typer.Option(help="How far back, as a PostgreSQL interval.")] = "7 days",
    limit: int = 50,
) -> None:
    """Show where dead letters come from (and why) and what Sparkplug traffic was lost."""
    from ingest import quality

    settings = _settings()
    try:
        with psycopg.connect(settings.database_url) as conn:
            sources = quality.dead_letter_sources(conn, since=since, limit=limit)
            gaps = quality.sparkplug_gap_days(conn, since=since, limit=limit)
    except psycopg.Error as exc:
        console.print(f"[red]cannot read the data quality views:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(render.dead_letter_sources(sources, since) if sources
                  else f"no dead letters in the last {since}")
    console.print(render.sparkplug_losses(gaps, since) if gaps
                  else f"no Sparkplug losses in the last {since}")


async def _sync_sources(settings: Settings, only: list[str] | None, full: bool,
                        progress: Any = None) -> Any:
    from erp_connectors.schedule import sync_now
    from oem_retention.wiring import connectors

    return await sync_now(settings, connectors(settings, only), full=full, progress=progress)


@erp_app.command("sync")
def erp_sync(
    source: Annotated[list[str] | None, typer.Option(
        "--source", "-s", help="Only this source (repeatable): files, odoo, business_central,"
                               " sap. Default: every configured one.")] = None,
    full: Annotated[bool, typer.Option(
        help="Read everything again from the start (and mark deleted what is gone).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Sync the ERP sources now, then print and store the data-quality report."""
    from erp_connectors.sync import SyncError
    from oem_retention.wiring import SourceConfigError, configured_sources

    _logging(verbose, level=logging.WARNING)  # the progress display and report say the rest
    settings = _settings()
    if not configured_sources(settings):
        console.print("[red]no ERP source configured[/red]: set OEMR_ERP_FILES_DIR,"
                      " OEMR_ERP_ODOO_URL, OEMR_ERP_BC_API_URL or OEMR_ERP_SAP_URL"
                      " (docs/erp-*.md)")
        raise typer.Exit(2)
    with render.sync_progress(console) as advance:
        try:
            done = asyncio.run(_sync_sources(settings, source, full, advance))
        except (SourceConfigError, SyncError, OemrError, psycopg.Error) as exc:
            console.print(f"[red]sync failed:[/red] {exc}")
            raise typer.Exit(1) from exc
    render.print_sync_report(console, {"id": done.report_id, **done.report})
    if not done.ok:
        raise typer.Exit(1)


@erp_app.command("rates")
def erp_rates(path: Annotated[Path, typer.Argument(
        help="exchange_rates.csv, a workbook, or a directory holding one")]) -> None:
    """Load exchange rates into the reporting currency (amount x rate); bad rows are listed."""
    from erp_connectors.rates import load_exchange_rates
    from erp_connectors.sync import SyncError

    settings = _settings()

    async def load() -> Any:
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            return await load_exchange_rates(conn, path)

    try:
        result = asyncio.run(load())
    except (SyncError, OemrError, psycopg.Error) as exc:
        console.print(f"[red]exchange rates not loaded:[/red] {exc}")
        raise typer.Exit(1) from exc
    for reject in result.rejects:
        where = f"line {reject.line_number}: " if reject.line_number else ""
        console.print(f"[yellow]rejected[/yellow] {where}{reject.reason}")
    console.print(f"exchange rates: {result.rows_read:,} read, {result.rows_upserted:,} written,"
                  f" {len(result.rejects):,} rejected (reporting currency"
                  f" {settings.reporting_currency})")
    if result.rejects:
        raise typer.Exit(1)


@erp_app.command("report")
def erp_report(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show the data-quality report of the latest sync."""
    from erp_connectors.quality import latest_report

    async def read() -> dict[str, Any] | None:
        async with await psycopg.AsyncConnection.connect(_settings().database_url) as conn:
            return await latest_report(conn)

    report = asyncio.run(read())
    if report is None:
        console.print("no sync has run yet: `oem-retention erp sync`")
        raise typer.Exit(1)
    if as_json:
        console.print_json(orjson.dumps(report, default=str).decode())
    else:
        render.print_sync_report(console, report)


@erp_app.command("schedule")
def erp_schedule(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Sync every configured source now and every OEMR_ERP_SYNC_INTERVAL_MINUTES until Ctrl-C."""
    from erp_connectors.schedule import run_schedule
    from oem_retention.wiring import connectors

    _logging(verbose)
    settings = _settings()
    if not settings.erp_sync_interval_minutes:
        console.print("OEMR_ERP_SYNC_INTERVAL_MINUTES is 0: no scheduled sync")
        raise typer.Exit(2)
    _until_signalled(lambda stop: run_schedule(settings, partial(connectors, settings),
                                               stop=stop))


def _day(value: str | None) -> date:
    if value is None:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected a day as YYYY-MM-DD, got {value!r}") from None


async def _analytics_day(settings: Settings, on: Any) -> Any:
    from analytics.daily import run_daily

    async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                     autocommit=True) as conn:
        return await run_daily(conn, on=on, reporting_currency=settings.reporting_currency,
                               keep_raw=settings.telemetry_retention)


@analytics_app.command("run")
def analytics_run(
    on: Annotated[str | None, typer.Option(help="The day to compute for (default today, UTC).")]
    = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Refresh usage rollups, value and score every customer and snapshot the KPIs, for one day.

    Churn risk is scored with the newest stored churn model trained on data up to that day (the
    weekly retraining's, which every process shares); with none, one is trained and stored.
    """
    _logging(verbose, level=logging.WARNING)
    settings = _settings()
    day = _day(on)
    try:
        done = asyncio.run(_analytics_day(settings, day))
    except (OemrError, psycopg.Error, ValueError) as exc:
        console.print(f"[red]analytics run failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    render.print_daily_run(console, done, day)


@analytics_app.command("backtest")
def analytics_backtest(
    *,
    cutoff: Annotated[str, typer.Option(help="Train on data up to this day (YYYY-MM-DD).")],
    horizon: Annotated[int, typer.Option(help="Churn within this many days counts.")] = 180,
    alert_rate: Annotated[float, typer.Option(help="Share of customers flagged.")] = 0.2,
    truth: Annotated[Path | None, typer.Option(
        help="A demo world's truth.json to score against as well.")] = None,
    ids: Annotated[Path | None, typer.Option(
        help="World ids -> stored external ids (the fake Odoo's odoo_ids.json).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train up to a cut-off, score monthly after it, and compare with what happened."""
    _logging(verbose, level=logging.WARNING)
    settings = _settings()
    known = None if truth is None else _known_churn(truth, ids)
    try:
        report = asyncio.run(_backtest(settings, cutoff=_day(cutoff), horizon=horizon,
                                       alert_rate=alert_rate, known=known))
    except (OemrError, psycopg.Error, ValueError) as exc:
        console.print(f"[red]backtest failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    for line in report.lines():
        console.print(line)


def _known_churn(truth: Path, ids: Path | None) -> dict[str, date]:
    """Churn days of a demo world's truth.json, by stored external id when ``ids`` maps them."""
    from analytics.backtest import truth_churn_dates

    known = truth_churn_dates(orjson.loads(truth.read_bytes()))
    if ids is None:
        return known
    mapping = orjson.loads(ids.read_bytes()).get("customers", {})
    return {mapping.get(world_id, world_id): day for world_id, day in known.items()}


async def _backtest(settings: Settings, *, cutoff: date, horizon: int, alert_rate: float,
                    known: dict[str, date] | None) -> Any:
    from analytics.backtest import backtest
    from analytics.rollups import refresh_machine_days

    async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                     autocommit=True) as conn:
        await refresh_machine_days(conn, keep_raw=settings.telemetry_retention)
        return await backtest(conn, cutoff=cutoff, horizon_days=horizon,
                              alert_rate=alert_rate, truth=known,
                              reporting_currency=settings.reporting_currency)


@analytics_app.command("schedule")
def analytics_schedule(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Rollups every 15 minutes; value, segments, scores, KPI snapshot daily; retraining weekly."""
    from analytics.jobs import run_schedule
    from core.db import make_pool

    _logging(verbose)
    settings = _settings()

    async def main(stop: asyncio.Event) -> None:
        async with make_pool(settings, min_size=1, name="oemr-analytics") as pool:
            await run_schedule(settings, pool, stop=stop)

    _until_signalled(main)


@app.command("up")
def up(
    simulate_machines: Annotated[int, typer.Option(
        help="Machines in the simulated fleet (0: no simulator).")] = 50,
    interval: Annotated[float, typer.Option(help="Seconds between a machine's reports.")] = 1.0,
    tenant: Annotated[str, typer.Option(help="Tenant of the simulated fleet.")] = "demo",
    fleet: Annotated[Path | None, typer.Option(
        help="A demo world's machines.json: simulate its machines.")] = None,
) -> None:
    """Run every process of the platform with a live status; Ctrl-C stops them all cleanly.

    Their output goes to $OEMR_STATE_DIR/logs/<process>.log; the terminal shows the status.
    """
    from oem_retention.platform import run_platform

    settings = _settings()
    db_migrate()
    run_platform(settings, simulate_machines=simulate_machines, interval=interval,
                 tenant=tenant, fleet=fleet, console=console)
