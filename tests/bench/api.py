"""The API under load: 50 concurrent clients on its routes, beside its health route.

Customer 360, renewals, a fleet page and a machine chart (and whatever routes are named), on
loopback.

Run from the repository root::

    set -a && . /var/lib/oem-retention/env && set +a
    .venv/bin/python -m tests.bench.api [--database NAME] [--machines 100000] [--workers 1]
        [--clients 50] [--seconds 10] [--route NAME=TEMPLATE ...]

Figures, not pass/fail (issue 11's targets are printed beside them). Steps:

1. a database: a demo world (``World.generate(seed, today, customers=, machines=, years=)``,
   default the standard world, 300 customers and 1,500 machines over 3 years, ending today)
   loaded the platform's way (files connector, history by COPY, usage rollup: the backtest
   bench's ``load_world``), then analytics' daily run for a week ago and for today, as the API
   tests' world gets it (churn scores, values, segments, KPI snapshot). ``--database NAME`` keeps
   it and reuses it on the next run (the world's days then end on the day it was made).
2. ``--machines N`` grows the installed base to N machines in minutes, not the hours a world of
   that size would take to draw and load: synthetic customers (five machines each, copying the
   world's industries, countries and size classes), a site each, installed-base rows of the
   world's models, machines registered as the ingester would, ``--usage-days`` of daily usage
   straight into ``machine_days`` (no raw telemetry: the fleet list reads the rollup), each
   machine's current state and a customer-scope contract for seven customers in ten, all by
   ``INSERT .. SELECT generate_series`` (tests/bench/sql/api.sql). They are marked
   (source ``bench``, serials ``BENCH-``) and get no scores or values (the daily run is not run
   again: the world's customers keep theirs), and no URL is filled with them but a fleet page's.
   Each step's seconds are printed.
3. ``oem-retention api serve`` with ``--workers`` uvicorn workers (default 1: the machine this
   was written on has 2 cores, and the load generator, a Python process that keeps a core busy,
   Postgres and the server share them; a second worker takes CPU from the other two rather
   than adding any), a new admin user and its bearer token (``--auth key``: an API key made
   through POST /admin/keys instead).
4. the URLs: each route is a template (``/customers/{customer_id}``) filled at random from the
   database (the world's customers with machines, machines that reported in the last 30 days,
   installed-base ids, a fleet page's cursor gathered by walking the whole list, ``{now}``,
   ``{week_ago}``, ``{year_ago}``). A route whose path is not in the API's OpenAPI document is
   reported missing (not merged yet); one whose probe answers an error is reported with the
   answer and skipped.
5. the load: a load generator in another process (multiprocessing, spawned once), asyncio and
   one httpx client with ``--clients`` keep-alive connections, each connection a client sending
   its next request when the last one is answered; per route, ``--warmup`` seconds unmeasured,
   then ``--seconds`` measured: the answers that come in those seconds, whenever sent (a route
   slower than the warm-up is measured too; clients with no answer in them are reported), and
   before the next route the API's database connections must have been idle for a second (the
   server works on the requests left behind: they would load the next route).
   The health route runs first and last; the ratio's denominator is the mean of both rates.
   Per route: requests, rate, p50/p90/p99/max latency (nearest rank, client side, request sent
   to body read), errors (4xx/5xx and transport failures), the rate's
   ratio to the health route's, and the CPU of the load generator, the API's processes, the
   Postgres backends of the benchmark database (% of one core) and of the whole machine (% of
   all cores), and the CPU milliseconds per request of the API and of Postgres: a rate bound
   by the load generator is a rate of the load generator, and on a machine shared with other
   work the CPU per request is the figure that moves least.

By default every client sends its next request as soon as it has the answer: the API's saturated
rate, at which latency is queueing (Little's law: the mean latency is clients / rate, so a p99
under 50 ms with 50 clients takes more than 1,000 requests/s). ``--think S`` makes each client
pause S seconds on average (exponential) between an answer and its next request: the latency
at an offered load of about clients / S requests/s, not at saturation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import math
import multiprocessing as mp
import os
import random
import re
import secrets
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import psycopg

from analytics.daily import run_daily
from core.settings import Settings
from core.sql import queries
from demo.world import World
from tests.bench.backtest import load_world
from tests.bench.ingest import fresh_database, kept_database
from tests.integration.api_server import ApiServer, running_api

PREFIX = "/api/v1"
SEED = 7
HEALTH = "health"
# The fleet's machine is an installed-base row (its telemetry's machine is another id).
CHART = ("/fleet/machines/{installed_base_id}/metrics/spindle_load_pct?from={%s}&to={now}"
         "&points=500")


@dataclass(frozen=True, slots=True)
class Route:
    """A route to load: a URL template under /api/v1 and the issue's targets for it, if any."""

    name: str
    template: str
    p99_ms: float | None = None  # target
    health_ratio: float | None = None  # target: at least this share of the health route's rate

    @property
    def path(self) -> str:
        return self.template.split("?", 1)[0]


ROUTES = (
    Route(HEALTH, "/health"),
    Route("auth/me", "/auth/me"),
    Route("admin/users", "/admin/users"),
    Route("customer 360", "/customers/{customer_id}", p99_ms=50, health_ratio=1 / 3),
    Route("renewals", "/finance/renewals", p99_ms=50, health_ratio=1 / 3),
    Route("fleet page", "/fleet/machines?limit=50{fleet_page}", p99_ms=100),
    Route("fleet, top utilisation", "/fleet/machines?limit=50&sort=-utilisation"),
    Route("machine chart, year", CHART % "year_ago"),
    Route("machine chart, day", CHART % "day_ago"),
)


def say(line: str = "") -> None:
    print(line)
    sys.stdout.flush()


def _q() -> dict[str, str]:
    return queries("tests.bench", "sql/api.sql")


# -- the database --------------------------------------------------------------------------------


async def _daily(url: str, today: date, currency: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for day in (today - timedelta(days=7), today):
            started = time.perf_counter()
            run = await run_daily(conn, on=day, reporting_currency=currency)
            say(f"daily run for {day}: {time.perf_counter() - started:.1f} s, {len(run.scores):,}"
                f" customers scored ({run.model.method_})")


def load(url: str, args: argparse.Namespace, today: date, currency: str) -> None:
    """The demo world into ``url``, rolled up, with the daily run of a week ago and of today."""
    started = time.perf_counter()
    world = World.generate(args.seed, today, customers=args.customers,
                           machines=args.world_machines, years=args.years)
    say(f"world seed {args.seed}: {args.customers:,} customers, {args.world_machines:,} machines,"
        f" {args.years} year(s) to {today}, drawn in {time.perf_counter() - started:.1f} s")
    asyncio.run(load_world(url, world, process_days=args.process_days))
    asyncio.run(_daily(url, today, currency))
    say(f"world ready in {time.perf_counter() - started:.1f} s")


def grow(url: str, *, machines: int, days: int, today: date) -> None:
    """Grow the installed base to ``machines`` with synthetic ones (see the module's docstring)."""
    q = _q()
    with psycopg.connect(url, autocommit=True) as conn:
        tenant = conn.execute(q["world_tenant"], {}).fetchone()
        installed, bench = (conn.execute(q["world_size"]).fetchone() or (0, 0, 0))[1:3]
        wanted = machines - (installed - bench)
        # The contracts are the last step: a run stopped before them is taken up again.
        done = (conn.execute(q["bench_contracts"]).fetchone() or (0,))[0] > 0
        if wanted <= bench and done:
            say(f"installed base: {installed:,} machines ({bench:,} synthetic), nothing to add")
            return
        params = {"machines": wanted, "customers": math.ceil(wanted / 5), "days": days,
                  "today": today, "tenant": tenant[0] if tenant else "demo"}
        say(f"growing the installed base from {installed:,} to {machines:,} machines"
            f" ({wanted:,} synthetic, {days} days of usage each)")
        total = time.perf_counter()
        for step in ("grow_customers", "grow_sites", "grow_installed_base", "grow_machines",
                     "grow_machine_days", "grow_machine_states", "grow_contracts",
                     "analyze_grown"):
            started = time.perf_counter()
            rows = conn.execute(q[step], params).rowcount
            say(f"    {step.removeprefix('grow_'):<20} {time.perf_counter() - started:7.1f} s"
                f"  {max(rows, 0):>10,} rows")
        say(f"installed base grown in {time.perf_counter() - total:.1f} s")


def refresh_fleet(url: str) -> None:
    """The fleet's own rollups brought up to date, where the tree has the fleet's analytics
    (``analytics.fleet``: the hourly metrics a chart reads, the status the fleet list reads).

    The rollup job keeps them; but the synthetic machines were written past it, and a database
    loaded by a tree without them has none.
    """
    try:
        fleet = importlib.import_module("analytics.fleet")
    except ModuleNotFoundError:
        return
    for name in ("refresh_metric_hours", "refresh_fleet_status"):
        refresh = getattr(fleet, name, None)
        if refresh is None:
            continue

        async def call(refresh: Any = refresh) -> Any:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                return await refresh(conn)

        started = time.perf_counter()
        done = asyncio.run(call())
        say(f"analytics.fleet.{name}: {time.perf_counter() - started:.1f} s, {done}")


def describe(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(_q()["world_size"]).fetchone()
    assert row is not None
    customers, installed, bench, machines, contracts, days, scores = row
    return (f"{customers:,} customers, {installed:,} installed machines ({bench:,} synthetic),"
            f" {machines:,} registered machines, {contracts:,} contracts, {days:,} machine-days,"
            f" {scores:,} churn scores")


# -- the URLs ------------------------------------------------------------------------------------


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def pools(url: str, today: date) -> dict[str, list[str]]:
    """What a template's fields are filled with (the fleet's cursors come later)."""
    q = _q()
    with psycopg.connect(url) as conn:
        def ids(name: str) -> list[str]:
            return [str(r[0]) for r in conn.execute(q[name], {"today": today}).fetchall()]

        found = {"customer_id": ids("customer_ids"), "machine_id": ids("machine_ids"),
                 "installed_base_id": ids("installed_base_ids")}
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return {**found, "now": [_stamp(now)], "day_ago": [_stamp(now - timedelta(days=1))],
            "year_ago": [_stamp(now - timedelta(days=365))], "fleet_page": [""]}


def fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def expand(template: str, values: dict[str, list[str]], *, count: int, seed: int) -> list[str]:
    """``count`` URLs of ``template``, each field drawn from ``values``."""
    rng = random.Random(seed)
    names = fields(template)
    return [template.format(**{f: rng.choice(values[f]) for f in names}) for _ in range(count)]


def _pattern(path: str) -> re.Pattern[str]:
    """A path of the OpenAPI document as a pattern: each parameter matches a segment."""
    parts = re.split(r"\{[^}]*\}", path)
    return re.compile("[^/]+".join(map(re.escape, parts)))


def served(client: httpx.Client) -> list[re.Pattern[str]]:
    """The API's paths (under /api/v1), from its OpenAPI document."""
    document = client.get(f"{PREFIX}/openapi.json").raise_for_status().json()
    return [_pattern(p.removeprefix(PREFIX)) for p in document["paths"]]


def is_served(template_path: str, paths: Sequence[re.Pattern[str]]) -> bool:
    """Whether a template's path is one of ``paths``, its fields filled with anything."""
    example = re.sub(r"\{[^}]*\}", "1", template_path)
    return any(p.fullmatch(example) for p in paths)


def fleet_cursors(client: httpx.Client, *, pages: int) -> tuple[list[str], int, float]:
    """``&cursor=..`` of up to ``pages`` pages of 1,000 machines, walking the list from its
    start; the machines seen and the seconds the walk took."""
    cursors, seen, cursor = [""], 0, None
    started = time.perf_counter()
    for _ in range(pages):
        answer = client.get(f"{PREFIX}/fleet/machines", params={"limit": 1000, "cursor": cursor}
                            if cursor else {"limit": 1000})
        if answer.status_code != 200:
            say(f"    fleet walk stopped: {answer.status_code} {answer.text[:200]}")
            break
        body = answer.json()
        seen += len(body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            break
        cursors.append(f"&cursor={cursor}")
    return cursors, seen, time.perf_counter() - started


# -- the load generator (its own process) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """One route's load: its URLs, drawn at random by each client."""

    base_url: str
    headers: dict[str, str]
    urls: list[str]
    clients: int
    warmup_s: float
    seconds: float
    seed: int
    think_s: float = 0.0  # mean pause of a client between an answer and its next request


@dataclass(slots=True)
class Outcome:
    """What the load generator saw of one route in the measured seconds."""

    latencies_us: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)  # 0: transport failure
    first_error: str | None = None
    cpu_s: float = 0.0
    unanswered: int = 0  # clients with no answer in the whole window

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status == 0 or status >= 400)


async def _drive(plan: Plan, conn: Connection) -> Outcome:
    """Run ``plan``: the answers that come within the measured seconds are its outcome."""
    out = Outcome()
    window = time.perf_counter() + plan.warmup_s
    end = window + plan.seconds
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    answered: set[int] = set()

    async def one(seed: int) -> None:
        rng = random.Random(seed)
        # A client of its own per connection: one shared pool of 50 costs the generator more CPU
        # per request than the answer it waits for (httpcore scans its pool at each request).
        async with httpx.AsyncClient(base_url=plan.base_url, headers=plan.headers,
                                     limits=limits, timeout=60.0) as client:
            while True:
                if await _send(client, rng.choice(plan.urls)):
                    answered.add(seed)
                if plan.think_s:
                    await asyncio.sleep(rng.expovariate(1 / plan.think_s))

    async def _send(client: httpx.AsyncClient, url: str) -> bool:
        """Send, wait for the answer; whether it came in the window."""
        sent = time.perf_counter()
        try:
            answer = await client.get(url)
            status = answer.status_code
            if status >= 400 and out.first_error is None:
                out.first_error = f"{status} {url}: {answer.text[:300]}"
        except httpx.HTTPError as exc:
            status = 0
            out.first_error = out.first_error or f"{type(exc).__name__} {url}: {exc}"
        done = time.perf_counter()
        # Answers that come in the window count, whenever sent: a route slower than the
        # warm-up is still measured.
        if window <= done <= end:
            out.latencies_us.append(int((done - sent) * 1e6))
            out.statuses[status] += 1
            return True
        return False

    clients = [asyncio.create_task(one(plan.seed * 1000 + i)) for i in range(plan.clients)]
    # The parent samples the other processes' CPU when told the window opens and closes.
    await asyncio.sleep(max(0.0, window - time.perf_counter()))
    conn.send("window")
    started = time.process_time()
    await asyncio.sleep(max(0.0, end - time.perf_counter()))
    out.cpu_s = time.process_time() - started
    out.unanswered = plan.clients - len(answered)
    conn.send("end")
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    return out


def _generator(conn: Connection) -> None:
    """The load generator's process: a plan in, its outcome out, until None comes."""
    conn.send("ready")
    while (plan := conn.recv()) is not None:
        conn.send(asyncio.run(_drive(plan, conn)))


class LoadGenerator:
    """A process of its own sending the load, so it does not share this one's interpreter."""

    def __init__(self) -> None:
        context = mp.get_context("spawn")
        self._conn, child = context.Pipe()
        self._proc = context.Process(target=_generator, args=(child,), name="api-bench-load")
        self._proc.start()
        child.close()
        # Its imports take seconds on a busy machine: none of them in a measured window.
        self._expect("ready")

    def _expect(self, word: str) -> None:
        said = self._conn.recv()
        if said != word:
            raise RuntimeError(f"the load generator said {said!r}, not {word!r}")

    def run(self, plan: Plan, *, window: Callable[[], None],
            end: Callable[[], None]) -> Outcome:
        """Load one route; ``window`` and ``end`` are called as its measured seconds open and
        close."""
        self._conn.send(plan)
        self._expect("window")
        window()
        self._expect("end")
        end()
        outcome: Outcome = self._conn.recv()
        return outcome

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._conn.send(None)
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


# -- CPU -----------------------------------------------------------------------------------------


def _cpu_of(procs: Sequence[psutil.Process]) -> dict[int, float]:
    """CPU seconds of each process, by pid."""
    found = {}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            found[proc.pid] = times.user + times.system
    return found


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two samples by the processes alive at the second (one that
    ended between them is lost: a sum of the survivors only would go down)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


@dataclass(frozen=True, slots=True)
class CpuSample:
    at: float
    server: dict[int, float]
    database: dict[int, float]
    busy: float


class CpuWatch:
    """CPU seconds of the API's processes, the benchmark database's backends and the machine."""

    def __init__(self, server: psutil.Process, database: str) -> None:
        self.server = server
        self.database = database

    def _backends(self) -> list[psutil.Process]:
        # A backend's title names its database: "postgres: oemr_api oemr_bench_x 127.0.0.1 ..".
        found = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            title = " ".join(proc.info["cmdline"] or [])
            if title.startswith("postgres:") and f" {self.database} " in title:
                found.append(proc)
        return found

    def sample(self) -> CpuSample:
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        return CpuSample(time.perf_counter(),
                         _cpu_of([self.server, *self.server.children(recursive=True)]),
                         _cpu_of(self._backends()), busy)


# -- one route under load ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measured:
    route: Route
    outcome: Outcome
    seconds: float
    route_clients: int
    server_cpu: float  # share of one core
    database_cpu: float
    machine_cpu: float  # share of all cores

    @property
    def requests(self) -> int:
        return len(self.outcome.latencies_us)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def cpu_ms(self, share: float) -> float:
        """CPU milliseconds per request, of a process group busy ``share`` of a core."""
        return 1000 * share * self.seconds / self.requests if self.requests else math.nan

    def percentile_ms(self, q: float) -> float:
        if not self.outcome.latencies_us:
            return math.nan
        values = np.asarray(self.outcome.latencies_us, dtype=np.int64)
        return float(np.percentile(values, q, method="inverted_cdf")) / 1000


def drain(url: str, *, timeout: float = 300.0) -> float:
    """Wait until the API's connections to the database have been idle for a second; seconds.

    The requests a route's clients leave when its window closes are still worked on by the
    server (a closed connection does not stop a query): they would load the next route's."""
    started = time.perf_counter()
    idle_since: float | None = None
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() - started < timeout:
            row = conn.execute(_q()["api_busy"]).fetchone()
            now = time.perf_counter()
            if row is not None and row[0] == 0:
                idle_since = idle_since or now
                if now - idle_since >= 1.0:
                    break
            else:
                idle_since = None
            time.sleep(0.1)
    return time.perf_counter() - started


def measure(gen: LoadGenerator, watch: CpuWatch, route: Route, plan: Plan) -> Measured:
    samples: list[CpuSample] = []
    outcome = gen.run(plan, window=lambda: samples.append(watch.sample()),
                      end=lambda: samples.append(watch.sample()))
    before, after = samples
    elapsed = after.at - before.at
    return Measured(route, outcome, plan.seconds, plan.clients,
                    _spent(before.server, after.server) / elapsed,
                    _spent(before.database, after.database) / elapsed,
                    (after.busy - before.busy) / elapsed / (psutil.cpu_count() or 1))


# -- the run -------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "target met" if ok else "target missed"


def report(runs: list[Measured], notes: list[str], *, machines: int) -> None:
    health = [m for m in runs if m.route.name == HEALTH]
    base = sum(m.rate for m in health) / len(health)
    say()
    say(f"{'route':<22}{'requests':>9}{'req/s':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}"
        f"{'max ms':>8}{'errors':>7}{'x health':>9}{'gen %':>7}{'api %':>7}{'pg %':>7}"
        f"{'all %':>7}{'api ms/r':>9}{'pg ms/r':>8}")
    for m in runs:
        say(f"{m.route.name:<22}{m.requests:>9,}{m.rate:>8,.0f}{m.percentile_ms(50):>8.1f}"
            f"{m.percentile_ms(90):>8.1f}{m.percentile_ms(99):>8.1f}{m.percentile_ms(100):>8.1f}"
            f"{m.outcome.errors:>7,}{m.rate / base:>9.2f}{100 * m.outcome.cpu_s / m.seconds:>7.0f}"
            f"{100 * m.server_cpu:>7.0f}{100 * m.database_cpu:>7.0f}{100 * m.machine_cpu:>7.0f}"
            f"{m.cpu_ms(m.server_cpu):>9.2f}{m.cpu_ms(m.database_cpu):>8.2f}")
    say(f"(x health: rate / {base:,.0f} req/s, the mean of the health route's {len(health)}"
        " runs; CPU: gen = load generator, api = the API's processes, pg = the benchmark"
        " database's backends, % of one core; all = the whole machine, % of all cores;"
        " ms/r: CPU milliseconds per request of the API and of Postgres, the figures a busy"
        " machine changes least)")
    for m in runs:
        if m.outcome.unanswered:
            say(f"    {m.route.name}: {m.outcome.unanswered} of {m.route_clients} clients had no"
                " answer in the whole window (their requests are not in the figures)")
    for m in runs:
        if m.outcome.first_error:
            say(f"    {m.route.name}: {m.outcome.errors:,} errors"
                f" ({dict(m.outcome.statuses)}), first: {m.outcome.first_error}")
    for m in runs:
        checks = []
        if m.route.p99_ms is not None:
            p99 = m.percentile_ms(99)
            checks.append(f"p99 {p99:.1f} ms < {m.route.p99_ms:g} ms:"
                          f" {_verdict(p99 < m.route.p99_ms)}")
        if m.route.health_ratio is not None:
            ratio = m.rate / base
            checks.append(f"rate {ratio:.2f} x health >= {m.route.health_ratio:.2f}:"
                          f" {_verdict(ratio >= m.route.health_ratio)}")
        if checks:
            say(f"target {m.route.name}: " + "; ".join(checks))
    if machines < 100_000 and any(m.route.name == "fleet page" for m in runs):
        say(f"    (the fleet page's target is for 100,000 machines; this installed base has"
            f" {machines:,}: --machines 100000)")
    for note in notes:
        say(note)


def _git_state() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False,
                              cwd=Path(__file__).resolve().parents[2]).stdout.strip()

    head = git("log", "-1", "--format=%h %s")[:100]
    merging = git("rev-parse", "-q", "--verify", "MERGE_HEAD")
    dirty = len(git("status", "--porcelain", "--untracked-files=no").splitlines())
    return (f"tree at {head}" + (f", merging {merging[:7]} (uncommitted)" if merging else "")
            + (f", {dirty} changed file(s)" if dirty else ""))


def _routes(args: argparse.Namespace) -> list[Route]:
    routes = {r.name: r for r in ROUTES}
    for spec in args.route or []:
        name, _, template = spec.partition("=")
        if not template.startswith("/"):
            raise SystemExit(f"--route {spec!r}: NAME=/template expected")
        old = routes.get(name)
        routes[name] = Route(name, template, old.p99_ms if old else None,
                             old.health_ratio if old else None)
    return [r for name, r in routes.items() if name not in set(args.skip or [])]


def _login(api: ApiServer, auth: str) -> dict[str, str]:
    username, password = api.user("admin", username=f"bench-admin-{secrets.token_hex(4)}")
    token = api.token(username, password)
    if auth == "key":
        answer = httpx.post(f"{api.url}{PREFIX}/admin/keys", json={"name": "api bench",
                                                                  "role": "admin"},
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
        token = answer.raise_for_status().json()["key"]
    return {"Authorization": f"Bearer {token}"}


def _server_process() -> psutil.Process:
    for child in psutil.Process().children():
        if "serve" in child.cmdline() and "oem_retention" in child.cmdline():
            return child
    raise RuntimeError("the API's process is not a child of this one")


def plans(api: ApiServer, headers: dict[str, str], routes: list[Route], url: str,
          args: argparse.Namespace) -> tuple[list[tuple[Route, Plan]], list[str]]:
    """A plan per route that can be loaded; notes on those that cannot."""
    values = pools(url, datetime.now(UTC).date())
    notes = []
    with httpx.Client(base_url=api.url, headers=headers, timeout=120) as client:
        paths = served(client)
        if is_served("/fleet/machines", paths) and args.fleet_walk:
            cursors, seen, seconds = fleet_cursors(client, pages=args.fleet_walk)
            values["fleet_page"] = cursors
            say(f"fleet list walked in pages of 1,000: {seen:,} machines, {len(cursors)} cursors,"
                f" {seconds:.1f} s")
        loadable = []
        for n, route in enumerate(routes):
            empty = [f for f in fields(route.template) if not values.get(f)]
            if not is_served(route.path, paths):
                notes.append(f"{route.name}: missing ({route.path} is not in the API's OpenAPI"
                             " document)")
                continue
            if empty:
                notes.append(f"{route.name}: skipped, nothing to fill {', '.join(empty)} with")
                continue
            urls = [PREFIX + u for u in expand(route.template, values, count=args.urls,
                                               seed=SEED + n)]
            probe = client.get(urls[0])
            if probe.status_code >= 400:
                notes.append(f"{route.name}: skipped, {urls[0]} answered {probe.status_code}:"
                             f" {probe.text[:300]}")
                continue
            loadable.append((route, Plan(api.url, headers, urls, args.clients, args.warmup,
                                         args.seconds, SEED + n, args.think)))
    return loadable, notes


def run(url: str, database: str, args: argparse.Namespace, log: Path) -> None:
    say(f"database {database}: {describe(url)}")
    with psycopg.connect(url) as conn:
        machines = int((conn.execute(_q()["world_size"]).fetchone() or (0, 0))[1])
    with running_api(url, log=log, workers=args.workers, api_pool_max=str(args.pool_max)) as api:
        watch = CpuWatch(_server_process(), database)
        headers = _login(api, args.auth)
        loadable, notes = plans(api, headers, _routes(args), url, args)
        health = [p for p in loadable if p[0].name == HEALTH]
        if not health:
            raise SystemExit("the health route cannot be loaded: no ratio without it")
        order = [health[0], *[p for p in loadable if p[0].name != HEALTH], health[0]]
        say(f"API: {args.workers} worker(s), pool of {args.pool_max} connections,"
            f" {args.auth} auth; load: {args.clients} clients"
            f"{f' pausing {args.think:g} s on average' if args.think else ''}, {args.warmup:g}"
            " s warm-up +"
            f" {args.seconds:g} s per route; {_git_state()}; load average"
            f" {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        gen = LoadGenerator()
        try:
            runs = []
            for route, plan in order:
                m = measure(gen, watch, route, plan)
                waited = drain(url)
                say(f"    {route.name}: {m.requests:,} requests, {m.rate:,.0f}/s, p99"
                    f" {m.percentile_ms(99):.1f} ms, {m.outcome.errors:,} errors; the API's"
                    f" database work done {waited:.1f} s after the window")
                runs.append(m)
        finally:
            gen.close()
    report(runs, notes, machines=machines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", metavar="NAME",
                        help="keep the world in this database and reuse it on the next run"
                             " (default: a fresh database, dropped afterwards)")
    parser.add_argument("--seed", type=int, default=SEED, help="the demo world's")
    parser.add_argument("--customers", type=int, default=300, help="the demo world's")
    parser.add_argument("--world-machines", type=int, default=1_500,
                        help="the demo world's machines (with history)")
    parser.add_argument("--years", type=int, default=3, help="the demo world's history")
    parser.add_argument("--process-days", type=int, default=90,
                        help="days before the end with hourly process metrics too")
    parser.add_argument("--machines", type=int, default=0,
                        help="grow the installed base to this many machines with synthetic ones"
                             " (usage in machine_days only; default: the world's own)")
    parser.add_argument("--usage-days", type=int, default=60,
                        help="days of daily usage of each synthetic machine")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the API")
    parser.add_argument("--pool-max", type=int, default=10,
                        help="the API's database connections per worker (OEMR_API_POOL_MAX)")
    parser.add_argument("--auth", choices=("token", "key"), default="token",
                        help="a user's bearer token, or an API key")
    parser.add_argument("--clients", type=int, default=50,
                        help="concurrent clients, each with a keep-alive connection")
    parser.add_argument("--think", type=float, default=0.0, metavar="SECONDS",
                        help="mean pause of each client between an answer and its next request"
                             " (exponential; default 0: every client sends again at once, the"
                             " API's saturated rate, whose latency is clients / rate)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured, per route")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured, per route")
    parser.add_argument("--urls", type=int, default=2_000,
                        help="URLs drawn per route (the clients pick among them at random)")
    parser.add_argument("--fleet-walk", type=int, default=100, metavar="PAGES",
                        help="pages of 1,000 machines walked for fleet cursors (0: first page)")
    parser.add_argument("--route", action="append", metavar="NAME=TEMPLATE",
                        help="add a route or replace a default one of that name (repeat);"
                             " fields: " + ", ".join(sorted(
                                 ["customer_id", "machine_id", "installed_base_id", "now",
                                  "day_ago", "year_ago", "fleet_page"])))
    parser.add_argument("--skip", action="append", metavar="NAME", help="leave a route out")
    parser.add_argument("--list-routes", action="store_true", help="print the routes and stop")
    args = parser.parse_args(argv)
    if args.list_routes:
        for route in _routes(args):
            say(f"{route.name:<24}{route.template}")
        return
    settings = Settings()
    today = datetime.now(UTC).date()
    with tempfile.TemporaryDirectory(prefix="oemr-api-bench-") as tmp:
        log = Path(tmp) / "api.log"
        if args.database:
            url, fresh = kept_database(settings, args.database)
            if fresh:
                load(url, args, today, settings.reporting_currency)
            else:
                say(f"reusing the world in database {args.database}")
            if args.machines:
                grow(url, machines=args.machines, days=args.usage_days, today=today)
            refresh_fleet(url)
            run(url, args.database, args, log)
            return
        with fresh_database(settings) as url:
            load(url, args, today, settings.reporting_currency)
            if args.machines:
                grow(url, machines=args.machines, days=args.usage_days, today=today)
            refresh_fleet(url)
            run(url, str(psycopg.conninfo.conninfo_to_dict(url)["dbname"]), args, log)


if __name__ == "__main__":
    main()
