"""Finance: renewals, revenue at risk, receivables, CLV, unbilled work, pay-per-use billing.

Definitions are in docs/api-finance.md and the analytics modules the routes read through.

Roles: finance (and admin) read everything and manage the pay-per-use terms; viewer reads;
service reads unbilled work (its own visits and parts); a portal user (customer) reads its own
company's receivables and open invoices, nothing else here: churn probabilities, values and
margins are the OEM's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar, get_args

import orjson
from fastapi import APIRouter, Path, Query, Request, Response, status

from analytics import billing, churn, customer_value, receivables, renewals
from analytics.kpi import DIMENSIONS
from api.audit import audit
from api.deps import Conn, Session, requires, settings_of
from api.errors import NotFound, Problem
from api.models.finance import (
    BillableUsage,
    ClvBySegment,
    CustomerValue,
    MonthAtRisk,
    OpenInvoice,
    Receivables,
    Renewal,
    RevenueAtRisk,
    SegmentAtRisk,
    SegmentValue,
    UnbilledSummary,
    UnbilledWork,
    UsageTerms,
    UsageTermsIn,
    reasons_of,
)
from api.paging import Page
from api.params import Day
from api.responses import Fetch, Format, Row, json_response, list_response
from core.paging import Page as RowPage
from core.paging import PageRequest

router = APIRouter(prefix="/finance", tags=["finance"])

Reader = Annotated[Session, requires("finance", "viewer")]
Writer = Annotated[Session, requires("finance")]
ServiceReader = Annotated[Session, requires("finance", "viewer", "service")]
PortalReader = Annotated[Session, requires("finance", "viewer", "customer")]

Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
CustomerId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Days = Annotated[int, Query(ge=0, le=3650)]
Dimension = Literal["all", "country", "industry", "size_class", "key_account", "model", "tier",
                    "value_tier", "rfm", "usage"]
Segment = Annotated[str | None, Query(min_length=1, max_length=200)]
MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"
Month = Annotated[str, Query(pattern=MONTH, description="YYYY-MM")]
assert set(get_args(Dimension)) == set(DIMENSIONS)
T = TypeVar("T")

RenewalSort = Literal["notice_date", "-notice_date", "ends_on", "-ends_on", "value", "-value",
                      "revenue_at_risk", "-revenue_at_risk", "probability", "-probability"]
ReceivablesSort = Literal["overdue_amount", "-overdue_amount", "open_amount", "-open_amount",
                          "days_overdue", "-days_overdue", "dso", "-dso", "customer_id",
                          "-customer_id"]
ClvSort = Literal["total_clv", "-total_clv", "customer_id", "-customer_id"]
UnbilledSort = Literal["occurred_at", "-occurred_at", "value", "-value", "age_days",
                       "-age_days"]
BillableSort = Literal["contract", "-contract", "period", "-period", "amount", "-amount"]


def _today() -> date:
    return datetime.now(UTC).date()


def _invalid(detail: str) -> Problem:
    return Problem(422, "Invalid request", detail, kind="invalid-request")


def _build(make: Callable[[], T]) -> T:
    """A filter of analytics, its refusal of a bad combination answered 422."""
    try:
        return make()
    except ValueError as exc:
        raise _invalid(str(exc)) from None


def _fetch(list_fn: Callable[..., Awaitable[Any]], **kwargs: Any) -> Fetch:
    """An analytics list function with its filters, as list_response fetches pages."""
    async def fetch(conn: Conn, page: PageRequest) -> RowPage[Row]:
        rows: RowPage[Row] = await list_fn(conn, page, **kwargs)
        return rows
    return fetch


# -- renewals and revenue at risk --------------------------------------------------------------


def _renewal(row: Any) -> Renewal:
    return Renewal(**{**row, "reasons": reasons_of(row["reasons"]),
                      "revenue_at_risk": row["at_risk"]})


@router.get("/renewals", response_model=Page[Renewal], summary="Renewals pipeline")
async def renewals_pipeline(
        request: Request, session: Reader, *,
        within_days: Days = 90,
        due: Literal["notice", "end", "either"] = "either",
        auto_renew: bool | None = None,
        tier: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        customer_id: CustomerId = None,
        min_probability: Annotated[float | None, Query(ge=0, le=1)] = None,
        dimension: Dimension | None = None, segment: Segment = None,
        sort: RenewalSort = "notice_date", limit: Limit = 50, cursor: str | None = None,
        format: Format = "json") -> Response:
    """Contracts in force coming up for notice or term end, with what is at risk.

    Contracts whose notice date (``due=notice``), term end (``end``) or either falls within
    ``within_days`` days, with value, churn probability, reasons and revenue at risk (value in
    the reporting currency x probability). ``dimension`` and ``segment`` go together (a KPI
    cut's segment of the customer, e.g. ``dimension=country&segment=DE``).
    """
    where = _build(lambda: renewals.PipelineFilter(
        on=_today(), reporting_currency=settings_of(request).reporting_currency,
        within_days=within_days, due=due, auto_renew=auto_renew, tier=tier,
        customer_id=customer_id, min_probability=min_probability, dimension=dimension,
        segment=segment))
    return await list_response(request, session, fetch=_fetch(renewals.pipeline, where=where),
                               item=_renewal, model=Renewal, sort=sort, limit=limit,
                               cursor=cursor, fmt=format, filename="renewals")


@router.get("/revenue-at-risk", response_model=RevenueAtRisk, summary="Revenue at risk")
async def revenue_at_risk(
        request: Request, session: Reader, *,
        by: Literal["month", "segment"] = "month",
        dimension: Dimension = "all",
        within_days: Days = 365,
        due: Literal["notice", "end"] = "notice",
        since: Day | None = None, until: Day | None = None) -> Response:
    """Revenue at risk (annual contract value x churn probability, reporting currency).

    ``by=month``: the renewals pipeline of the next ``within_days`` days summed by the month of
    its notice date or term end (``due``) and the segments of ``dimension``. ``by=segment``:
    every scored customer, per month from ``since`` to ``until`` (default: the last 12 months)
    and segment, from the month's last scores (analytics.churn.revenue_at_risk_by_segment).
    """
    currency = settings_of(request).reporting_currency
    today = _today()
    if by == "month":
        if since is not None or until is not None:
            raise _invalid("since and until are for by=segment; by=month takes within_days")
        where = renewals.PipelineFilter(on=today, reporting_currency=currency,
                                        within_days=within_days, due=due)
        months = await renewals.at_risk_by_month(session.conn, where=where,
                                                 by_dimension=dimension)
        body = RevenueAtRisk(by=by, dimension=dimension, currency=currency,
                             months=[MonthAtRisk(**asdict(m)) for m in months])
        return json_response(request, body)
    last = until or today
    first = since or (last.replace(day=1) - timedelta(days=334)).replace(day=1)
    if first > last:
        raise _invalid(f"since {first} is after until {last}")
    risks = await churn.revenue_at_risk_by_segment(session.conn, segment=dimension,
                                                   since=first, until=last)
    body = RevenueAtRisk(by=by, dimension=dimension, currency=currency,
                         segments=[SegmentAtRisk(**asdict(r)) for r in risks])
    return json_response(request, body)


# -- receivables -------------------------------------------------------------------------------


@router.get("/receivables", response_model=Page[Receivables], summary="Receivables and DSO")
async def receivables_per_customer(
        request: Request, session: PortalReader, *,
        overdue_only: bool = False, customer_id: CustomerId = None,
        sort: ReceivablesSort = "-overdue_amount", limit: Limit = 50,
        cursor: str | None = None,
        format: Format = "json") -> Response:
    """Open and overdue invoices and DSO per customer.

    Per customer with open invoices or revenue in the last 90 days: open and overdue invoices
    and amounts, the oldest overdue days, and DSO (open / revenue of 90 days x 90), in the
    reporting currency. A portal user sees its own company's row only.
    """
    where = receivables.ReceivablesFilter(
        on=_today(), reporting_currency=settings_of(request).reporting_currency,
        overdue_only=overdue_only, customer_id=customer_id)
    return await list_response(request, session,
                               fetch=_fetch(receivables.per_customer, where=where),
                               item=lambda r: Receivables(**r), model=Receivables, sort=sort,
                               limit=limit, cursor=cursor, fmt=format, filename="receivables")


@router.get("/receivables/{customer_id}/invoices", response_model=list[OpenInvoice],
            summary="A customer's open invoices")
async def customer_open_invoices(request: Request, session: PortalReader, *,
                                 customer_id: Id) -> Response:
    """A customer's open invoices, oldest due first (a portal user: its own company's only)."""
    found = await receivables.open_invoices(
        session.conn, customer_id=customer_id, on=_today(),
        reporting_currency=settings_of(request).reporting_currency)
    if found is None:
        raise NotFound("customer", customer_id)
    return Response(orjson.dumps([OpenInvoice(**asdict(i)).model_dump(mode="json")
                                  for i in found]), media_type="application/json")


# -- CLV ---------------------------------------------------------------------------------------


@router.get("/clv", response_model=Page[CustomerValue] | ClvBySegment,
            summary="Customer lifetime value")
async def clv(request: Request, session: Reader, *,
              by: Literal["customer", "segment"] = "customer",
              dimension: Dimension | None = None, segment: Segment = None,
              sort: ClvSort = "-total_clv", limit: Limit = 50, cursor: str | None = None,
              format: Format = "json") -> Response:
    """Customer lifetime value per customer or per segment.

    CLV from the latest valuation run (reporting currency): ``by=customer`` a page per customer
    (optionally one segment: ``dimension`` and ``segment``); ``by=segment`` total, mean and
    median per segment of ``dimension`` (default all).
    """
    currency = settings_of(request).reporting_currency
    if by == "segment":
        if segment is not None:
            raise _invalid("segment filters by=customer; by=segment lists every segment")
        values = await customer_value.values_by_segment(
            session.conn, on=_today(), reporting_currency=currency,
            dimension=dimension or "all")
        return json_response(request, ClvBySegment(
            dimension=dimension or "all",
            segments=[SegmentValue(**asdict(v)) for v in values]))
    if (dimension is None) != (segment is None):
        raise _invalid("dimension and segment go together")
    return await list_response(
        request, session,
        fetch=_fetch(customer_value.values_page, on=_today(), reporting_currency=currency,
                     dimension=dimension, segment=segment),
        item=lambda r: CustomerValue(**r), model=CustomerValue, sort=sort, limit=limit,
        cursor=cursor, fmt=format, filename="clv")


# -- unbilled work -----------------------------------------------------------------------------


def _unbilled_filter(request: Request, *, older_than_days: int, window_days: int,
                     since: date | None, coverage: billing.Coverage,
                     kind: billing.WorkKind | None,
                     customer_id: int | None) -> billing.UnbilledFilter:
    today = _today()
    return _build(lambda: billing.UnbilledFilter(
        on=today, reporting_currency=settings_of(request).reporting_currency,
        since=since or today - timedelta(days=365), older_than_days=older_than_days,
        window_days=window_days, coverage=coverage, kind=kind, customer_id=customer_id))


@router.get("/unbilled", response_model=Page[UnbilledWork], summary="Unbilled work")
async def unbilled(request: Request, session: ServiceReader, *,
                   older_than_days: Days = 14,
                   window_days: Annotated[int, Query(ge=0, le=365)] = billing.DEFAULT_WINDOW_DAYS,
                   since: Day | None = None,
                   coverage: billing.Coverage = "all",
                   kind: billing.WorkKind | None = None,
                   customer_id: CustomerId = None,
                   sort: UnbilledSort = "-occurred_at", limit: Limit = 50,
                   cursor: str | None = None,
                   format: Format = "json") -> Response:
    """Work done on machines that the ERP holds no invoice line for.

    Service visits and parts replaced on machines, older than ``older_than_days``, with no
    invoice line of their kind on that machine within ``window_days`` of the work (either side),
    valued at the model's median billed visit; from ``since`` (default a year ago).
    ``coverage=uncovered``: only work on machines without a live service contract.
    """
    where = _unbilled_filter(request, older_than_days=older_than_days, window_days=window_days,
                             since=since, coverage=coverage, kind=kind, customer_id=customer_id)
    return await list_response(request, session, fetch=_fetch(billing.unbilled, where=where),
                               item=lambda r: UnbilledWork(**r), model=UnbilledWork,
                               sort=sort, limit=limit, cursor=cursor, fmt=format,
                               filename="unbilled")


@router.get("/unbilled/summary", response_model=UnbilledSummary,
            summary="Unbilled work, counted and valued")
async def unbilled_summary(request: Request, session: ServiceReader, *,
                           older_than_days: Days = 14,
                           window_days: Annotated[int, Query(ge=0, le=365)] =
                           billing.DEFAULT_WINDOW_DAYS,
                           since: Day | None = None,
                           coverage: billing.Coverage = "all",
                           kind: billing.WorkKind | None = None,
                           customer_id: CustomerId = None) -> Response:
    """How many items ``GET /finance/unbilled`` lists with these filters, and their value."""
    where = _unbilled_filter(request, older_than_days=older_than_days, window_days=window_days,
                             since=since, coverage=coverage, kind=kind, customer_id=customer_id)
    total = await billing.unbilled_total(session.conn, where=where)
    return json_response(request, UnbilledSummary(
        items=total.items, estimated_value=total.estimated_value, unvalued=total.unvalued,
        reporting_currency=where.reporting_currency))


# -- pay-per-use -------------------------------------------------------------------------------


def _billable(row: Any) -> BillableUsage:
    return BillableUsage(**{**row, "month": row["month"].strftime("%Y-%m")})


@router.get("/usage-billing/billable", response_model=Page[BillableUsage],
            summary="Billable usage (export for the ERP)")
async def billable_usage(request: Request, session: Reader, *,
                         from_: Annotated[str, Query(alias="from", pattern=MONTH)],
                         to: Month, customer_id: CustomerId = None,
                         sort: BillableSort = "contract", limit: Limit = 50,
                         cursor: str | None = None,
                         format: Format = "json") -> Response:
    """Billable operating hours per pay-per-use contract and month, exportable for the ERP.

    Per pay-per-use contract and calendar month ``from`` to ``to``: operating hours of the
    machines it covers (their own counters), included hours, billable hours and amount; as CSV
    or XLSX for the ERP with ``format``.
    """
    where = _build(lambda: billing.BillableFilter(
        first_month=billing.month_of(from_), last_month=billing.month_of(to),
        customer_id=customer_id))
    return await list_response(request, session, fetch=_fetch(billing.billable, where=where),
                               item=_billable, model=BillableUsage, sort=sort, limit=limit,
                               cursor=cursor, fmt=format, filename="billable-usage")


@router.get("/usage-billing", response_model=list[UsageTerms], summary="Pay-per-use terms")
async def usage_terms(session: Reader) -> list[UsageTerms]:
    """Every contract billed by use, with its terms."""
    return [UsageTerms(**r) for r in await billing.usage_terms(session.conn)]


async def _terms_of(session: Session, contract_id: int) -> UsageTerms | None:
    rows = await billing.usage_terms(session.conn, contract_id=contract_id)
    return UsageTerms(**rows[0]) if rows else None


@router.get("/usage-billing/{contract_id}", response_model=UsageTerms,
            summary="A contract's pay-per-use terms")
async def contract_usage_terms(session: Reader, contract_id: Id) -> UsageTerms:
    """The terms of one contract billed by use."""
    terms = await _terms_of(session, contract_id)
    if terms is None:
        raise NotFound("pay-per-use terms of contract", contract_id)
    return terms


@router.put("/usage-billing/{contract_id}", response_model=UsageTerms,
            summary="Bill a contract by use",
            responses={201: {"model": UsageTerms, "description": "Terms recorded"}})
async def put_usage_terms(session: Writer, contract_id: Id, terms: UsageTermsIn) -> Response:
    """Record or replace the pay-per-use terms of a contract (201 when new, 200 replaced)."""
    before = await _terms_of(session, contract_id)
    created = await billing.put_usage_terms(
        session.conn, contract_id=contract_id, by=session.principal.actor,
        terms=billing.UsageTerms(rate_per_hour=terms.rate_per_hour, currency=terms.currency,
                                 included_hours=terms.included_hours,
                                 starts_on=terms.starts_on))
    if created is None:
        raise NotFound("service contract", contract_id)
    after = await _terms_of(session, contract_id)
    assert after is not None  # written in this transaction
    await audit(session, action="usage_billing.put", entity="usage_billing",
                entity_id=contract_id, before=before.model_dump() if before else None,
                after=after.model_dump())
    return Response(orjson.dumps(after.model_dump(mode="json")), media_type="application/json",
                    status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@router.delete("/usage-billing/{contract_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Stop billing a contract by use")
async def delete_usage_terms(session: Writer, contract_id: Id) -> Response:
    """Remove a contract's pay-per-use terms (its past exports stay what they were)."""
    before = await _terms_of(session, contract_id)
    if before is None or not await billing.delete_usage_terms(session.conn,
                                                              contract_id=contract_id):
        raise NotFound("pay-per-use terms of contract", contract_id)
    await audit(session, action="usage_billing.delete", entity="usage_billing",
                entity_id=contract_id, before=before.model_dump())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
