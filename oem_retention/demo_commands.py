"""``oem-retention demo``: a demo world, the fake ERPs that serve it, its fleet, the whole demo.

The commands parse options and call into ``demo/``. ``demo up`` brings the whole demo up (what
deploy/local/run.sh does after installing), running the platform's own commands in this process
(migrate, exchange rates, the first ERP sync, ``up``).
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from collections.abc import Callable, Mapping
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
from rich.console import Console

from core.settings import Settings
from demo.erp.records import read_records, write_ids
from demo.world import (
    Generated,
    HistoryExistsError,
    generate_world,
    load_world_history,
    world_once,
    world_size,
)
from demo.world.files import MACHINES, RATES, TENANT

demo_app = typer.Typer(help="The demo: a machine builder's world, its ERPs and its fleet.",
                       no_args_is_help=True)
erp_app = typer.Typer(help="Serve a world's business data from a fake ERP until Ctrl-C.",
                      no_args_is_help=True)
demo_app.add_typer(erp_app, name="erp")
console = Console()


class Size(StrEnum):
    """The world presets (demo/world/generator.py SIZES)."""

    small = "small"
    standard = "standard"
    large = "large"


SizeOption = Annotated[Size, typer.Option(help="small (120 customers, 500 machines, 2 years),"
                                               " standard (300, 1,500, 3) or large (1,000,"
                                               " 5,000, 3).")]
Customers = Annotated[int | None, typer.Option(min=10, help="Customers (overrides the size).")]
Machines = Annotated[int | None, typer.Option(min=10, help="Machines (overrides the size).")]
Years = Annotated[int | None, typer.Option(min=1, help="Years of history (overrides the size).")]
EndDate = Annotated[str | None, typer.Option(
    help="The world's today, YYYY-MM-DD (default: today, UTC).")]
WorldDir = Annotated[Path, typer.Option("--world", help="A world directory (demo generate).")]
Host = Annotated[str, typer.Option(help="Address to listen on.")]
IdsOut = Annotated[Path | None, typer.Option(
    help="Write {entity: {world id: external id as the connector stores it}} here (to read"
         " the world's truth.json against the database).")]


def _say(line: str) -> None:
    typer.echo(line)


def _day(text: str | None) -> date | None:
    try:
        return None if text is None else date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day (YYYY-MM-DD)",
                                 param_hint="--end-date") from None


def _said(done: Generated) -> None:
    size = done.size
    what = (f"world: seed {done.seed}, {size.customers} customers, {size.machines} machines,"
            f" {size.years} years to {done.end_date} ({done.churners} churners)")
    if done.reused:
        _say(f"{what}: already in {done.directory}")
    else:
        _say(f"{what}: {done.rows:,} rows written into {done.directory} in"
             f" {done.seconds:.1f}s")


@demo_app.command("generate")
def generate(
    *, out: Annotated[Path, typer.Option(help="The directory to write the world into.")],
    seed: int = 7, size: SizeOption = Size.standard, customers: Customers = None,
    machines: Machines = None, years: Years = None, end_date: EndDate = None,
) -> None:
    """Draw a world (the same seed, size and end date give the same files) and write it."""
    try:
        done = generate_world(out, seed=seed, end_date=_day(end_date), size=world_size(
            size, customers=customers, machines=machines, years=years))
    except ValueError as exc:
        console.print(f"[red]no world:[/red] {exc}")
        raise typer.Exit(2) from exc
    _said(done)


def _load_history(world: Path, settings: Settings, process_days: int) -> None:
    try:
        loaded = load_world_history(world, settings.database_url, process_days=process_days,
                                    progress=_say)
    except HistoryExistsError as exc:
        _say(f"history: {exc}; nothing loaded")
        return
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]history not loaded:[/red] {exc}")
        raise typer.Exit(2) from exc
    _say(f"history: {loaded.machines} machines, {loaded.telemetry_rows:,} telemetry,"
         f" {loaded.state_rows:,} state, {loaded.event_rows:,} event rows in"
         f" {loaded.seconds:.1f}s ({loaded.rows_per_second:,.0f} rows/s)")


@demo_app.command("load")
def load(world: WorldDir, process_days: Annotated[int, typer.Option(
        min=0, help="Days before the end with hourly process metrics too.")] = 90) -> None:
    """Bulk-load a world's telemetry history into the database (once: a second load is a no-op)."""
    _load_history(world, Settings(), process_days)


@demo_app.command("fleet")
def fleet(
    *, machines: Annotated[int, typer.Option(help="Made-up machines (without --world).")] = 50,
    interval: Annotated[float, typer.Option(help="Seconds between a machine's reports.")] = 1.0,
    tenant: str = TENANT, seed: int = 7,
    world: Annotated[Path | None, typer.Option(help="Publish this world's machines.")] = None,
    machines_json: Annotated[Path | None, typer.Option(
        "--fleet", help="A world's machines.json (the same as --world DIR).")] = None,
) -> None:
    """Publish a fleet's telemetry over MQTT (the JSON contract) until Ctrl-C."""
    from demo.fleet import run_fleet

    path = machines_json or (None if world is None else world / MACHINES)
    if path is not None and not path.is_file():
        console.print(f"[red]no fleet:[/red] {path} not found (a world's {MACHINES})")
        raise typer.Exit(2)
    settings = Settings()
    published = run_fleet(host=settings.mqtt_host, port=settings.mqtt_port, tenant=tenant,
                          machines=machines, interval=interval, seed=seed, fleet=path)
    _say(f"fleet: {published:,} messages published")


# -- the fake ERPs ----------------------------------------------------------------------------


class _Fake(Protocol):
    @property
    def url(self) -> str: ...

    def start(self) -> Any: ...

    def stop(self) -> None: ...


def _records(world: Path) -> dict[str, list[dict[str, str]]]:
    try:
        return read_records(world)
    except FileNotFoundError as exc:
        console.print(f"[red]no world:[/red] {exc}")
        raise typer.Exit(2) from exc


def _serve(fake: _Fake, name: str, *, settings: Mapping[str, str],
           ids: Mapping[tuple[str, str], str], ids_out: Path | None,
           left_out: Mapping[str, int]) -> None:
    """Say where the fake is and what it holds, then serve until SIGINT or SIGTERM."""
    if ids_out is not None:
        write_ids(ids_out, ids)
    _say(f"fake {name} at {fake.url}: {len(ids):,} world records. Point the platform at it:")
    for key, value in settings.items():
        _say(f"export {key}={shlex.quote(value)}")
    if any(left_out.values()):
        _say(f"not carried by {name}'s API: " + ", ".join(
            f"{entity} ({n:,})" for entity, n in left_out.items() if n))
    _say("Ctrl-C stops it.")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    fake.stop()


@erp_app.command("odoo")
def erp_odoo(*, world: WorldDir, host: Host = "127.0.0.1", port: int = 8069, db: str = "demo",
             login: str = "admin", api_key: str = "demo-key", ids_out: IdsOut = None) -> None:
    """Serve a world as an Odoo 17 database (JSON-RPC and XML-RPC)."""
    from demo.erp.odoo import FakeOdoo, WorldLoader

    records = _records(world)
    fake = FakeOdoo(db=db, login=login, api_key=api_key, host=host, port=port)
    loader = WorldLoader(fake).load(records)
    fake.start()
    _serve(fake, "Odoo", settings=fake.settings(), ids=loader.external_ids(), ids_out=ids_out,
           left_out={})


@erp_app.command("sap")
def erp_sap(*, world: WorldDir, host: Host = "127.0.0.1", port: int = 50000,
            user: str = "COMM_USER_OEMR", password: str = "demo-pass",  # noqa: S107 - the fake's
            timezone: str = "UTC", page_size: int = 1000, ids_out: IdsOut = None) -> None:
    """Serve a world as SAP S/4HANA Cloud's OData V2 APIs."""
    from demo.erp.sap import FakeS4, WorldLoader

    records = _records(world)
    fake = FakeS4(user=user, password=password, page_size=page_size, host=host, port=port)
    loader = WorldLoader(fake, timezone=timezone).load(records)
    fake.start()
    _serve(fake, "SAP S/4HANA", settings=fake.settings(timezone), ids=loader.ids,
           ids_out=ids_out, left_out=loader.left_out)


@erp_app.command("business-central")
def erp_business_central(
    *, world: WorldDir, host: Host = "127.0.0.1", port: int = 50100,
    tenant: str = "demo.onmicrosoft.com", environment: str = "production",
    company_id: str = "1f6f4a6c-0d3e-4e57-9b5c-5d2f0c1a7e01",
    client_id: str = "7c3b5e1a-2f4d-4b8e-a6c9-0e1d2f3a4b5c",
    client_secret: str = "demo-secret", ids_out: IdsOut = None,  # noqa: S107 - the fake's
) -> None:
    """Serve a world as one company of Business Central's API v2.0 (with its token endpoint)."""
    from demo.erp.business_central import FakeBusinessCentral, WorldLoader

    records = _records(world)
    fake = FakeBusinessCentral(tenant=tenant, environment=environment, company_id=company_id,
                               client_id=client_id, client_secret=client_secret, host=host,
                               port=port)
    loader = WorldLoader(fake).load(records)
    fake.start()
    _serve(fake, "Business Central", settings=fake.settings(), ids=loader.ids,
           ids_out=ids_out, left_out=loader.left_out)


# -- the whole demo ---------------------------------------------------------------------------


def _platform(step: str, **options: Any) -> None:
    """Run one of the platform's own steps in this process, as its command would.

    Imported here: oem_retention.cli imports this module. The one place that reaches into
    cli.py; the platform itself runs from the process wiring, with the settings as they are
    now (the fake ERP's address is in the environment by then).
    """
    from oem_retention import cli
    from oem_retention.platform import run_platform

    def platform(**up: Any) -> None:
        run_platform(Settings(), simulate_machines=1, console=console, **up)

    commands: dict[str, Callable[..., None]] = {
        "migrate": cli.db_migrate, "rates": cli.erp_rates, "sync": cli.erp_sync,
        "up": platform}
    commands[step](**options)


DEMO_ROLES = ("admin", "service", "finance", "viewer")


def _demo_users(settings: Settings) -> None:
    """A user of each staff role, named after it, so that the demo can be logged in to.

    Each password is made once and kept in the state directory, readable by its owner alone.
    """
    import asyncio
    import secrets

    from oem_retention.api_commands import put_user

    if settings.environment != "development":
        return
    path = settings.state_dir / "demo-users.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{role} {secrets.token_urlsafe(12)}" for role in DEMO_ROLES]
        path.touch(mode=0o600)
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    users = dict(line.split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines())

    async def put_all() -> None:
        for role, password in users.items():
            await put_user(settings.database_url, username=role, password=password, role=role)

    asyncio.run(put_all())
    _say(f"API users: admin / {users['admin']} (every demo user and password: {path})")


def _serve_world_from_odoo(world: Path, port: int) -> _Fake:
    """The world's business data from the fake Odoo in a thread; its settings in the env."""
    from demo.erp.odoo import FakeOdoo, WorldLoader

    fake = FakeOdoo(db="demo", login="sync@demo", api_key="demo-key", port=port)
    loader = WorldLoader(fake).load(_records(world))
    write_ids(world / "odoo_ids.json", loader.external_ids())
    fake.start()
    # The platform's processes (the scheduled ERP sync among them) read these at start.
    os.environ.update(fake.settings())
    _say(f"fake Odoo at {fake.url} serves the world's business data")
    return fake


@demo_app.command("up")
def up(
    *, size: SizeOption = Size.standard, seed: int = 7, customers: Customers = None,
    machines: Machines = None, years: Years = None, end_date: EndDate = None,
    world: Annotated[Path | None, typer.Option(
        help="Where the world is kept (default $OEMR_STATE_DIR/world-<size>).")] = None,
    odoo_port: Annotated[int, typer.Option(envvar="OEMR_DEMO_ODOO_PORT",
                                           help="Port of the fake Odoo (0: any free one).")]
    = 18069,
    interval: Annotated[float, typer.Option(help="Seconds between a machine's reports.")]
    = 10.0,
) -> None:
    """Bring up the demo: migrate, the world once, its history, its ERP, the platform.

    The world of --size is generated once into --world and its telemetry history loaded once;
    its business data is served by a fake Odoo in this process and synced through the Odoo
    connector; then every process of the platform runs (`oem-retention up`), the world's
    machines publishing live. Ctrl-C stops it all.
    """
    # The world's history reaches years back: keep raw telemetry that long (the default, 90
    # days, is sized for a fleet reporting every 10 s) unless told otherwise.
    os.environ.setdefault("OEMR_TELEMETRY_RETENTION", "4 years")
    settings = Settings()
    _platform("migrate")
    _demo_users(settings)
    directory = world or settings.state_dir / f"world-{size}"
    try:
        _said(world_once(directory, seed=seed, end_date=_day(end_date), size=world_size(
            size, customers=customers, machines=machines, years=years)))
    except ValueError as exc:
        console.print(f"[red]no world:[/red] {exc}")
        raise typer.Exit(2) from exc
    _load_history(directory, settings, 90)
    odoo = _serve_world_from_odoo(directory, odoo_port)
    try:
        _platform("rates", path=directory / RATES)
        try:
            _platform("sync", source=["odoo"], full=False, verbose=False)
        except typer.Exit:
            _say("the first ERP sync reported problems (above); the schedule tries again")
        _platform("up", interval=interval, tenant=TENANT, fleet=directory / MACHINES)
    finally:
        odoo.stop()
