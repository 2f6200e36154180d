"""Per-customer lifetime value from our tables, stored with its day (table customer_values).

:func:`value_customers` reads the inputs at a cut-off day (:mod:`analytics.clv_inputs`), fits
the CLV models (:mod:`analytics.clv`) to all customers at once, and stores one row per customer:

- **parts and field service**: BG/NBD on the purchase record (weeks) gives P(alive) and the
  expected purchase days in the next 12 months; Gamma-Gamma on the repeat buyers' mean spend
  gives the expected spend per purchase day; their product, month by month over
  ``horizon_months`` and discounted monthly at the equivalent of ``discount_rate`` a year, is the
  parts CLV. With fewer than ``MIN_BUYERS`` buyers or ``MIN_REPEAT_BUYERS`` repeat buyers, or a
  fit that fails, the run says so and falls back to the *naive* estimate (below); with too few
  repeat buyers for Gamma-Gamma alone, spend is each customer's own mean.
- **contracts**: the shifted-beta-geometric, fitted by maximum likelihood to all renewal
  cohorts at once (one alpha and beta for every cohort: the cohorts' likelihoods are summed,
  each right-censored at its own last complete anniversary). A customer with a live contract
  relationship that has renewed n times is worth its annual contract value x DERL(n) at
  ``discount_rate`` a year, discounted from its next anniversary to the cut-off (the current
  term is invoiced in advance, so it is not counted again). Without a fit (no cohort has seen a
  renewal decision, nobody churned, or the fit fails) the fallback is a constant retention
  rate, the pooled share of customers at risk who renewed (the sBG's limit when every customer
  has the same churn probability, where its fit runs off when the cohorts show no spread).
- **total** = parts CLV + contract DERL value. The two sides are summed but do not cover the same
  horizon: parts over ``horizon_months``, contracts for as long as they last (discounted).

The naive parts estimate, for too little data: each customer buys at its own rate
lambda = (x + 1) / max(T, 52) purchase days a week (at least a year's window, so one recent
purchase is not read as a weekly habit); P(alive) = exp(-lambda x weeks since the last purchase)
(the chance of such a silence from an active customer); expected purchases in t weeks =
P(alive) x lambda x t; spend per purchase = its own mean.

Examples
--------
>>> async def nightly(conn):  # doctest: +SKIP
...     run = await value_customers(conn, on=date(2026, 5, 1), reporting_currency="EUR")
...     print(run.customers, run.parts_method, run.contract_method, run.notes)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from analytics.clv import BgNbd, ClvFitError, GammaGamma, ShiftedBetaGeometric
from analytics.clv._fitting import maximise_likelihood, standard_errors
from analytics.clv.sbg import sbg_log_likelihood
from analytics.clv_inputs import (
    CHAIN_GRACE_DAYS,
    ContractRelationship,
    PartsRecord,
    RenewalCohort,
    contract_relationships,
    parts_history,
    renewal_cohorts,
)
from analytics.kpi import DIMENSIONS
from core.paging import Page, PageRequest, cut, keyset, keyset_params
from core.sql import queries

logger = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]
Array = npt.NDArray[np.float64]

# Below these the BG/NBD's four parameters are not identified well enough to rank customers
# (its standard errors run past the estimates on a few dozen CDNOW customers).
MIN_BUYERS = 30
MIN_REPEAT_BUYERS = 10
# Gamma-Gamma's three parameters need this many repeat buyers.
MIN_SPEND_BUYERS = 10
# Expected contract years are summed over at most this many years: with alpha <= 1 the sBG's
# expectation is infinite (customers who practically never leave), and a machine tool's service
# life is about this long.
CONTRACT_YEARS_CAP = 25
WEEKS_PER_YEAR = 52.0
WEEKS_PER_MONTH = 52.0 / 12.0
# A customer whose first purchase is on the cut-off day has T = 0, which BG/NBD cannot take:
# a day is the shortest observation there is.
MIN_T_WEEKS = 1.0 / 7.0


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/clv.sql")


@dataclass(frozen=True)
class ValueRun:
    """What one valuation did.

    Attributes
    ----------
    valued_on, currency
        The cut-off day and the reporting currency.
    customers
        Rows stored (customers with a purchase or a contract by the cut-off).
    buyers, repeat_buyers
        Customers with a parts/field-service purchase day, and with more than one.
    contract_customers, live_contract_customers
        Customers with a contract relationship, and with one live at the cut-off.
    cohorts
        Renewal cohorts the sBG was fitted to (year, survivors).
    parts_method
        ``bgnbd+gamma_gamma``, ``bgnbd+own_mean`` or ``naive``.
    contract_method
        ``sbg``, ``constant_retention`` or ``none``.
    parameters
        The fitted parameters (and their standard errors), as stored with every row.
    notes
        Why a fallback was used, what could not be converted; empty when all went to plan.
    """

    valued_on: date
    currency: str
    customers: int
    buyers: int
    repeat_buyers: int
    contract_customers: int
    live_contract_customers: int
    cohorts: tuple[tuple[int, tuple[int, ...]], ...]
    parts_method: str
    contract_method: str
    parameters: dict[str, Any]
    notes: tuple[str, ...] = field(default_factory=tuple)


# -- parts ---------------------------------------------------------------------------------------


@dataclass
class _Parts:
    method: str
    p_alive: Array
    purchases_12m: Array
    spend: Array
    clv: Array
    parameters: dict[str, Any]


def _monthly_rate(annual: float) -> float:
    return float((1.0 + annual) ** (1.0 / 12.0) - 1.0)


def _rfm(records: Sequence[PartsRecord]) -> tuple[Array, Array, Array, Array, Array]:
    x = np.array([float(r.frequency or 0) for r in records])
    t_x = np.array([float(r.recency_weeks or 0) for r in records])
    t_cal = np.maximum(np.array([float(r.t_weeks or 0) for r in records]), MIN_T_WEEKS)
    m_x = np.array([float(r.monetary_value or 0) for r in records])
    own_mean = np.array([float(r.spend or 0) / (float(r.frequency or 0) + 1) for r in records])
    return x, t_x, t_cal, m_x, own_mean


def _discounted_purchases(expected: Any, horizon_months: int, monthly_rate: float) -> Array:
    """sum_i (E[Y(i L)] - E[Y((i-1) L)]) / (1+d)^i over the months of the horizon."""
    cumulative = np.stack([expected(i * WEEKS_PER_MONTH) for i in range(horizon_months + 1)])
    discount = (1.0 + monthly_rate) ** -np.arange(1, horizon_months + 1)
    return np.asarray(discount @ np.diff(cumulative, axis=0))


def _value_parts(records: Sequence[PartsRecord], *, discount_rate: float, horizon_months: int,
                 notes: list[str]) -> _Parts:
    x, t_x, t_cal, m_x, own_mean = _rfm(records)
    monthly = _monthly_rate(discount_rate)
    buyers, repeat = int(x.size), int(np.sum(x > 0))
    bg: BgNbd | None = None
    if buyers < MIN_BUYERS or repeat < MIN_REPEAT_BUYERS:
        notes.append(f"parts: {buyers} buyers, {repeat} repeat buyers: too few for a stable "
                     f"BG/NBD fit (needs {MIN_BUYERS} and {MIN_REPEAT_BUYERS}); naive estimate")
    else:
        try:
            bg = BgNbd().fit(x, t_x, t_cal)
        except (ClvFitError, ValueError) as exc:
            notes.append(f"parts: BG/NBD fit failed ({exc}); naive estimate")
    if bg is None:
        rate = (x + 1.0) / np.maximum(t_cal, WEEKS_PER_YEAR)
        alive = np.exp(-rate * (t_cal - t_x))

        def naive(t: float) -> Array:
            return np.asarray(alive * rate * t)

        return _Parts("naive", alive, naive(WEEKS_PER_YEAR), own_mean,
                      own_mean * _discounted_purchases(naive, horizon_months, monthly),
                      {"parts": {"method": "naive", "rate_floor_weeks": WEEKS_PER_YEAR}})

    parameters: dict[str, Any] = {"bgnbd": {
        "r": bg.r_, "alpha": bg.alpha_, "a": bg.a_, "b": bg.b_,
        "log_likelihood": bg.log_likelihood_, "standard_errors": bg.standard_errors_,
        "customers": bg.n_customers_, "time_unit": "week"}}
    spend, method = _spend(x, m_x, own_mean, parameters, notes)
    fitted = bg

    def conditional(t: float) -> Array:
        return fitted.conditional_expected_purchases(t, x, t_x, t_cal)

    return _Parts(method, bg.probability_alive(x, t_x, t_cal), conditional(WEEKS_PER_YEAR),
                  spend, spend * _discounted_purchases(conditional, horizon_months, monthly),
                  parameters)


def _spend(x: Array, m_x: Array, own_mean: Array, parameters: dict[str, Any],
           notes: list[str]) -> tuple[Array, str]:
    """Expected spend per purchase day: Gamma-Gamma where it fits, else the customer's mean."""
    spenders = (x > 0) & (m_x > 0)
    if int(np.sum(spenders)) < MIN_SPEND_BUYERS:
        notes.append(f"parts: {int(np.sum(spenders))} repeat buyers with spend: too few for "
                     f"Gamma-Gamma (needs {MIN_SPEND_BUYERS}); each customer's own mean spend")
        return own_mean, "bgnbd+own_mean"
    try:
        gg = GammaGamma().fit(x[spenders], m_x[spenders])
        spend = gg.conditional_expected_average_profit(x, m_x)
    except (ClvFitError, ValueError) as exc:
        notes.append(f"parts: Gamma-Gamma failed ({exc}); each customer's own mean spend")
        return own_mean, "bgnbd+own_mean"
    # The model assumes spend independent of frequency; the correlation says how far that holds.
    corr = (float(np.corrcoef(x[spenders], m_x[spenders])[0, 1])
            if np.ptp(x[spenders]) > 0 and np.ptp(m_x[spenders]) > 0 else None)
    parameters["gamma_gamma"] = {
        "p": gg.p_, "q": gg.q_, "v": gg.v_, "log_likelihood": gg.log_likelihood_,
        "standard_errors": gg.standard_errors_, "customers": gg.n_customers_,
        "frequency_spend_correlation": corr}
    return spend, "bgnbd+gamma_gamma"


# -- contracts -----------------------------------------------------------------------------------


def fit_pooled_sbg(cohorts: Sequence[Sequence[float]]) -> ShiftedBetaGeometric:
    """Fit one sBG to several cohorts at once: the sum of their log-likelihoods.

    Each cohort is right-censored at its own last period, so young cohorts add what they have
    seen and no more (Fader & Hardie 2007 fit one cohort; pooling assumes the cohorts share
    alpha and beta).

    Parameters
    ----------
    cohorts
        Survivors of each cohort at period 0, 1, ... (each at least two values, never rising).

    Raises
    ------
    ValueError
        If no cohort has a renewal, nobody churned, or everybody churned at the first renewal.
    analytics.clv.ClvFitError
        If the optimiser does not converge.

    Examples
    --------
    >>> model = fit_pooled_sbg([[1000, 869, 743, 653, 593, 551, 517, 491]])
    >>> round(model.alpha_, 3), round(model.beta_, 3)
    (0.668, 3.806)
    """
    arrays = [np.asarray(c, dtype=np.float64) for c in cohorts if len(c) >= 2 and c[0] > 0]
    if not arrays:
        msg = "no cohort has reached a renewal yet"
        raise ValueError(msg)
    for s in arrays:
        if np.any(np.diff(s) > 0):
            msg = f"survivors must never increase: {s.tolist()}"
            raise ValueError(msg)
    if all(s[-1] == s[0] for s in arrays):
        msg = "nobody churned in any cohort: the churn distribution cannot be estimated"
        raise ValueError(msg)
    if all(s[1] == 0 for s in arrays):
        msg = "everybody churned at the first renewal: the churn distribution cannot be estimated"
        raise ValueError(msg)

    def total(params: npt.NDArray[np.float64]) -> float:
        return sum(sbg_log_likelihood(params, s) for s in arrays)

    size = float(sum(s[0] for s in arrays))
    params, maximum = maximise_likelihood(total, np.array([1.0, 1.0]), model="sBG (pooled)",
                                          observations=size)
    model = ShiftedBetaGeometric()
    model.alpha_, model.beta_ = float(params[0]), float(params[1])
    model.log_likelihood_ = maximum
    se = standard_errors(total, params)
    model.standard_errors_ = {"alpha": float(se[0]), "beta": float(se[1])}
    model.cohort_size_ = size
    return model


def pooled_retention(cohorts: Sequence[Sequence[float]]) -> float | None:
    """Renewed over at risk, summed over every cohort and anniversary (None: nobody at risk)."""
    kept = sum(float(c[k]) for c in cohorts for k in range(1, len(c)))
    at_risk = sum(float(c[k - 1]) for c in cohorts for k in range(1, len(c)))
    return kept / at_risk if at_risk > 0 else None


@dataclass
class _Contracts:
    method: str
    derl: Any        # renewals -> DERL per customer (next payment undiscounted)
    lifetime: Any    # renewals -> expected further renewals within CONTRACT_YEARS_CAP
    parameters: dict[str, Any]


def _contract_model(cohorts: Sequence[RenewalCohort], *, discount_rate: float,
                    notes: list[str]) -> _Contracts | None:
    survivors = [c.survivors for c in cohorts]
    try:
        sbg = fit_pooled_sbg(survivors)
    except (ClvFitError, ValueError) as exc:
        retention = pooled_retention(survivors)
        if retention is None:
            notes.append(f"contracts: no renewal cohort has passed an anniversary ({exc}); "
                         "no contract value")
            return None
        # Typically the likelihood keeps rising towards alpha, beta -> infinity: the cohorts
        # show no heterogeneity, and the sBG's limit is one churn probability for all, whose
        # maximum-likelihood estimate is the pooled retention (renewed over at risk).
        notes.append(f"contracts: sBG not fitted ({exc}); its limit with one churn "
                     f"probability for all: constant retention {retention:.4f} "
                     "(renewed over at risk, all cohorts)")
        d, r = discount_rate, retention

        def derl_const(n: Array) -> Array:
            # r (1 + r/(1+d) + (r/(1+d))^2 + ...), the next payment undiscounted.
            return np.full(np.shape(n), r * (1 + d) / (1 + d - r) if r < 1 + d else np.inf)

        def lifetime_const(n: Array) -> Array:
            return np.full(np.shape(n), sum(r ** k for k in range(1, CONTRACT_YEARS_CAP + 1)))

        return _Contracts("constant_retention", derl_const, lifetime_const,
                          {"contracts": {"method": "constant_retention", "retention": r}})

    def derl(n: Array) -> Array:
        return sbg.discounted_expected_residual_lifetime(n, discount_rate)

    def lifetime(n: Array) -> Array:
        return sbg.expected_remaining_lifetime(n, horizon=CONTRACT_YEARS_CAP)

    return _Contracts("sbg", derl, lifetime, {"sbg": {
        "alpha": sbg.alpha_, "beta": sbg.beta_, "log_likelihood": sbg.log_likelihood_,
        "standard_errors": sbg.standard_errors_, "customers": sbg.cohort_size_,
        "pooled_cohorts": len(cohorts), "period": "year"}})


# -- the run -------------------------------------------------------------------------------------


def _money(value: float | Decimal | None) -> Decimal | None:
    if value is None:
        return None
    return Decimal(f"{float(value):.2f}")


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _contract_row(rel: ContractRelationship, model: _Contracts | None, *, on: date,
                  discount_rate: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The contract columns of one customer, and its contract inputs."""
    inputs = {"first_started_on": rel.first_started_on.isoformat(),
              "first_ended_on": rel.first_ended_on.isoformat(), "chains": rel.chains,
              "live": rel.current_started_on is not None,
              "current_started_on": (rel.current_started_on.isoformat()
                                     if rel.current_started_on else None),
              "current_contracts": rel.current_contracts, "renewals": rel.renewals,
              "next_anniversary": (rel.next_anniversary.isoformat()
                                   if rel.next_anniversary else None),
              "annual_value": _num(rel.annual_value),
              "unconverted_contracts": rel.unconverted_contracts,
              "renewal_decisions": rel.renewal_decisions}
    if rel.current_started_on is None or rel.renewals is None or rel.next_anniversary is None:
        # The relationship ended by the cut-off: nothing more to come from it.
        return {"contract_annual_value": Decimal(0), "contract_renewals": None,
                "contract_expected_lifetime_years": 0.0,
                "contract_derl_value": Decimal(0)}, inputs
    if model is None:
        return {"contract_annual_value": _money(rel.annual_value),
                "contract_renewals": rel.renewals, "contract_expected_lifetime_years": None,
                "contract_derl_value": None}, inputs
    to_next = (rel.next_anniversary - on).days / 365.25
    n = np.array([float(rel.renewals)])
    # DERL counts the next payment at the renewal undiscounted; that renewal is to_next away.
    derl = float(model.derl(n)[0]) * (1.0 + discount_rate) ** -to_next
    years = to_next + float(model.lifetime(n)[0])
    inputs |= {"years_to_next_anniversary": round(to_next, 4), "derl": derl}
    annual = float(rel.annual_value or 0)
    return {"contract_annual_value": _money(rel.annual_value),
            "contract_renewals": rel.renewals, "contract_expected_lifetime_years": years,
            "contract_derl_value": _money(annual * derl)}, inputs


async def value_customers(conn: Conn, *, on: date, reporting_currency: str,
                          discount_rate: float = 0.10, horizon_months: int = 36,
                          grace_days: int = CHAIN_GRACE_DAYS) -> ValueRun:
    """Value every customer at ``on`` and store the values (customer_values, one row each).

    Parameters
    ----------
    conn
        A connection outside a transaction; the rows of ``on`` are replaced in one transaction.
    on
        The valuation (cut-off) day: only invoices issued and contracts started by then count.
    reporting_currency
        Currency of every amount (``Settings.reporting_currency``).
    discount_rate
        Per year; parts cash flows are discounted monthly at the equivalent monthly rate.
    horizon_months
        Months of future parts purchases counted in the parts CLV.
    grace_days
        Gap allowed between contracts of one relationship (:mod:`analytics.clv_inputs`).

    Returns
    -------
    ValueRun
        Counts, methods, fitted parameters and notes of the run.

    Raises
    ------
    ValueError
        If ``discount_rate`` is negative or ``horizon_months`` not positive.
    """
    if not math.isfinite(discount_rate) or discount_rate < 0:
        msg = f"discount_rate must be >= 0, got {discount_rate!r}"
        raise ValueError(msg)
    if horizon_months < 1:
        msg = f"horizon_months must be >= 1, got {horizon_months!r}"
        raise ValueError(msg)
    notes: list[str] = []
    history = await parts_history(conn, on=on, reporting_currency=reporting_currency)
    relations = await contract_relationships(conn, on=on, reporting_currency=reporting_currency,
                                             grace_days=grace_days)
    cohorts = await renewal_cohorts(conn, on=on, grace_days=grace_days)
    await conn.rollback()  # end the reads' transaction: the write below opens its own

    records = [r for r in history if r.frequency is not None]
    unconverted = sum(r.unconverted_lines for r in history)
    if unconverted:
        notes.append(f"{unconverted} parts/service lines have no exchange rate to "
                     f"{reporting_currency} on their day and were left out")
    unconverted_contracts = sum(r.unconverted_contracts for r in relations)
    if unconverted_contracts:
        notes.append(f"{unconverted_contracts} live contracts have no exchange rate to "
                     f"{reporting_currency} on {on} and were left out of contract values")
    parts = (_value_parts(records, discount_rate=discount_rate, horizon_months=horizon_months,
                          notes=notes) if records else None)
    if parts is None:
        notes.append("parts: no purchase by the cut-off")
    contracts = _contract_model(cohorts, discount_rate=discount_rate, notes=notes)
    parameters: dict[str, Any] = {**(parts.parameters if parts else {}),
                                  **(contracts.parameters if contracts else {}),
                                  "discount_rate": discount_rate,
                                  "horizon_months": horizon_months, "grace_days": grace_days}
    method = (f"{parts.method if parts else 'none'}/"
              f"{contracts.method if contracts else 'none'}")

    rows: dict[int, dict[str, Any]] = {}
    if parts is not None:
        for i, rec in enumerate(records):
            rows[rec.customer_id] = _empty_row(rec.customer_id) | {
                "p_alive": float(np.clip(parts.p_alive[i], 0.0, 1.0)),
                "expected_purchases_12m": max(float(parts.purchases_12m[i]), 0.0),
                "expected_spend_per_purchase": _money(parts.spend[i]),
                "parts_clv": _money(parts.clv[i]),
                "inputs": {"parts": {
                    "first_day": rec.first_day.isoformat() if rec.first_day else None,
                    "last_day": rec.last_day.isoformat() if rec.last_day else None,
                    "frequency": rec.frequency, "recency_weeks": _num(rec.recency_weeks),
                    "t_weeks": _num(rec.t_weeks), "spend": _num(rec.spend),
                    "monetary_value": _num(rec.monetary_value),
                    "unmatched_credit": _num(rec.unmatched_credit),
                    "unconverted_lines": rec.unconverted_lines}}}
    for rel in relations:
        columns, inputs = _contract_row(rel, contracts, on=on, discount_rate=discount_rate)
        row = rows.setdefault(rel.customer_id, _empty_row(rel.customer_id))
        row |= columns
        row["inputs"] = row["inputs"] | {"contract": inputs}
    for row in rows.values():
        parts_clv, contract = row["parts_clv"], row["contract_derl_value"]
        row["total_clv"] = (parts_clv or Decimal(0)) + (contract or Decimal(0))
        row |= {"valued_on": on, "method": method, "currency": reporting_currency,
                "discount_rate": discount_rate, "horizon_months": horizon_months,
                "inputs": Jsonb(_finite(row["inputs"])),
                "parameters": Jsonb(_finite(parameters))}
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(_sql()["delete_values_on"], {"on": on})
        await cur.executemany(_sql()["store_value"], list(rows.values()))
    run = ValueRun(
        valued_on=on, currency=reporting_currency, customers=len(rows), buyers=len(records),
        repeat_buyers=sum(1 for r in records if (r.frequency or 0) > 0),
        contract_customers=len(relations),
        live_contract_customers=sum(1 for r in relations if r.current_started_on is not None),
        cohorts=tuple((c.year, c.survivors) for c in cohorts),
        parts_method=parts.method if parts else "none",
        contract_method=contracts.method if contracts else "none",
        parameters=parameters, notes=tuple(notes))
    logger.info("valued %s customers on %s (%s): %s", run.customers, on, method,
                "; ".join(notes) or "no fallback")
    return run


def _finite(value: Any) -> Any:
    """The value with NaN and infinities as None: JSON has neither.

    An undetermined figure (the standard error of a fit at the edge of its range) is stored as
    null.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _empty_row(customer_id: int) -> dict[str, Any]:
    return {"customer_id": customer_id, "p_alive": None, "expected_purchases_12m": None,
            "expected_spend_per_purchase": None, "parts_clv": None,
            "contract_annual_value": None, "contract_renewals": None,
            "contract_expected_lifetime_years": None, "contract_derl_value": None,
            "inputs": {}}


# -- reads -------------------------------------------------------------------------------------

VALUE_SORTS: dict[str, sql.Composable] = {
    name: sql.Identifier(name) for name in ("total_clv", "customer_id")}


def _reads() -> dict[str, str]:
    return queries("analytics", "sql/customer_values.sql")


def _segment_params(dimension: str | None, segment: str | None) -> dict[str, Any]:
    if (dimension is None) != (segment is None):
        msg = "dimension and segment go together"
        raise ValueError(msg)
    if dimension is not None and dimension not in DIMENSIONS:
        msg = f"dimension {dimension!r}: one of {', '.join(DIMENSIONS)}"
        raise ValueError(msg)
    return {"dimension": dimension, "segment": segment}


async def values_page(conn: Conn, page: PageRequest, *, on: date, reporting_currency: str,
                      dimension: str | None = None, segment: str | None = None
                      ) -> Page[dict[str, Any]]:
    """A page of the latest run's values on or before ``on`` (one row per customer).

    ``dimension`` and ``segment`` (together) keep the customers of one segment of a KPI cut on
    the valuation day.
    """
    condition, order = keyset(VALUE_SORTS, sql.Identifier("id"), page)
    q = _reads()
    query = sql.SQL(q["values_rows"] + "\n" + q["values_page"]).format(
        keyset=condition, order=order)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {"on": on, "reporting": reporting_currency,
                                  **_segment_params(dimension, segment),
                                  **keyset_params(page)})
        return cut(await cur.fetchall(), page)


@dataclass(frozen=True, slots=True)
class SegmentValue:
    """The customer values of a segment (the latest run on or before the day asked)."""

    segment: str
    valued_on: date
    currency: str
    customers: int
    total_clv: Decimal
    mean_clv: Decimal
    median_clv: Decimal
    parts_clv: Decimal | None
    contract_value: Decimal | None


async def values_by_segment(conn: Conn, *, on: date, reporting_currency: str,
                            dimension: str = "all") -> list[SegmentValue]:
    """Total, mean and median CLV per segment of a KPI cut (a customer in several: in each)."""
    _segment_params(dimension, "any")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_reads()["values_by_segment"], {
            "on": on, "reporting": reporting_currency, "dimension": dimension})
        return [SegmentValue(**r) for r in await cur.fetchall()]
