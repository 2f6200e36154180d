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
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
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


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
IsoDate = Annotated[date, BeforeValidator(_date)]
Timestamp = Annotated[datetime, BeforeValidator(_datetime)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Country = Annotated[str, BeforeValidator(_country)]
SizeClass = Literal["small", "medium", "large", "enterprise"]


class SourceRecord(BaseModel):
    """What every synced record carries: its id in the source and when the source changed it."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    external_id: Text
    source_updated_at: Timestamp | None = None


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
