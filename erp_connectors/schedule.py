"""The ERP sync as the platform runs it: once now (``erp sync``), or every N minutes (``up``).

Which connectors a deployment has is the process wiring's business (``oem_retention.wiring``):
the functions here take them built, or a function that builds them for each turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from psycopg_pool import AsyncConnectionPool

from core.db import make_pool
from core.settings import Settings
from erp_connectors.files import EXCHANGE_RATES, locate
from erp_connectors.quality import EntityOutcome
from erp_connectors.rates import load_exchange_rates
from erp_connectors.sources import Progress, SourcesSync, sync_sources
from erp_connectors.sync import Connector, PermanentSyncError

logger = logging.getLogger(__name__)


async def sync_now(settings: Settings, connectors: Sequence[Connector], *, full: bool = False,
                   progress: Progress | None = None) -> SourcesSync:
    """Sync ``connectors`` on a pool of their own, then store the report; closes them after.

    Exchange rates exported beside the files connector's files are loaded first, and their
    outcome is part of the report.
    """
    try:
        async with make_pool(settings, name="oemr-erp-sync") as pool:
            before: list[EntityOutcome] = []
            if settings.erp_files_dir is not None and any(
                    c.source == "files" for c in connectors):
                before = await rates_beside_files(pool, settings.erp_files_dir)
            return await sync_sources(pool, connectors, full=full,
                                      reporting_currency=settings.reporting_currency,
                                      progress=progress, before=before)
    finally:
        for connector in connectors:
            await connector.aclose()


async def rates_beside_files(pool: AsyncConnectionPool, directory: Path) -> list[EntityOutcome]:
    """Exchange rates exported with the files load with them; what happened, for the report."""
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


async def scheduled_sync(settings: Settings,
                         connectors: Callable[[], Sequence[Connector]]) -> None:
    """One turn of the schedule: sync every source, log each entity's outcome."""
    try:
        done = await sync_now(settings, connectors())
    except Exception:
        # The schedule outlives one bad run; the next one resumes from the cursors.
        logger.exception("scheduled ERP sync failed")
        return
    for e in done.outcomes:
        logger.info("%s/%s %s: %s read, %s written, %s rejected, %s deleted%s", e.source,
                    e.entity, e.status, e.records_read, e.rows_upserted, e.rows_rejected,
                    e.rows_deleted, f": {e.error}" if e.error else "")


async def run_schedule(settings: Settings, connectors: Callable[[], Sequence[Connector]], *,
                       stop: asyncio.Event) -> None:
    """Sync now and every ``erp_sync_interval_minutes`` until ``stop`` is set.

    ``connectors`` builds the sources' connectors afresh for each turn (each turn closes them).
    """
    if not settings.erp_sync_interval_minutes:
        raise ValueError("OEMR_ERP_SYNC_INTERVAL_MINUTES is 0: no scheduled sync")
    scheduler = AsyncIOScheduler(timezone="UTC")
    # One run at a time here; the database's advisory locks keep two processes apart.
    scheduler.add_job(scheduled_sync, "interval", args=(settings, connectors),
                      minutes=settings.erp_sync_interval_minutes,
                      next_run_time=datetime.now(UTC), max_instances=1, coalesce=True,
                      id="erp-sync")
    scheduler.start()
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
