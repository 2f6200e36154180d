"""Data quality of the ingest: where dead letters come from, what Sparkplug traffic was lost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from core.sql import queries


@dataclass(frozen=True, slots=True)
class DeadLetterSource:
    """Dead letters of one source (a JSON machine, a Sparkplug edge node, a stray topic root)."""

    source: str
    distinct_messages: int
    times_received: int
    last_received_at: datetime
    latest_reason: str


@dataclass(frozen=True, slots=True)
class GapDay:
    """One Sparkplug edge node's losses on one day."""

    spb_group: str
    spb_edge_node: str
    day: datetime
    seq_gaps: int
    seq_numbers_missing: int
    data_without_birth: int
    rebirths_requested: int


def dead_letter_sources(conn: psycopg.Connection[Any], *, since: str = "7 days",
                        limit: int = 50) -> list[DeadLetterSource]:
    """Sources with dead letters received within ``since``, the most frequent first."""
    rows = conn.execute(queries("ingest", "sql/quality.sql")["dead_letter_sources"],
                        {"since": since, "limit": limit}).fetchall()
    return [DeadLetterSource(*row) for row in rows]


def sparkplug_gap_days(conn: psycopg.Connection[Any], *, since: str = "7 days",
                       limit: int = 50) -> list[GapDay]:
    """Edge nodes' Sparkplug losses per day within ``since``, the latest first."""
    rows = conn.execute(queries("ingest", "sql/quality.sql")["sparkplug_gap_days"],
                        {"since": since, "limit": limit}).fetchall()
    return [GapDay(*row) for row in rows]
