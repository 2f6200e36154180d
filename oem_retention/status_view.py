"""The status `oem-retention up` draws: one screen, redrawn in place, from a PlatformStatus.

It is laid out for the terminal it is drawn on: a 200x50 terminal shows everything with room to
spare; on 80x24 the blank lines go and long lines end in an ellipsis, but every process, the
ingest, database, stored rows and scheduled work still have their line. Lines never wrap except
the list of stored rows, so the height is known.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from rich import box
from rich.columns import Columns
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.table import Column, Table
from rich.text import Text

from oem_retention.status import (
    STALE_AFTER_S,
    TABLES,
    DatabaseView,
    IngestView,
    JobRunView,
    PlatformStatus,
)
from oem_retention.supervisor import ChildState

# Below this width or height the status drops its blank lines and narrows its columns.
ROOMY_WIDTH = 120
ROOMY_HEIGHT = 32
_STATE_STYLE = {"running": "green", "restarting": "yellow", "stopped": "red"}
_RUN_STYLE = {"succeeded": "green", "failed": "red", "running": "cyan"}


class StatusView:
    """A rich renderable of one PlatformStatus."""

    def __init__(self, status: PlatformStatus) -> None:
        self.status = status

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Draw it for the console's width and height."""
        s = self.status
        roomy = options.max_width >= ROOMY_WIDTH and options.size.height >= ROOMY_HEIGHT
        now = s.now.astimezone(UTC)
        yield _line(f"[bold]oem-retention up[/bold]  pid {s.pid}  running"
                    f" {_duration((s.now - s.started_at).total_seconds())}"
                    f"  {now:%Y-%m-%d %H:%M:%S} UTC  [dim]Ctrl-C stops everything[/dim]"
                    if roomy else f"[bold]oem-retention up[/bold]  pid {s.pid}  {now:%H:%M:%S}"
                    f" UTC  [dim]Ctrl-C stops all[/dim]")
        if s.api_url:
            yield _line(f"API: [bold]{s.api_url}/api/v1/docs[/bold]  (OpenAPI document:"
                        f" {s.api_url}/api/v1/openapi.json)")
        yield _line(f"logs: {s.log_dir}/<process>.log (up itself: up.log)")
        if roomy:
            yield ""
        yield _processes(s.children, roomy=roomy)
        if roomy:
            yield ""
        yield _line("ingester  " + _ingest(s.ingest))
        yield _line("database  " + _database(s.database, s.now))
        yield _stored(s.database, roomy=roomy)
        if roomy:
            yield ""
        yield _work(s)


def _line(markup: str) -> Text:
    text = Text.from_markup(markup)
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def _table(*columns: Column) -> Table:
    # Only the last column (free text) gives way when the terminal is narrow: the others are
    # short and always whole.
    for column in columns[:-1]:
        column.no_wrap, column.min_width = True, len(str(column.header))
    columns[-1].no_wrap, columns[-1].overflow, columns[-1].ratio = True, "ellipsis", 1
    return Table(*columns, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False,
                 show_edge=False, expand=True)


def _processes(children: Iterable[ChildState], *, roomy: bool) -> Table:
    table = _table(Column("process"), Column("state"), Column("pid", justify="right"),
                   Column("restarts", justify="right"),
                   Column("up for" if roomy else "up", justify="right"),
                   Column("last warning or error in its log"))
    for c in children:
        state = c.state if c.restart_in_s is None else f"restart in {c.restart_in_s:.0f} s"
        if roomy and c.last_exit is not None and c.state != "running":
            state += f" (exit {c.last_exit})"
        table.add_row(c.name, Text(state, style=_STATE_STYLE[c.state]),
                      "" if c.pid is None else str(c.pid), str(c.restarts),
                      "" if c.running_s is None else _duration(c.running_s),
                      Text(_short(c.last_problem) if c.last_problem else "-",
                           style="yellow" if c.last_problem else "dim"))
    return table


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d (\d\d:\d\d):\d\d(?:,\d+)? (\w+) [\w.]+: (.*)$")


def _short(line: str) -> str:
    """A log line without its date, seconds and logger: the time, the level and the message."""
    match = _LOG_LINE.match(line)
    return line if match is None else " ".join(match.groups())


def _ingest(view: IngestView) -> str:
    c = view.counters
    if c is None:
        return f"[red]{view.problem}[/red] ({view.path})"
    age = view.age_s or 0.0
    verdict = ("[green]healthy[/green]" if view.healthy else
               f"[red]status {age:.0f} s old: not running[/red]" if age > STALE_AFTER_S else
               "[red]unhealthy[/red]")
    rate = "" if view.rows_per_s is None else f"{view.rows_per_s:,.0f} rows/s, "
    mqtt = "connected" if c.get("mqtt_connected") else "[red]DISCONNECTED[/red]"
    db = ("ok" if c.get("db_ok") else "not written to yet"
          if not c.get("batches") and not c.get("db_error") else "[red]FAILING[/red]")
    # What matters most first: a narrow terminal cuts the end of the line.
    return (f"{verdict}  {rate}{c.get('dead_lettered', 0):,} dead-lettered,"
            f" {c.get('pending', 0):,} pending  MQTT {mqtt}, database {db}"
            f"  {c.get('stored_messages', 0):,} messages stored, batch"
            f" {c.get('batch_ms_last', 0):.0f} ms (max {c.get('batch_ms_max', 0):.0f})")


def _database(view: DatabaseView, now: datetime) -> str:
    if view.ok:
        return f"[green]ok[/green]  one connection for this status (backend pid {view.backend_pid})"
    since = "" if view.down_since is None else (
        f" since {view.down_since.astimezone(UTC):%H:%M:%S}"
        f" ({_ago((now - view.down_since).total_seconds())})")
    retry = "" if view.retry_in_s is None else f"; next try in {view.retry_in_s:.0f} s"
    return f"[red]{view.problem}{since}{retry}[/red]"


def _stored(view: DatabaseView, *, roomy: bool) -> RenderableType:
    if not view.ok:
        return Text.assemble(("stored ≈ ", "bold"),
                             ("unknown while the database does not answer", "red"))
    cells = [Text.assemble(("stored ≈", "bold"), (" (table statistics)" if roomy else "", "dim"))]
    cells += [Text(f"{labels[0 if roomy else 1]} {_count(view.rows[name], exact=roomy)}")
              for name, labels in TABLES.items() if view.rows.get(name) is not None]
    # Each count stays whole on its line; as many to a line as the width takes.
    return Columns(cells, padding=(0, 3))


def _work(s: PlatformStatus) -> Table:
    table = _table(Column("scheduled"), Column("last run"), Column("what it did"))
    jobs = s.database.jobs if s.database.ok else ()
    for job in jobs:
        table.add_row(_JOB_LABEL.get(job.job, job.job), *_job(job, s.now))
    if not s.database.ok:
        table.add_row("analytics", Text("unknown", style="red"), "the database does not answer")
    sync = s.database.sync
    if sync is None or not s.database.ok:
        table.add_row("erp sync", Text("-", style="dim"), s.erp_schedule)
    else:
        outcome = ("all entities synced" if sync.ok else
                   f"did not sync: {', '.join(sync.failed) or 'see erp report'}")
        table.add_row("erp sync", Text(_when(sync.created_at, s.now),
                                       style="green" if sync.ok else "red"),
                      f"{', '.join(sync.sources)}: {outcome}; {s.erp_schedule}")
    r = s.retention
    table.add_row("retention", "-" if r is None else Text(
        _when(r.at, s.now), style="red" if r.error else "green"),
        "hourly" if r is None else f"{r.line()}; hourly")
    return table


_JOB_LABEL = {"rollups": "rollups", "daily": "daily run", "retrain": "retraining"}


def _job(job: JobRunView, now: datetime) -> tuple[Text, str]:
    if job.status is None or job.started_at is None:
        return Text("never", style="dim"), ""
    style = _RUN_STYLE.get(job.status, "yellow")
    if job.status == "running":
        return Text(f"running since {_when(job.started_at, now)}", style=style), ""
    return (Text(f"{job.status} {_when(job.finished_at or job.started_at, now)}", style=style),
            job.detail or "")


def _when(moment: datetime, now: datetime) -> str:
    return f"{moment.astimezone(UTC):%H:%M} ({_ago((now - moment).total_seconds())} ago)"


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86_400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} d"


def _count(n: int | None, *, exact: bool) -> str:
    if n is None:
        return "-"
    if exact or n < 10_000:
        return f"{n:,}"
    return f"{n / 1e6:.1f}M" if n >= 1_000_000 else f"{n / 1e3:.0f}k"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days} d {clock}" if days else clock
