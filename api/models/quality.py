"""Answers of the data-quality routes.

Dead letters, Sparkplug losses, ERP syncs, machines the ERP and the ingester disagree on.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field


class DeadLetterSource(BaseModel):
    """The dead letters of one source (view ``dead_letter_sources``)."""

    source: str = Field(description="A JSON machine `oem/<tenant>/<serial>`, a Sparkplug edge "
                                    "node `spBv1.0/<group>/<node>`, or a topic's first level")
    distinct_messages: int = Field(description="Different messages (topic and payload) that failed")
    times_received: int = Field(description="How often they came, redeliveries included")
    first_received_at: datetime
    last_received_at: datetime
    latest_reason: str = Field(description="Why the latest one could not be stored")
    latest_topic: str


class DeadLetter(BaseModel):
    """One message that could not be stored, and why."""

    id: int
    topic: str
    reason: str
    times_received: int
    first_received_at: datetime
    last_received_at: datetime
    payload_size: int = Field(description="bytes of the whole message")
    payload_start: str = Field(description="The payload's first 256 bytes, base64")


class SparkplugGapDay(BaseModel):
    """One Sparkplug edge node's losses on one UTC day (view ``sparkplug_gap_days``)."""

    id: str = Field(description="`<group>/<node>/<day>`")
    spb_group: str
    spb_edge_node: str
    day: date = Field(description="UTC day")
    seq_gaps: int = Field(description="Gaps detected in the node's seq numbers")
    seq_numbers_missing: int = Field(description="Seq numbers lost in those gaps")
    data_without_birth: int = Field(description="DATA messages from the node with no birth known")
    rebirths_requested: int


class SyncRun(BaseModel):
    """One ERP sync of one source and entity."""

    id: int
    source: str
    entity: str
    full_resync: bool
    status: str = Field(description="running, succeeded or failed")
    started_at: datetime
    finished_at: datetime | None
    records_read: int
    rows_upserted: int
    rows_rejected: int
    rows_deleted: int = Field(description="Rows marked deleted (gone from the ERP)")
    error: str | None


class SyncReject(BaseModel):
    """A record an ERP sync refused."""

    id: int
    run_id: int
    source: str
    entity: str
    external_id: str | None
    line_number: int | None = Field(description="Line of the file (files source), else null")
    reason: str
    record: Any = Field(description="The record as it came from the ERP")
    rejected_at: datetime


class EntityOutcome(BaseModel):
    """What one source and entity did in the reported sync."""

    source: str
    entity: str
    status: str = Field(description="succeeded, failed, or busy (another sync of it ran)")
    records_read: int
    rows_upserted: int
    rows_rejected: int
    rows_deleted: int
    error: str | None
    run_id: int | None
    reject_examples: list[dict[str, Any]]


class QualityCheck(BaseModel):
    """A cross-check no single record shows, with its total and a sample."""

    check: str
    title: str
    total: int
    sample: list[dict[str, Any]]


class SyncReport(BaseModel):
    """The data-quality report of the latest ERP sync (``oem-retention erp report``)."""

    id: int
    created_at: datetime
    sources: list[str]
    full_resync: bool
    ok: bool = Field(description="Every source and entity synced")
    reporting_currency: str
    entities: list[EntityOutcome]
    checks: list[QualityCheck]


class MachineWithoutErp(BaseModel):
    """A machine sending data whose serial no ERP's installed base has."""

    id: int
    tenant: str
    serial: str
    protocol: str
    first_seen_at: datetime
    online: bool | None


class ErpMachineNeverSeen(BaseModel):
    """An installed machine of the ERP that never sent data."""

    id: int = Field(description="installed-base id")
    source: str
    external_id: str
    serial: str
    model: str
    customer_id: int
    customer: str
    site_id: int | None
    commissioned_on: date | None
