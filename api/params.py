"""Bounded query parameter types: a day or a moment the code can compute with.

Python's dates reach 0001-01-01..9999-12-31, and a day a year off either end overflows the
first arithmetic done with it (a 500). Every date or datetime query parameter is one of these
types, so such a value is a 422 with a message instead.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2100, 12, 31)


def _day(value: date) -> date:
    if not FIRST_DAY <= value <= LAST_DAY:
        raise ValueError(f"the day must be within {FIRST_DAY} and {LAST_DAY}")
    return value


def _moment(value: datetime) -> datetime:
    # Its own calendar day: a time zone shifts it by less than a day, still far from overflow.
    if not FIRST_DAY <= value.date() <= LAST_DAY:
        raise ValueError(f"the time must be within {FIRST_DAY} and {LAST_DAY}")
    return value


Day = Annotated[date, AfterValidator(_day)]
Moment = Annotated[datetime, AfterValidator(_moment)]
AwareMoment = Annotated[AwareDatetime, AfterValidator(_moment)]
