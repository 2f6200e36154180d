"""The analytics job table: what runs when, and the weekly retraining's catch-up at start."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from analytics.jobs import job_table, retraining_due

MONDAY_NOON = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)  # 2026-05-04 is a Monday


@pytest.mark.parametrize(("trained_until", "due"), [
    (None, False),  # nothing stored: the first daily run trains one, no retraining needed
    (date(2026, 5, 4), False),  # today
    (date(2026, 4, 28), False),  # six days old
    (date(2026, 4, 27), True),  # seven days: a Monday missed
    (date(2025, 1, 1), True),
])
def test_retraining_is_caught_up_when_the_newest_model_is_a_week_old(
        trained_until: date | None, due: bool) -> None:
    assert retraining_due(trained_until, MONDAY_NOON) is due


def test_the_day_is_the_utc_day() -> None:
    # 01:00 on the 4th in UTC+3 is 22:00 on the 3rd in UTC: six days after the 27th, not seven.
    east = datetime(2026, 5, 4, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    assert not retraining_due(date(2026, 4, 27), east)
    assert retraining_due(date(2026, 4, 26), east)


def test_a_time_without_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        job_table(datetime(2026, 5, 4, 12, 0), None)


def test_the_table() -> None:
    table = {job.name: (job.trigger, dict(job.options)) for job in
             job_table(MONDAY_NOON, date(2026, 5, 1))}
    assert table == {
        # Rollups and the daily run at start, then every 15 minutes and at 02:00.
        "rollups": ("interval", {"minutes": 15, "next_run_time": MONDAY_NOON,
                                 "misfire_grace_time": 900}),
        "daily": ("cron", {"hour": 2, "minute": 0, "next_run_time": MONDAY_NOON,
                           "misfire_grace_time": 3600}),
        # A model 3 days old: the retraining waits for its Monday 03:00.
        "retrain": ("cron", {"day_of_week": "mon", "hour": 3, "misfire_grace_time": 3600}),
    }


def test_a_week_old_model_is_retrained_at_start() -> None:
    retrain = next(j for j in job_table(MONDAY_NOON, date(2026, 4, 20)) if j.name == "retrain")
    assert retrain.options["next_run_time"] == MONDAY_NOON
    assert (retrain.trigger, retrain.options["day_of_week"]) == ("cron", "mon")
