"""Customers: the list (CSV/XLSX too), the 360 of one customer and its paged parts.

Staff (service, finance, viewer, admin) read every customer. A portal user (role customer) reads
its own company's machines, contracts, invoices and orders, and a 404 for any other customer
(row-level security hides it; the answer is the same as for one that does not exist). It never
sees the OEM's assessments of it: churn risk and its history, value, segments; nor the survey
answers its people gave the OEM, or the figures built on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from analytics import customers as data
from analytics.customers import CustomerFilter, risk_band
from analytics.kpi import DIMENSIONS
from api.deps import Conn, Session, requires, settings_of
from api.errors import NotFound, Problem
from api.models.customers import (
    Change,
    Contract,
    Customer360,
    CustomerItem,
    Figures,
    Invoice,
    InvoiceTotals,
    Machine,
    Membership,
    Order,
    OrderTotals,
    Profile,
    Reason,
    Risk,
    RiskBand,
    RiskDay,
    RiskPoint,
    SurveyAnswer,
    Value,
    ValueDay,
)
from api.paging import Page
from api.params import Day
from api.responses import Format, json_response, list_response
from core.paging import PageRequest

router = APIRouter(prefix="/customers", tags=["customers"])

Staff = Annotated[Session, requires("service", "finance", "viewer")]
StaffOrOwn = Annotated[Session, requires("service", "finance", "viewer", "customer")]
CustomerId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Limit = Annotated[int, Query(ge=1, le=1000)]
AsOf = Annotated[Day | None, Query(description="the day read as of (default: today, UTC)")]
Row = Mapping[str, Any]

CustomerSort = Literal["name", "-name", "churn_probability", "-churn_probability", "clv", "-clv",
                       "revenue_12m", "-revenue_12m", "annual_contract_value",
                       "-annual_contract_value"]


def _as_of(on: date | None) -> date:
    return on or datetime.now(UTC).date()


def _currency(request: Request) -> str:
    return settings_of(request).reporting_currency


def _segment(segment: str | None) -> tuple[str, str] | None:
    if segment is None:
        return None
    dimension, _, value = segment.partition(":")
    if dimension not in DIMENSIONS or not value:
        raise Problem(422, "Invalid request",
                      f"segment: {segment!r} is not dimension:segment with a dimension of "
                      f"{', '.join(DIMENSIONS)}", kind="invalid-request")
    return dimension, value


def _item(row: Row, currency: str) -> CustomerItem:
    return CustomerItem(
        id=row["id"], external_id=row["external_id"], name=row["name"], country=row["country"],
        industry=row["industry"], size_class=row["size_class"], key_account=row["key_account"],
        customer_since=row["customer_since"], archived=row["archived"],
        churn_probability=row["probability"], risk_band=row["risk_band"],
        risk_method=row["risk_method"], clv=row["total_clv"], clv_method=row["clv_method"],
        revenue_12m=row["revenue_12m"], annual_contract_value=row["annual_contract_value"],
        currency=currency, live_contracts=row["live_contracts"],
        open_invoices=row["open_invoices"], overdue_invoices=row["overdue_invoices"],
        value_tier=row["value_tier"], rfm=row["rfm"], usage=row["usage"])


@router.get("", response_model=Page[CustomerItem], summary="Customers")
async def list_customers(
    request: Request, session: Staff, *,
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$")] = None,
    industry: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    size_class: Literal["small", "medium", "large", "enterprise"] | None = None,
    key_account: bool | None = None,
    segment: Annotated[str | None, Query(
        max_length=120, description="dimension:segment of a KPI cut, e.g. usage:declining, "
                                    "country:DE, tier:premium")] = None,
    risk_band: RiskBand | None = None,
    min_probability: Annotated[float | None, Query(ge=0, le=1)] = None,
    has_overdue: bool | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=100,
                                   description="a piece of the name")] = None,
    archived: Annotated[bool, Query(description="include customers archived in the ERP")] = False,
    on: AsOf = None,
    sort: CustomerSort = "name",
    limit: Limit = 50,
    cursor: str | None = None,
    format: Format = "json",
) -> Response:
    """Customers with their churn risk, value, revenue, contract value and unpaid invoices.

    Filters combine (all must hold); ``format=csv|xlsx`` gives the whole filtered list.
    """
    where = CustomerFilter(country=country, industry=industry, size_class=size_class,
                           key_account=key_account, segment=_segment(segment),
                           risk_band=risk_band, min_probability=min_probability,
                           has_overdue=has_overdue, q=q, archived=archived)
    day = _as_of(on)
    currency = _currency(request)

    async def fetch(conn: Conn, page: PageRequest) -> Any:
        return await data.list_customers(conn, page, on=day, reporting_currency=currency,
                                         where=where)

    return await list_response(request, session, fetch=fetch,
                               item=lambda r: _item(r, currency), model=CustomerItem,
                               sort=sort, limit=limit, cursor=cursor, fmt=format,
                               filename="customers")


def _machine(row: Row, figures: Any) -> Machine:
    known = figures is not None
    return Machine(
        installed_base_id=row["installed_base_id"], serial=row["serial"], model=row["model"],
        commissioned_on=row["commissioned_on"], warranty_end=row["warranty_end"],
        telemetry_id=row["machine_id"], online=row["online"], last_seen=row["last_seen"],
        silent=row["silent"],
        hours=figures.hours if known else None,
        utilisation=figures.utilisation if known else None,
        services=figures.services if known else None,
        services_due=figures.services_due if known else None,
        overdue=figures.overdue if known else None, faults=figures.faults if known else None,
        fault_rate=figures.fault_rate if known else None,
        parts_capture=figures.parts_capture if known else None)


def _figures(row: Row | None, currency: str) -> Figures | None:
    if row is None:
        return None
    responses = int(row["nps_responses"])
    before = row["revenue_prev_12m"]
    return Figures(
        currency=currency, revenue_12m=row["revenue_12m"], revenue_prev_12m=before,
        revenue_change=row["revenue_12m"] / before - 1 if before else None,
        purchase_days_12m=row["purchase_days_12m"],
        nps=(Decimal(100) * (row["promoters"] - row["detractors"]) / responses
             if responses else None),
        nps_responses=responses, promoters=row["promoters"], passives=row["passives"],
        detractors=row["detractors"])


def _risk(row: Row | None) -> Risk | None:
    if row is None:
        return None
    before = row["week_before_probability"]
    return Risk(**{k: v for k, v in row.items() if k not in ("reasons", "currency")},
                reasons=[Reason(**r) for r in row["reasons"]],
                risk_band=risk_band(row["probability"]), currency=row["currency"].strip(),
                change=row["probability"] - before if before is not None else None)


def _view(c: data.Customer360, currency: str) -> Customer360:
    p = c.profile
    return Customer360(
        as_of=c.on, view="staff" if c.internal else "customer",
        customer=Profile(**{k: v for k, v in p.items() if k != "deleted_at"},
                         archived_at=p["deleted_at"]),
        machine_period=c.period.label,
        machines=[_machine(m, c.machine_figures.get(m["installed_base_id"]))
                  for m in c.machines],
        contracts=[Contract(**r) for r in c.contracts],
        invoices=[InvoiceTotals(**r) for r in c.invoices],
        orders=[OrderTotals(**r) for r in c.orders],
        figures=_figures(c.figures, currency),
        value=Value(**c.value) if c.value else None,
        risk=_risk(c.risk),
        segments=[Membership(**r) for r in c.segments],
        changes=[Change(**r) for r in c.changes],
        overdue_invoices=[Invoice(**r) for r in c.overdue],
        recent_orders=[Order(**r) for r in c.recent_orders],
        recent_answers=[SurveyAnswer(**r) for r in c.recent_answers],
        risk_history=[RiskDay(**r) for r in c.risk_days],
        value_history=[ValueDay(**r) for r in c.value_days])


@router.get("/{customer_id}", response_model=Customer360, summary="A customer's 360",
            responses={404: {"description": "no such customer visible to the caller"}})
async def customer_360(request: Request, session: StaffOrOwn, customer_id: CustomerId,
                       on: AsOf = None) -> Response:
    """Everything about a customer as of ``on``.

    Machines, contracts and renewals, unpaid invoices, orders, figures, value, churn risk with
    its reasons, segments and what changed in the 7 days up to ``on``.

    With an ETag: a client sending If-None-Match with it gets 304 while nothing changed.
    """
    currency = _currency(request)
    found = await data.customer_360(session.conn, customer_id, on=_as_of(on),
                                    reporting_currency=currency,
                                    internal=session.principal.role != "customer")
    if found is None:
        raise NotFound("customer", customer_id)
    return json_response(request, _view(found, currency))


async def _exists(session: Session, customer_id: int) -> None:
    if not await data.customer_exists(session.conn, customer_id):
        raise NotFound("customer", customer_id)


def _risk_point(row: Row) -> RiskPoint:
    return RiskPoint(**{k: v for k, v in row.items() if k not in ("reasons", "currency")},
                     reasons=[Reason(**r) for r in row["reasons"]],
                     risk_band=risk_band(row["probability"]), currency=row["currency"].strip())


@router.get("/{customer_id}/risk-history", response_model=Page[RiskPoint],
            summary="A customer's churn risk, day by day")
async def risk_history(request: Request, session: Staff, customer_id: CustomerId, *,
                       sort: Literal["scored_on", "-scored_on"] = "-scored_on",
                       limit: Limit = 50, cursor: str | None = None,
                       format: Format = "json",
                       ) -> Response:
    """Every scoring day's probability, method, model and reasons (staff only)."""
    await _exists(session, customer_id)

    async def fetch(conn: Conn, page: PageRequest) -> Any:
        return await data.risk_history(conn, customer_id, page)

    return await list_response(request, session, fetch=fetch, item=_risk_point, model=RiskPoint,
                               sort=sort, limit=limit, cursor=cursor, fmt=format,
                               filename=f"customer-{customer_id}-risk", key="scored_on")


@router.get("/{customer_id}/invoices", response_model=Page[Invoice],
            summary="A customer's invoices")
async def invoices(request: Request, session: StaffOrOwn, customer_id: CustomerId, *,
                   status: Literal["draft", "open", "paid", "cancelled", "credited"] | None = None,
                   overdue: bool | None = None, on: AsOf = None,
                   sort: Literal["issued_on", "-issued_on", "net_amount",
                                 "-net_amount"] = "-issued_on",
                   limit: Limit = 50, cursor: str | None = None,
                   format: Format = "json",
                   ) -> Response:
    """Invoices (not deleted); ``overdue``: open and due before ``on``."""
    await _exists(session, customer_id)
    day = _as_of(on)

    async def fetch(conn: Conn, page: PageRequest) -> Any:
        return await data.invoices_page(conn, customer_id, page, on=day, status=status,
                                        overdue=overdue)

    return await list_response(request, session, fetch=fetch, item=lambda r: Invoice(**r),
                               model=Invoice, sort=sort, limit=limit, cursor=cursor,
                               fmt=format, filename=f"customer-{customer_id}-invoices")


@router.get("/{customer_id}/orders", response_model=Page[Order], summary="A customer's orders")
async def orders(request: Request, session: StaffOrOwn, customer_id: CustomerId, *,
                 kind: Literal["spare_parts", "service"] | None = None,
                 status: Literal["draft", "confirmed", "delivered", "cancelled"] | None = None,
                 sort: Literal["ordered_on", "-ordered_on", "net_amount",
                               "-net_amount"] = "-ordered_on",
                 limit: Limit = 50, cursor: str | None = None,
                 format: Format = "json",
                 ) -> Response:
    """Spare-parts and service orders (not deleted)."""
    await _exists(session, customer_id)

    async def fetch(conn: Conn, page: PageRequest) -> Any:
        return await data.orders_page(conn, customer_id, page, kind=kind, status=status)

    return await list_response(request, session, fetch=fetch, item=lambda r: Order(**r),
                               model=Order, sort=sort, limit=limit, cursor=cursor, fmt=format,
                               filename=f"customer-{customer_id}-orders")


@router.get("/{customer_id}/contracts", response_model=Page[Contract],
            summary="A customer's contracts")
async def contracts(request: Request, session: StaffOrOwn, customer_id: CustomerId, *,
                    live: bool | None = None, on: AsOf = None,
                    sort: Literal["starts_on", "-starts_on", "ends_on", "-ends_on"] = "starts_on",
                    limit: Limit = 50, cursor: str | None = None,
                    format: Format = "json",
                    ) -> Response:
    """Service contracts (not deleted) with their renewal decisions; ``live`` on ``on``."""
    await _exists(session, customer_id)
    day = _as_of(on)

    async def fetch(conn: Conn, page: PageRequest) -> Any:
        return await data.contracts_page(conn, customer_id, page, on=day, live=live)

    return await list_response(request, session, fetch=fetch, item=lambda r: Contract(**r),
                               model=Contract, sort=sort, limit=limit, cursor=cursor,
                               fmt=format, filename=f"customer-{customer_id}-contracts")


@router.get("/{customer_id}/nps", response_model=Page[SurveyAnswer],
            summary="A customer's survey answers")
async def nps(request: Request, session: Staff, customer_id: CustomerId, *,
              category: Literal["promoter", "passive", "detractor"] | None = None,
              sort: Literal["answered_at", "-answered_at", "score", "-score"] = "-answered_at",
              limit: Limit = 50, cursor: str | None = None,
              format: Format = "json",
              ) -> Response:
    """Survey answers (0-10) with their comments and contacts (staff only)."""
    await _exists(session, customer_id)

    async def fetch(conn: Conn, page: PageRequest) -> Any:
        return await data.nps_page(conn, customer_id, page, category=category)

    return await list_response(request, session, fetch=fetch, item=lambda r: SurveyAnswer(**r),
                               model=SurveyAnswer, sort=sort, limit=limit, cursor=cursor,
                               fmt=format, filename=f"customer-{customer_id}-nps")
