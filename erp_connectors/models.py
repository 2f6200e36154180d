"""Business records as a connector yields them, before they are bound to database ids.

A record names its parents by their id in the source system (``customer_external_id``), never by
our database ids: the connector does not know those, the sync engine resolves them. The models
are strict: a field of the wrong type is refused rather than guessed at, unknown fields are
refused (a misspelt column would otherwise lose its data without a word), and the only
conversions are from the text forms written in docs/erp-files.md (``YYYY-MM-DD`` dates, ISO 8601
times, ``true``/``false`` flags), because files and most ERP APIs carry everything as text.
An absent value is an absent key: connectors leave out what the source left empty.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import pycountry
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


def _date(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not _ISO_DATE.fullmatch(text):
            raise PydanticCustomError(
                "date_format", "expected a date as YYYY-MM-DD, got '{value}'", {"value": value})
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise PydanticCustomError(
                "date_value", "'{value}' is not a day of the calendar", {"value": value}) from None
    return value


def _datetime(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise PydanticCustomError(
                "datetime_format",
                "expected a time as ISO 8601 (2026-03-01T12:00:00Z), got '{value}'",
                {"value": value}) from None
        value = parsed
    # Odoo and many exports write UTC without a zone; a zone, when given, is kept.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _flag(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise PydanticCustomError(
            "flag_format", "expected true or false (yes/no, 1/0), got '{value}'",
            {"value": value})
    return value


def _country(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().upper()
        if len(text) != 2 or not text.isascii() or not text.isalpha():
            raise PydanticCustomError(
                "country_format",
                "expected a 2-letter ISO 3166-1 country code (DE, US), got '{value}'",
                {"value": value})
        return text
    return value


def _decimal(value: Any) -> Any:
    # Odoo and JSON APIs send money as floats; str() keeps 0.1 as 0.1, not its binary expansion.
    if isinstance(value, bool):
        return value  # refused by the strict Decimal check: True is not an amount
    if isinstance(value, int | float):
        value = str(value)
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            raise PydanticCustomError(
                "number_format", "expected a number with a point as decimal separator"
                " (1234.50), got '{value}'", {"value": value}) from None
        if not parsed.is_finite():
            raise PydanticCustomError("number_value", "'{value}' is not a finite number",
                                      {"value": value})
        return parsed
    return value


def _integer(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d+", text):
            raise PydanticCustomError(
                "integer_format", "expected a whole number, got '{value}'", {"value": value})
        return int(text)
    return value


# ISO 4217 codes in use; a code outside them is a typo or a private code no rate can convert.
CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)


def _currency(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().upper()
        if text not in CURRENCIES:
            raise PydanticCustomError(
                "currency_unknown", "'{value}' is not an ISO 4217 currency code (EUR, USD)",
                {"value": value})
        return text
    return value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
IsoDate = Annotated[date, BeforeValidator(_date)]
Timestamp = Annotated[datetime, BeforeValidator(_datetime)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Country = Annotated[str, BeforeValidator(_country)]
SizeClass = Literal["small", "medium", "large", "enterprise"]
Money = Annotated[Decimal, BeforeValidator(_decimal)]
Quantity = Annotated[Decimal, BeforeValidator(_decimal)]
Whole = Annotated[int, BeforeValidator(_integer)]
Currency = Annotated[str, BeforeValidator(_currency)]
ContractScope = Literal["machine", "customer"]
ContractStatus = Literal["draft", "active", "expired", "cancelled", "terminated"]
RenewalOutcome = Literal["renewed", "upgraded", "downgraded", "lapsed", "cancelled"]
InvoiceStatus = Literal["draft", "open", "paid", "cancelled", "credited"]
LineKind = Literal["service_contract", "field_service", "spare_parts", "retrofit", "new_machine",
                   "other"]
OrderKind = Literal["spare_parts", "service"]
OrderStatus = Literal["draft", "confirmed", "delivered", "cancelled"]


def _order_error(kind: str, message: str, **values: date) -> PydanticCustomError:
    return PydanticCustomError(kind, message, {k: v.isoformat() for k, v in values.items()})


class SourceRecord(BaseModel):
    """What every synced record carries: its id in the source and when the source changed it."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    external_id: Text
    source_updated_at: Timestamp | None = None
    # The source says the record is gone (archived, deleted); the row is kept and marked.
    deleted: Flag = False


class CustomerRecord(SourceRecord):
    """A customer, with the attributes segments are cut by."""

    name: Text
    industry: Text | None = None
    country: Country | None = None
    size_class: SizeClass | None = None
    key_account: Flag = False
    customer_since: IsoDate | None = None


class SiteRecord(SourceRecord):
    """A site (plant, location) of a customer."""

    customer_external_id: Text
    name: Text
    country: Country | None = None
    city: Text | None = None


class InstalledBaseRecord(SourceRecord):
    """A machine sold, by serial: who has it, where, since when, under warranty until when."""

    serial: Text
    model: Text
    customer_external_id: Text
    site_external_id: Text | None = None
    commissioned_on: IsoDate | None = None
    warranty_end: IsoDate | None = None

    @model_validator(mode="after")
    def _warranty_after_commissioning(self) -> InstalledBaseRecord:
        if (self.commissioned_on is not None and self.warranty_end is not None
                and self.warranty_end < self.commissioned_on):
            raise PydanticCustomError(
                "warranty_before_commissioning",
                "warranty_end {warranty_end} is before commissioned_on {commissioned_on}",
                {"warranty_end": self.warranty_end.isoformat(),
                 "commissioned_on": self.commissioned_on.isoformat()})
        return self


class ContactRecord(SourceRecord):
    """A person at a customer (who answers surveys, who signs renewals)."""

    customer_external_id: Text
    site_external_id: Text | None = None
    name: Text
    role: Text | None = None
    email: Text | None = None
    phone: Text | None = None


class MachineModelRecord(SourceRecord):
    """A machine model's service plan and the OEM parts spend normal wear implies."""

    model: Text
    service_interval_hours: Annotated[Whole, Field(gt=0)] | None = None
    service_interval_days: Annotated[Whole, Field(gt=0)] | None = None
    parts_value_per_1000h: Annotated[Money, Field(ge=0)] | None = None
    currency: Currency | None = None

    @model_validator(mode="after")
    def _currency_with_value(self) -> MachineModelRecord:
        if self.parts_value_per_1000h is not None and self.currency is None:
            raise PydanticCustomError(
                "currency_missing", "parts_value_per_1000h is given without its currency", {})
        return self


class ServiceContractRecord(SourceRecord):
    """A service contract on one machine (``installed_base_external_id``) or the customer."""

    customer_external_id: Text
    installed_base_external_id: Text | None = None
    scope: ContractScope
    contract_number: Text | None = None
    tier: Text | None = None
    starts_on: IsoDate
    ends_on: IsoDate
    notice_period_days: Annotated[Whole, Field(ge=0)] = 90
    auto_renew: Flag = False
    annual_value: Annotated[Money, Field(ge=0)]
    currency: Currency
    status: ContractStatus

    @model_validator(mode="after")
    def _coherent(self) -> ServiceContractRecord:
        if self.ends_on < self.starts_on:
            raise _order_error("contract_ends_before_start",
                               "ends_on {ends_on} is before starts_on {starts_on}",
                               ends_on=self.ends_on, starts_on=self.starts_on)
        if self.scope == "machine" and self.installed_base_external_id is None:
            raise PydanticCustomError(
                "contract_machine_missing",
                "scope is machine but installed_base_external_id is empty", {})
        return self


class ContractRenewalRecord(SourceRecord):
    """One renewal decision on a contract: renewed (up/down) to a new end, or lapsed."""

    contract_external_id: Text
    decided_on: IsoDate
    outcome: RenewalOutcome
    previous_ends_on: IsoDate
    new_ends_on: IsoDate | None = None
    previous_value: Annotated[Money, Field(ge=0)] | None = None
    new_value: Annotated[Money, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _coherent(self) -> ContractRenewalRecord:
        if self.outcome in ("lapsed", "cancelled"):
            return self
        if self.new_ends_on is None:
            raise PydanticCustomError(
                "renewal_end_missing", "outcome {outcome} needs new_ends_on",
                {"outcome": self.outcome})
        if self.new_ends_on <= self.previous_ends_on:
            raise _order_error("renewal_not_later",
                               "new_ends_on {new_ends_on} is not after previous_ends_on"
                               " {previous_ends_on}",
                               new_ends_on=self.new_ends_on,
                               previous_ends_on=self.previous_ends_on)
        return self


class InvoiceRecord(SourceRecord):
    """An invoice (or credit note, status ``credited``) header; amounts net of tax."""

    customer_external_id: Text
    number: Text | None = None
    issued_on: IsoDate
    due_on: IsoDate | None = None
    paid_on: IsoDate | None = None
    currency: Currency
    net_amount: Money
    status: InvoiceStatus

    @model_validator(mode="after")
    def _coherent(self) -> InvoiceRecord:
        if self.due_on is not None and self.due_on < self.issued_on:
            raise _order_error("invoice_due_before_issue",
                               "due_on {due_on} is before issued_on {issued_on}",
                               due_on=self.due_on, issued_on=self.issued_on)
        if self.status == "paid" and self.paid_on is None:
            raise PydanticCustomError("invoice_paid_without_date",
                                      "status is paid but paid_on is empty", {})
        return self


class InvoiceLineRecord(SourceRecord):
    """A line of an invoice; its kind is what revenue is split by."""

    invoice_external_id: Text
    kind: LineKind
    product_code: Text | None = None
    description: Text | None = None
    quantity: Annotated[Quantity, Field(ge=0)] = Decimal(1)
    unit_price: Money | None = None
    net_amount: Money
    installed_base_external_id: Text | None = None
    contract_external_id: Text | None = None


class OrderRecord(SourceRecord):
    """A spare-parts or service order header."""

    customer_external_id: Text
    kind: OrderKind
    number: Text | None = None
    ordered_on: IsoDate
    status: OrderStatus
    currency: Currency
    net_amount: Money


class OrderLineRecord(SourceRecord):
    """A line of an order: a part, how many, for which machine when known."""

    order_external_id: Text
    part_number: Text | None = None
    description: Text | None = None
    quantity: Annotated[Quantity, Field(gt=0)]
    unit_price: Money | None = None
    net_amount: Money
    installed_base_external_id: Text | None = None


class SurveyResponseRecord(SourceRecord):
    """An answer to "how likely are you to recommend us" (0-10), with its comment."""

    customer_external_id: Text
    contact_external_id: Text | None = None
    answered_at: Timestamp
    score: Annotated[Whole, Field(ge=0, le=10)]
    comment: Text | None = None


def describe(exc: ValidationError) -> str:
    """Say what is wrong with a record in one line a person can act on.

    >>> try:
    ...     CustomerRecord.model_validate({"external_id": "C-1", "country": "DEU"})
    ... except ValidationError as exc:
    ...     print(describe(exc))
    name is missing; country: expected a 2-letter ISO 3166-1 country code (DE, US), got 'DEU'
    """
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        if error["type"] == "missing":
            problems.append(f"{field} is missing")
        elif error["type"] == "extra_forbidden":
            problems.append(f"{field} is not a known field")
        elif field:
            problems.append(f"{field}: {error['msg']}")
        else:
            problems.append(error["msg"])
    return "; ".join(problems)
