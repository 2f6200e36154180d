"""Syncing whole sources: every entity a connector provides, parents first, then the report.

One entity failing (a permanent error, the source down after retries, another sync of it
running) does not stop the others; an entity whose parents failed still runs, and whatever names
a parent that is not there yet is rejected with that reason and comes in on a later run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from erp_connectors.quality import EntityOutcome, build_report, store_report
from erp_connectors.sync import (
    ENTITIES,
    Connector,
    PageSource,
    PermanentSyncError,
    SourceUnavailableError,
    SyncBusyError,
    sync_entity,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str, str, int], None]
"""Called after each committed page: source, entity, records in the page."""


@dataclass(frozen=True, slots=True)
class SourcesSync:
    """What a sync of several sources did, and its stored report."""

    outcomes: list[EntityOutcome]
    report_id: int
    report: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Every entity of every source synced."""
        return bool(self.report["ok"])


async def sync_sources(pool: AsyncConnectionPool, connectors: Sequence[Connector], *,
                       full: bool = False, reporting_currency: str,
                       progress: Progress | None = None,
                       before: Sequence[EntityOutcome] = ()) -> SourcesSync:
    """Sync every entity of every connector, then build and store the data-quality report.

    Parameters
    ----------
    pool
        The process's pool; one connection per entity run, returned after it.
    connectors
        The sources to sync, in order.
    full
        Read every source from its start (and mark deleted what is gone).
    reporting_currency
        For the report's exchange-rate check.
    progress
        Told about each committed page (a progress bar).
    before
        Outcomes of work done before the sync that belongs in its report (exchange rates).
    """
    outcomes: list[EntityOutcome] = list(before)
    for connector in connectors:
        try:
            sources = connector.page_sources()
        except (PermanentSyncError, SourceUnavailableError) as exc:
            # The source cannot even say what it holds (an unreadable workbook, a refused
            # login): the other sources go on.
            logger.error("%s: %s", connector.source, exc)
            outcomes.append(EntityOutcome(connector.source, "(all)", "failed", error=str(exc)))
            continue
        unknown = set(sources) - set(ENTITIES)
        if unknown:
            raise ValueError(f"{connector.source} offers unknown entities {sorted(unknown)}")
        for entity in (e for e in ENTITIES if e in sources):
            outcomes.append(await _sync_one(pool, connector.source, entity, sources[entity],
                                            full=full, progress=progress))
    async with pool.connection() as conn:
        report = await build_report(conn, outcomes, reporting_currency=reporting_currency)
        report_id = await store_report(conn, report, sources=[c.source for c in connectors],
                                       full=full)
    return SourcesSync(outcomes, report_id, report)


async def _sync_one(pool: AsyncConnectionPool, source: str, entity: str, pages: PageSource, *,
                    full: bool, progress: Progress | None) -> EntityOutcome:
    def counted(records: int) -> None:
        if progress is not None:
            progress(source, entity, records)

    try:
        result = await sync_entity(pool, source=source, entity=entity, pages=pages,
                                   full=full, on_page=counted)
    except SyncBusyError as exc:
        logger.warning("%s", exc)
        return EntityOutcome(source, entity, "busy", error=str(exc))
    return EntityOutcome.of(result)
