"""The inputs of the CLV models, read from our tables at a cut-off day (analytics/sql/clv.sql).

Three reads, each with its definition in the SQL block it runs and in docs/clv.md ("Applied to our
tables"):

- :func:`parts_history`: per customer, the parts and field-service purchase record in the
  BG/NBD's form (frequency, recency and T in weeks) and the mean spend per repeat purchase day in
  the reporting currency, for Gamma-Gamma;
- :func:`contract_relationships`: per customer, the contract relationship counted by customer,
  not by contract row (a chain of contracts, however the ERP renews them, is one relationship),
  with its renewals so far and the annual contract value live at the cut-off;
- :func:`renewal_cohorts`: the survivors of each yearly cohort of first contract relationships
  at each anniversary, for the shifted-beta-geometric.

Only what was issued or started on or before the cut-off counts, so a past cut-off sees what the
ERP said then (up to later edits of the rows themselves).

Examples
--------
>>> async def show(conn):  # doctest: +SKIP
...     history = await parts_history(conn, on=date(2026, 5, 1), reporting_currency="EUR")
...     print(history[0].frequency, history[0].recency_weeks, history[0].t_weeks)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import class_row

from core.sql import queries

logger = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]

# A contract starting at most this many days after the customer's latest contract end continues
# the same relationship: Odoo renews a subscription by a new order, which may start a few days
# after its predecessor ended, and a customer does not churn for an invoice clerk's delay.
CHAIN_GRACE_DAYS = 31


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/clv.sql")


@dataclass(frozen=True, slots=True)
class PartsRecord:
    """One customer's parts and field-service purchase record at the cut-off.

    Attributes
    ----------
    customer_id
        ``customers.id``.
    first_day, last_day
        First and last purchase days (``None`` when every line lacked an exchange rate).
    frequency
        Repeat purchase days: purchase days after the first.
    recency_weeks
        Weeks from the first to the last purchase day (0 without repeat purchases).
    t_weeks
        Weeks from the first purchase day to the cut-off.
    spend
        Net spend of all purchase days, reporting currency.
    monetary_value
        Mean net spend per repeat purchase day (``None`` without repeat purchases).
    unmatched_credit
        Credit notes (negative) issued before any purchase, left out.
    unconverted_lines
        Lines left out for want of an exchange rate on their day.
    """

    customer_id: int
    first_day: date | None
    last_day: date | None
    frequency: int | None
    recency_weeks: Decimal | None
    t_weeks: Decimal | None
    spend: Decimal | None
    monetary_value: Decimal | None
    unmatched_credit: Decimal
    unconverted_lines: int


@dataclass(frozen=True, slots=True)
class ContractRelationship:
    """One customer's contract relationship at the cut-off (every customer with a contract).

    Attributes
    ----------
    customer_id
        ``customers.id``.
    first_started_on, first_ended_on
        Start and end of the first chain of contracts (its end no later than the cut-off):
        the relationship the renewal cohorts count.
    chains
        Chains so far (more than one: the customer left and came back).
    current_started_on
        Start of the chain live at the cut-off; ``None`` when no contract is live then.
    current_contracts
        Contract rows in that chain (an Odoo renewal chain has one per term).
    renewals
        Anniversaries of the live chain passed by the cut-off: the renewals made so far.
    next_anniversary
        The live chain's next anniversary: its next renewal decision.
    annual_value
        Annual value of the contracts live at the cut-off, reporting currency (``None``: none
        live, or no exchange rate).
    unconverted_contracts
        Live contracts whose currency has no rate on the cut-off day.
    renewal_decisions
        Renewal decisions recorded in contract_renewals (renewed, upgraded, downgraded) on any
        of the customer's contracts by the cut-off: for the record.
    """

    customer_id: int
    first_started_on: date
    first_ended_on: date
    chains: int
    current_started_on: date | None
    current_contracts: int | None
    renewals: int | None
    next_anniversary: date | None
    annual_value: Decimal | None
    unconverted_contracts: int
    renewal_decisions: int


@dataclass(frozen=True, slots=True)
class RenewalCohort:
    """Survivors of the customers whose first contract relationship started in ``year``.

    ``survivors[k]`` of them still held a live contract at their k-th anniversary, for every k
    whose anniversary has passed for the whole cohort.
    """

    year: int
    survivors: tuple[int, ...]


async def parts_history(conn: Conn, *, on: date, reporting_currency: str) -> list[PartsRecord]:
    """Every customer's parts and field-service purchase record at ``on`` (clv.sql parts_history).

    Parameters
    ----------
    conn
        A connection; only reads.
    on
        The cut-off day: invoices issued on or before it count.
    reporting_currency
        Currency of the amounts (``to_reporting`` at each invoice's issue day).

    Returns
    -------
    list of PartsRecord
        One per customer with a purchase day (or with lines that could not be converted), by id.
    """
    async with conn.cursor(row_factory=class_row(PartsRecord)) as cur:
        await cur.execute(_sql()["parts_history"], {"on": on, "rep": reporting_currency})
        return await cur.fetchall()


async def contract_relationships(conn: Conn, *, on: date, reporting_currency: str,
                                 grace_days: int = CHAIN_GRACE_DAYS,
                                 ) -> list[ContractRelationship]:
    """Every customer's contract relationship at ``on`` (clv.sql contract_relationships).

    Parameters
    ----------
    conn
        A connection; only reads.
    on
        The cut-off day: contracts started on or before it count, their ends taken no later.
    reporting_currency
        Currency of the annual values (converted at ``on``).
    grace_days
        A contract starting within this many days after the latest end continues the chain.

    Returns
    -------
    list of ContractRelationship
        One per customer with a live (not draft, not cancelled, not deleted) contract started
        by ``on``, by id.
    """
    async with conn.cursor(row_factory=class_row(ContractRelationship)) as cur:
        await cur.execute(_sql()["contract_relationships"],
                          {"on": on, "rep": reporting_currency, "grace": grace_days})
        return await cur.fetchall()


async def renewal_cohorts(conn: Conn, *, on: date,
                          grace_days: int = CHAIN_GRACE_DAYS) -> list[RenewalCohort]:
    """The yearly renewal cohorts and their survivors at ``on`` (clv.sql renewal_cohorts).

    Parameters
    ----------
    conn
        A connection; only reads.
    on
        The cut-off day.
    grace_days
        As for :func:`contract_relationships`.

    Returns
    -------
    list of RenewalCohort
        Cohorts with at least one anniversary passed for all their members, oldest first.
    """
    cur = await conn.execute(_sql()["renewal_cohorts"], {"on": on, "grace": grace_days})
    counts: dict[int, list[int]] = defaultdict(list)
    for year, period, survivors in await cur.fetchall():
        # Rows come ordered by cohort and period, from 0 without gaps.
        if period != len(counts[year]):
            msg = f"renewal cohort {year}: period {period} out of order"
            raise RuntimeError(msg)
        counts[year].append(int(survivors))
    return [RenewalCohort(year, tuple(s)) for year, s in sorted(counts.items())]
