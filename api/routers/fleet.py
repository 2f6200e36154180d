"""Installed-base health: the fleet, and one machine's detail, usage, charts, states and events.

docs/api-fleet.md says what each number means.

A machine's id is its installed-base id; staff see every machine, a portal user its company's
only (row-level security: another company's machine is a 404, as one that does not exist).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from analytics import fleet, maintenance
from api.deps import Conn, Session, requires
from api.errors import BadRequest, NotFound
from api.models.fleet import (
    Bucket,
    Connectivity,
    Contract,
    Coverage,
    EventKind,
    FleetMachine,
    FleetSummary,
    HealthBand,
    MachineDetail,
    MachineEvent,
    MachineEvents,
    MetricSeries,
    State,
    StateInterval,
    StateTimeline,
    Usage,
    UsagePeriod,
)
from api.models.maintenance import status_of
from api.paging import Page as ApiPage
from api.params import Day, Moment
from api.responses import Format, json_response, list_response
from core.paging import Page, PageRequest

router = APIRouter(prefix="/fleet", tags=["fleet"])
Reader = Annotated[Session, requires("service", "finance", "viewer", "customer")]
Id = Annotated[int, Path(ge=1, le=2**31 - 1, description="The machine's installed-base id")]
Sort = Literal["serial", "-serial", "last_seen", "-last_seen", "utilisation", "-utilisation",
               "utilisation_trend", "-utilisation_trend", "customer", "-customer"]

# The longest ranges a request may ask for: each bounds the rows one answer reads.
MAX_USAGE_DAYS = 3 * 366
MAX_STATE_DAYS = 366
MAX_SERIES = timedelta(days=20 * 366)


def _filters(session: Session, *, customer: list[int] | None, model: list[str] | None,
             site: list[int] | None,
             country: list[str] | None, state: list[State] | None,
             band: list[HealthBand] | None, coverage: list[Coverage] | None,
             connectivity: list[Connectivity] | None, serial_prefix: str | None,
             search: str | None) -> fleet.FleetFilter:
    return fleet.FleetFilter(
        customer=customer or (), model=model or (), site=site or (),
        country=[c.upper() for c in country or ()], state=state or (), band=band or (),
        coverage=coverage or (), connectivity=connectivity or (), serial_prefix=serial_prefix,
        search=search, portal_customer=(session.principal.customer_id
                                        if session.principal.role == "customer" else None))


CustomerQ = Annotated[list[Annotated[int, Query(ge=1, le=2**31 - 1)]] | None,
                      Query(description="Customer ids (repeat for several)")]
ModelQ = Annotated[list[str] | None, Query(description="Machine models")]
SiteQ = Annotated[list[Annotated[int, Query(ge=1, le=2**31 - 1)]] | None,
                  Query(description="Site ids")]
CountryQ = Annotated[list[Annotated[str, Query(pattern="^[A-Za-z]{2}$")]] | None,
                     Query(description="ISO 3166 country codes")]
StateQ = Annotated[list[State] | None, Query(description="Current state")]
BandQ = Annotated[list[HealthBand] | None, Query(description="Health band")]
CoverageQ = Annotated[list[Coverage] | None, Query(description="Contract coverage")]
ConnectivityQ = Annotated[list[Connectivity] | None,
                          Query(description="reporting / quiet / silent / never_reported")]
PrefixQ = Annotated[str | None, Query(min_length=1, max_length=100,
                                      description="Serials starting with this")]
SearchQ = Annotated[str | None, Query(min_length=1, max_length=100,
                                      description="A part of the serial or the customer's name")]


def _machine(row: dict[str, Any]) -> FleetMachine:
    return FleetMachine(id=row["installed_base_id"], telemetry_id=row["machine_id"],
                        **{k: row[k] for k in FleetMachine.model_fields
                           if k not in {"id", "telemetry_id"}})


@router.get("/machines", response_model=ApiPage[FleetMachine], summary="The fleet")
async def machines(request: Request, session: Reader, *, customer: CustomerQ = None,
                   model: ModelQ = None, site: SiteQ = None, country: CountryQ = None,
                   state: StateQ = None, band: BandQ = None, coverage: CoverageQ = None,
                   connectivity: ConnectivityQ = None, serial_prefix: PrefixQ = None,
                   search: SearchQ = None, sort: Sort = "serial",
                   limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                   cursor: str | None = None, format: Format = "json") -> Response:
    """Machines with their customer, site, state, utilisation, coverage and health band.

    Each with model, last seen, the utilisation's trend and the band's reason; filters combine
    (AND), repeated values of one filter OR.

    Rated as of the status' last refresh (`as_of`, every rollup refresh: 15 minutes).
    `format=csv|xlsx` streams the whole filtered list.
    """
    filters = _filters(session, customer=customer, model=model, site=site, country=country,
                       state=state, band=band, coverage=coverage, connectivity=connectivity,
                       serial_prefix=serial_prefix, search=search)

    async def fetch(conn: Conn, page: PageRequest) -> Page[Mapping[str, Any]]:
        rows = await fleet.list_machines(conn, page, filters)
        # The cursor is the sort key (never null) and the id; the item keeps the real values.
        return Page(items=[{"row": r, page.sort: r["sort_key"], "id": r["installed_base_id"]}
                           for r in rows.items], more=rows.more)

    return await list_response(request, session, fetch=fetch,
                               item=lambda r: _machine(r["row"]), model=FleetMachine,
                               sort=sort, limit=limit, cursor=cursor, fmt=format,
                               filename="fleet")


@router.get("/summary", response_model=FleetSummary, summary="Fleet health counts")
async def summary(request: Request, session: Reader, *, customer: CustomerQ = None,
                  model: ModelQ = None, site: SiteQ = None, country: CountryQ = None,
                  state: StateQ = None, band: BandQ = None, coverage: CoverageQ = None,
                  connectivity: ConnectivityQ = None, serial_prefix: PrefixQ = None,
                  search: SearchQ = None) -> Response:
    """Machines per health band, coverage and connectivity, with the list's filters."""
    filters = _filters(session, customer=customer, model=model, site=site, country=country,
                       state=state, band=band, coverage=coverage, connectivity=connectivity,
                       serial_prefix=serial_prefix, search=search)
    s = await fleet.fleet_summary(session.conn, filters)
    return json_response(request, FleetSummary(
        as_of=s.as_of, machines=s.machines, health_band=s.health_band,  # type: ignore[arg-type]
        coverage=s.coverage, connectivity=s.connectivity))  # type: ignore[arg-type]


@router.get("/machines/{machine_id}", response_model=MachineDetail, summary="One machine")
async def machine(request: Request, session: Reader, machine_id: Id) -> Response:
    """Identity, customer, site, contract, warranty, current state, last seen, utilisation.

    With its maintenance status today (UTC): the same object as GET
    /maintenance/machines/{id}, null when the machine never reported.
    """
    row = await fleet.machine(session.conn, machine_id)
    if row is None:
        raise NotFound("machine", machine_id)
    contract = None if row["contract_id"] is None else Contract(
        id=row["contract_id"], number=row["contract_number"], scope=row["contract_scope"],
        tier=row["contract_tier"], status=row["contract_status"],
        starts_on=row["contract_starts_on"], ends_on=row["contract_ends_on"],
        auto_renew=row["contract_auto_renew"], notice_period_days=row["contract_notice_days"],
        annual_value=row["contract_annual_value"], currency=row["contract_currency"])
    under = row["warranty_end"] is not None and row["warranty_end"] >= row["as_of"].date()
    status = await maintenance.machine_status(session.conn, machine_id,
                                              today=datetime.now(UTC).date())
    base = _machine(row).model_dump()
    detail = MachineDetail(**base, commissioned_on=row["commissioned_on"],
                           site_city=row["site_city"], utilisation_prev=row["utilisation_prev"],
                           under_warranty=under, contract=contract, protocol=row["protocol"],
                           sparkplug_online=row["sparkplug_online"],
                           first_seen_at=row["first_seen_at"],
                           maintenance=status_of(status) if status else None)
    return json_response(request, detail)


async def _telemetry_id(conn: Conn, machine_id: int) -> int | None:
    visible, telemetry_id = await fleet.telemetry_machine(conn, machine_id)
    if not visible:
        raise NotFound("machine", machine_id)
    return telemetry_id


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _range(start: datetime | None, end: datetime | None, default: timedelta,
           longest: timedelta) -> tuple[datetime, datetime]:
    to = _utc(end) if end else datetime.now(UTC)
    frm = _utc(start) if start else to - default
    if frm >= to:
        raise BadRequest(f"from ({frm.isoformat()}) must be before to ({to.isoformat()})")
    if to - frm > longest:
        raise BadRequest(f"the range is longer than {longest.days} days: ask for less")
    return frm, to


FromQ = Annotated[Moment | None, Query(alias="from", description="Start (UTC if no zone)")]
ToQ = Annotated[Moment | None, Query(alias="to", description="End, excluded (default: now)")]


@router.get("/machines/{machine_id}/usage", response_model=Usage, summary="Usage by day or week")
async def machine_usage(request: Request, session: Reader, *, machine_id: Id,
                        by: Literal["day", "week"] = "day",
                        start: Annotated[Day | None, Query(alias="from")] = None,
                        end: Annotated[Day | None, Query(alias="to")] = None) -> Response:
    """Operating, running and fault hours and utilisation per UTC day or ISO week.

    Over [from, to) (default: the 30 days up to today, included), from the daily rollup.
    """
    telemetry_id = await _telemetry_id(session.conn, machine_id)
    to = end or datetime.now(UTC).date() + timedelta(days=1)
    frm = start or to - timedelta(days=30)
    if frm >= to:
        raise BadRequest(f"from ({frm}) must be before to ({to})")
    if (to - frm).days > MAX_USAGE_DAYS:
        raise BadRequest(f"the range is longer than {MAX_USAGE_DAYS} days: ask for less")
    row = await fleet.machine(session.conn, machine_id)
    assert row is not None
    periods = await fleet.usage(session.conn, machine_id=telemetry_id, by=by, from_day=frm,
                                to_day=to, commissioned_on=row["commissioned_on"])
    return json_response(request, Usage(id=machine_id, by=by, start=frm, end=to,
                                        periods=[UsagePeriod(**p) for p in periods]))


@router.get("/machines/{machine_id}/metrics/{metric}", response_model=MetricSeries,
            summary="A process metric over any range")
async def machine_metric(request: Request, session: Reader, *, machine_id: Id,
                         metric: Annotated[str, Path(min_length=1, max_length=200)],
                         start: FromQ = None, end: ToQ = None,
                         points: Annotated[int, Query(ge=1, le=fleet.MAX_POINTS)] =
                         fleet.DEFAULT_POINTS) -> Response:
    """The metric's average, min and max in at most `points` buckets over [from, to).

    Default range: the last 24 hours. Raw samples up to 2 days, the hourly rollup beyond
    (`source` says which).
    """
    telemetry_id = await _telemetry_id(session.conn, machine_id)
    known = await fleet.metric(session.conn, metric)
    if known is None:
        raise NotFound("metric", metric)
    if known["id"] == fleet.OPERATING_HOURS:
        raise BadRequest("the operating-hours counter is charted as hours per day or week: "
                         f"GET /fleet/machines/{machine_id}/usage")
    frm, to = _range(start, end, timedelta(days=1), MAX_SERIES)
    series = await fleet.metric_series(session.conn, machine_id=telemetry_id,
                                       metric_id=known["id"], start=frm, end=to, points=points)
    return json_response(request, MetricSeries(
        id=machine_id, metric=known["name"], unit=known["unit"], start=frm, end=to,
        points=points, source=series.source, bucket_seconds=int(series.width.total_seconds()),
        origin=series.origin, rollup_through=series.rollup_through,
        buckets=[Bucket(time=b["bucket"], avg=b["avg"], min=b["min"], max=b["max"],
                        samples=b["samples"]) for b in series.buckets]))


@router.get("/machines/{machine_id}/states", response_model=StateTimeline,
            summary="State timeline")
async def machine_states(request: Request, session: Reader, *, machine_id: Id,
                         start: FromQ = None, end: ToQ = None,
                         limit: Annotated[int, Query(ge=1, le=5000)] = 1000) -> Response:
    """Merged state intervals over [from, to) (default: the last 7 days), at most `limit`."""
    telemetry_id = await _telemetry_id(session.conn, machine_id)
    frm, to = _range(start, end, timedelta(days=7), timedelta(days=MAX_STATE_DAYS))
    page = await fleet.state_timeline(session.conn, machine_id=telemetry_id, start=frm,
                                      end=to, limit=limit)
    return json_response(request, StateTimeline(
        id=machine_id, start=frm, end=to, truncated=page.more,
        intervals=[StateInterval(**i) for i in page.items]))


@router.get("/machines/{machine_id}/events", response_model=MachineEvents,
            summary="Recent faults and events")
async def machine_events(request: Request, session: Reader, *, machine_id: Id,
                         kind: Annotated[list[EventKind] | None, Query()] = None,
                         start: FromQ = None, end: ToQ = None,
                         limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Response:
    """The machine's events in [from, to) (default: any time up to now), newest first."""
    telemetry_id = await _telemetry_id(session.conn, machine_id)
    to = _utc(end) if end else datetime.now(UTC)
    frm = _utc(start) if start else datetime(1970, 1, 1, tzinfo=UTC)
    if frm >= to:
        raise BadRequest(f"from ({frm.isoformat()}) must be before to ({to.isoformat()})")
    kinds: Sequence[str] | None = kind
    rows = await fleet.events(session.conn, machine_id=telemetry_id, kinds=kinds, start=frm,
                              end=to, limit=limit)
    return json_response(request, MachineEvents(id=machine_id,
                                                events=[MachineEvent(**e) for e in rows]))
