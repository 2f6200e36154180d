"""The one command line of oem-retention."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Annotated

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
app.add_typer(db_app, name="db")
app.add_typer(ingest_app, name="ingest")
console = Console()


def _settings() -> Settings:
    return Settings()


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
    asyncio.run(serve(_settings()))


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


@app.command("simulate")
def simulate(machines: int = 50, interval: float = 1.0, tenant: str = "demo",
             seed: int = 7) -> None:
    """Publish telemetry of a simulated fleet until Ctrl-C."""
    from ingest.simulator import FleetSimulator

    _logging(False)
    settings = _settings()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sim = FleetSimulator(host=settings.mqtt_host, port=settings.mqtt_port, tenant=tenant,
                             machines=machines, interval=interval, seed=seed)
        await sim.run(stop=stop)

    asyncio.run(main())


@app.command("up")
def up(
    simulate_machines: Annotated[int, typer.Option(
        help="Machines in the simulated fleet (0: no simulator).")] = 50,
    interval: Annotated[float, typer.Option(help="Seconds between a machine's reports.")] = 1.0,
    tenant: Annotated[str, typer.Option(help="Tenant of the simulated fleet.")] = "demo",
) -> None:
    """Run every process of the platform; Ctrl-C stops them all cleanly."""
    settings = _settings()
    db_migrate()
    cmd = [sys.executable, "-m", "oem_retention"]
    commands = {"ingest": [*cmd, "ingest", "run"]}
    if simulate_machines:
        commands["simulator"] = [*cmd, "simulate", "--machines", str(simulate_machines),
                                 "--interval", str(interval), "--tenant", tenant]
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
