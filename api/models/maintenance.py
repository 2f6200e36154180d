"""Requests and answers of maintenance planning (docs/api-maintenance.md)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

Status = Literal["overdue", "due", "ok", "no_plan"]

# A technician's clock may run a little ahead of the server's; more than this is a typo.
_FUTURE_SLACK = timedelta(minutes=10)


class Part(BaseModel):
    """A part of a kit or of a service: its number, what it is, how many."""

    model_config = ConfigDict(extra="forbid")
    part_number: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=500)
    quantity: float = Field(gt=0, le=100_000)


class PlanIn(BaseModel):
    """A model's plan as put: due after interval_hours or interval_days, whichever first."""

    model_config = ConfigDict(extra="forbid")
    interval_hours: int | None = Field(default=None, ge=1, le=1_000_000,
                                       description="operating hours between services")
    interval_days: int | None = Field(default=None, ge=1, le=3650,
                                      description="days between services")
    work: str = Field(default="", max_length=4000, description="the work a service does")
    parts_kit: list[Part] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _an_interval(self) -> PlanIn:
        if self.interval_hours is None and self.interval_days is None:
            msg = "a plan needs interval_hours, interval_days or both"
            raise ValueError(msg)
        return self


class Plan(BaseModel):
    """The plan in force of a model, and the ERP's intervals beside it."""

    model: str
    interval_hours: int | None = Field(description="operating hours between services")
    interval_days: int | None = Field(description="days between services")
    work: str
    parts_kit: list[dict[str, Any]]
    source: Literal["plan", "erp"] = Field(
        description="plan: put through the API; erp: the ERP's intervals (no plan put yet)")
    updated_at: datetime | None
    updated_by: str | None
    erp_interval_hours: int | None
    erp_interval_days: int | None


class _Machine(BaseModel):
    """Which machine, whose and where: the leading fields of a status and of a work item."""

    installed_base_id: int = Field(
        description="the machine: its installed-base id (the fleet's id)")
    telemetry_id: int = Field(description="its telemetry machine id (by serial)")
    serial: str
    model: str
    customer_id: int
    customer_name: str
    site_id: int | None
    site_name: str | None
    region: str | None = Field(description="country of the site (the customer's without one)")


class MachineStatus(_Machine):
    """An installed machine's maintenance status on ``today`` (UTC)."""

    interval_hours: int | None
    interval_days: int | None
    plan_source: Literal["plan", "erp"] | None
    last_service_at: datetime | None = Field(
        description="latest service done (the machine's event or a record), UTC")
    hours_since: float = Field(
        description="operating hours of the days after the last service's day (h); never "
                    "serviced: since commissioning or the first day of data")
    days_since: int | None = Field(description="days since the last service's day")
    usage_per_day: float | None = Field(
        description="operating hours per day over the 90 days before today")
    due_on: date | None = Field(
        description="forecast due date: whichever of the hours and days interval comes first")
    due_by: Literal["hours", "days"] | None
    due_by_hours_on: date | None
    due_by_days_on: date | None
    status: Status
    overdue_hours: float | None = Field(description="operating hours past interval_hours")
    overdue_days: int = Field(description="days since the due date, when overdue")


def status_of(row: Mapping[str, Any]) -> MachineStatus:
    """The answer of a row of analytics' status (whose ``machine_id`` is the telemetry's)."""
    return MachineStatus(telemetry_id=row["machine_id"], **row)


class DueAfterRecord(BaseModel):
    """A recorded service and the machine's status right after it."""

    record: Record
    status: MachineStatus | None = Field(
        description="the machine's status with the service counted (null only when the "
                    "machine left the caller's view meanwhile)")


class RecordIn(BaseModel):
    """A service done: on which machine, when (UTC), the work, the parts, by whom."""

    model_config = ConfigDict(extra="forbid")
    installed_base_id: int = Field(
        ge=1, le=2**31 - 1,
        description="the machine: its installed-base id (the fleet's id); it must have "
                    "reported (a machine without telemetry is a 409)")
    performed_at: AwareDatetime
    work: str = Field(min_length=1, max_length=4000)
    parts: list[Part] = Field(default_factory=list, max_length=200)
    technician: str = Field(min_length=1, max_length=200)

    @field_validator("performed_at")
    @classmethod
    def _not_future(cls, value: datetime) -> datetime:
        if value > datetime.now(UTC) + _FUTURE_SLACK:
            msg = "a service cannot be recorded before it is done (performed_at is in the future)"
            raise ValueError(msg)
        if value.year < 2000:
            msg = "performed_at is before 2000"
            raise ValueError(msg)
        return value.astimezone(UTC)


class Record(BaseModel):
    """A service recorded through the API."""

    id: int
    installed_base_id: int | None = Field(
        description="the machine's installed-base id; null when the installed base no longer "
                    "holds its serial")
    telemetry_id: int = Field(description="its telemetry machine id, which the record is of")
    serial: str | None = None
    performed_at: datetime
    work: str
    parts: list[dict[str, Any]]
    technician: str
    recorded_by: str
    created_at: datetime


class WorkItem(_Machine):
    """A machine on the work list."""

    due_on: date
    due_by: Literal["hours", "days"]
    status: Status
    overdue_days: int
    overdue_hours: float | None


class WorkGroup(BaseModel):
    """The machines of one group due in one week."""

    week: date = Field(description="Monday of the ISO week; overdue machines are in this week")
    group_key: str = Field(description="region code, customer id or site id ('' for none)")
    group_name: str
    machines: int
    overdue: int
    items: list[WorkItem]


class Worklist(BaseModel):
    """The work list for the next ``weeks`` weeks, by week and group."""

    today: date
    weeks: int
    by: Literal["region", "customer", "site"]
    groups: list[WorkGroup]


DueAfterRecord.model_rebuild()
