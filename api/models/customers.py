"""Answers of the customer routes: the list, the 360 and its paged parts."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

RiskBand = Literal["high", "medium", "low"]


class CustomerItem(BaseModel):
    """A customer in the list, as of ``as_of`` (money in the reporting currency ``currency``)."""

    id: int
    external_id: str
    name: str
    country: str | None
    industry: str | None
    size_class: str | None
    key_account: bool
    customer_since: date | None
    archived: bool = Field(description="deleted (archived) in the ERP, as churned customers are")
    churn_probability: float | None = Field(
        description="probability of contract churn within the score's horizon, from the latest "
                    "scoring day; null when not scored then (off the books)")
    risk_band: RiskBand | None = Field(description="high >= 0.5, medium >= 0.2, else low")
    risk_method: str | None = Field(description="model or rules")
    clv: Decimal | None = Field(description="total CLV of the latest valuation (parts + contracts)")
    clv_method: str | None
    revenue_12m: Decimal = Field(description="after-sales revenue of the 365 days up to as_of")
    annual_contract_value: Decimal = Field(
        description="annual value of the contracts live on as_of, converted that day")
    currency: str = Field(description="the reporting currency of clv, revenue and contract value")
    live_contracts: int
    open_invoices: int
    overdue_invoices: int = Field(description="open invoices due before as_of")
    value_tier: str | None
    rfm: str | None
    usage: str | None


class Profile(BaseModel):
    """The customer's record."""

    id: int
    external_id: str
    source: str
    name: str
    industry: str | None
    country: str | None
    size_class: str | None
    key_account: bool
    customer_since: date | None
    archived_at: datetime | None
    sites: int
    contacts: int
    active: bool = Field(description="an active customer on as_of (docs/kpis.md): a live "
                                     "contract, or a positive invoice in the 365 days up to it")


class Machine(BaseModel):
    """A machine of the installed base and its figures for ``machine_period``."""

    installed_base_id: int
    serial: str
    model: str
    commissioned_on: date | None
    warranty_end: date | None
    machine_id: int | None = Field(description="the ingester's machine; null: never reported")
    online: bool | None = Field(description="Sparkplug birth/death state; null: not known")
    last_seen: datetime | None = Field(description="latest sample, state or event (daily rollup)")
    silent: bool | None = Field(description="last seen more than 14 days before as_of's end")
    hours: Decimal | None = Field(description="operating hours in machine_period")
    utilisation: Decimal | None = Field(description="operating hours / calendar hours, 0-1")
    services: int | None = Field(description="maintenance events in machine_period")
    services_due: Decimal | None
    overdue: bool | None = Field(description="past a service interval at machine_period's end")
    faults: int | None
    fault_rate: Decimal | None = Field(description="faults per 1,000 operating hours")
    parts_capture: Decimal | None = Field(description="OEM parts bought / parts the hours imply")


class Renewal(BaseModel):
    """A renewal decision of a contract."""

    decided_on: date
    outcome: str
    previous_ends_on: date
    new_ends_on: date | None
    previous_value: Decimal | None
    new_value: Decimal | None


class Contract(BaseModel):
    """A service contract (value in its own currency) and its renewal decisions."""

    id: int
    contract_number: str | None
    external_id: str
    scope: str
    installed_base_id: int | None
    tier: str | None
    starts_on: date
    ends_on: date
    notice_period_days: int
    notice_by: date = Field(description="last day to give notice: ends_on - notice period")
    auto_renew: bool
    annual_value: Decimal
    currency: str
    status: str
    live: bool = Field(description="not draft or cancelled, as_of within its term")
    renewals: list[Renewal]


class InvoiceTotals(BaseModel):
    """Unpaid invoices in one currency."""

    currency: str
    open_invoices: int
    open_amount: Decimal
    overdue_invoices: int = Field(description="open and due before as_of")
    overdue_amount: Decimal
    oldest_due_on: date | None


class OrderTotals(BaseModel):
    """Orders of the 365 days up to as_of (not draft or cancelled) in one currency."""

    currency: str
    orders: int
    amount: Decimal
    last_ordered_on: date | None


class Figures(BaseModel):
    """The customer's own figures over the 365 days up to as_of (docs/kpis.md definitions)."""

    currency: str
    revenue_12m: Decimal = Field(description="after-sales revenue, reporting currency")
    revenue_prev_12m: Decimal = Field(description="the same, the 365 days before")
    revenue_change: Decimal | None = Field(description="revenue_12m / revenue_prev_12m - 1")
    purchase_days_12m: int = Field(description="days with a positive parts or field-service "
                                               "invoice line")
    nps: Decimal | None = Field(description="100 x (promoters - detractors) / responses, one "
                                            "answer per contact (its latest); null: none")
    nps_responses: int
    promoters: int
    passives: int
    detractors: int


class Value(BaseModel):
    """The latest customer value (docs/clv.md) and the method it came from."""

    valued_on: date
    method: str = Field(description="parts model / contract model, e.g. bgnbd+gamma_gamma/sbg")
    total_clv: Decimal
    parts_clv: Decimal | None
    contract_derl_value: Decimal | None
    contract_annual_value: Decimal | None
    contract_renewals: int | None
    contract_expected_lifetime_years: float | None
    p_alive: float | None
    expected_purchases_12m: float | None
    expected_spend_per_purchase: Decimal | None
    currency: str
    discount_rate: float
    horizon_months: int
    inputs: dict[str, Any]


class Reason(BaseModel):
    """A factor that raised the risk, with the customer's own value."""

    factor: str
    label: str
    value: float | None
    effect: float = Field(description="how much it moved the probability (+0.12: 12 points)")


class Risk(BaseModel):
    """The latest churn score and the one a week before it."""

    scored_on: date
    probability: float
    risk_band: RiskBand
    method: str
    model_version: str
    horizon_days: int
    reasons: list[Reason]
    annual_value: Decimal | None = Field(description="annual contract value in force")
    currency: str
    revenue_at_risk: Decimal | None = Field(description="annual_value x probability")
    week_before_on: date | None
    week_before_probability: float | None
    change: float | None = Field(description="probability - week_before_probability")


class Membership(BaseModel):
    """A segment the customer is in: behavioural (as assigned) or the contract tier."""

    dimension: str
    segment: str
    assigned_on: date | None
    inputs: dict[str, Any] | None


class Change(BaseModel):
    """Something that changed in the 7 days up to as_of, and what it is about."""

    kind: str = Field(description="risk, segment, invoice_issued, invoice_overdue, invoice_paid, "
                                  "order, nps_answer, contract_decision, contract_started, "
                                  "contract_ended, machine_silent")
    day: date
    text: str
    entity: str
    entity_id: str


class RiskDay(BaseModel):
    """The churn probability of a scoring day."""

    day: date
    probability: float


class ValueDay(BaseModel):
    """The total CLV of a valuation day (reporting currency)."""

    day: date
    total_clv: Decimal


class Customer360(BaseModel):
    """Everything about one customer as of ``as_of``.

    A portal user (role customer) gets ``view`` "customer": its machines, contracts, invoices,
    orders and their changes; the OEM's assessments (risk, value, segments), survey answers and
    figures are null or empty.
    """

    as_of: date
    view: Literal["staff", "customer"]
    customer: Profile
    machine_period: str = Field(description="the period of the machines' figures")
    machines: list[Machine]
    contracts: list[Contract]
    invoices: list[InvoiceTotals]
    orders: list[OrderTotals]
    figures: Figures | None
    value: Value | None
    risk: Risk | None
    segments: list[Membership]
    changes: list[Change]
    overdue_invoices: list[Invoice] = Field(description="overdue invoices, oldest first (20)")
    recent_orders: list[Order] = Field(description="the latest 5 orders")
    recent_answers: list[SurveyAnswer] = Field(description="the latest 5 survey answers")
    risk_history: list[RiskDay] = Field(description="the latest 90 scoring days, oldest first")
    value_history: list[ValueDay] = Field(description="the latest 90 valuations, oldest first")


class RiskPoint(BaseModel):
    """One scoring day of the customer."""

    scored_on: date
    probability: float
    risk_band: RiskBand
    method: str
    model_version: str
    horizon_days: int
    reasons: list[Reason]
    annual_value: Decimal | None
    currency: str
    revenue_at_risk: Decimal | None


class Invoice(BaseModel):
    """An invoice (in its own currency)."""

    id: int
    number: str | None
    external_id: str
    issued_on: date
    due_on: date | None
    paid_on: date | None
    status: str
    currency: str
    net_amount: Decimal
    overdue: bool = Field(description="open and due before as_of")
    days_overdue: int | None


class Order(BaseModel):
    """An order (in its own currency)."""

    id: int
    number: str | None
    external_id: str
    kind: str
    ordered_on: date
    status: str
    currency: str
    net_amount: Decimal
    lines: int


class SurveyAnswer(BaseModel):
    """A survey answer (0-10) and who gave it."""

    id: int
    answered_at: datetime
    score: int
    category: Literal["promoter", "passive", "detractor"]
    comment: str | None
    contact_id: int | None
    contact_name: str | None
    contact_role: str | None
