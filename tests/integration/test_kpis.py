"""KPIs on small cases worked out by hand (rows inserted directly), and on a demo world.

Business case, period Q1 2026 (2026-01-01..03-31); "start" is 2025-12-31, the previous period
Q4 2025. Reporting currency EUR; USD at 0.9 from 2025-01-01.

    A  DE  contract 2025-01-01..2025-12-31 (expired), lapsed decided 2025-12-01
           invoices 2025-01-05 service_contract 1000; 2025-10-15 field_service 400
    B  DE  contract 2025-07-01..2026-06-30 (active); contract B2 2025-03-01..2026-02-28
           (expired), lapsed decided 2026-02-10 (and a deleted 'renewed' decision 02-11)
           invoices 2025-11-20 spare_parts 700; 2026-01-10 spare_parts 300 + field_service 200;
           2026-02-15 spare_parts 100; 2026-03-01 credit note spare_parts -50
    C  FR  no contract; invoice 2025-12-05 spare_parts USD 1000 (= EUR 900)
    D  FR  contract 2026-02-01..2027-01-31 (new); invoice 2026-02-01 service_contract 1200 +
           new_machine 50000; invoice 2026-03-01 spare_parts 999 cancelled
    E  DE  only a draft contract and a draft invoice: never active
    F  DE  contract 2025-01-01..2026-12-31, upgraded decided 2026-01-15; invoice 2025-01-01
           service_contract 2000; 2026-03-10 field_service 250

Machine case, period February 2026 (672 calendar hours), previous January (744 h). Model VMC:
service every 336 h or 28 days, parts EUR 2,000 per 1,000 h (so EUR 2 per hour).

    X  DE  M1 (since 2020) counter 2025-12-31 1000, 01-31 1186, 02-28 1354: Jan 186, Feb 168
           M2 (commissioned 2026-01-16) counter 01-16 0, 01-31 96, 02-10 200, 02-20 432:
              Jan 96 (over 384 calendar hours), Feb 336
           M7 reports only a spindle load on 2026-02-01 (no counter)
    Y  FR  M3 (commissioned 2026-02-15) counter 02-16 0, 02-27 84: Feb 84 over 336 calendar h
           M5 (deleted from the installed base 2026-01-20: sold), telemetry until 2026-01-10
    Z  DE  contract 2025-01-01..2025-12-31 (expired); M6 telemetry until 2026-01-05
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from analytics import kpi
from analytics.kpi import Cut
from analytics.periods import Period, periods_between
from analytics.rollups import refresh_machine_days
from demo.world import World, load_history, write_world
from erp_connectors.files import sync_files
from erp_connectors.rates import load_exchange_rates

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
Q1 = Period("quarter", date(2026, 1, 1))
FEB = Period("month", date(2026, 2, 1))
EUR = "EUR"

_ids: Iterator[int] = itertools.count(1)


def _ext(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def vnd(v: kpi.KpiValue) -> tuple[Any, Any, Any]:
    """Value, numerator, denominator (untyped: compared with plain ints and Decimals)."""
    return v.value, v.numerator, v.denominator


def nd(v: kpi.KpiValue) -> tuple[Any, Any]:
    return v.numerator, v.denominator


def vd(v: kpi.KpiValue) -> tuple[Any, Any]:
    return v.value, v.denominator


async def _one(conn: Conn, query: str, params: dict[str, Any]) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def customer(conn: Conn, name: str, country: str) -> int:
    return int(await _one(conn, "INSERT INTO customers (source, external_id, name, country)"
                          " VALUES ('t', %(e)s, %(n)s, %(c)s) RETURNING id",
                          {"e": name, "n": name, "c": country}))


async def contract(conn: Conn, cust: int, starts: str, ends: str, status: str, *,
                   tier: str = "basic", value: str = "1000") -> int:
    return int(await _one(
        conn, "INSERT INTO service_contracts (source, external_id, customer_id, scope, tier,"
        " starts_on, ends_on, annual_value, currency, status) VALUES ('t', %(e)s, %(c)s,"
        " 'customer', %(t)s, %(s)s, %(x)s, %(v)s, 'EUR', %(st)s) RETURNING id",
        {"e": _ext("SC"), "c": cust, "t": tier, "s": starts, "x": ends, "v": value,
         "st": status}))


async def renewal(conn: Conn, contract_id: int, decided: str, outcome: str, *, prev_end: str,
                  new_end: str | None = None, deleted: bool = False) -> None:
    await conn.execute(
        "INSERT INTO contract_renewals (source, external_id, contract_id, decided_on, outcome,"
        " previous_ends_on, new_ends_on, deleted_at) VALUES ('t', %(e)s, %(c)s, %(d)s, %(o)s,"
        " %(p)s, %(n)s, CASE WHEN %(del)s THEN now() END)",
        {"e": _ext("RN"), "c": contract_id, "d": decided, "o": outcome, "p": prev_end,
         "n": new_end, "del": deleted})


async def invoice(conn: Conn, cust: int, issued: str, lines: list[tuple[str, str]], *,
                  currency: str = "EUR", status: str = "paid",
                  machines: list[int | None] | None = None) -> int:
    """An invoice with (kind, amount) lines; its net amount is their sum."""
    total = sum(Decimal(amount) for _, amount in lines)
    inv = int(await _one(
        conn, "INSERT INTO invoices (source, external_id, customer_id, issued_on, currency,"
        " net_amount, status) VALUES ('t', %(e)s, %(c)s, %(d)s, %(cur)s, %(n)s, %(s)s)"
        " RETURNING id",
        {"e": _ext("I"), "c": cust, "d": issued, "cur": currency, "n": total, "s": status}))
    for (kind, amount), machine in zip(lines, machines or [None] * len(lines), strict=True):
        await conn.execute(
            "INSERT INTO invoice_lines (source, external_id, invoice_id, kind, net_amount,"
            " installed_base_id) VALUES ('t', %(e)s, %(i)s, %(k)s, %(a)s, %(m)s)",
            {"e": _ext("IL"), "i": inv, "k": kind, "a": amount, "m": machine})
    return inv


async def contact(conn: Conn, cust: int) -> int:
    return int(await _one(conn, "INSERT INTO contacts (source, external_id, customer_id, name)"
                          " VALUES ('t', %(e)s, %(c)s, 'someone') RETURNING id",
                          {"e": _ext("K"), "c": cust}))


async def answer(conn: Conn, cust: int, who: int | None, when: str, score: int, *,
                 deleted: bool = False) -> None:
    await conn.execute(
        "INSERT INTO survey_responses (source, external_id, customer_id, contact_id,"
        " answered_at, score, deleted_at) VALUES ('t', %(e)s, %(c)s, %(k)s, %(w)s, %(s)s,"
        " CASE WHEN %(d)s THEN now() END)",
        {"e": _ext("NPS"), "c": cust, "k": who, "w": f"{when}T10:00:00Z", "s": score,
         "d": deleted})


@pytest.fixture
async def business(conn: Conn) -> dict[str, int]:
    await conn.execute("INSERT INTO exchange_rates VALUES ('USD', '2025-01-01', 0.9)")
    c = {name: await customer(conn, name, country) for name, country in
         (("A", "DE"), ("B", "DE"), ("C", "FR"), ("D", "FR"), ("E", "DE"), ("F", "DE"))}
    a = await contract(conn, c["A"], "2025-01-01", "2025-12-31", "expired")
    await renewal(conn, a, "2025-12-01", "lapsed", prev_end="2025-12-31")
    await invoice(conn, c["A"], "2025-01-05", [("service_contract", "1000")])
    await invoice(conn, c["A"], "2025-10-15", [("field_service", "400")])

    await contract(conn, c["B"], "2025-07-01", "2026-06-30", "active", tier="premium")
    b2 = await contract(conn, c["B"], "2025-03-01", "2026-02-28", "expired")
    await renewal(conn, b2, "2026-02-10", "lapsed", prev_end="2026-02-28")
    await renewal(conn, b2, "2026-02-11", "renewed", prev_end="2026-02-28", new_end="2027-02-28",
                  deleted=True)
    await invoice(conn, c["B"], "2025-11-20", [("spare_parts", "700")])
    await invoice(conn, c["B"], "2026-01-10", [("spare_parts", "300"), ("field_service", "200")])
    await invoice(conn, c["B"], "2026-02-15", [("spare_parts", "100")])
    await invoice(conn, c["B"], "2026-03-01", [("spare_parts", "-50")], status="open")

    await invoice(conn, c["C"], "2025-12-05", [("spare_parts", "1000")], currency="USD")

    await contract(conn, c["D"], "2026-02-01", "2027-01-31", "active", tier="plus")
    await invoice(conn, c["D"], "2026-02-01", [("service_contract", "1200"),
                                              ("new_machine", "50000")])
    await invoice(conn, c["D"], "2026-03-01", [("spare_parts", "999")], status="cancelled")

    await contract(conn, c["E"], "2026-01-01", "2026-12-31", "draft")
    await invoice(conn, c["E"], "2026-01-20", [("spare_parts", "5000")], status="draft")

    f = await contract(conn, c["F"], "2025-01-01", "2026-12-31", "active", tier="premium")
    await renewal(conn, f, "2026-01-15", "upgraded", prev_end="2025-12-31", new_end="2026-12-31")
    await invoice(conn, c["F"], "2025-01-01", [("service_contract", "2000")])
    await invoice(conn, c["F"], "2026-03-10", [("field_service", "250")])

    k1, k2, k3 = await contact(conn, c["B"]), await contact(conn, c["B"]), await contact(
        conn, c["D"])
    await answer(conn, c["B"], k1, "2026-01-05", 3)      # superseded by k1's later answer
    await answer(conn, c["B"], k1, "2026-03-20", 10)     # promoter
    await answer(conn, c["B"], k2, "2026-02-01", 8)      # passive
    await answer(conn, c["D"], k3, "2026-02-10", 6)      # detractor
    await answer(conn, c["F"], None, "2026-03-01", 9)    # promoter, no contact
    await answer(conn, c["F"], None, "2025-12-20", 0)    # Q4: not in the period
    await answer(conn, c["F"], None, "2026-02-02", 0, deleted=True)
    await conn.commit()
    return c


async def test_periods() -> None:
    assert [p.label for p in periods_between("quarter", date(2025, 11, 5), date(2026, 4, 1))] \
        == ["2025-Q4", "2026-Q1", "2026-Q2"]
    assert Q1.previous() == Period("quarter", date(2025, 10, 1))
    assert (Q1.last_day, Q1.per_year, FEB.days) == (date(2026, 3, 31), 4, 28)
    assert Period.containing("year", date(2026, 7, 9)).label == "2026"
    with pytest.raises(ValueError, match="first day of a quarter"):
        Period("quarter", date(2026, 2, 1))


async def test_retention_and_churn_follow_the_active_definition(
        conn: Conn, business: dict[str, int]) -> None:
    # Window 90 days. Active on 2025-12-31: A (contract), B (contract), C (invoice 12-05),
    # F (contract) = 4. On 2026-03-31: B, D, F (contracts) = 3; A's and C's invoices are older
    # than 90 days, E was never active. New: D. Retention (3 - 1) / 4 = 0.5, churn 0.5.
    r = await kpi.retention(conn, Q1, reporting_currency=EUR, window_days=90)
    assert vnd(r) == (Decimal("0.5"), 2, 4)
    assert (r.counts["customers_end"], r.counts["customers_new"]) == (3, 1)
    c = await kpi.churn(conn, Q1, reporting_currency=EUR, window_days=90)
    assert c.value == Decimal("0.5")
    # With the default 365 days A (invoice 2025-10-15) and C (2025-12-05) stay active: 4 / 4.
    r365 = await kpi.retention(conn, Q1, reporting_currency=EUR)
    assert vnd(r365) == (Decimal(1), 4, 4)
    # Per country (window 90): DE start A, B, F; end B, F -> 2 of 3. FR start C; end D (new)
    # -> 0 of 1. Weighted back: (2 + 0) / (3 + 1) = 0.5.
    de = await kpi.retention(conn, Q1, cut=Cut("country", "DE"), reporting_currency=EUR,
                             window_days=90)
    fr = await kpi.retention(conn, Q1, cut=Cut("country", "FR"), reporting_currency=EUR,
                             window_days=90)
    assert (nd(de), nd(fr)) == ((2, 3), (0, 1))
    # Tier on 2026-03-31: A basic (its last contract), B premium (its live one; B2 ended),
    # C none, D plus, F premium. Premium: B and F, both retained.
    premium = await kpi.retention(conn, Q1, cut=Cut("tier", "premium"), reporting_currency=EUR,
                                  window_days=90)
    assert nd(premium) == (2, 2)


async def test_revenue_per_customer_and_clv(conn: Conn, business: dict[str, int]) -> None:
    # Window 90. Served (active at start or end): A, B, C, D, F = 5. After-sales revenue in Q1:
    # B 300 + 200 + 100 - 50 = 550; D 1200 (the machine is not after-sales, the cancelled
    # invoice not revenue); F 250. Total 2000, per customer 400.
    r = await kpi.revenue_per_customer(conn, Q1, reporting_currency=EUR, window_days=90)
    assert vnd(r) == (Decimal(400), Decimal(2000), 5)
    # CLV: 400 x 4 = 1600 a year; retention 0.5 a quarter, so 0.5^4 = 0.0625 a year, annual
    # churn 0.9375, lifetime 1/0.9375 = 1.0667 years; CLV 1600 / 0.9375 = 1706.67.
    clv = await kpi.customer_lifetime_value(conn, Q1, reporting_currency=EUR, window_days=90)
    assert clv.value is not None and clv.value.quantize(Decimal("0.01")) == Decimal("1706.67")
    assert nd(clv) == (Decimal(1600), Decimal("0.9375"))
    # Nobody churns with 365 days: no finite lifetime.
    assert (await kpi.customer_lifetime_value(conn, Q1, reporting_currency=EUR)).value is None


async def test_revenue_retention(conn: Conn, business: dict[str, int]) -> None:
    # Window 90: the cohort is A, B, C, F. Q4: A 400, B 700, C USD 1000 x 0.9 = 900, F 0
    # = 2000. Q1: A 0, B 550, C 0, F 250 = 800. Kept min(Q1, Q4): 0 + 550 + 0 + 0 = 550.
    # GRR 550 / 2000 = 0.275; NRR 800 / 2000 = 0.4 (F's expansion counts). D is not in it.
    g = await kpi.gross_revenue_retention(conn, Q1, reporting_currency=EUR, window_days=90)
    n = await kpi.net_revenue_retention(conn, Q1, reporting_currency=EUR, window_days=90)
    assert vnd(g) == (Decimal("0.275"), 550, 2000)
    assert vnd(n) == (Decimal("0.4"), 800, 2000)
    assert g.counts["customers_start"] == 4


async def test_renewal_rate(conn: Conn, business: dict[str, int]) -> None:
    # Q1 decisions: F upgraded (01-15), B2 lapsed (02-10); the deleted one does not count.
    r = await kpi.renewal_rate(conn, Q1, reporting_currency=EUR)
    assert vnd(r) == (Decimal("0.5"), 1, 2)
    # Q4 2025: A lapsed, nothing renewed.
    q4 = await kpi.renewal_rate(conn, Q1.previous(), reporting_currency=EUR)
    assert vnd(q4) == (Decimal(0), 0, 1)
    # A cut with no decisions has no value, not zero.
    none = await kpi.renewal_rate(conn, Q1, cut=Cut("country", "FR"), reporting_currency=EUR)
    assert vd(none) == (None, None)


async def test_purchase_kpis(conn: Conn, business: dict[str, int]) -> None:
    # Purchase days with positive parts/field-service lines in Q1: B 01-10 and 02-15 (the
    # credit note is no purchase), F 03-10; D bought none (its parts invoice is cancelled).
    # Repeat: B of B, F = 1 / 2.
    r = await kpi.repeat_purchase_rate(conn, Q1, reporting_currency=EUR)
    assert vnd(r) == (Decimal("0.5"), 1, 2)
    # Kinds: B spare_parts + field_service, D service_contract + new_machine, F field_service:
    # 2 customers with several kinds against 1 with one.
    u = await kpi.upsell_ratio(conn, Q1, reporting_currency=EUR)
    assert vnd(u) == (Decimal(2), 2, 1)
    # Invoices with after-sales sum > 0: B 500, B 100, D 1200, F 250 = 2050 over 4 = 512.5.
    s = await kpi.spend_per_transaction(conn, Q1, reporting_currency=EUR)
    assert vnd(s) == (Decimal("512.5"), 2050, 4)


async def test_purchase_counts_do_not_need_an_exchange_rate(
        conn: Conn, business: dict[str, int]) -> None:
    # G (DE) buys in CHF, which has no exchange rate: spare_parts 100 on 2026-01-12,
    # field_service 50 on 2026-02-12. Counting looks at the sign of the amount as invoiced, so
    # G is a buyer on two days with two kinds. Repeat: B, G of B, F, G = 2 / 3. Upsell: B, D, G
    # several kinds, F one = 3 / 1. Spend: only amounts known in EUR; G's two invoices are
    # transactions without a reporting amount, left out of 2050 / 4.
    g = await customer(conn, "G", "DE")
    await invoice(conn, g, "2026-01-12", [("spare_parts", "100")], currency="CHF")
    await invoice(conn, g, "2026-02-12", [("field_service", "50")], currency="CHF")
    await conn.commit()
    r = await kpi.repeat_purchase_rate(conn, Q1, reporting_currency=EUR)
    assert nd(r) == (2, 3)
    u = await kpi.upsell_ratio(conn, Q1, reporting_currency=EUR)
    assert vnd(u) == (Decimal(3), 3, 1)
    s = await kpi.spend_per_transaction(conn, Q1, reporting_currency=EUR)
    assert vnd(s) == (Decimal("512.5"), 2050, 4)
    assert s.counts["transactions_unconverted"] == 2


async def test_nps(conn: Conn, business: dict[str, int]) -> None:
    # Latest answer per contact in Q1: k1 10 (its 3 is superseded), k2 8, k3 6, F's anonymous
    # 9 (its Q4 0 is outside, its deleted 0 gone): promoters 2, passive 1, detractor 1.
    # NPS = 100 x (2 - 1) / 4 = 25.
    n = await kpi.nps(conn, Q1, reporting_currency=EUR)
    assert vd(n) == (Decimal(25), 4)
    assert (n.counts["promoters"], n.counts["passives"], n.counts["detractors"]) == (2, 1, 1)
    # France: only D's detractor: -100 from one response.
    fr = await kpi.nps(conn, Q1, cut=Cut("country", "FR"), reporting_currency=EUR)
    assert vd(fr) == (Decimal(-100), 1)


async def test_kpi_table_lists_every_kpi_per_segment(conn: Conn,
                                                    business: dict[str, int]) -> None:
    table = await kpi.kpi_table(conn, [Q1], Cut("country"), reporting_currency=EUR,
                                window_days=90)
    retention = {v.segment: v for v in table if v.kpi == "retention_rate"}
    assert sorted(retention) == ["DE", "FR"]
    assert nd(retention["DE"]) == (2, 3)
    assert {v.kpi for v in table} >= {"nps", "renewal_rate", "net_revenue_retention",
                                      "upsell_ratio", "engagement_index", "utilisation"}
    with pytest.raises(ValueError, match="needs a segment"):
        await kpi.nps(conn, Q1, cut=Cut("country"), reporting_currency=EUR)


async def machine(conn: Conn, cust: int, serial: str, commissioned: str, *,
                  deleted_on: str | None = None, model: str = "VMC") -> tuple[int, int]:
    """An installed-base row and the ingester's machine of the same serial: (ib id, machine id).

    ``deleted_on``: the day the row was deleted (the machine sold), at 00:00 UTC.
    """
    ib = int(await _one(
        conn, "INSERT INTO installed_base (source, external_id, serial, model, customer_id,"
        " commissioned_on, deleted_at) VALUES ('t', %(s)s, %(s)s, %(m)s, %(c)s, %(d)s,"
        " %(del)s::date::timestamp AT TIME ZONE 'UTC') RETURNING id",
        {"s": serial, "m": model, "c": cust, "d": commissioned, "del": deleted_on}))
    mid = int(await _one(conn, "INSERT INTO machines (tenant, serial, protocol) VALUES"
                         " ('t', %(s)s, 'json') RETURNING id", {"s": serial}))
    return ib, mid


async def samples(conn: Conn, mid: int, readings: list[tuple[str, float]], *,
                  metric: int = 1) -> None:
    for when, value in readings:
        await conn.execute("INSERT INTO telemetry VALUES (%(t)s, %(m)s, %(k)s, %(v)s)",
                           {"t": when, "m": mid, "k": metric, "v": value})


async def event(conn: Conn, mid: int, when: str, kind: str) -> None:
    await conn.execute("INSERT INTO machine_events (time, machine_id, kind, event_key, payload)"
                       " VALUES (%(t)s, %(m)s, %(k)s, %(e)s, '{}')",
                       {"t": when, "m": mid, "k": kind, "e": _ext("ev")})


async def order(conn: Conn, cust: int, day: str, status: str = "delivered") -> None:
    await conn.execute("INSERT INTO orders (source, external_id, customer_id, kind, ordered_on,"
                       " status, currency, net_amount) VALUES ('t', %(e)s, %(c)s, 'spare_parts',"
                       " %(d)s, %(s)s, 'EUR', 10)",
                       {"e": _ext("O"), "c": cust, "d": day, "s": status})


@pytest.fixture
async def fleet(conn: Conn) -> dict[str, int]:
    await conn.execute("INSERT INTO exchange_rates VALUES ('USD', '2025-01-01', 0.9)")
    await conn.execute("INSERT INTO machine_models (source, external_id, model,"
                       " service_interval_hours, service_interval_days, parts_value_per_1000h,"
                       " currency) VALUES ('t', 'MM-1', 'VMC', 336, 28, 2000, 'EUR')")
    x, y, z = (await customer(conn, "X", "DE"), await customer(conn, "Y", "FR"),
               await customer(conn, "Z", "DE"))
    ib1, m1 = await machine(conn, x, "M1", "2020-01-01")
    await samples(conn, m1, [("2025-12-31T12:00Z", 1000), ("2026-01-31T12:00Z", 1186),
                             ("2026-02-28T12:00Z", 1354)])
    ib2, m2 = await machine(conn, x, "M2", "2026-01-16")
    await samples(conn, m2, [("2026-01-16T08:00Z", 0), ("2026-01-31T12:00Z", 96),
                             ("2026-02-10T12:00Z", 200), ("2026-02-20T12:00Z", 432)])
    ib3, m3 = await machine(conn, y, "M3", "2026-02-15")
    await samples(conn, m3, [("2026-02-16T00:00Z", 0), ("2026-02-27T12:00Z", 84)])
    _, m5 = await machine(conn, y, "M5", "2019-01-01", deleted_on="2026-01-20")
    await samples(conn, m5, [("2026-01-10T10:00Z", 40)], metric=100)
    _, m6 = await machine(conn, z, "M6", "2019-01-01")
    await samples(conn, m6, [("2026-01-05T10:00Z", 40)], metric=100)
    _, m7 = await machine(conn, x, "M7", "2019-01-01")
    await samples(conn, m7, [("2026-02-01T10:00Z", 40)], metric=100)
    await conn.execute("INSERT INTO metrics (id, name) VALUES (100, 'spindle_load_pct')")
    await contract(conn, z, "2025-01-01", "2025-12-31", "expired")

    await event(conn, m1, "2026-02-10T09:00Z", "maintenance")
    await event(conn, m3, "2026-02-20T09:00Z", "maintenance")
    await event(conn, m1, "2026-02-03T09:00Z", "fault")
    await event(conn, m1, "2026-02-04T09:00Z", "fault")
    await event(conn, m2, "2026-02-05T09:00Z", "fault")
    await event(conn, m2, "2026-01-25T09:00Z", "fault")          # January
    await event(conn, m2, "2026-02-05T10:00Z", "fault_cleared")

    await invoice(conn, x, "2026-02-12", [("spare_parts", "250"), ("spare_parts", "200"),
                                          ("spare_parts", "48")], machines=[ib1, ib2, None])
    await invoice(conn, y, "2026-02-22", [("spare_parts", "100")], currency="USD",
                  machines=[ib3])
    for day in ("2026-02-02", "2026-02-09", "2026-02-16"):
        await order(conn, x, day)
    await order(conn, x, "2026-02-17", status="cancelled")
    await order(conn, y, "2026-02-23")
    await answer(conn, x, None, "2026-02-14", 7)
    await conn.commit()
    return {"X": x, "Y": y, "Z": z}


async def _machine_side(conn: Conn) -> dict[str, kpi.KpiValue]:
    return {name: await fn(conn, FEB, reporting_currency=EUR) for name, fn in (
        ("utilisation", kpi.utilisation), ("trend", kpi.utilisation_trend),
        ("adherence", kpi.maintenance_adherence), ("faults", kpi.fault_rate),
        ("parts", kpi.parts_capture))}


async def test_machine_side_kpis(conn: Conn, fleet: dict[str, int]) -> None:
    for source in ("telemetry", "rollup"):
        if source == "rollup":
            # The same numbers from the daily rollup once its job has run.
            await refresh_machine_days(conn)
        got = await _machine_side(conn)
        # Utilisation: (168 + 336 + 84) h / (672 + 672 + 336) calendar h = 588 / 1680 = 0.35.
        # M7 has no counter: not reporting. M5 was sold: not in the fleet.
        u = got["utilisation"]
        assert vnd(u) == (Decimal("0.35"), 588, 1680), source
        assert u.counts["machines_reporting"] == 3
        # Trend, machines with hours in both months (M1, M2): February (168 + 336) / 1344 =
        # 0.375; January (186 + 96) / (744 + 384) = 0.25; 0.375 / 0.25 - 1 = 0.5.
        assert got["trend"].value == Decimal("0.5"), source
        # Services due: M1 max(168/336, 28/28) = 1, M2 max(336/336, 1) = 1, M3 max(84/336,
        # 14/28) = 0.5: 2.5. On plan, min(done, due rounded up): M1 min(1, 1) + M2 min(0, 1)
        # + M3 min(1, 1) = 2. 2 / 2.5 = 0.8.
        a = got["adherence"]
        assert vnd(a) == (Decimal("0.8"), 2, Decimal("2.5")), source
        # Overdue at the end: M2 (432 h, never serviced > 336). M1 168 h / 19 days since its
        # service, M3 84 h / 9 days: not.
        assert a.counts["machines_overdue"] == 1
        # Faults in February: M1 2, M2 1 (its January one and the 'cleared' do not count):
        # 1000 x 3 / 588 = 5.1020...
        f = got["faults"]
        assert nd(f) == (3, 588), source
        assert f.value is not None and f.value.quantize(Decimal("0.0001")) == Decimal("5.1020")
        # Parts implied EUR 2/h x 588 h = 1176; bought M1 250 + M2 200 + X's unnamed 48 +
        # M3 USD 100 x 0.9 = 588 -> 0.5.
        p = got["parts"]
        assert vnd(p) == (Decimal("0.5"), 588, 1176), source

    rows = {m.serial: m for m in await kpi.machine_kpis(conn, FEB, reporting_currency=EUR)}
    assert sorted(rows) == ["M1", "M2", "M3", "M6", "M7"]
    assert (rows["M1"].utilisation, rows["M2"].utilisation, rows["M3"].utilisation) == (
        Decimal("0.25"), Decimal("0.5"), Decimal("0.25"))
    # M2: parts EUR 200 against 2 x 336 = 672 implied.
    assert rows["M2"].overdue is True
    assert rows["M2"].parts_capture is not None
    assert rows["M2"].parts_capture.quantize(Decimal("0.000001")) == Decimal("0.297619")
    assert rows["M7"].hours is None


async def test_adherence_leaves_out_machines_without_a_plan(conn: Conn,
                                                            fleet: dict[str, int]) -> None:
    # M9 (X) of model LATHE, which has no machine_models row: 100 h and 2 services in February.
    # Without a plan nothing is due, so its services are not on plan either: adherence stays
    # 2 / 2.5 = 0.8 (test_machine_side_kpis), with 3 machines with a plan and 2 services done.
    _, m9 = await machine(conn, fleet["X"], "M9", "2020-01-01", model="LATHE")
    await samples(conn, m9, [("2026-01-31T12:00Z", 10), ("2026-02-27T12:00Z", 110)])
    await event(conn, m9, "2026-02-05T09:00Z", "maintenance")
    await event(conn, m9, "2026-02-06T09:00Z", "maintenance")
    await conn.commit()
    for source in ("telemetry", "rollup"):
        if source == "rollup":
            await refresh_machine_days(conn)
        a = await kpi.maintenance_adherence(conn, FEB, reporting_currency=EUR)
        assert vnd(a) == (Decimal("0.8"), 2, Decimal("2.5")), source
        assert (a.counts["machines_with_plan"], a.counts["services_done"]) == (3, 2), source


async def test_silent_machines(conn: Conn, fleet: dict[str, int]) -> None:
    # As of 2026-03-01 00:00, 14 days: M5 (last 01-10, sold), M6 (01-05, Z's contract lapsed),
    # M7 (02-01, X active, nothing known: unknown) are silent; M1, M2, M3 are not. 3 of 6.
    s = await kpi.silent_machines(conn, FEB, reporting_currency=EUR)
    assert vnd(s) == (Decimal("0.5"), 3, 6)
    assert (s.counts["silent_sold"], s.counts["silent_contract_lapsed"],
            s.counts["silent_unknown"]) == (1, 1, 1)
    # With 30 days only M5 (50 days) and M6 (55 days) are silent.
    s30 = await kpi.silent_machines(conn, FEB, reporting_currency=EUR, silent_days=30)
    assert nd(s30) == (2, 6)


async def test_silent_machines_count_a_resold_machine_once(conn: Conn,
                                                          fleet: dict[str, int]) -> None:
    # M1 was first Z's, who sold it (its row deleted 2019-12-31) before X got it: two
    # installed-base rows, one machine. It counts once, as X's (the live row): 3 of 6 as in
    # test_silent_machines, and X (DE) has M1, M2, M7, Z (DE) M6: 2 silent of 4 in DE.
    await conn.execute("INSERT INTO installed_base (source, external_id, serial, model,"
                       " customer_id, commissioned_on, deleted_at) VALUES ('t', 'old-M1', 'M1',"
                       " 'VMC', %(z)s, '2019-01-01', '2019-12-31T00:00Z')", {"z": fleet["Z"]})
    await conn.commit()
    s = await kpi.silent_machines(conn, FEB, reporting_currency=EUR)
    assert vnd(s) == (Decimal("0.5"), 3, 6)
    de = await kpi.silent_machines(conn, FEB, cut=Cut("country", "DE"), reporting_currency=EUR)
    assert nd(de) == (2, 4)


async def test_silent_machine_sold_after_the_period_is_not_sold_in_it(
        conn: Conn, fleet: dict[str, int]) -> None:
    # M5's row deleted 2026-04-01 instead: in February it was still Y's and Y had not sold it.
    # Y is active (an invoice on 02-22) and has no contract: M5 is silent for a reason unknown.
    # Still 3 of 6; sold 0, unknown M5 and M7. In April it is sold.
    await conn.execute("UPDATE installed_base SET deleted_at = '2026-04-01T00:00Z'"
                       " WHERE serial = 'M5'")
    await conn.commit()
    s = await kpi.silent_machines(conn, FEB, reporting_currency=EUR)
    assert vnd(s) == (Decimal("0.5"), 3, 6)
    assert (s.counts["silent_sold"], s.counts["silent_unknown"]) == (0, 2)
    april = await kpi.silent_machines(conn, Period("month", date(2026, 4, 1)),
                                      reporting_currency=EUR)
    assert april.counts["silent_sold"] == 1


async def test_engagement_index(conn: Conn, fleet: dict[str, int]) -> None:
    # Active on 2026-02-28: X and Y (February invoices); Z's contract ended, its last purchase
    # is older than a year. Usage: the VMC median of M1 168, M2 336, M3 84 is 168. X (168 +
    # 336) / (168 + 168) = 1.5 -> 1; Y 84 / 168 = 0.5. Orders: X 3 (the cancelled one not),
    # Y 1; median 2: X min(1, 1.5) = 1, Y 0.5. Survey: X answered, Y not.
    # X = 100 (0.5 + 0.3 + 0.2) = 100; Y = 100 (0.5 x 0.5 + 0.3 x 0.5 + 0) = 40. Mean 70.
    e = await kpi.engagement_index(conn, FEB, reporting_currency=EUR)
    assert vnd(e) == (Decimal(70), 140, 2)
    fr = await kpi.engagement_index(conn, FEB, cut=Cut("country", "FR"), reporting_currency=EUR)
    assert fr.value == Decimal(40)


# Counts that add up over a partition of the customers (country is one): per-segment sums must
# give the whole base's.
_ADDITIVE = {
    "retention_rate": ("customers_start", "customers_end", "customers_new", "customers_retained"),
    "renewal_rate": ("renewed", "decisions"),
    "net_revenue_retention": ("revenue_before", "revenue_now", "revenue_kept"),
    "nps": ("responses", "promoters", "detractors"),
    "utilisation": ("operating_hours", "calendar_hours", "faults", "machines_reporting"),
    "silent_machines": ("silent", "machines_reporting_ever"),
    "engagement_index": ("customers", "engagement_sum"),
}


async def test_demo_world_kpis_are_consistent(database_url: str, conn: Conn,
                                              tmp_path: Path) -> None:
    end = date(2026, 5, 1)
    world = World.generate(11, end, customers=30, machines=90, years=1)
    write_world(world, tmp_path)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as load:
        await sync_files(load, tmp_path, source="demo")
        await load_exchange_rates(load, tmp_path / "exchange_rates.csv", source="demo")
    load_history(database_url, world, process_days=7)

    periods = periods_between("quarter", date(2025, 7, 1), date(2026, 3, 31))
    overall = await kpi.kpi_table(conn, periods, reporting_currency=EUR)
    by_country = await kpi.kpi_table(conn, periods, Cut("country"), reporting_currency=EUR)
    whole = {(v.period, v.kpi): v for v in overall}
    assert {v.segment for v in overall} == {"all"}
    assert whole[(periods[-1], "retention_rate")].denominator, "the world has customers"
    assert whole[(periods[-1], "utilisation")].value, "the world's machines ran"
    for period in periods:
        for name, columns in _ADDITIVE.items():
            parts = [v for v in by_country if v.period == period and v.kpi == name]
            for column in columns:
                summed = sum((v.counts.get(column) or 0 for v in parts), Decimal(0))
                assert summed == (whole[(period, name)].counts.get(column) or 0), (
                    period, name, column)
        # Churn per country weighted by customers at start is the overall churn.
        retention = [v for v in by_country if v.period == period and v.kpi == "churn_rate"]
        weighted = sum((v.value * v.denominator for v in retention
                        if v.value is not None and v.denominator), Decimal(0))
        total = whole[(period, "churn_rate")]
        assert total.value is not None and total.denominator
        assert abs(weighted / total.denominator - total.value) < Decimal("1e-15")

    # NPS recomputed in Python from the same rows: latest answer per contact in the quarter.
    q = periods[-1]
    cur = await conn.execute(
        "SELECT customer_id, contact_id, id, answered_at, score FROM survey_responses"
        " WHERE deleted_at IS NULL")
    latest: dict[tuple[int, object], tuple[Any, int, int]] = {}
    for customer_id, contact_id, rid, answered, score in await cur.fetchall():
        if q.start_ts <= answered < q.end_ts:
            key = (customer_id, contact_id if contact_id is not None else f"answer {rid}")
            if key not in latest or (answered, rid) > latest[key][:2]:
                latest[key] = (answered, rid, score)
    scores = [s for _, _, s in latest.values()]
    assert scores, "the world answered surveys in the quarter"
    expected = Decimal(100 * (sum(s >= 9 for s in scores) - sum(s <= 6 for s in scores))) / len(
        scores)
    got = whole[(q, "nps")]
    assert got.denominator == len(scores)
    assert got.value is not None and abs(got.value - expected) < Decimal("1e-15")


async def member(conn: Conn, cust: int, kind: str, assigned: str, segment: str) -> None:
    """A behavioural segment assigned by hand (as analytics.segments.assign_segments stores it)."""
    await conn.execute("INSERT INTO segment_memberships (customer_id, kind, assigned_on, segment,"
                       " inputs) VALUES (%(c)s, %(k)s, %(d)s, %(s)s, '{}')",
                       {"c": cust, "k": kind, "d": assigned, "s": segment})


def by_segment(table: list[kpi.KpiValue], name: str, period: Period) -> dict[str, kpi.KpiValue]:
    return {v.segment: v for v in table if v.kpi == name and v.period == period}


async def test_behavioural_cuts_take_membership_on_the_first_day(
        conn: Conn, business: dict[str, int]) -> None:
    # RFM memberships; Q1 2026 reads each customer's latest one on or before 2026-01-01:
    #   A 'at risk' 2025-10-01, then 'lost' 2026-02-01 (inside Q1: not yet known)  -> at risk
    #   B 'champions' 2025-12-15                                                    -> champions
    #   C 'at risk' 2026-01-01 (the first day itself counts)                        -> at risk
    #   F 'champions' 2025-06-01, then 'loyal' 2026-03-15 (inside Q1)               -> champions
    #   D, E none                                                                   -> unassigned
    # Q4 2025 reads 2025-10-01: A at risk, F champions, B C D E unassigned.
    c = business
    await member(conn, c["A"], "rfm", "2025-10-01", "at risk")
    await member(conn, c["A"], "rfm", "2026-02-01", "lost")
    await member(conn, c["B"], "rfm", "2025-12-15", "champions")
    await member(conn, c["C"], "rfm", "2026-01-01", "at risk")
    await member(conn, c["F"], "rfm", "2025-06-01", "champions")
    await member(conn, c["F"], "rfm", "2026-03-15", "loyal")
    # Value tiers: B 'A', F 'B' (2025-12-31); the others unassigned.
    await member(conn, c["B"], "value_tier", "2025-12-31", "A")
    await member(conn, c["F"], "value_tier", "2025-12-31", "B")
    await conn.commit()

    q4 = Q1.previous()
    table = await kpi.kpi_table(conn, [q4, Q1], Cut("rfm"), reporting_currency=EUR,
                                window_days=90)
    # Retention Q1 (window 90; start A, B, C, F; end B, D, F): at risk A, C -> 0 of 2 (with
    # the last day's memberships A would be 'lost' and at risk 0 of 1); champions B, F -> 2
    # of 2 (F would be 'loyal'); unassigned D, E: nobody at start, D new -> undefined.
    retention = by_segment(table, "retention_rate", Q1)
    assert sorted(retention) == ["at risk", "champions", "unassigned"]
    assert vnd(retention["at risk"]) == (Decimal(0), 0, 2)
    assert vnd(retention["champions"]) == (Decimal(1), 2, 2)
    assert vnd(retention["unassigned"]) == (None, 0, 0)
    assert retention["unassigned"].counts["customers_new"] == 1
    # Revenue per customer Q1: champions served B, F: (550 + 250) / 2 = 400; at risk A, C
    # served with no Q1 revenue: 0 / 2; unassigned D 1200 / 1.
    revenue = by_segment(table, "revenue_per_customer", Q1)
    assert vnd(revenue["champions"]) == (Decimal(400), 800, 2)
    assert vnd(revenue["at risk"]) == (Decimal(0), 0, 2)
    assert vnd(revenue["unassigned"]) == (Decimal(1200), 1200, 1)
    # Renewals Q1: F upgraded, B2 lapsed, both champions: 1 of 2.
    assert vnd(by_segment(table, "renewal_rate", Q1)["champions"]) == (Decimal("0.5"), 1, 2)
    # NPS Q1: champions B k1 10, k2 8, F 9: 100 x (2 - 0) / 3; unassigned D's 6: -100.
    nps = by_segment(table, "nps", Q1)
    assert nps["champions"].denominator == 3
    assert nps["champions"].value is not None
    assert nps["champions"].value.quantize(Decimal("0.01")) == Decimal("66.67")
    assert vd(nps["unassigned"]) == (Decimal(-100), 1)
    # Q4 2025 from its own first day (2025-10-01). Active on 2025-09-30 (window 90): A
    # (contract), B (contracts), F (contract); on 2025-12-31 A, B, C, F. At risk A: 1 of 1;
    # champions F: 1 of 1; unassigned B of B (C new): 1 of 1. Renewals: A lapsed (at risk).
    retention_q4 = by_segment(table, "retention_rate", q4)
    assert {s: nd(v) for s, v in retention_q4.items()} == {
        "at risk": (1, 1), "champions": (1, 1), "unassigned": (1, 1)}
    assert vnd(by_segment(table, "renewal_rate", q4)["at risk"]) == (Decimal(0), 0, 1)
    assert "at risk" not in {v.segment for v in table
                             if v.kpi == "renewal_rate" and v.period == Q1
                             and v.value is not None}

    # Value tier, one segment at a time: repeat purchase Q1, B bought on 01-10 and 02-15
    # (tier A): 1 of 1; F once, 03-10 (tier B): 0 of 1. GRR of tier A (B): Q4 700, Q1 550 ->
    # 550 / 700.
    a = await kpi.repeat_purchase_rate(conn, Q1, cut=Cut("value_tier", "A"),
                                       reporting_currency=EUR)
    b = await kpi.repeat_purchase_rate(conn, Q1, cut=Cut("value_tier", "B"),
                                       reporting_currency=EUR)
    assert (vnd(a), vnd(b)) == ((Decimal(1), 1, 1), (Decimal(0), 0, 1))
    grr = await kpi.gross_revenue_retention(conn, Q1, cut=Cut("value_tier", "A"),
                                            reporting_currency=EUR, window_days=90)
    assert nd(grr) == (550, 700)
    with pytest.raises(ValueError, match="unknown cut dimension"):
        Cut("recency")  # type: ignore[arg-type]


async def test_machine_side_kpis_by_usage_profile(conn: Conn, fleet: dict[str, int]) -> None:
    # Usage profiles: X 'heavy' 2026-01-01, 'declining' 2026-02-01 (February's first day),
    # 'idle' 2026-02-15 (inside February: not yet known); Y 'steady' 2025-12-01; Z none.
    # January: X heavy, Y steady, Z unassigned; February: X declining, Y steady, Z unassigned.
    x, y = fleet["X"], fleet["Y"]
    await member(conn, x, "usage", "2026-01-01", "heavy")
    await member(conn, x, "usage", "2026-02-01", "declining")
    await member(conn, x, "usage", "2026-02-15", "idle")
    await member(conn, y, "usage", "2025-12-01", "steady")
    await conn.commit()
    jan = Period("month", date(2026, 1, 1))

    for source in ("telemetry", "rollup"):
        if source == "rollup":
            await refresh_machine_days(conn)
        # Both months in one run: each period reads its own first day's memberships.
        table = await kpi.kpi_table(conn, [jan, FEB], Cut("usage"), reporting_currency=EUR)
        # January utilisation, X's machines (heavy): M1 186 / 744, M2 96 / 384 (since 01-16)
        # = 282 / 1128 = 0.25. Y's M3 was not commissioned yet.
        u_jan = by_segment(table, "utilisation", jan)
        assert vnd(u_jan["heavy"]) == (Decimal("0.25"), 282, 1128), source
        assert u_jan["steady"].value is None, source
        # February: X declining (M1 168 + M2 336) / 1344 = 0.375; Y steady M3 84 / 336.
        u_feb = by_segment(table, "utilisation", FEB)
        assert vnd(u_feb["declining"]) == (Decimal("0.375"), 504, 1344), source
        assert vnd(u_feb["steady"]) == (Decimal("0.25"), 84, 336), source
        # Nobody was heavy on February's first day, and X's idle came after it.
        assert "heavy" not in u_feb and "idle" not in u_feb, source
        # Parts capture February: X bought 250 + 200 + 48 unnamed = 498 of 2 x 504 = 1008
        # implied; Y USD 100 x 0.9 = 90 of 2 x 84 = 168.
        parts = by_segment(table, "parts_capture", FEB)
        assert nd(parts["declining"]) == (498, 1008), source
        assert nd(parts["steady"]) == (90, 168), source
        # Silent by 2026-03-01 (14 days): X M7 of M1, M2, M7; Y M5 (sold) of M3, M5; Z M6 of
        # M6.
        silent = by_segment(table, "silent_machines", FEB)
        assert {s: nd(v) for s, v in silent.items() if v.denominator} == {
            "declining": (1, 3), "steady": (1, 2), "unassigned": (1, 1)}, source
        # Engagement February (test_engagement_index): X 100 (declining), Y 40 (steady).
        engagement = by_segment(table, "engagement_index", FEB)
        assert (engagement["declining"].value, engagement["steady"].value) == (
            Decimal(100), Decimal(40)), source


async def test_a_running_period_is_read_as_of_the_last_refresh(conn: Conn) -> None:
    # The moment the KPIs are read at is passed explicitly (not the wall clock): March runs to
    # date, and the samples are minutes old.
    now = datetime(2026, 3, 10, 10, 5, tzinfo=UTC)
    x = await customer(conn, "X", "DE")
    _, m1 = await machine(conn, x, "M1", "2020-01-01")
    await samples(conn, m1, [("2026-03-10T10:02Z", 100.0), ("2026-03-10T10:03Z", 100.25)])
    await conn.commit()
    await refresh_machine_days(conn)  # watermark 10:03
    # Newer data than the refresh saw: the ingester keeps writing between two refreshes.
    await samples(conn, m1, [("2026-03-10T10:04Z", 100.75)])
    await conn.commit()
    month = Period.containing("month", now.date()).to_date(now.date())

    async def hours(at: datetime, period: Period = month) -> Decimal | None:
        table = await kpi.kpi_table(conn, [period], reporting_currency=EUR, now=at)
        [u] = [v for v in table if v.kpi == "utilisation"]
        return u.numerator

    # Read from the rollup as of its refresh (0.25 h), not from raw telemetry (0.75 h).
    assert await hours(now) == Decimal("0.25")
    # Judged two hours later the refresh is no longer recent, and data came after it: raw
    # telemetry.
    assert await hours(now + timedelta(hours=2)) == Decimal("0.75")
    await refresh_machine_days(conn)
    assert await hours(now) == Decimal("0.75")
    # The month before, over before the first sample: nothing.
    assert await hours(now, month.previous()) in (None, Decimal("0"))


async def test_the_rollup_covers_a_period_with_no_data_after_its_watermark(conn: Conn) -> None:
    x = await customer(conn, "X", "DE")
    _, m1 = await machine(conn, x, "M1", "2020-01-01")
    await samples(conn, m1, [("2026-02-10T10:00Z", 100.0), ("2026-02-20T10:00Z", 110.0)])
    await conn.commit()
    await refresh_machine_days(conn)  # watermark 2026-02-20 10:00
    march, april = Period("month", date(2026, 3, 1)), Period("month", date(2026, 4, 1))
    # New data after a gap (a demo's live data after its history, an ingester back after an
    # outage): March has none of it, so the rollup covers March; April does not.
    await samples(conn, m1, [("2026-04-05T10:00Z", 130.0)])
    await conn.commit()
    assert await kpi._rollup_covers(conn, [FEB, march, april]) == [True, True, False]
    # Data after the watermark inside February: neither it nor the months after are covered.
    await samples(conn, m1, [("2026-02-25T10:00Z", 115.0)])
    await conn.commit()
    assert await kpi._rollup_covers(conn, [FEB, march, april]) == [False, False, False]
