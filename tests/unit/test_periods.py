"""Periods to date: bounds cut at a day, whole from the last day on, ordered with whole ones."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from analytics.periods import Period

MAY = Period("month", date(2026, 5, 1))


def test_a_period_to_date_ends_with_its_day() -> None:
    may17 = MAY.to_date(date(2026, 5, 17))
    assert (may17.start, may17.last_day, may17.end, may17.days) == (
        date(2026, 5, 1), date(2026, 5, 17), date(2026, 5, 18), 17)
    assert may17.end_ts == datetime(2026, 5, 18, tzinfo=UTC)
    assert (may17.label, may17.complete, MAY.complete) == ("2026-05 to 2026-05-17", False, True)
    # The periods around it are whole ones.
    assert may17.previous() == Period("month", date(2026, 4, 1))
    assert may17.next() == Period("month", date(2026, 6, 1))
    assert may17.per_year == 12


def test_through_the_last_day_is_the_whole_period() -> None:
    assert MAY.to_date(date(2026, 5, 31)) == MAY
    assert MAY.to_date(date(2026, 7, 2)) == MAY
    assert Period("month", date(2026, 5, 1), date(2026, 5, 31)) == MAY
    assert hash(Period("year", date(2026, 1, 1), date(2026, 12, 31))) == hash(
        Period("year", date(2026, 1, 1)))


def test_days_outside_the_period_are_refused() -> None:
    with pytest.raises(ValueError, match="before the month"):
        MAY.to_date(date(2026, 4, 30))
    with pytest.raises(ValueError, match="not a day of the month"):
        Period("month", date(2026, 5, 1), date(2026, 6, 1))


def test_order_by_kind_start_then_last_day() -> None:
    may17, may3 = MAY.to_date(date(2026, 5, 17)), MAY.to_date(date(2026, 5, 3))
    april = Period("month", date(2026, 4, 1))
    assert sorted([MAY, may17, april, may3]) == [april, may3, may17, MAY]
    assert Period("quarter", date(2026, 1, 1)) > MAY  # by kind first, as before
