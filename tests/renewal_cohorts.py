"""The CLV's renewal cohorts computed from a demo world's contract records, in plain Python.

An independent reading of docs/clv.md ("Contracts, by customer"), apart from clv.sql: a
customer's contracts (not draft or cancelled, started by ``on``, each end capped at ``on``) in
order of start continue its first chain while each starts within 31 days after the latest end
so far; cohort Y is the first chains starting in Y; its survivors at k are those whose chain
reached its start + k years, counted while 31 December of Y + k is on or before ``on``; a cohort
with no anniversary passed is left out.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

GRACE_DAYS = 31


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def renewal_cohorts(records: dict[str, list[dict[str, Any]]], on: date) -> list[list[int]]:
    """Survivors of each cohort at anniversaries 0, 1, ..., oldest cohort first."""
    spans: dict[str, list[tuple[date, date]]] = {}
    for c in records["service_contracts"]:
        if c["status"] not in ("draft", "cancelled") and c["starts_on"] <= on:
            spans.setdefault(c["customer_external_id"], []).append(
                (c["starts_on"], min(c["ends_on"], on)))
    chains: dict[int, list[tuple[date, date]]] = {}
    for contracts in spans.values():
        contracts.sort()
        start, end = contracts[0]
        for s, e in contracts[1:]:
            if s > end + timedelta(days=GRACE_DAYS):
                break
            end = max(end, e)
        chains.setdefault(start.year, []).append((start, end))
    cohorts = []
    for year, members in sorted(chains.items()):
        survivors = [sum(1 for s, e in members if e >= _add_years(s, k))
                     for k in range(on.year - year + 1) if date(year + k, 12, 31) <= on]
        if len(survivors) >= 2:
            cohorts.append(survivors)
    return cohorts
