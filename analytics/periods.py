"""Reporting periods: calendar months, quarters and years (UTC days).

Examples
--------
>>> from datetime import date
>>> p = Period.containing("quarter", date(2026, 5, 17))
>>> p.label, p.start, p.last_day, p.previous().label
('2026-Q2', datetime.date(2026, 4, 1), datetime.date(2026, 6, 30), '2026-Q1')
>>> [q.label for q in periods_between("month", date(2026, 1, 15), date(2026, 3, 1))]
['2026-01', '2026-02', '2026-03']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

PeriodKind = Literal["month", "quarter", "year"]

_MONTHS: dict[str, int] = {"month": 1, "quarter": 3, "year": 12}


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True, order=True)
class Period:
    """A calendar month, quarter or year, from its first day.

    Parameters
    ----------
    kind
        ``"month"``, ``"quarter"`` or ``"year"``.
    start
        The first day: the 1st of a month; of January, April, July or October for a quarter;
        1 January for a year. Anything else is refused (use :meth:`containing`).
    """

    kind: PeriodKind
    start: date

    def __post_init__(self) -> None:
        if self.kind not in _MONTHS:
            msg = f"period kind must be month, quarter or year, not {self.kind!r}"
            raise ValueError(msg)
        if self.start.day != 1 or (self.start.month - 1) % _MONTHS[self.kind]:
            msg = f"{self.start} is not the first day of a {self.kind}"
            raise ValueError(msg)

    @classmethod
    def containing(cls, kind: PeriodKind, day: date) -> Period:
        """The period of ``kind`` that ``day`` falls in."""
        months = _MONTHS[kind]
        return cls(kind, date(day.year, (day.month - 1) // months * months + 1, 1))

    @property
    def end(self) -> date:
        """The first day after the period (exclusive end)."""
        return _add_months(self.start, _MONTHS[self.kind])

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
        """``2026-05``, ``2026-Q2`` or ``2026``."""
        if self.kind == "month":
            return f"{self.start.year}-{self.start.month:02d}"
        if self.kind == "quarter":
            return f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"
        return str(self.start.year)

    def previous(self) -> Period:
        """The period of the same kind just before."""
        return Period(self.kind, _add_months(self.start, -_MONTHS[self.kind]))

    def next(self) -> Period:
        """The period of the same kind just after."""
        return Period(self.kind, self.end)

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
