"""Retention KPIs for any period and any cut, computed in SQL, each traceable to its counts.

Every KPI has one definition, written here in its function's docstring and in docs/kpis.md, and
shares the SQL definitions of analytics/sql/definitions/: who is an *active customer*
(a live service contract, or a purchase within ``window_days``, default 365) and what counts as
*after-sales revenue* (net invoice lines of kinds service_contract, field_service, spare_parts,
retrofit in the reporting currency; credit notes negative; draft, cancelled and deleted not at
all).

Every function returns a :class:`KpiValue`: the value and every count it was computed from, so
that a dashboard can say "42 of 50 customers". A value is ``None`` when its denominator is zero.

Examples
--------
>>> async def show(conn):  # doctest: +SKIP
...     value = await retention(conn, Period("quarter", date(2026, 1, 1)),
...                             cut=Cut("country", "DE"), reporting_currency="EUR")
...     print(value.value, value.numerator, value.denominator)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row, tuple_row

from analytics.periods import Period
from core.sql import queries

logger = logging.getLogger(__name__)

Dimension = Literal["all", "country", "industry", "size_class", "key_account", "model", "tier",
                    "value_tier", "rfm", "usage"]
DIMENSIONS: tuple[Dimension, ...] = (
    "all", "country", "industry", "size_class", "key_account", "model", "tier",
    "value_tier", "rfm", "usage")

Count = int | Decimal | None
Conn = psycopg.AsyncConnection[Any]

DEFAULT_WINDOW_DAYS = 365
DEFAULT_SILENT_DAYS = 14
# A running period is read from the rollup if its last refresh saw data this recent.
RUNNING_LAG = timedelta(hours=1)


def _sql() -> dict[str, str]:
    return queries("analytics", "sql/kpi.sql")


@dataclass(frozen=True)
class Cut:
    """Which customers (or machines) a KPI is computed over.

    Parameters
    ----------
    dimension
        ``all``; a customer attribute (``country``, ``industry``, ``size_class``,
        ``key_account``); ``model`` (customers owning a machine of the model; machines of the
        model for machine-side KPIs); or ``tier`` (the tier of the customer's most valuable live
        contract, else of its last one, else ``none``); or a behavioural kind
        (``value_tier``, ``rfm``, ``usage``: docs/segments.md), the customer's latest
        assignment in ``segment_memberships`` on or before the period's *first* day
        (``unassigned`` without one), so a customer churning in the period is counted in the
        segment it had when the period began. Attributes are the customer's current ones;
        ``model`` segments overlap (a customer with two models is in both). Machine-side KPIs
        use the machine's customer's segment (the machine's own model for ``model``).
    segment
        The segment's value (``"DE"``, ``"true"``, ``"premium"``...). ``None`` means every
        segment of the dimension (:func:`kpi_table`); the single-KPI functions need a value
        unless the dimension is ``all``.
    """

    dimension: Dimension = "all"
    segment: str | None = None

    def __post_init__(self) -> None:
        if self.dimension not in DIMENSIONS:
            msg = f"unknown cut dimension {self.dimension!r}; one of {', '.join(DIMENSIONS)}"
            raise ValueError(msg)


ALL = Cut("all", "all")


@dataclass(frozen=True)
class KpiValue:
    """One KPI for one period and one segment, with what it was computed from.

    Attributes
    ----------
    kpi
        Its name (docs/kpis.md has one section per name).
    period, dimension, segment
        Where it applies.
    value
        The KPI; ``None`` when undefined (nothing to divide by).
    numerator, denominator
        The two numbers the value is the ratio of, where it is one (for NPS: promoters minus
        detractors, and responses).
    unit
        ``ratio`` (0-1), ``money`` (reporting currency), ``points`` (NPS, -100..100),
        ``index`` (0-100), ``per_1000h`` or ``years``.
    counts
        Every column of the row the value came from (customers at start, responses, ...).
    """

    kpi: str
    period: Period
    dimension: str
    segment: str
    value: Decimal | None
    numerator: Decimal | None
    denominator: Decimal | None
    unit: str
    counts: Mapping[str, Count] = field(default_factory=dict)


@dataclass(frozen=True)
class _Spec:
    kpi: str
    value: str
    numerator: str | None
    denominator: str | None
    unit: str


# query name -> the KPIs its rows carry (column names in kpi.sql).
_SPECS: dict[str, tuple[_Spec, ...]] = {
    "customer_base": (
        _Spec("retention_rate", "retention", "customers_retained", "customers_start", "ratio"),
        _Spec("churn_rate", "churn", None, "customers_start", "ratio"),
        _Spec("revenue_per_customer", "revenue_per_customer", "revenue", "customers_served",
              "money"),
        _Spec("customer_lifetime_value", "clv", "annual_revenue_per_customer", "annual_churn",
              "money"),
    ),
    "renewals": (_Spec("renewal_rate", "renewal_rate", "renewed", "decisions", "ratio"),),
    "revenue_retention": (
        _Spec("gross_revenue_retention", "grr", "revenue_kept", "revenue_before", "ratio"),
        _Spec("net_revenue_retention", "nrr", "revenue_now", "revenue_before", "ratio"),
    ),
    "purchases": (
        _Spec("repeat_purchase_rate", "repeat_purchase_rate", "repeat_buyers", "buyers",
              "ratio"),
        _Spec("upsell_ratio", "upsell_ratio", "multi_kind_customers", "single_kind_customers",
              "ratio"),
        _Spec("spend_per_transaction", "spend_per_transaction", "spend", "transactions",
              "money"),
    ),
    "nps": (_Spec("nps", "nps", None, "responses", "points"),),
    "engagement": (
        _Spec("engagement_index", "engagement_index", "engagement_sum", "customers", "index"),),
    "machine_segments": (
        _Spec("utilisation", "utilisation", "operating_hours", "calendar_hours", "ratio"),
        _Spec("utilisation_trend", "utilisation_trend", None, None, "ratio"),
        _Spec("maintenance_adherence", "maintenance_adherence", "services_on_plan",
              "services_due", "ratio"),
        _Spec("fault_rate", "fault_rate", "faults", "operating_hours", "per_1000h"),
        _Spec("parts_capture", "parts_capture", "parts_bought", "parts_implied", "ratio"),
    ),
    "silent_machines": (
        _Spec("silent_machines", "silent_share", "silent", "machines_reporting_ever", "ratio"),),
}

#: Every KPI's name, in the order of kpi_table's queries.
KPI_NAMES: tuple[str, ...] = tuple(spec.kpi for specs in _SPECS.values() for spec in specs)

# Machine-side queries: assembled from blocks and run once for all the periods asked for.
_MACHINE_QUERIES = {"machine_segments", "engagement", "machine_rows", "silent_machines"}
# Tails reading no segment (machine_segs, every customer's segments, is left out of them).
_SEGMENTLESS = {"machine_rows", "machine_cache_fill"}


def _machine_text(name: str, *, rollup: bool, cached: bool = False,
                  one_customer: bool = False) -> str:
    """The blocks of a machine-side query, from the daily rollup or from raw telemetry.

    ``one_customer``: the query's ``customer_id`` names a customer, whose few machines' services
    are looked up per machine (for every machine, a set-wise join is faster).
    """
    blocks = _sql()
    # Every customer's segments, except for the machine rows, which carry no segment.
    segs = () if name in _SEGMENTLESS else ("machine_segs",)
    parts: tuple[str, ...]
    if name == "silent_machines":
        source = "rollup" if rollup else "telemetry"
        parts = ("periods", *segs, "machine_fleet", *_first_sample(rollup),
                 "machine_owners", f"heard_{source}", name)
    elif cached:
        parts = ("periods", *segs, "machine_cached", name)
    else:
        parts = ("periods", *segs, *_machine_blocks(rollup=rollup, one_customer=one_customer),
                 name)
    return "\n".join(blocks[part] for part in parts)


def _machine_blocks(*, rollup: bool, one_customer: bool = False) -> tuple[str, ...]:
    """The blocks from machine_fleet to machine_period (the CTE ``machine``)."""
    source = "rollup" if rollup else "telemetry"
    services = "fleet_services_one" if one_customer else "fleet_services_all"
    return ("machine_fleet", services, *_first_sample(rollup), f"machine_hours_{source}",
            "machine_period")


def _first_sample(rollup: bool) -> tuple[str, ...]:
    """The block both rollup sources read (after machine_fleet, which defines registered)."""
    return ("rollup_first_sample",) if rollup else ()


# The periods whose machine rows shared_machine_rows keeps for this task, their source and
# their reporting currency.
_SHARED: ContextVar[tuple[tuple[Period, ...], bool, str] | None] = ContextVar("kpi_machines",
                                                                             default=None)
# Tails that read only the machine rows and the segments: they can read the kept rows.
_SHAREABLE = {"machine_segments", "engagement"}


@asynccontextmanager
async def shared_machine_rows(conn: Conn, periods: Sequence[Period], *,
                              reporting_currency: str) -> AsyncIterator[None]:
    """Compute the machine rows of ``periods`` once for every :func:`kpi_table` inside.

    The machine-side KPIs of a period (hours, services due, parts implied per machine) do not
    depend on the cut, and are most of a KPI table's time: a snapshot of every cut computes
    them once, into a temporary table dropped at the block's end. Outside it, or for other
    periods or another reporting currency, or when the rollup covers only some of the
    periods, nothing changes.
    """
    periods = tuple(periods)
    covered = await _rollup_covers(conn, periods)
    if not periods or len(set(covered)) != 1 or _SHARED.get() is not None:
        yield
        return
    rollup = covered[0]
    blocks = _sql()
    fill = _machine_text("machine_cache_fill", rollup=rollup)
    params = _params(periods, ALL, reporting_currency=reporting_currency,
                     window_days=DEFAULT_WINDOW_DAYS, silent_days=DEFAULT_SILENT_DAYS)
    async with conn.transaction():
        # JIT off for this transaction, as in _rows (planned over every chunk, it compiles
        # for longer than the query runs).
        await conn.execute(blocks["no_jit"])
        await conn.execute(blocks["create_kpi_machines"] + "\n" + fill, params)
        token = _SHARED.set((periods, rollup, reporting_currency))
        try:
            yield
        finally:
            _SHARED.reset(token)
        # Dropped here, not left to ON COMMIT: inside a caller's transaction this block is a
        # savepoint, and a second block on the connection would find the table still there.
        # (On an error the savepoint's rollback undoes the CREATE.)
        await conn.execute(blocks["drop_kpi_machines"])


async def _rollup_covers(conn: Conn, periods: Sequence[Period], *,
                         now: datetime | None = None) -> list[bool]:
    """Per period: whether ``machine_days`` has every day of it (and of the one before).

    The rollup is filled only by its refresh job, which leaves a watermark (the latest data
    time it saw): a period ending by the watermark is covered, and so is any period in which
    the ingester stored nothing after the watermark, and a period not over yet while the
    watermark is less than ``RUNNING_LAG`` old (its numbers are those of the last refresh,
    every 15 minutes).
    Otherwise the period is read from raw telemetry. ``now`` is the moment this is judged at
    (default: the clock).
    """
    # Tuple rows whatever the connection's row factory (the API's gives dicts).
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_sql()["rollup_watermark"])
        row = await cur.fetchone()
    if row is None:
        return [False] * len(periods)
    through = row[0]
    # A period still running (today's month to date) is read as of the last refresh, when that
    # was recent: the ingester always has newer data, and raw telemetry is ten times slower.
    now = now or datetime.now(UTC)
    live = through >= now - RUNNING_LAG
    covered: dict[datetime, bool] = {}
    for period in periods:
        end = period.end_ts
        if end in covered:
            continue
        if end <= through or (live and end > now):
            covered[end] = True
            continue
        # Nothing stored between the watermark and the period's end (the ingester was down,
        # or a demo's history ends before its live data begins): the rollup has it all.
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(_sql()["data_after"], {"through": through, "until": end})
            newer = await cur.fetchone()
        covered[end] = newer is not None and not newer[0]
    return [covered[period.end_ts] for period in periods]


def _params(periods: Sequence[Period], cut: Cut, *, reporting_currency: str, window_days: int,
            silent_days: int) -> dict[str, Any]:
    """Parameters of a query: a single period's bounds, and the arrays of all of them."""
    period = periods[0]
    previous = period.previous()
    return {
        "start": period.start, "last": period.last_day,
        "before": period.start - timedelta(days=1), "prev_start": previous.start,
        "start_ts": period.start_ts, "end_ts": period.end_ts,
        "prev_start_ts": previous.start_ts,
        "starts": [p.start for p in periods], "stops": [p.end for p in periods],
        "prev_starts": [p.previous().start for p in periods],
        "window": window_days, "dimension": cut.dimension, "segment": cut.segment,
        "rep": reporting_currency, "per_year": period.per_year, "silent_days": silent_days,
        "customer_id": None,
    }


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


async def _rows(conn: Conn, text: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    # JIT off: these queries touch thousands of rows, not millions, but the planner's estimates
    # over a hypertable's chunks passed the JIT thresholds, and compiling ~1,800 functions cost
    # ~3.8 s of a 4.3 s query. Set for this transaction only, and put back after: the caller's
    # transaction (this one is a savepoint in it) keeps its own setting.
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT current_setting('jit') AS jit, set_config('jit', 'off', true)")
        setting = await cur.fetchone()
        await cur.execute(text, params)
        rows = await cur.fetchall()
        await cur.execute("SELECT set_config('jit', %(jit)s, true)",
                          {"jit": setting["jit"] if setting else "on"})
        return rows


def _values(name: str, period: Period, cut: Cut,
            rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, KpiValue]]:
    """One period's rows of one query: its KPIs by name, then by segment."""
    out: dict[str, dict[str, KpiValue]] = {spec.kpi: {} for spec in _SPECS[name]}
    for row in rows:
        segment = str(row["segment"])
        counts: dict[str, Count] = {
            key: (val if isinstance(val, int) else _decimal(val))
            for key, val in row.items() if key not in ("segment", "n")}
        for spec in _SPECS[name]:
            out[spec.kpi][segment] = KpiValue(
                kpi=spec.kpi, period=period, dimension=cut.dimension, segment=segment,
                value=_decimal(row[spec.value]),
                numerator=_decimal(row[spec.numerator]) if spec.numerator else None,
                denominator=_decimal(row[spec.denominator]) if spec.denominator else None,
                unit=spec.unit, counts=counts)
    return out


async def _compute(conn: Conn, name: str, periods: Sequence[Period], cut: Cut, *,
                   reporting_currency: str, window_days: int,
                   silent_days: int = DEFAULT_SILENT_DAYS, now: datetime | None = None
                   ) -> list[dict[str, dict[str, KpiValue]]]:
    """Run one query for the periods; per period (in order), its KPIs by name, then segment.

    Machine-side queries run once for all the periods the rollup covers and once for the
    others; business queries once per period (each is a few milliseconds).
    """
    def params(group: Sequence[Period]) -> dict[str, Any]:
        return _params(group, cut, reporting_currency=reporting_currency,
                       window_days=window_days, silent_days=silent_days)

    results: dict[Period, dict[str, dict[str, KpiValue]]] = {}
    if name not in _MACHINE_QUERIES:
        for period in periods:
            rows = await _rows(conn, _sql()[name], params([period]))
            results[period] = _values(name, period, cut, rows)
        return [results[period] for period in periods]
    shared = _SHARED.get()
    if (shared is not None and shared[0] == tuple(periods) and shared[2] == reporting_currency
            and name in _SHAREABLE):
        rows = await _rows(conn, _machine_text(name, rollup=shared[1], cached=True),
                           params(periods))
        return [_values(name, period, cut, [r for r in rows if r["n"] == n])
                for n, period in enumerate(periods, start=1)]
    covered = await _rollup_covers(conn, periods, now=now)
    for rollup in (True, False):
        group = [p for p, c in zip(periods, covered, strict=True) if c is rollup]
        if not group:
            continue
        rows = await _rows(conn, _machine_text(name, rollup=rollup), params(group))
        for n, period in enumerate(group, start=1):
            results[period] = _values(name, period, cut, [r for r in rows if r["n"] == n])
    return [results[period] for period in periods]


def _empty(spec: _Spec, period: Period, cut: Cut, segment: str) -> KpiValue:
    return KpiValue(kpi=spec.kpi, period=period, dimension=cut.dimension, segment=segment,
                    value=None, numerator=None, denominator=None, unit=spec.unit, counts={})


async def _one(conn: Conn, name: str, kpi: str, period: Period, cut: Cut | None, *,
               reporting_currency: str, window_days: int,
               silent_days: int = DEFAULT_SILENT_DAYS) -> KpiValue:
    cut = cut or ALL
    if cut.segment is None:
        if cut.dimension != "all":
            msg = f"a single KPI needs a segment of {cut.dimension!r}; kpi_table gives them all"
            raise ValueError(msg)
        cut = ALL
    [result] = await _compute(conn, name, [period], cut, reporting_currency=reporting_currency,
                              window_days=window_days, silent_days=silent_days)
    spec = next(s for s in _SPECS[name] if s.kpi == kpi)
    return result[kpi].get(cut.segment or "all") or _empty(spec, period, cut, cut.segment or "all")


# -- customer KPIs -------------------------------------------------------------------------------


async def retention(conn: Conn, period: Period, *, cut: Cut | None = None,
                    reporting_currency: str, window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Customer retention rate: (customers at end - new customers) / customers at start.

    *At start* is active on the day before the period's first day, *at end* active on its last
    day, *new* active at end but not at start. So the numerator is the customers active at both
    ends. ``counts``: customers_start, customers_end, customers_new, customers_retained.
    """
    return await _one(conn, "customer_base", "retention_rate", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def churn(conn: Conn, period: Period, *, cut: Cut | None = None,
                reporting_currency: str, window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Customer churn rate: 1 - retention rate (:func:`retention`), of the same period and cut."""
    return await _one(conn, "customer_base", "churn_rate", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def revenue_per_customer(conn: Conn, period: Period, *, cut: Cut | None = None,
                               reporting_currency: str,
                               window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """After-sales revenue in the period of the customers served / customers served.

    *Served*: active at the start or at the end of the period (see :func:`retention`).
    """
    return await _one(conn, "customer_base", "revenue_per_customer", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def customer_lifetime_value(conn: Conn, period: Period, *, cut: Cut | None = None,
                                  reporting_currency: str,
                                  window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Historical CLV: annual after-sales revenue per customer x average lifetime in years.

    Annual revenue per customer = revenue per customer (:func:`revenue_per_customer`) x periods
    per year; annual churn = 1 - retention ** periods per year; average lifetime =
    1 / annual churn. Undiscounted, no margin: the simple formula. ``None`` when nobody churned.
    """
    return await _one(conn, "customer_base", "customer_lifetime_value", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def renewal_rate(conn: Conn, period: Period, *, cut: Cut | None = None,
                       reporting_currency: str,
                       window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Contract renewal rate: decisions renewed, upgraded or downgraded / all decisions.

    Decisions are those decided in the period; lapsed and cancelled are the others.

    A decision is a contract_renewals row (not deleted, contract not deleted) decided in the
    period; the customer's segment is the contract's customer's.
    """
    return await _one(conn, "renewals", "renewal_rate", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def gross_revenue_retention(conn: Conn, period: Period, *, cut: Cut | None = None,
                                  reporting_currency: str,
                                  window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Gross revenue retention of the customers active at the period's start.

    Sum over them of min(revenue in the period, revenue in the previous period of the same
    kind) / their revenue in the previous period. Expansion does not count; revenue is
    after-sales revenue.
    """
    return await _one(conn, "revenue_retention", "gross_revenue_retention", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def net_revenue_retention(conn: Conn, period: Period, *, cut: Cut | None = None,
                                reporting_currency: str,
                                window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Net revenue retention of the customers active at the period's start.

    Their revenue in the period / their revenue in the previous period of the same kind.
    Expansion counts; customers acquired later do not.
    """
    return await _one(conn, "revenue_retention", "net_revenue_retention", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def repeat_purchase_rate(conn: Conn, period: Period, *, cut: Cut | None = None,
                               reporting_currency: str,
                               window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Customers buying parts or field service on 2+ days / customers buying on 1+ day.

    A purchase day is an issue day in the period of an invoice (not draft, cancelled, deleted)
    with a positive spare_parts or field_service line.
    """
    return await _one(conn, "purchases", "repeat_purchase_rate", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def upsell_ratio(conn: Conn, period: Period, *, cut: Cut | None = None,
                       reporting_currency: str, window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Customers buying 2+ kinds in the period / customers buying exactly one kind.

    Kinds are invoice line kinds other than ``other`` (service_contract, field_service,
    spare_parts, retrofit, new_machine), counted where a line in the period is positive.
    """
    return await _one(conn, "purchases", "upsell_ratio", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def spend_per_transaction(conn: Conn, period: Period, *, cut: Cut | None = None,
                                reporting_currency: str,
                                window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """After-sales revenue per invoice (transaction).

    Over the invoices issued in the period whose after-sales lines sum to more than zero (as
    invoiced): the total of those sums in the reporting currency / their number. Invoices
    without an exchange rate for their currency are left out of both and counted in
    ``counts["transactions_unconverted"]``.
    """
    return await _one(conn, "purchases", "spend_per_transaction", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def nps(conn: Conn, period: Period, *, cut: Cut | None = None, reporting_currency: str,
              window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Net Promoter Score: 100 x (promoters (9-10) - detractors (0-6)) / responses.

    One response per contact: its latest answer in the period (an answer without a contact
    counts alone). ``counts``: responses, promoters, passives, detractors, customers.
    """
    return await _one(conn, "nps", "nps", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def engagement_index(conn: Conn, period: Period, *, cut: Cut | None = None,
                           reporting_currency: str,
                           window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Mean engagement (0-100) of the customers active at the period's end.

    Per customer: 100 x (0.5 usage + 0.3 service + 0.2 survey), each component 0-1:
    usage = min(1, the customer's operating hours / the sum, over its reporting machines, of
    the fleet's median hours for that machine's model); service = min(1, its orders (spare
    parts and service, not draft/cancelled) / the median number among active customers; 1 if
    that median is 0 and it ordered); survey = 1 if it answered a survey in the period. Without
    machine data, usage is left out and the others rescaled (0.6 service + 0.4 survey).
    """
    return await _one(conn, "engagement", "engagement_index", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


# -- machine-side KPIs ---------------------------------------------------------------------------


async def utilisation(conn: Conn, period: Period, *, cut: Cut | None = None,
                      reporting_currency: str, window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Operating hours / calendar hours, over the reporting machines of the cut.

    A machine reports when its operating-hours counter has a reading by the period's end;
    calendar hours run from the later of the period's start and its commissioning day.
    """
    return await _one(conn, "machine_segments", "utilisation", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def utilisation_trend(conn: Conn, period: Period, *, cut: Cut | None = None,
                            reporting_currency: str,
                            window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Utilisation this period / utilisation the previous period - 1, like for like.

    Over the machines with operating hours in both periods (-0.38: 38% fewer hours per
    calendar hour).
    """
    return await _one(conn, "machine_segments", "utilisation_trend", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def maintenance_adherence(conn: Conn, period: Period, *, cut: Cut | None = None,
                                reporting_currency: str,
                                window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Services done as planned / services the period made due.

    Per machine with a service plan (``service_plans``: the API's plan, else the ERP's
    intervals), services due = max(operating hours / interval_hours, calendar days /
    interval_days); done = its services in the period (``services_done``: its ``maintenance``
    events and the API's records, a visit reported by both on one UTC day counted once); on
    plan = min(done, due rounded up). Adherence = min(1, sum of on
    plan / sum of due) over the machines. ``counts`` also has
    machines_overdue: machines past either interval since their last service at the period's
    end.
    """
    return await _one(conn, "machine_segments", "maintenance_adherence", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def fault_rate(conn: Conn, period: Period, *, cut: Cut | None = None,
                     reporting_currency: str, window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """Faults per 1,000 operating hours: 1000 x ``fault`` events / operating hours."""
    return await _one(conn, "machine_segments", "fault_rate", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def parts_capture(conn: Conn, period: Period, *, cut: Cut | None = None,
                        reporting_currency: str,
                        window_days: int = DEFAULT_WINDOW_DAYS) -> KpiValue:
    """OEM parts bought / OEM parts the operating hours imply.

    Bought: spare_parts invoice lines in the period (reporting currency) naming a reporting
    machine, plus (except for the model cut) lines naming none of customers with reporting
    machines. Implied: per machine, parts_value_per_1000h x hours / 1000 of its model,
    converted on the period's last day.
    """
    return await _one(conn, "machine_segments", "parts_capture", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days)


async def silent_machines(conn: Conn, period: Period, *, cut: Cut | None = None,
                          reporting_currency: str, window_days: int = DEFAULT_WINDOW_DAYS,
                          silent_days: int = DEFAULT_SILENT_DAYS) -> KpiValue:
    """Share of machines gone silent: no telemetry in the ``silent_days`` before the period's end.

    Over the machines that ever reported, each once (a resold machine has several
    installed-base rows: the live one names the customer, else the latest deleted one).
    ``counts`` splits them by what is known, first match: sold (deleted from the installed base
    by the period's end), offline (Sparkplug DEATH), contract_lapsed (the
    customer had a contract and has none live), customer_inactive (not an active customer),
    unknown (off or disconnected: nothing tells which).
    """
    return await _one(conn, "silent_machines", "silent_machines", period, cut,
                      reporting_currency=reporting_currency, window_days=window_days,
                      silent_days=silent_days)


@dataclass(frozen=True)
class MachinePeriod:
    """One machine's machine-side figures for a period (the rows the segment KPIs sum)."""

    installed_base_id: int
    serial: str
    model: str
    customer_id: int
    hours: Decimal | None
    prev_hours: Decimal | None
    calendar_hours: Decimal
    utilisation: Decimal | None
    prev_utilisation: Decimal | None
    services: int
    services_due: Decimal | None
    overdue: bool | None
    faults: int
    fault_rate: Decimal | None
    parts_bought: Decimal
    parts_implied: Decimal | None
    parts_capture: Decimal | None


async def machine_kpis(conn: Conn, period: Period, *, reporting_currency: str,
                       customer_id: int | None = None) -> list[MachinePeriod]:
    """Per machine: the figures the machine-side KPIs of the period are summed from.

    Every machine of the installed base the ingester knows (reporting or not); one customer's
    if ``customer_id`` is given.

    Parts bought are the lines naming the machine only.
    """
    params = _params([period], ALL, reporting_currency=reporting_currency,
                     window_days=DEFAULT_WINDOW_DAYS, silent_days=DEFAULT_SILENT_DAYS)
    params["customer_id"] = customer_id
    [rollup] = await _rollup_covers(conn, [period])
    rows = await _rows(conn, _machine_text("machine_rows", rollup=rollup,
                                           one_customer=customer_id is not None), params)
    return [MachinePeriod(**row) for row in rows]


async def kpi_table(conn: Conn, periods: Sequence[Period], cut: Cut | None = None, *,
                    reporting_currency: str, window_days: int = DEFAULT_WINDOW_DAYS,
                    silent_days: int = DEFAULT_SILENT_DAYS,
                    now: datetime | None = None,
                    kpis: Collection[str] | None = None) -> list[KpiValue]:
    """Every KPI for every period and every segment of the cut (what the dashboard reads).

    ``cut=Cut("country")`` gives every country; ``Cut("country", "DE")`` only Germany; ``None``
    the whole base. Ordered by period, KPI, segment. ``now`` (default: the clock) decides
    whether a period still running is read from the rollup as of its last refresh (see
    ``RUNNING_LAG``). ``kpis`` (default: all) runs only the queries those KPIs come from (the
    others of the same query come along).
    """
    cut = cut or ALL
    if cut.dimension == "all":
        cut = ALL
    periods = list(periods)
    by_query = {name: await _compute(conn, name, periods, cut,
                                     reporting_currency=reporting_currency,
                                     window_days=window_days, silent_days=silent_days, now=now)
                for name, specs in _SPECS.items()
                if kpis is None or any(spec.kpi in kpis for spec in specs)}
    specs = {spec.kpi: spec for group in _SPECS.values() for spec in group}
    table: list[KpiValue] = []
    for i, period in enumerate(periods):
        results: dict[str, dict[str, KpiValue]] = {}
        for per_period in by_query.values():
            results.update(per_period[i])
        # Every KPI for every segment any of them has: a segment without machines still shows
        # its utilisation row, as undefined.
        segments = sorted({s for by_segment in results.values() for s in by_segment})
        for name, by_segment in results.items():
            table.extend(by_segment.get(s) or _empty(specs[name], period, cut, s)
                         for s in segments)
    logger.debug("kpi table for %s periods (%s) computed", len(periods), cut.dimension)
    return table


__all__ = [
    "ALL",
    "DIMENSIONS",
    "KPI_NAMES",
    "Cut",
    "KpiValue",
    "MachinePeriod",
    "churn",
    "customer_lifetime_value",
    "engagement_index",
    "fault_rate",
    "gross_revenue_retention",
    "kpi_table",
    "machine_kpis",
    "maintenance_adherence",
    "net_revenue_retention",
    "nps",
    "parts_capture",
    "renewal_rate",
    "repeat_purchase_rate",
    "retention",
    "revenue_per_customer",
    "shared_machine_rows",
    "silent_machines",
    "spend_per_transaction",
    "upsell_ratio",
    "utilisation",
    "utilisation_trend",
]
