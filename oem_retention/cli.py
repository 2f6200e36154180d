"""The one command line of oem-retention."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import orjson
import psycopg
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from core import migrate as migrations
from core import timescale
from core.errors import OemrError
from core.settings import Settings

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
console = Console()


def _settings() -> Settings:
    return Settings()


def _logging(verbose: bool, *, level: int = logging.INFO) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # One line per HTTP request or scheduler tick drowns what matters.
        for chatty in ("httpx", "httpcore", "apscheduler"):
            logging.getLogger(chatty).setLevel(logging.WARNING)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations, then the storage policies the server supports."""
    _logging(False)
    settings = _settings()
    try:
        applied = migrations.migrate(settings.database_url)
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            caps = timescale.apply_storage_policies(conn, settings)
    except (OemrError, psycopg.Error) as exc:
        console.print(f"[red]migration failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    for m in applied:
        console.print(f"applied {m.version:03d}_{m.name}")
    console.print(
        f"database up to date; TimescaleDB {caps.timescaledb_version} ({caps.license} license):"
        f" compression {'on' if caps.compression else 'not available'},"
        f" retention {'policy' if caps.retention_policies else 'by scheduled job'}")


@db_app.command("retention")
def db_retention() -> None:
    """Drop telemetry chunks older than OEMR_TELEMETRY_RETENTION (for servers without policies)."""
    settings = _settings()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        if timescale.detect(conn).retention_policies:
            console.print("the server runs a retention policy: nothing to do")
            return
        dropped = timescale.drop_expired_telemetry(conn, settings)
    console.print(f"dropped {dropped} telemetry chunk(s) older than {settings.telemetry_retention}")


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
    from ingest.service import status_path

    path = status_path(_settings())
    try:
        status = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        console.print(f"[red]no status at {path}: the ingester is not running[/red]")
        raise typer.Exit(1) from None
    age = time.time() - status["updated_at"]
    console.print_json(data={**status, "age_s": round(age, 1)})
    if age > max_age or not status["mqtt_connected"] or (
            status["batches"] and not status["db_ok"]):
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
    letters = Table(title=f"dead letters by source, last {since}")
    for column in ("source", "messages", "received", "last", "latest reason"):
        letters.add_column(column, overflow="fold")
    for s in sources:
        letters.add_row(s.source, f"{s.distinct_messages:,}", f"{s.times_received:,}",
                        f"{s.last_received_at:%Y-%m-%d %H:%M}", s.latest_reason)
    console.print(letters if sources else f"no dead letters in the last {since}")
    lost = Table(title=f"Sparkplug losses by edge node and day, last {since}")
    for column in ("group", "edge node", "day", "gaps", "seq missing", "data w/o birth",
                   "rebirths asked"):
        lost.add_column(column)
    for g in gaps:
        lost.add_row(g.spb_group, g.spb_edge_node, f"{g.day:%Y-%m-%d}", str(g.seq_gaps),
                     str(g.seq_numbers_missing), str(g.data_without_birth),
                     str(g.rebirths_requested))
    console.print(lost if gaps else f"no Sparkplug losses in the last {since}")


async def _sync_sources(settings: Settings, only: list[str] | None, full: bool,
                        progress: Any = None) -> Any:
    from core.db import make_pool
    from erp_connectors.sources import sync_sources
    from oem_retention.wiring import connectors

    chosen = connectors(settings, only)
    try:
        async with make_pool(settings, name="oemr-erp-sync") as pool:
            before = []
            if settings.erp_files_dir is not None and any(c.source == "files" for c in chosen):
                before = await _rates_beside_files(pool, settings.erp_files_dir)
            return await sync_sources(pool, chosen, full=full,
                                      reporting_currency=settings.reporting_currency,
                                      progress=progress, before=before)
    finally:
        for connector in chosen:
            await connector.aclose()


async def _rates_beside_files(pool: Any, directory: Path) -> list[Any]:
    """Exchange rates exported with the files load with them; what happened, for the report."""
    from erp_connectors.files import EXCHANGE_RATES, locate
    from erp_connectors.quality import EntityOutcome
    from erp_connectors.rates import load_exchange_rates
    from erp_connectors.sync import PermanentSyncError

    try:
        if not locate(directory, [EXCHANGE_RATES]).get(EXCHANGE_RATES):
            return []
        async with pool.connection() as conn:
            result = await load_exchange_rates(conn, directory)
    except PermanentSyncError as exc:
        # A broken rates file is reported like a failed entity; the business data still syncs.
        return [EntityOutcome("files", EXCHANGE_RATES, "failed", error=str(exc))]
    return [EntityOutcome("files", EXCHANGE_RATES, "succeeded", result.rows_read,
                          result.rows_upserted, len(result.rejects), run_id=result.run_id)]


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
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from erp_connectors.sync import SyncError
    from oem_retention.wiring import SourceConfigError, configured_sources

    _logging(verbose, level=logging.WARNING)  # the progress display and report say the rest
    settings = _settings()
    if not configured_sources(settings):
        console.print("[red]no ERP source configured[/red]: set OEMR_ERP_FILES_DIR,"
                      " OEMR_ERP_ODOO_URL, OEMR_ERP_BC_API_URL or OEMR_ERP_SAP_URL"
                      " (docs/erp-*.md)")
        raise typer.Exit(2)
    columns = (SpinnerColumn(), TextColumn("{task.description:<32}"),
               TextColumn("{task.completed:>10,.0f} records"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[tuple[str, str], Any] = {}

        def advance(src: str, entity: str, records: int) -> None:
            key = (src, entity)
            if key not in tasks:
                tasks[key] = bar.add_task(f"{src}/{entity}", total=None)
            bar.advance(tasks[key], records)

        try:
            done = asyncio.run(_sync_sources(settings, source, full, advance))
        except (SourceConfigError, SyncError, OemrError, psycopg.Error) as exc:
            console.print(f"[red]sync failed:[/red] {exc}")
            raise typer.Exit(1) from exc
    _print_report({"id": done.report_id, **done.report})
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
        _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    runs = Table(title=f"sync report {report.get('id', '')}"
                       f" {str(report.get('created_at', ''))[:19]}")
    for column in ("source", "entity", "status", "read", "written", "rejected", "deleted"):
        runs.add_column(column, no_wrap=True, min_width=17 if column == "entity" else None,
                        justify="right" if column in {
                            "read", "written", "rejected", "deleted"} else "left")
    for e in report["entities"]:
        colour = {"succeeded": "green", "failed": "red"}.get(e["status"], "yellow")
        runs.add_row(e["source"], e["entity"], f"[{colour}]{e['status']}[/{colour}]",
                     f"{e['records_read']:,}", f"{e['rows_upserted']:,}",
                     f"{e['rows_rejected']:,}", f"{e['rows_deleted']:,}")
    console.print(runs)
    for e in report["entities"]:
        if e["error"]:
            console.print(f"[red]{e['source']}/{e['entity']}:[/red] {e['error']}")
        for x in e["reject_examples"]:
            where = f"line {x['line_number']}: " if x.get("line_number") else ""
            console.print(f"  rejected {e['source']}/{e['entity']} {where}{x['reason']}")
    for check in report["checks"]:
        if check["total"]:
            console.print(f"[yellow]{check['total']:,} {check['title']}[/yellow]: " + ", ".join(
                " ".join(str(v) for v in row.values()) for row in check["sample"][:5]))
    console.print("[green]all entities synced[/green]" if report["ok"]
                  else "[red]some entities did not sync: see above[/red]")


@erp_app.command("schedule")
def erp_schedule(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Sync every configured source now and every OEMR_ERP_SYNC_INTERVAL_MINUTES until Ctrl-C."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    _logging(verbose)
    settings = _settings()
    log = logging.getLogger("oem_retention.erp")
    if not settings.erp_sync_interval_minutes:
        console.print("OEMR_ERP_SYNC_INTERVAL_MINUTES is 0: no scheduled sync")
        raise typer.Exit(2)

    async def job() -> None:
        try:
            done = await _sync_sources(settings, None, False)
        except Exception:
            # The schedule outlives one bad run; the next one resumes from the cursors.
            log.exception("scheduled ERP sync failed")
            return
        for e in done.outcomes:
            log.info("%s/%s %s: %s read, %s written, %s rejected, %s deleted%s", e.source,
                     e.entity, e.status, e.records_read, e.rows_upserted, e.rows_rejected,
                     e.rows_deleted, f": {e.error}" if e.error else "")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        scheduler = AsyncIOScheduler(timezone="UTC")
        # One run at a time here; the database's advisory locks keep two processes apart.
        scheduler.add_job(job, "interval", minutes=settings.erp_sync_interval_minutes,
                          next_run_time=datetime.now(UTC), max_instances=1, coalesce=True,
                          id="erp-sync")
        scheduler.start()
        await stop.wait()
        scheduler.shutdown(wait=False)

    asyncio.run(main())


def _day(value: str | None) -> Any:
    from datetime import date

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
    rollup, value, scores = done.rollup, done.value, done.scores
    console.print(f"rollups: {rollup.rows_changed:,} machine-days written from {rollup.from_day}")
    console.print(f"customer value on {day}: {value.customers:,} customers; parts"
                  f" {value.parts_method}, contracts {value.contract_method}")
    for note in value.notes:
        console.print(f"  [yellow]{note}[/yellow]")
    for kind, counts in done.segments.counts.items():
        console.print(f"segments by {kind}: " + ", ".join(
            f"{segment} {n:,}" for segment, n in sorted(counts.items(), key=lambda c: -c[1])))
    m = done.model
    console.print(f"churn model {m.version_} ({m.method_}, trained until {m.trained_until}),"
                  + (" trained now and stored: none was stored yet" if done.model_trained
                     else " as stored"))
    kpis = done.kpis
    console.print(f"KPI snapshot on {kpis.taken_on}: {kpis.values:,} values ({len(kpis.periods)}"
                  f" periods, {len(kpis.segments)} cuts) in {kpis.seconds:.1f} s")
    if not scores:
        console.print("no customers to score")
        return
    table = Table(title=f"highest churn risk on {day} ({scores[0].method})")
    for column in ("customer", "probability", "revenue at risk", "why"):
        table.add_column(column, overflow="fold")
    for score in sorted(scores, key=lambda s: -s.probability)[:15]:
        at_risk = score.revenue_at_risk
        table.add_row(score.external_id, f"{score.probability:.0%}",
                      "" if at_risk is None else f"{at_risk:,.0f} {score.currency}",
                      "; ".join(f"{r.label} ({r.effect:+.0%})" for r in score.reasons[:3]))
    console.print(table)


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
    from analytics.backtest import backtest, truth_churn_dates

    _logging(verbose, level=logging.WARNING)
    settings = _settings()
    known = None
    if truth is not None:
        known = truth_churn_dates(orjson.loads(truth.read_bytes()))
        if ids is not None:
            mapping = orjson.loads(ids.read_bytes()).get("customers", {})
            known = {mapping.get(world_id, world_id): day for world_id, day in known.items()}

    async def run() -> Any:
        async with await psycopg.AsyncConnection.connect(settings.database_url,
                                                         autocommit=True) as conn:
            from analytics.rollups import refresh_machine_days

            await refresh_machine_days(conn, keep_raw=settings.telemetry_retention)
            return await backtest(conn, cutoff=_day(cutoff), horizon_days=horizon,
                                  alert_rate=alert_rate, truth=known,
                                  reporting_currency=settings.reporting_currency)

    try:
        report = asyncio.run(run())
    except (OemrError, psycopg.Error, ValueError) as exc:
        console.print(f"[red]backtest failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    for line in report.lines():
        console.print(line)


@analytics_app.command("schedule")
def analytics_schedule(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Rollups every 15 minutes; value, segments, scores, KPI snapshot daily; retraining weekly."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from analytics.churn_models import newest_trained_until, train_and_save
    from analytics.daily import run_daily
    from analytics.jobs import Connection, run_exclusive
    from analytics.rollups import refresh_machine_days
    from core.db import make_pool

    _logging(verbose)
    settings = _settings()

    async def retrain(conn: Connection) -> str:
        today = datetime.now(UTC).date()
        m, model_id = await train_and_save(conn, cutoff=today,
                                           reporting_currency=settings.reporting_currency)
        return (f"trained until {today}: {m.churn_events_} churn events, method {m.method_};"
                f" stored as model {model_id}")

    async def daily(conn: Connection) -> str:
        # The stored model, whichever process trained it: every scheduler scores alike.
        today = datetime.now(UTC).date()
        # The KPIs of yesterday, whole: at 02:00 today has two hours of data against 24
        # calendar hours, and, the ingester writing past the rollup's watermark, a period
        # through today would be read from raw telemetry (10x slower: docs/kpis.md).
        done = await run_daily(conn, on=today, snapshot_on=today - timedelta(days=1),
                               reporting_currency=settings.reporting_currency,
                               keep_raw=settings.telemetry_retention)
        return (f"{done.rollup.rows_changed} machine-days re-rolled, {done.value.customers}"
                f" customers valued and segmented, {len(done.scores)} scored with"
                f" {done.model.version_}"
                f"{' (trained now: none was stored)' if done.model_trained else ''},"
                f" KPI snapshot of {done.kpis.taken_on}: {done.kpis.values} values")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with make_pool(settings, min_size=1, name="oemr-analytics") as pool:

            async def rollups(conn: Connection) -> str:
                # A second connection computes slices too: the first refresh of a fleet's
                # history (or one after late data) is long, and the server has cores for it.
                async with pool.connection() as helper:
                    done = await refresh_machine_days(conn, helpers=[helper],
                                                      keep_raw=settings.telemetry_retention)
                return f"{done.rows_changed} machine-days from {done.from_day}"

            scheduler = AsyncIOScheduler(timezone="UTC")
            now = datetime.now(UTC)
            # The job store is in memory: a process that was down on Monday night would not
            # know it missed the retraining. With no model stored, the first daily trains one.
            try:
                async with pool.connection() as conn:
                    trained_until = await newest_trained_until(conn)
            except psycopg.Error as exc:
                logging.getLogger(__name__).warning(
                    "no catch-up of the churn model's retraining: %s", exc)
                trained_until = None
            catch_up = ({"next_run_time": now} if trained_until is not None
                        and now.date() - trained_until >= timedelta(days=7) else {})
            # A turn up to its grace late still runs (APScheduler's default is one second).
            for name, job, trigger, kwargs in (
                    ("rollups", rollups, "interval", {"minutes": 15, "next_run_time": now,
                                                      "misfire_grace_time": 15 * 60}),
                    ("daily", daily, "cron", {"hour": 2, "minute": 0, "next_run_time": now,
                                              "misfire_grace_time": 3600}),
                    ("retrain", retrain, "cron", {"day_of_week": "mon", "hour": 3,
                                                  "misfire_grace_time": 3600, **catch_up})):
                scheduler.add_job(run_exclusive, trigger, args=(pool, name, job), id=name,
                                  max_instances=1, coalesce=True, **kwargs)
            scheduler.start()
            await stop.wait()
            scheduler.shutdown(wait=False)

    asyncio.run(main())


@app.command("simulate")
def simulate(machines: int = 50, interval: float = 1.0, tenant: str = "demo",
             seed: int = 7,
             fleet: Annotated[Path | None, typer.Option(
                 help="A demo world's machines.json: publish for its machines instead.")] = None,
             ) -> None:
    """Publish telemetry of a simulated fleet until Ctrl-C."""
    from demo.fleet import FleetSimulator, load_fleet

    _logging(False)
    settings = _settings()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sim = FleetSimulator(host=settings.mqtt_host, port=settings.mqtt_port, tenant=tenant,
                             machines=machines, interval=interval, seed=seed,
                             fleet=None if fleet is None else load_fleet(fleet))
        await sim.run(stop=stop)

    asyncio.run(main())


@app.command("up")
def up(
    simulate_machines: Annotated[int, typer.Option(
        help="Machines in the simulated fleet (0: no simulator).")] = 50,
    interval: Annotated[float, typer.Option(help="Seconds between a machine's reports.")] = 1.0,
    tenant: Annotated[str, typer.Option(help="Tenant of the simulated fleet.")] = "demo",
    fleet: Annotated[Path | None, typer.Option(
        help="A demo world's machines.json: simulate its machines.")] = None,
) -> None:
    """Run every process of the platform; Ctrl-C stops them all cleanly."""
    settings = _settings()
    db_migrate()
    cmd = [sys.executable, "-m", "oem_retention"]
    commands = {"ingest": [*cmd, "ingest", "run"]}
    from oem_retention.wiring import configured_sources

    if configured_sources(settings) and settings.erp_sync_interval_minutes:
        commands["erp-sync"] = [*cmd, "erp", "schedule"]
    commands["analytics"] = [*cmd, "analytics", "schedule"]
    if simulate_machines:
        commands["simulator"] = [*cmd, "simulate", "--machines", str(simulate_machines),
                                 "--interval", str(interval), "--tenant", tenant,
                                 *(["--fleet", str(fleet)] if fleet else [])]
    procs = {name: subprocess.Popen(command) for name, command in commands.items()}
    stopping = False
    next_retention = 0.0

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        with Live(console=console, refresh_per_second=1) as live:
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None and not stopping:
                        # A supervisor restarts what died; unacked messages come again.
                        console.print(f"[red]{name} exited with {proc.returncode}:"
                                      " restarting it[/red]")
                        time.sleep(2)
                        procs[name] = subprocess.Popen(commands[name])
                if time.monotonic() >= next_retention:
                    # The Apache edition has no retention policy: this is its scheduled job.
                    _retention_job(settings)
                    next_retention = time.monotonic() + 3600
                live.update(_live_counts(settings))
                time.sleep(1)
    finally:
        for proc in reversed(list(procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                console.print(f"[yellow]{name} did not stop in 20 s: killing it[/yellow]")
                proc.kill()
        console.print("stopped")


def _retention_job(settings: Settings) -> None:
    try:
        with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=3) as conn:
            if not timescale.detect(conn).retention_policies:
                timescale.drop_expired_telemetry(conn, settings)
    except psycopg.Error as exc:
        logging.getLogger(__name__).warning("retention job failed, next try in an hour: %s", exc)


_COUNTS = """
SELECT (SELECT count(*) FROM machines),
       (SELECT count(*) FROM telemetry WHERE time > now() - interval '1 minute'),
       (SELECT count(*) FROM machine_events),
       (SELECT coalesce(sum(times_received), 0) FROM dead_letters),
       (SELECT max(time) FROM telemetry WHERE time > now() - interval '1 hour')
"""


def _live_counts(settings: Settings) -> Table:
    table = Table(title=f"oem-retention  (pid {os.getpid()}, Ctrl-C to stop)")
    table.add_column("what")
    table.add_column("count", justify="right")
    try:
        with psycopg.connect(settings.database_url, connect_timeout=3) as conn:
            row = conn.execute(_COUNTS).fetchone()
    except psycopg.Error as exc:
        table.add_row("database", f"[red]unreachable: {exc}[/red]")
        return table
    assert row is not None
    table.add_row("machines registered", f"{row[0]:,}")
    table.add_row("samples stored, last minute", f"{row[1]:,}")
    table.add_row("machine events", f"{row[2]:,}")
    table.add_row("dead letters", f"{row[3]:,}")
    table.add_row("latest sample", str(row[4]))
    return table
