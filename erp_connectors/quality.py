"""The data-quality report of a sync: what came in, what was refused and why, what does not fit.

Written after every ``erp sync`` (by hand or scheduled) into ``sync_reports`` and shown by
``oem-retention erp report``. Per source and entity: records read, rows written, rejected and
marked deleted, and the first rejects with their reasons. Then the cross-checks no single record
shows: machines the ingester hears from that no ERP knows (their usage counts for no customer),
installed base never heard from, money in currencies without a rate to the reporting currency,
invoices whose lines do not add up, installed models without a service plan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg

from core.sql import queries
from erp_connectors.sync import SyncResult

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

# Cross-checks in the order the report shows them: (sql block, title, columns of a sample row).
CHECKS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("machines_without_erp", "machines reporting telemetry that no ERP's installed base has",
     ("tenant", "serial", "first_seen_at")),
    ("erp_machines_never_seen", "installed base the ingester has never heard from",
     ("source", "external_id", "serial")),
    ("currencies_without_rate", "currencies without an exchange rate to the reporting currency",
     ("currency", "records", "first_day")),
    ("invoices_not_matching_lines", "invoices whose lines do not add up to the net amount",
     ("source", "external_id", "net_amount", "lines_total")),
    ("models_without_service_plan", "installed models without a service plan (machine_models)",
     ("model", "machines")),
    ("records_waiting_for_parent", "records waiting for a parent that has not arrived",
     ("source", "entity", "external_id", "reason", "first_rejected_at")),
)


@dataclass(frozen=True, slots=True)
class EntityOutcome:
    """What one source/entity did in a sync: a run's result, or why there was no run."""

    source: str
    entity: str
    status: str  # succeeded | failed | busy (another sync of it was running)
    records_read: int = 0
    rows_upserted: int = 0
    rows_rejected: int = 0
    rows_deleted: int = 0
    error: str | None = None
    run_id: int | None = None

    @classmethod
    def of(cls, result: SyncResult) -> EntityOutcome:
        """The outcome of a finished run."""
        return cls(result.source, result.entity, result.status, result.records_read,
                   result.rows_upserted, result.rows_rejected, result.rows_deleted,
                   result.error, result.run_id)


def _q() -> dict[str, str]:
    return queries("erp_connectors", "sql/report.sql")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


async def build_report(conn: Connection, outcomes: list[EntityOutcome], *,
                       reporting_currency: str, sample: int = 10) -> dict[str, Any]:
    """The report of a sync from its outcomes and the database as the sync left it."""
    q = _q()
    run_ids = [o.run_id for o in outcomes if o.run_id is not None]
    cur = await conn.execute(q["run_rejects"], {"run_ids": run_ids, "sample": sample})
    examples = {row[0]: row[2] for row in await cur.fetchall()}
    entities = [{**asdict(outcome), "reject_examples": examples.get(outcome.run_id, [])}
                for outcome in outcomes]
    checks = []
    for block, title, columns in CHECKS:
        cur = await conn.execute(q[block], {"sample": sample, "reporting": reporting_currency})
        rows = await cur.fetchall()
        checks.append({"check": block, "title": title, "total": rows[0][-1] if rows else 0,
                       "sample": [{c: _plain(v) for c, v in zip(columns, row, strict=False)}
                                  for row in rows]})
    await conn.rollback()
    return {"ok": all(o.status == "succeeded" for o in outcomes),
            "reporting_currency": reporting_currency, "entities": entities, "checks": checks}


async def store_report(conn: Connection, report: dict[str, Any], *, sources: list[str],
                       full: bool) -> int:
    """Store a report; its id."""
    async with conn.transaction():
        cur = await conn.execute(_q()["insert_report"], {
            "sources": sources, "full": full, "ok": report["ok"],
            "report": orjson.dumps(report, default=_plain).decode()})
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def latest_report(conn: Connection) -> dict[str, Any] | None:
    """The newest stored report with when and what it covered, or None before the first sync."""
    cur = await conn.execute(_q()["latest_report"])
    row = await cur.fetchone()
    await conn.rollback()
    if row is None:
        return None
    report_id, created_at, sources, full, ok, report = row
    return {"id": report_id, "created_at": created_at, "sources": sources, "full_resync": full,
            "ok": ok, **report}
