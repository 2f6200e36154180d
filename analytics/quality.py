"""Data quality, read for the API.

Dead letters, Sparkplug losses, ERP syncs and the machines the ERP and the ingester disagree on.

The same views and tables the command line reads (``ingest quality``: the views
``dead_letter_sources`` and ``sparkplug_gap_days``; ``erp report``: ``sync_reports``, written
after every sync), here as keyset pages (:mod:`core.paging`) so that a list of any length can be
paged and exported. ``ingest`` and ``erp_connectors`` own the writes and their own read-outs; this
module only reads what they left in the database (the domains meet there, never in imports).

Examples
--------
>>> async def show(conn):  # doctest: +SKIP
...     page = await dead_letter_sources(conn, PageRequest(sort="times_received",
...                                                        descending=True),
...                                      since=datetime(2026, 1, 1, tzinfo=UTC))
...     for row in page.items:
...         print(row["source"], row["times_received"], row["latest_reason"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.paging import Page, PageRequest, cut, keyset, keyset_params
from core.sql import queries

Conn = psycopg.AsyncConnection[Any]
Row = Mapping[str, Any]

# The sortable columns of each list (never NULL in its query), and its unique key.
SOURCE_SORTS = ("source", "times_received", "distinct_messages", "last_received_at")
DEAD_LETTER_SORTS = ("id", "last_received_at", "times_received", "topic")
GAP_SORTS = ("day", "seq_numbers_missing", "seq_gaps")
RUN_SORTS = ("id", "started_at")
REJECT_SORTS = ("id",)
STRAY_SORTS = ("serial", "first_seen_at")
NEVER_SEEN_SORTS = ("serial", "customer_id")

PAYLOAD_PREVIEW_BYTES = 256


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/quality.sql")


async def _page(conn: Conn, block: str, page: PageRequest, *, sorts: tuple[str, ...],
                key: str, params: Mapping[str, Any]) -> Page[Row]:
    where, order = keyset({name: sql.Identifier(name) for name in sorts},
                          sql.Identifier(key), page)
    query = sql.SQL(_sql()[block]).format(where=where, order=order)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**params, **keyset_params(page)})
        rows: Sequence[Row] = await cur.fetchall()
    return cut(rows, page)


async def dead_letter_sources(conn: Conn, page: PageRequest, *, since: datetime) -> Page[Row]:
    """Sources with dead letters last received at or after ``since`` (key: ``source``).

    A source is a JSON machine (``oem/<tenant>/<serial>``), a Sparkplug edge node
    (``spBv1.0/<group>/<node>``) or, for anything else, the topic's first level; per source the
    dead letters (``distinct_messages``), how often they came (``times_received``) and the latest
    reason and topic.
    """
    return await _page(conn, "dead_letter_sources", page, sorts=SOURCE_SORTS, key="source",
                       params={"since": since})


async def dead_letters(conn: Conn, page: PageRequest, *, since: datetime,
                       topic_prefix: str | None = None, reason: str | None = None) -> Page[Row]:
    """Dead letters one by one, with the first :data:`PAYLOAD_PREVIEW_BYTES` of the payload.

    ``topic_prefix`` keeps topics starting with it; ``reason`` those whose reason contains it
    (case-insensitive), as ``ingest replay --reason`` selects them.
    """
    return await _page(conn, "dead_letters", page, sorts=DEAD_LETTER_SORTS, key="id",
                       params={"since": since, "topic_prefix": topic_prefix, "reason": reason,
                               "preview": PAYLOAD_PREVIEW_BYTES})


async def sparkplug_gap_days(conn: Conn, page: PageRequest, *, since: datetime,
                             spb_group: str | None = None) -> Page[Row]:
    """Sparkplug losses per edge node and UTC day from ``since``'s day (key ``group/node/day``)."""
    return await _page(conn, "sparkplug_gap_days", page, sorts=GAP_SORTS, key="id",
                       params={"since": since, "spb_group": spb_group})


async def sync_runs(conn: Conn, page: PageRequest, *, source: str | None = None,
                    entity: str | None = None, status: str | None = None) -> Page[Row]:
    """ERP sync runs (one source and entity each), with what they read, wrote and refused."""
    return await _page(conn, "sync_runs", page, sorts=RUN_SORTS, key="id",
                       params={"source": source, "entity": entity, "status": status})


async def sync_rejects(conn: Conn, page: PageRequest, *, run_id: int | None = None,
                       source: str | None = None, entity: str | None = None) -> Page[Row]:
    """Records an ERP sync refused, with the reason and the record as it came."""
    return await _page(conn, "sync_rejects", page, sorts=REJECT_SORTS, key="id",
                       params={"run_id": run_id, "source": source, "entity": entity})


async def latest_sync_report(conn: Conn) -> dict[str, Any] | None:
    """The newest stored data-quality report of ``erp sync``, or None before the first sync."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_sql()["latest_sync_report"])
        return await cur.fetchone()


async def machines_without_erp(conn: Conn, page: PageRequest) -> Page[Row]:
    """Machines sending data whose serial no ERP's live installed base has.

    Their usage counts for no customer until an ERP knows them.
    """
    return await _page(conn, "machines_without_erp", page, sorts=STRAY_SORTS, key="id",
                       params={})


async def erp_machines_never_seen(conn: Conn, page: PageRequest) -> Page[Row]:
    """Live installed base the ingester has never heard from (key: the installed-base id)."""
    return await _page(conn, "erp_machines_never_seen", page, sorts=NEVER_SEEN_SORTS, key="id",
                       params={})
