"""Answers of the fleet routes: installed-base health (docs/api-fleet.md)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

HealthBand = Literal["healthy", "watch", "at_risk", "silent"]
Coverage = Literal["covered", "warranty", "uncovered"]
Connectivity = Literal["reporting", "quiet", "silent", "never_reported"]
State = Literal["running", "idle", "fault", "off"]
EventKind = Literal["fault", "fault_cleared", "alarm", "maintenance", "part_replaced", "online",
                    "offline"]


class FleetMachine(BaseModel):
    """One machine of the fleet list, as rated at ``as_of`` (the status' last refresh)."""

    id: int = Field(description="The machine: its installed-base id (the ERP's record).")
    telemetry_id: int | None = Field(
        description="Its telemetry machine id (by serial); null when it never reported.")
    serial: str
    model: str
    customer_id: int
    customer_name: str
    site_id: int | None
    site_name: str | None
    country: str | None = Field(description="The site's country, else the customer's (ISO 3166).")
    state: State | None = Field(description="Latest reported state within 30 days of as_of.")
    state_reported_at: datetime | None
    last_seen: datetime | None = Field(
        description="Latest sample, state or event the usage rollup has seen (UTC).")
    connectivity: Connectivity = Field(
        description="reporting: seen within 4 days of as_of; quiet: within 14 days; "
                    "silent: longer; never_reported: no telemetry.")
    operating_hours_30d: float | None = Field(
        description="Operating hours (h) over the 30 UTC days before as_of's day.")
    utilisation: float | None = Field(
        description="Operating hours / calendar hours (24 h a day from commissioning) over the "
                    "30 UTC days before as_of's day, 0-1.")
    utilisation_trend: float | None = Field(
        description="utilisation / the 30 days before's - 1 (-0.4 = 40% fewer hours).")
    faults_30d: int = Field(description="Fault events over the same 30 days.")
    coverage: Coverage = Field(
        description="covered: a live service contract (machine or customer scope); warranty: "
                    "none but under warranty; uncovered: neither.")
    contract_id: int | None
    contract_ends_on: date | None
    warranty_end: date | None
    health_band: HealthBand
    health_reason: str = Field(description="Why the machine is in its band.")
    as_of: datetime


class Contract(BaseModel):
    """The live service contract covering a machine (the one ending last)."""

    id: int
    number: str | None
    scope: Literal["machine", "customer"]
    tier: str | None
    status: str
    starts_on: date
    ends_on: date
    auto_renew: bool
    notice_period_days: int
    annual_value: Decimal = Field(description="In `currency`.")
    currency: str


class MachineDetail(FleetMachine):
    """One machine: identity, customer, site, contract, warranty, state and utilisation."""

    commissioned_on: date | None
    site_city: str | None
    utilisation_prev: float | None = Field(
        description="Utilisation over the 30 days before the last 30 (the trend's base).")
    under_warranty: bool
    contract: Contract | None
    protocol: Literal["json", "sparkplug"] | None
    sparkplug_online: bool | None = Field(
        description="Sparkplug BIRTH/DEATH; null for JSON machines (only silence tells).")
    first_seen_at: datetime | None


class UsagePeriod(BaseModel):
    """Hours of one UTC day or ISO week (starting Monday)."""

    period: date
    operating_hours: float = Field(description="h, from the operating-hours counter")
    running_hours: float = Field(description="h in state running")
    fault_hours: float = Field(description="h in state fault")
    faults: int
    services: int
    calendar_hours: float = Field(description="h of the period's days in range, from commissioning")
    utilisation: float = Field(description="operating_hours / calendar_hours")


class Usage(BaseModel):
    """A machine's usage by day or week over [from, to)."""

    id: int
    by: Literal["day", "week"]
    start: date = Field(description="`from` as asked")
    end: date = Field(description="`to` as asked (excluded)")
    periods: list[UsagePeriod]


class Bucket(BaseModel):
    """A metric's values in one bucket [time, time + width)."""

    time: datetime
    avg: float
    min: float
    max: float
    samples: int


class MetricSeries(BaseModel):
    """A metric over a range, downsampled on the server to at most `points` buckets."""

    id: int
    metric: str
    unit: str | None
    start: datetime = Field(description="`from` as asked")
    end: datetime = Field(description="`to` as asked (excluded)")
    points: int = Field(description="The most buckets asked for")
    source: Literal["raw", "hourly"] = Field(
        description="raw: the samples (ranges up to 2 days); hourly: the hourly rollup.")
    bucket_seconds: int
    origin: datetime = Field(description="Where buckets start (hourly: `from` down to the hour)")
    rollup_through: datetime | None = Field(
        description="The hourly rollup holds hours up to this time (it trails the samples).")
    buckets: list[Bucket]


class StateInterval(BaseModel):
    """Consecutive reports of one state, merged."""

    state: State
    started_at: datetime
    ended_at: datetime
    reports: int


class StateTimeline(BaseModel):
    """A machine's states over [from, to)."""

    id: int
    start: datetime = Field(description="`from` as asked")
    end: datetime = Field(description="`to` as asked (excluded)")
    intervals: list[StateInterval]
    truncated: bool = Field(description="More intervals than `limit` followed.")


class MachineEvent(BaseModel):
    """An event the machine reported."""

    time: datetime
    kind: EventKind
    code: str | None
    payload: dict[str, Any]


class MachineEvents(BaseModel):
    """A machine's recent events, newest first."""

    id: int
    events: list[MachineEvent]


class FleetSummary(BaseModel):
    """Machines per health band, coverage and connectivity (zeros included), for a dashboard."""

    as_of: datetime | None = Field(description="When the fleet was last rated")
    machines: int
    health_band: dict[HealthBand, int]
    coverage: dict[Coverage, int]
    connectivity: dict[Connectivity, int]
