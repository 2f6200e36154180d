"""Reporting periods: calendar months, quarters and years (UTC days).

Examples
--------
>>> from datetime import date
>>> p = Period.containing("quarter", date(2026, 5, 17))
>>> p.label, p.start, p.last_day, p.previous().label
('2026-Q2', datetime.date(2026, 4, 1), datetime.date(2026, 6, 30), '2026-Q1')
>>> [q.label for q in periods_between("month", date(2026, 1, 15), date(2026, 3, 1))]
['2026-01', '2026-02', '2026-03']
>>> p.to_date(date(2026, 5, 17)).label, p.to_date(date(2026, 5, 17)).last_day
('2026-Q2 to 2026-05-17', datetime.date(2026, 5, 17))
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import total_ordering
from typing import Literal

PeriodKind = Literal["month", "quarter", "year"]

_MONTHS: dict[str, int] = {"month": 1, "quarter": 3, "year": 12}


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@total_ordering
@dataclass(frozen=True)
class Period:
    """A calendar month, quarter or year, from its first day, whole or to date.

    Parameters
    ----------
    kind
        ``"month"``, ``"quarter"`` or ``"year"``.
    start
        The first day: the 1st of a month; of January, April, July or October for a quarter;
        1 January for a year. Anything else is refused (use :meth:`containing`).
    through
        For a period to date (:meth:`to_date`), the last day it counts; ``None`` (or the
        period's own last day) for the whole period. Every bound (:attr:`end`,
        :attr:`last_day`, :attr:`end_ts`, :attr:`days`) follows it; :meth:`previous` and
        :meth:`next` are whole periods.
    """

    kind: PeriodKind
    start: date
    through: date | None = None

    def __post_init__(self) -> None:
        if self.kind not in _MONTHS:
            msg = f"period kind must be month, quarter or year, not {self.kind!r}"
            raise ValueError(msg)
        if self.start.day != 1 or (self.start.month - 1) % _MONTHS[self.kind]:
            msg = f"{self.start} is not the first day of a {self.kind}"
            raise ValueError(msg)
        if self.through is not None:
            whole_end = _add_months(self.start, _MONTHS[self.kind])
            if not self.start <= self.through < whole_end:
                msg = f"{self.through} is not a day of the {self.kind} from {self.start}"
                raise ValueError(msg)
            if self.through == whole_end - timedelta(days=1):
                # Through its last day is the whole period: one value, equal to the whole one.
                object.__setattr__(self, "through", None)

    def __lt__(self, other: object) -> bool:
        # Ordered by kind, first day, then last day (a period to date before the whole one);
        # through itself is None for whole periods and would not compare with a day.
        if not isinstance(other, Period):
            return NotImplemented
        return (self.kind, self.start, self.last_day) < (other.kind, other.start, other.last_day)

    @classmethod
    def containing(cls, kind: PeriodKind, day: date) -> Period:
        """The period of ``kind`` that ``day`` falls in."""
        months = _MONTHS[kind]
        return cls(kind, date(day.year, (day.month - 1) // months * months + 1, 1))

    @property
    def end(self) -> date:
        """The first day after the period (exclusive end); after :attr:`through` if to date."""
        if self.through is not None:
            return self.through + timedelta(days=1)
        return _add_months(self.start, _MONTHS[self.kind])

    @property
    def complete(self) -> bool:
        """Whether this is the whole period (not one to date)."""
        return self.through is None

    @property
    def last_day(self) -> date:
        """The period's last day (inclusive)."""
        return self.end - timedelta(days=1)

    @property
    def days(self) -> int:
        """Number of days in the period."""
        return (self.end - self.start).days

    @property
    def per_year(self) -> int:
        """How many such periods make a year (12, 4 or 1)."""
        return 12 // _MONTHS[self.kind]

    @property
    def start_ts(self) -> datetime:
        """The period's first instant, midnight UTC."""
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def end_ts(self) -> datetime:
        """The instant after the period, midnight UTC of :attr:`end`."""
        return datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC)

    @property
    def label(self) -> str:
        """``2026-05``, ``2026-Q2`` or ``2026``; ``2026-05 to 2026-05-17`` to date."""
        if self.kind == "month":
            label = f"{self.start.year}-{self.start.month:02d}"
        elif self.kind == "quarter":
            label = f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"
        else:
            label = str(self.start.year)
        return label if self.through is None else f"{label} to {self.through.isoformat()}"

    def to_date(self, day: date) -> Period:
        """The period's days up to and including ``day``: the whole period from its last day on.

        A KPI of a period to date reads what happened by ``day`` (active on ``day``, hours and
        calendar hours up to its end, silent in the days before it) rather than measuring a
        period whose end has not come.
        """
        if day < self.start:
            msg = f"{day} is before the {self.kind} from {self.start}"
            raise ValueError(msg)
        whole = Period(self.kind, self.start)
        return whole if day >= whole.last_day else Period(self.kind, self.start, day)

    def previous(self) -> Period:
        """The (whole) period of the same kind just before."""
        return Period(self.kind, _add_months(self.start, -_MONTHS[self.kind]))

    def next(self) -> Period:
        """The (whole) period of the same kind just after."""
        return Period(self.kind, _add_months(self.start, _MONTHS[self.kind]))

    def __str__(self) -> str:
        return self.label


def periods_between(kind: PeriodKind, first: date, last: date) -> list[Period]:
    """Every period of ``kind`` that overlaps the days ``first`` to ``last`` (both included)."""
    if last < first:
        return []
    periods = [Period.containing(kind, first)]
    while periods[-1].end <= last:
        periods.append(periods[-1].next())
    return periods
