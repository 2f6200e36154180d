"""Maintenance planning: plans per model, due and overdue machines, the work list, services done.

Service staff (and admin) write plans and records; service, finance and viewer read; a portal
user reads the maintenance status of its own company's machines (row-level security).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, status
from fastapi.responses import Response

from analytics import maintenance
from api.audit import audit
from api.deps import Session, requires
from api.errors import NotFound, Problem
from api.idempotency import once
from api.models.maintenance import (
    DueAfterRecord,
    MachineStatus,
    Plan,
    PlanIn,
    Record,
    RecordIn,
    Status,
    WorkGroup,
    Worklist,
    status_of,
)
from api.paging import Page
from api.params import AwareMoment
from api.responses import Format, json_response, list_response
from core.paging import PageRequest

router = APIRouter(prefix="/maintenance", tags=["maintenance"])
Reader = Annotated[Session, requires("service", "finance", "viewer")]
Writer = Annotated[Session, requires("service")]
Anyone = Annotated[Session, requires("service", "finance", "viewer", "customer")]
MachineId = Annotated[int, Path(ge=1, le=2**31 - 1,
                                description="The machine's installed-base id (the fleet's id)")]
Model = Annotated[str, Path(min_length=1, max_length=100)]
OptId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
Region = Annotated[str | None, Query(pattern=r"^[A-Z]{2}$", description="ISO country code")]
Limit = Annotated[int, Query(ge=1, le=1000)]


def _today() -> date:
    return datetime.now(UTC).date()


def _record(row: Mapping[str, Any]) -> Record:
    return Record(telemetry_id=row["machine_id"], **row)


@router.get("/plans", response_model=list[Plan], summary="Service plans per model")
async def plans(session: Reader) -> list[Plan]:
    """Every model's plan in force: the one put here, else the ERP's intervals."""
    return [Plan(**r) for r in await maintenance.plans(session.conn)]


@router.get("/plans/{model}", response_model=Plan, summary="A model's service plan")
async def plan(session: Reader, model: Model) -> Plan:
    """One model's plan in force."""
    rows = await maintenance.plans(session.conn, model=model)
    if not rows:
        raise NotFound("plan for model", model)
    return Plan(**rows[0])


@router.put("/plans/{model}", response_model=Plan, summary="Put a model's service plan")
async def put_plan(session: Writer, model: Model, body: PlanIn) -> Plan:
    """Create or replace a model's plan; every machine of the model is due by it at once."""
    if not await maintenance.model_known(session.conn, model):
        raise NotFound("machine model", model)
    before = await maintenance.plans(session.conn, model=model)
    after = await maintenance.put_plan(session.conn, model, maintenance.PlanChange(
        interval_hours=body.interval_hours, interval_days=body.interval_days, work=body.work,
        parts_kit=[p.model_dump() for p in body.parts_kit]), by=session.principal.actor)
    await audit(session, action="maintenance_plan.put", entity="maintenance_plan",
                entity_id=model, before=before[0] if before else None, after=after)
    return Plan(**after)


@router.get("/due", response_model=Page[MachineStatus], summary="Due and overdue machines")
async def due(request: Request, session: Anyone, *,
              status_: Annotated[Status | None, Query(alias="status")] = None,
              customer_id: OptId = None, site_id: OptId = None, region: Region = None,
              model: Annotated[str | None, Query(max_length=100)] = None,
              within_weeks: Annotated[int | None, Query(
                  ge=0, le=104, description="due (or overdue) by today + this many weeks")]
              = None,
              sort: Literal["due", "-due", "serial", "-serial", "overdue_days",
                            "-overdue_days"] = "due",
              limit: Limit = 50, cursor: str | None = None,
              format: Format = "json") -> Response:
    """Machines with their maintenance status, due or overdue.

    Last service, hours and days since, usage rate, forecast due date and how far overdue
    (docs/api-maintenance.md); a portal user sees its own machines.
    """
    today = _today()
    filters = maintenance.DueFilters(
        status=status_, customer_id=customer_id, site_id=site_id, region=region, model=model,
        due_before=(date.fromordinal(today.toordinal() + 7 * within_weeks)
                    if within_weeks is not None else None))

    async def fetch(conn: Any, page: PageRequest) -> Any:
        return await maintenance.due_page(conn, page, filters=filters, today=today)

    return await list_response(request, session, fetch=fetch, item=status_of,
                               model=MachineStatus, sort=sort, limit=limit, cursor=cursor,
                               fmt=format, filename="maintenance-due", key="machine_id")


@router.get("/machines/{installed_base_id}", response_model=MachineStatus,
            summary="A machine's maintenance status")
async def machine(request: Request, session: Anyone, installed_base_id: MachineId) -> Response:
    """One installed machine's maintenance status, by its installed-base id.

    404 for a machine the caller may not see, and for one that never reported (no telemetry:
    no operating hours, no services; the fleet's detail shows it with a null status).
    """
    row = await maintenance.machine_status(session.conn, installed_base_id, today=_today())
    if row is None:
        raise NotFound("machine", installed_base_id)
    return json_response(request, status_of(row))


@router.get("/worklist", response_model=Worklist, summary="Work list by week and group")
async def worklist(request: Request, session: Reader,
                   weeks: Annotated[int, Query(ge=1, le=52)] = 4,
                   by: Literal["region", "customer", "site"] = "region") -> Response:
    """Machines due within ``weeks`` weeks, by week and region, customer or site.

    Overdue machines are in this week.
    """
    today = _today()
    groups = await maintenance.worklist(session.conn, weeks=weeks, by=by, today=today)
    return json_response(request, Worklist(today=today, weeks=weeks, by=by,
                                           groups=[WorkGroup(**g) for g in groups]))


@router.post("/records", response_model=DueAfterRecord, status_code=status.HTTP_201_CREATED,
             summary="Record a service done",
             responses={201: {"description": "the record and the machine's status after it; "
                                             "also the answer, again 201, to a request sent "
                                             "again with the same Idempotency-Key"},
                        409: {"description": "the machine never reported (no telemetry to "
                                             "count the service on), or the database refused "
                                             "the record"}})
async def add_record(session: Writer, body: RecordIn,
                     idempotency_key: Annotated[str | None, Header(
                         description="send the same key again to get the first answer, "
                                     "never a second record")] = None) -> Response:
    """Record a service done, once per Idempotency-Key.

    The machine is named by its installed-base id. Its due date moves at once, and the service
    counts in maintenance adherence (services_done) and in unbilled work. A machine that never
    reported is a 409: services done are counted on its telemetry, which it does not have yet.
    """
    async def act() -> tuple[int, Any]:
        machine = await maintenance.telemetry_of(session.conn, body.installed_base_id)
        if machine is None:
            raise NotFound("machine", body.installed_base_id)
        if machine.machine_id is None:
            raise Problem(status.HTTP_409_CONFLICT, "Machine never reported",
                          f"machine {body.installed_base_id} has never reported: a service can "
                          "be recorded once its telemetry is connected",
                          kind="never-reported")
        row = await maintenance.record_service(session.conn, maintenance.Service(
            installed_base_id=body.installed_base_id, machine_id=machine.machine_id,
            performed_at=body.performed_at, work=body.work,
            parts=[p.model_dump() for p in body.parts], technician=body.technician),
            by=session.principal.actor)
        record = _record(row)
        await audit(session, action="maintenance_record.create", entity="maintenance_record",
                    entity_id=record.id, after=record.model_dump(mode="json"))
        after = await maintenance.machine_status(session.conn, body.installed_base_id,
                                                 today=_today())
        answer = {"record": record.model_dump(mode="json"),
                  "status": status_of(after).model_dump(mode="json") if after else None}
        return status.HTTP_201_CREATED, answer

    code, answer = await once(session, idempotency_key, route="POST /maintenance/records",
                              request_body=body.model_dump(mode="json"), act=act)
    return Response(orjson.dumps(answer), status_code=code, media_type="application/json")


@router.get("/records", response_model=Page[Record], summary="Services recorded")
async def records(request: Request, session: Reader, *,
                  installed_base_id: Annotated[int | None, Query(
                      ge=1, le=2**31 - 1, description="the machine's installed-base id")]
                  = None,
                  since: Annotated[AwareMoment | None, Query(description="performed at or after")]
                  = None,
                  until: Annotated[AwareMoment | None, Query(description="performed before")]
                  = None,
                  sort: Literal["performed_at", "-performed_at"] = "-performed_at",
                  limit: Limit = 50, cursor: str | None = None,
                  format: Format = "json") -> Response:
    """Services recorded through the API (the machines' own maintenance events are not here)."""
    filters = maintenance.RecordFilters(installed_base_id=installed_base_id, since=since,
                                        until=until)

    async def fetch(conn: Any, page: PageRequest) -> Any:
        return await maintenance.records_page(conn, page, filters=filters)

    return await list_response(request, session, fetch=fetch, item=_record,
                               model=Record, sort=sort, limit=limit, cursor=cursor, fmt=format,
                               filename="maintenance-records")
