"""Answers and requests of the finance routes (docs/api-finance.md has the definitions)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Money = Decimal


class ChurnReason(BaseModel):
    """A factor behind a churn score (analytics.churn.Reason)."""

    factor: str
    label: str
    value: float | None
    effect: float = Field(description="How much it moved the probability (0.12: 12 points up)")


class Renewal(BaseModel):
    """A contract in the renewals pipeline."""

    contract_id: int
    contract_number: str | None
    customer_id: int
    customer_name: str
    scope: str = Field(description="machine or customer")
    installed_base_id: int | None
    tier: str | None
    auto_renew: bool
    starts_on: date
    notice_date: date = Field(description="Term end minus the notice period: the last day to "
                              "give notice")
    ends_on: date = Field(description="End of the running term")
    notice_period_days: int
    days_to_notice: int
    days_to_end: int
    decision: str | None = Field(description="A renewal decision already recorded for this "
                                 "term (renewed, upgraded, downgraded, lapsed, cancelled)")
    annual_value: Money = Field(description="The term's annual value, in `currency`")
    currency: str
    value_reporting: Money | None = Field(description="annual_value in the reporting currency "
                                          "(rate of today); null without a rate")
    reporting_currency: str
    churn_probability: float | None = Field(description="The customer's churn probability "
                                            "(latest score); null when not scored")
    scored_on: date | None
    reasons: list[ChurnReason] = Field(description="Why the customer's risk is what it is")
    revenue_at_risk: Money | None = Field(description="value_reporting x churn_probability")


class MonthAtRisk(BaseModel):
    """The renewals pipeline's revenue at risk in a month and segment (reporting currency)."""

    month: date = Field(description="First day of the month of the notice date or term end")
    segment: str
    contracts: int
    customers: int
    value: Money | None
    revenue_at_risk: Money | None
    unscored: int = Field(description="Contracts whose customer has no score")


class SegmentAtRisk(BaseModel):
    """Revenue at risk of a segment in a month, from the month's last scores (analytics.churn)."""

    month: date
    segment: str
    currency: str
    customers: int
    annual_value: Money | None = Field(description="Annual contract value in force")
    revenue_at_risk: Money | None = Field(description="annual value x churn probability")
    mean_probability: float


class RevenueAtRisk(BaseModel):
    """Revenue at risk by month (of the pipeline's due dates) or by segment (of the scores)."""

    by: str
    dimension: str
    currency: str
    months: list[MonthAtRisk] | None = None
    segments: list[SegmentAtRisk] | None = None


class Receivables(BaseModel):
    """A customer's open and overdue invoices and DSO (reporting currency, net amounts)."""

    customer_id: int
    customer_name: str
    reporting_currency: str
    open_invoices: int
    open_amount: Money
    overdue_invoices: int
    overdue_amount: Money
    oldest_overdue_days: int | None
    revenue_90d: Money = Field(description="Invoiced in the last 90 days")
    dso_days: Decimal | None = Field(description="open_amount / revenue_90d x 90; null "
                                     "without revenue in those days")


class OpenInvoice(BaseModel):
    """An open invoice."""

    id: int
    number: str | None
    issued_on: date
    due_on: date | None
    net_amount: Money
    currency: str
    amount_reporting: Money | None
    days_overdue: int


class CustomerValue(BaseModel):
    """A customer's lifetime value from the latest valuation run (docs/clv.md)."""

    customer_id: int
    external_id: str
    customer_name: str
    valued_on: date
    method: str
    p_alive: float | None
    expected_purchases_12m: float | None
    parts_clv: Money | None
    contract_annual_value: Money | None
    contract_expected_lifetime_years: float | None
    contract_derl_value: Money | None
    total_clv: Money = Field(description="parts CLV + contract DERL value")
    currency: str


class SegmentValue(BaseModel):
    """The lifetime values of a segment's customers."""

    segment: str
    valued_on: date
    currency: str
    customers: int
    total_clv: Money
    mean_clv: Money
    median_clv: Money
    parts_clv: Money | None
    contract_value: Money | None


class ClvBySegment(BaseModel):
    """CLV per segment of a cut."""

    dimension: str
    segments: list[SegmentValue]


class UnbilledWork(BaseModel):
    """Work on a machine the ERP holds no invoice line for."""

    id: str
    occurred_at: datetime
    age_days: int
    kind: str = Field(description="maintenance (a service visit) or part_replaced")
    code: str | None
    installed_base_id: int
    serial: str
    model: str
    customer_id: int
    customer_name: str
    line_kind: str = Field(description="The invoice line kind that would bill it")
    estimated_value: Money | None = Field(description="Median billed visit of the model (or "
                                          "of all models), reporting currency")
    value_basis: str | None
    reporting_currency: str
    contract_id: int | None = Field(description="Service contract live on the machine that "
                                    "day: the work may be included in it")
    contract_tier: str | None


class UnbilledSummary(BaseModel):
    """All the unbilled work of a filter."""

    items: int
    estimated_value: Money | None = Field(description="Sum of the items' estimated values")
    unvalued: int = Field(description="Items without an estimate (nothing billed to compare)")
    reporting_currency: str


class UsageTermsIn(BaseModel):
    """The pay-per-use terms of a contract."""

    model_config = ConfigDict(extra="forbid")
    rate_per_hour: Decimal = Field(ge=0, max_digits=14, decimal_places=4,
                                   description="Price of an operating hour, in `currency`")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    included_hours: Decimal = Field(default=Decimal(0), ge=0, max_digits=10, decimal_places=2,
                                    description="Hours per calendar month not billed")
    starts_on: date = Field(description="First day billed by use")


class UsageTerms(UsageTermsIn):
    """Pay-per-use terms with their contract."""

    model_config = ConfigDict(extra="ignore")
    contract_id: int
    contract_number: str | None
    customer_id: int
    customer_name: str
    scope: str
    installed_base_id: int | None
    contract_starts_on: date
    contract_ends_on: date
    updated_at: datetime
    updated_by: str


class BillableUsage(BaseModel):
    """A pay-per-use contract's billable operating hours in a month, for the ERP."""

    contract_id: int
    contract_number: str | None
    customer_id: int
    customer_external_id: str
    customer_name: str
    month: str = Field(description="YYYY-MM")
    from_day: date
    to_day: date
    machines: int
    operating_hours: Decimal = Field(description="Of the covered machines, from their counters")
    included_hours: Decimal
    billable_hours: Decimal = Field(description="operating_hours - included_hours, at least 0")
    rate_per_hour: Decimal
    amount: Money = Field(description="billable_hours x rate_per_hour, in `currency`")
    currency: str


def reasons_of(value: Any) -> list[ChurnReason]:
    """A score's stored reasons (a JSON list) as models."""
    return [ChurnReason(**r) for r in value or []]
