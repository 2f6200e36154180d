"""Answers of the leakage lists (docs/api-maintenance.md)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import BaseModel, Field


class UncoveredMachine(BaseModel):
    """An installed machine no contract covers today."""

    installed_base_id: int
    serial: str
    model: str
    customer_id: int
    customer_name: str
    site_id: int | None
    site_name: str | None
    region: str | None = Field(description="country of the site (the customer's without one)")
    commissioned_on: date | None
    warranty_end: date | None
    in_warranty: bool = Field(description="the warranty runs today")
    last_covered_on: date | None = Field(
        description="the day the last contract covering it ended (null: never covered)")


class WarrantyEnding(BaseModel):
    """A machine whose warranty ends soon with no contract to follow it."""

    installed_base_id: int
    serial: str
    model: str
    customer_id: int
    customer_name: str
    site_id: int | None
    site_name: str | None
    region: str | None
    commissioned_on: date | None
    warranty_end: date
    days_left: int = Field(description="days from today to the warranty's end")


class PartsGap(BaseModel):
    """A customer buying fewer parts than its machines' operating hours imply."""

    customer_id: int
    customer_name: str
    region: str | None = Field(description="the customer's country")
    machines: int = Field(description="installed machines with telemetry and a parts value")
    operating_hours: Decimal = Field(description="their operating hours in the window (h)")
    expected_parts: Decimal = Field(
        description="operating hours x model's parts value per 1000 h / 1000")
    bought_parts: Decimal = Field(description="spare-parts invoice lines in the window")
    gap: Decimal = Field(description="expected - bought, in currency")
    capture: Decimal | None = Field(description="bought / expected")
    currency: str = Field(description="the reporting currency of every amount")
