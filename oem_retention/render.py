"""How the commands show their results on the terminal (rich): tables, reports, progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:  # only their types: a command imports the domain it runs, and no other
    from analytics.daily import DailyRun
    from ingest.quality import DeadLetterSource, GapDay


def dead_letter_sources(sources: Sequence[DeadLetterSource], since: str) -> Table:
    """Dead letters by source: how many, how often received, the latest reason."""
    letters = Table(title=f"dead letters by source, last {since}")
    for column in ("source", "messages", "received", "last", "latest reason"):
        letters.add_column(column, overflow="fold")
    for s in sources:
        letters.add_row(s.source, f"{s.distinct_messages:,}", f"{s.times_received:,}",
                        f"{s.last_received_at:%Y-%m-%d %H:%M}", s.latest_reason)
    return letters


def sparkplug_losses(gaps: Sequence[GapDay], since: str) -> Table:
    """Sparkplug losses by edge node and day."""
    lost = Table(title=f"Sparkplug losses by edge node and day, last {since}")
    for column in ("group", "edge node", "day", "gaps", "seq missing", "data w/o birth",
                   "rebirths asked"):
        lost.add_column(column)
    for g in gaps:
        lost.add_row(g.spb_group, g.spb_edge_node, f"{g.day:%Y-%m-%d}", str(g.seq_gaps),
                     str(g.seq_numbers_missing), str(g.data_without_birth),
                     str(g.rebirths_requested))
    return lost


@contextmanager
def sync_progress(console: Console) -> Iterator[Callable[[str, str, int], None]]:
    """A progress line per synced entity; yields the callback the sync reports pages to."""
    columns = (SpinnerColumn(), TextColumn("{task.description:<32}"),
               TextColumn("{task.completed:>10,.0f} records"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[tuple[str, str], TaskID] = {}

        def advance(src: str, entity: str, records: int) -> None:
            key = (src, entity)
            if key not in tasks:
                tasks[key] = bar.add_task(f"{src}/{entity}", total=None)
            bar.advance(tasks[key], records)

        yield advance


def print_sync_report(console: Console, report: dict[str, Any]) -> None:
    """The data-quality report of a sync: entities, their errors and rejects, the checks."""
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


def print_daily_run(console: Console, done: DailyRun, day: date) -> None:
    """What `analytics run` did, step by step, and the customers at highest risk."""
    rollup, value = done.rollup, done.value
    console.print(f"rollups: {rollup.rows_changed:,} machine-days written from {rollup.from_day}")
    if done.metric_hours is not None:
        console.print(f"metric hours: {done.metric_hours.rows_changed:,} written from"
                      f" {done.metric_hours.from_day}")
    if done.fleet is not None:
        console.print(f"fleet: {done.fleet.written:,} machines rated as of"
                      f" {done.fleet.as_of:%Y-%m-%d %H:%M} UTC")
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
    console.print(riskiest(done, day) if done.scores else "no customers to score")


def riskiest(done: DailyRun, day: date, *, top: int = 15) -> Table:
    """The customers with the highest churn probability, with revenue at risk and why."""
    table = Table(title=f"highest churn risk on {day} ({done.scores[0].method})")
    for column in ("customer", "probability", "revenue at risk", "why"):
        table.add_column(column, overflow="fold")
    for score in sorted(done.scores, key=lambda s: -s.probability)[:top]:
        at_risk = score.revenue_at_risk
        table.add_row(score.external_id, f"{score.probability:.0%}",
                      "" if at_risk is None else f"{at_risk:,.0f} {score.currency}",
                      "; ".join(f"{r.label} ({r.effect:+.0%})" for r in score.reasons[:3]))
    return table
