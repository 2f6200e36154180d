"""Maintenance planning: plans per model, due and overdue machines, the work list, services done.

Service staff (and admin) write plans and records; service, finance and viewer read; a portal
user reads the maintenance status of its own company's machines (row-level security).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, status
from fastapi.responses import Response
from pydantic import AwareDatetime

from analytics import maintenance
from api.audit import audit
from api.deps import Session, requires
from api.errors import NotFound
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
)
from api.paging import Page
from api.responses import Format, json_response, list_response
from core.paging import PageRequest

router = APIRouter(prefix="/maintenance", tags=["maintenance"])
Reader = Annotated[Session, requires("service", "finance", "viewer")]
Writer = Annotated[Session, requires("service")]
Anyone = Annotated[Session, requires("service", "finance", "viewer", "customer")]
MachineId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Model = Annotated[str, Path(min_length=1, max_length=100)]
OptId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
Region = Annotated[str | None, Query(pattern=r"^[A-Z]{2}$", description="ISO country code")]
Limit = Annotated[int, Query(ge=1, le=1000)]


def _today() -> date:
    return datetime.now(UTC).date()


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

    return await list_response(request, session, fetch=fetch, item=lambda r: MachineStatus(**r),
                               model=MachineStatus, sort=sort, limit=limit, cursor=cursor,
                               fmt=format, filename="maintenance-due", key="machine_id")


@router.get("/machines/{machine_id}", response_model=MachineStatus,
            summary="A machine's maintenance status")
async def machine(request: Request, session: Anyone, machine_id: MachineId) -> Response:
    """One machine's maintenance status (404 for a machine the caller may not see)."""
    row = await maintenance.machine_status(session.conn, machine_id, today=_today())
    if row is None:
        raise NotFound("machine", machine_id)
    return json_response(request, MachineStatus(**row))


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
             responses={200: {"description": "the answer of an earlier request with the same "
                                             "Idempotency-Key"}})
async def add_record(session: Writer, body: RecordIn,
                     idempotency_key: Annotated[str | None, Header(
                         description="send the same key again to get the first answer, "
                                     "never a second record")] = None) -> Response:
    """Record a service done, once per Idempotency-Key.

    The machine's due date moves at once, and the service counts in maintenance adherence
    (services_done).
    """
    async def act() -> tuple[int, Any]:
        if not await maintenance.machine_visible(session.conn, body.machine_id):
            raise NotFound("machine", body.machine_id)
        row = await maintenance.record_service(session.conn, maintenance.Service(
            machine_id=body.machine_id, performed_at=body.performed_at, work=body.work,
            parts=[p.model_dump() for p in body.parts], technician=body.technician),
            by=session.principal.actor)
        record = Record(**row)
        await audit(session, action="maintenance_record.create", entity="maintenance_record",
                    entity_id=record.id, after=record.model_dump(mode="json"))
        after = await maintenance.machine_status(session.conn, body.machine_id, today=_today())
        answer = {"record": record.model_dump(mode="json"),
                  "status": MachineStatus(**after).model_dump(mode="json") if after else None}
        return status.HTTP_201_CREATED, answer

    code, answer = await once(session, idempotency_key, route="POST /maintenance/records",
                              request_body=body.model_dump(mode="json"), act=act)
    return Response(orjson.dumps(answer), status_code=code, media_type="application/json")


@router.get("/records", response_model=Page[Record], summary="Services recorded")
async def records(request: Request, session: Reader, *,
                  machine_id: OptId = None,
                  since: Annotated[AwareDatetime | None, Query(description="performed at or after")]
                  = None,
                  until: Annotated[AwareDatetime | None, Query(description="performed before")]
                  = None,
                  sort: Literal["performed_at", "-performed_at"] = "-performed_at",
                  limit: Limit = 50, cursor: str | None = None,
                  format: Format = "json") -> Response:
    """Services recorded through the API (the machines' own maintenance events are not here)."""
    filters = maintenance.RecordFilters(machine_id=machine_id, since=since, until=until)

    async def fetch(conn: Any, page: PageRequest) -> Any:
        return await maintenance.records_page(conn, page, filters=filters)

    return await list_response(request, session, fetch=fetch, item=lambda r: Record(**r),
                               model=Record, sort=sort, limit=limit, cursor=cursor, fmt=format,
                               filename="maintenance-records")
