"""Data quality routes.

What the ingester could not store, what Sparkplug traffic was lost, how the ERP syncs went, and
the machines the ERP and the telemetry disagree on.

The API face of ``oem-retention ingest quality`` and ``erp report``, for admin and service.
Replaying dead letters is not a route: ``ingest replay`` writes telemetry and deletes dead
letters as the database's owner, which the API's role (row-level security, migration 019) is
not, and a replay of a backlog runs for minutes, longer than a request should (docs/mqtt.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from analytics import quality
from api.deps import Session, requires
from api.errors import NotFound
from api.models.quality import (
    DeadLetter,
    DeadLetterSource,
    ErpMachineNeverSeen,
    MachineWithoutErp,
    SparkplugGapDay,
    SyncReject,
    SyncReport,
    SyncRun,
)
from api.paging import Page
from api.responses import EXPORTS, Format, json_response, list_response

router = APIRouter(prefix="/quality", tags=["quality"])
Reader = Annotated[Session, requires("service")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Days = Annotated[int, Query(ge=1, le=3650, description="How many days back (by last receipt)")]
# Free text compared with stored text: printable, no NUL (PostgreSQL text cannot hold one).
Text = Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]


def _since(days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


@router.get("/dead-letters", response_model=Page[DeadLetterSource], responses=EXPORTS,
            summary="Dead letters by source")
async def dead_letter_sources(
        request: Request, session: Reader, *, days: Days = 7,
        sort: Literal["source", "-source", "times_received", "-times_received",
                      "distinct_messages", "-distinct_messages", "last_received_at",
                      "-last_received_at"] = "-times_received",
        limit: Limit = 50, cursor: str | None = None, format: Format = "json",
) -> Response:
    """Where messages that could not be stored come from.

    With the latest reason of each source, as ``oem-retention ingest quality``.
    """
    return await list_response(
        request, session, fetch=partial(quality.dead_letter_sources, since=_since(days)),
        item=lambda r: DeadLetterSource(**r), model=DeadLetterSource, sort=sort, limit=limit,
        cursor=cursor, fmt=format, filename="dead-letter-sources", key="source")


@router.get("/dead-letters/messages", response_model=Page[DeadLetter], responses=EXPORTS,
            summary="Dead letters")
async def dead_letters(
        request: Request, session: Reader, *, days: Days = 7,
        topic_prefix: Text = None, reason: Text = None,
        sort: Literal["id", "-id", "last_received_at", "-last_received_at", "times_received",
                      "-times_received", "topic", "-topic"] = "-last_received_at",
        limit: Limit = 50, cursor: str | None = None, format: Format = "json",
) -> Response:
    """The dead letters one by one, with their reason and the start of their payload.

    ``reason`` selects those whose reason contains the text (as ``ingest replay --reason``).
    """
    return await list_response(
        request, session, fetch=partial(quality.dead_letters, since=_since(days),
                                        topic_prefix=topic_prefix, reason=reason),
        item=lambda r: DeadLetter(**r), model=DeadLetter, sort=sort, limit=limit,
        cursor=cursor, fmt=format, filename="dead-letters")


@router.get("/sparkplug-gaps", response_model=Page[SparkplugGapDay], responses=EXPORTS,
            summary="Sparkplug losses per edge node and day")
async def sparkplug_gaps(
        request: Request, session: Reader, *, days: Days = 7, spb_group: Text = None,
        sort: Literal["day", "-day", "seq_numbers_missing", "-seq_numbers_missing", "seq_gaps",
                      "-seq_gaps"] = "-day",
        limit: Limit = 50, cursor: str | None = None, format: Format = "json",
) -> Response:
    """Sparkplug losses per edge node and UTC day.

    Sequence gaps, numbers lost, data without a birth and rebirths asked for.
    """
    return await list_response(
        request, session, fetch=partial(quality.sparkplug_gap_days, since=_since(days),
                                        spb_group=spb_group),
        item=lambda r: SparkplugGapDay(**r), model=SparkplugGapDay, sort=sort, limit=limit,
        cursor=cursor, fmt=format, filename="sparkplug-gaps")


@router.get("/erp-sync/report", response_model=SyncReport, summary="The latest sync's report",
            responses={404: {"description": "no sync has run yet"}})
async def sync_report(request: Request, session: Reader) -> Response:
    """The data-quality report of the latest ERP sync (as ``oem-retention erp report``).

    Per source and entity what was read, written, refused and why, then the cross-checks.
    """
    row = await quality.latest_sync_report(session.conn)
    if row is None:
        raise NotFound("ERP sync report", "yet: run `oem-retention erp sync`")
    body = row.pop("report")
    report = SyncReport(**{**body, **row})
    return json_response(request, report)


@router.get("/erp-sync/runs", response_model=Page[SyncRun], responses=EXPORTS,
            summary="ERP sync runs")
async def sync_runs(
        request: Request, session: Reader, *, source: Text = None, entity: Text = None,
        status: Literal["running", "succeeded", "failed"] | None = None,
        sort: Literal["id", "-id", "started_at", "-started_at"] = "-id",
        limit: Limit = 50, cursor: str | None = None, format: Format = "json",
) -> Response:
    """Every sync of a source and entity.

    Records read, rows written, refused and marked deleted, and the error of a failed one.
    """
    return await list_response(
        request, session, fetch=partial(quality.sync_runs, source=source, entity=entity,
                                        status=status),
        item=lambda r: SyncRun(**r), model=SyncRun, sort=sort, limit=limit, cursor=cursor,
        fmt=format, filename="sync-runs")


@router.get("/erp-sync/rejects", response_model=Page[SyncReject], responses=EXPORTS,
            summary="Records refused by ERP syncs")
async def sync_rejects(
        request: Request, session: Reader, *,
        run_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
        source: Text = None, entity: Text = None,
        sort: Literal["id", "-id"] = "-id",
        limit: Limit = 50, cursor: str | None = None, format: Format = "json",
) -> Response:
    """Records an ERP sync refused, with the reason and the record as the ERP sent it."""
    return await list_response(
        request, session, fetch=partial(quality.sync_rejects, run_id=run_id, source=source,
                                        entity=entity),
        item=lambda r: SyncReject(**r), model=SyncReject, sort=sort, limit=limit,
        cursor=cursor, fmt=format, filename="sync-rejects")


@router.get("/machines-without-erp", response_model=Page[MachineWithoutErp], responses=EXPORTS,
            summary="Machines no ERP knows")
async def machines_without_erp(
        request: Request, session: Reader, *,
        sort: Literal["serial", "-serial", "first_seen_at", "-first_seen_at"] = "serial",
        limit: Limit = 50, cursor: str | None = None, format: Format = "json",
) -> Response:
    """Machines sending data whose serial no ERP's installed base has.

    Their usage counts for no customer until the ERP knows them.
    """
    return await list_response(
        request, session, fetch=quality.machines_without_erp,
        item=lambda r: MachineWithoutErp(**r), model=MachineWithoutErp, sort=sort, limit=limit,
        cursor=cursor, fmt=format, filename="machines-without-erp")


@router.get("/erp-machines-never-seen", response_model=Page[ErpMachineNeverSeen],
            responses=EXPORTS,
            summary="Installed machines that never reported")
async def erp_machines_never_seen(
        request: Request, session: Reader, *,
        sort: Literal["serial", "-serial", "customer_id", "-customer_id"] = "serial",
        limit: Limit = 50, cursor: str | None = None, format: Format = "json",
) -> Response:
    """The ERP's installed machines the ingester has never heard from.

    Not connected, or a serial typed differently in the ERP.
    """
    return await list_response(
        request, session, fetch=quality.erp_machines_never_seen,
        item=lambda r: ErpMachineNeverSeen(**r), model=ErpMachineNeverSeen, sort=sort,
        limit=limit, cursor=cursor, fmt=format, filename="erp-machines-never-seen")
