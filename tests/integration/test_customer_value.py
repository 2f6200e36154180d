"""CLV inputs on a case worked out by hand, and customer values on a demo world.

Hand-made case, cut-off T = 2025-12-31, reporting currency EUR; USD at 0.9 from 2024-01-01 and
0.8 from 2025-01-01; no JPY rate at all.

Parts and field service (only kinds spare_parts and field_service count):

    A  EUR 2025-01-06 spare_parts 100 + service_contract 1000 (not parts)      } one day: 150
           2025-01-06 a second invoice: field_service 50                        }
           2025-02-03 spare_parts 200 + new_machine 50000 (not parts)           day: 200
           2025-03-03 spare_parts 300, cancelled                                nothing
           2025-03-31 field_service 400 (+ a deleted spare_parts line of 70)    day: 400
           2025-04-14 credit note spare_parts -100: refunds the latest purchase
                      before it, 2025-03-31                                     -> 400 - 100 = 300
           2025-05-05 spare_parts 999, draft                                    nothing
           2026-01-05 spare_parts 500, after the cut-off                        nothing
       purchase days 01-06, 02-03, 03-31: frequency 2; recency 84 days = 12 weeks;
       T = 359 days = 51.2857 weeks; monetary (200 + 300) / 2 = 250; spend 650.
    B  USD 2024-06-03 spare_parts 1000 USD x 0.9                                day: 900
           2025-06-02 spare_parts 1000 + field_service 500 USD, and a credit note
                      the same day -250 USD: 1250 USD x 0.8                     day: 1000
       frequency 1; recency 364 days = 52 weeks; T = 576 days = 82.2857 weeks;
       monetary 1000; spend 1900.
    C  EUR 2025-03-01 credit note -50 before any purchase                       unmatched: -50
           2025-04-01 spare_parts 80
       frequency 0; recency 0; T = 274 days = 39.1429 weeks; monetary none; spend 80.
    D  JPY 2025-05-01 spare_parts 1000 JPY, no rate: 1 unconverted line, no record.

Contracts (live = not draft, not cancelled, not deleted; ends capped at T):

    A  an Odoo-style chain of renewal orders, one row per term:
           2022-03-01..2023-02-28 expired, 2023-03-01..2024-02-29 expired,
           2024-03-10..2025-03-09 expired (starts 10 days late: same chain, grace 31 days),
           2025-03-10..2026-03-09 active, EUR 1200 a year
       renewal rows renewed, renewed, upgraded (and a deleted one): 3 decisions.
       One chain from 2022-03-01, live at T: renewals = whole years 2022-03-01..2025-12-31 = 3,
       next anniversary 2026-03-01, annual value 1200.
    B  one long row (the files connector's way) 2023-07-01..2026-06-30 active, USD 1000, with
       renewal rows renewed 2024 and 2025; a machine contract 2024-01-01..2024-12-31 expired
       (inside the chain); a cancelled and a draft contract (ignored).
       One chain from 2023-07-01: renewals 2, next anniversary 2026-07-01,
       annual value 1000 USD x 0.8 = 800.
    C  2023-01-01..2023-12-31 expired; back 2025-06-01..2026-05-31 active, EUR 600: the gap is
       more than 31 days, so two chains; the first ends 2023-12-31, the live one starts
       2025-06-01: renewals 0, next anniversary 2026-06-01, annual value 600.
    E  2024-01-01..2024-09-30 terminated: one chain, not live at T.
    F  a contract starting 2026-02-01, after T: not there.

Renewal cohorts (first chains; anniversary k counted while 31 Dec of the year + k <= T):

    2022: A                k = 0..3   A reaches 2023-03-01, 2024-03-01, 2025-03-01  [1, 1, 1, 1]
    2023: B, C             k = 0..2   C ends 2023-12-31 < 2024-01-01: lost at k = 1  [2, 1, 1]
    2024: E                k = 0..1   E ends 2024-09-30 < 2025-01-01                 [1, 0]
    2025: nobody has a first chain starting then (C's return is its second chain).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from analytics.clv_inputs import contract_relationships, parts_history, renewal_cohorts
from analytics.customer_value import (
    CONTRACT_YEARS_CAP,
    fit_pooled_sbg,
    pooled_retention,
    value_customers,
)
from demo.world import SIZES, World, write_world
from demo.world.files import truth
from erp_connectors.files import sync_files
from erp_connectors.rates import load_exchange_rates
from tests.integration.conftest import rows
from tests.renewal_cohorts import renewal_cohorts as cohorts_from_records

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
T = date(2025, 12, 31)
EUR = "EUR"

_ids: Iterator[int] = itertools.count(1)


def _ext(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


async def _one(conn: Conn, query: str, params: dict[str, Any]) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def customer(conn: Conn, name: str) -> int:
    return int(await _one(conn, "INSERT INTO customers (source, external_id, name)"
                          " VALUES ('t', %(e)s, %(e)s) RETURNING id", {"e": name}))


async def invoice(conn: Conn, cust: int, issued: str, lines: list[tuple[str, str]], *,
                  currency: str = EUR, status: str = "paid",
                  deleted_lines: Sequence[tuple[str, str]] = ()) -> None:
    """An invoice with (kind, amount) lines, and optionally lines marked deleted."""
    total = sum(Decimal(amount) for _, amount in lines)
    inv = int(await _one(
        conn, "INSERT INTO invoices (source, external_id, customer_id, issued_on, currency,"
        " net_amount, status) VALUES ('t', %(e)s, %(c)s, %(d)s, %(cur)s, %(n)s, %(s)s)"
        " RETURNING id",
        {"e": _ext("I"), "c": cust, "d": issued, "cur": currency, "n": total, "s": status}))
    for (kind, amount), deleted in [*((line, False) for line in lines),
                                    *((line, True) for line in deleted_lines)]:
        await conn.execute(
            "INSERT INTO invoice_lines (source, external_id, invoice_id, kind, net_amount,"
            " deleted_at) VALUES ('t', %(e)s, %(i)s, %(k)s, %(n)s,"
            " CASE WHEN %(del)s THEN now() END)",
            {"e": _ext("IL"), "i": inv, "k": kind, "n": amount, "del": deleted})


async def contract(conn: Conn, cust: int, starts: str, ends: str, status: str, *,
                   value: str = "1000", currency: str = EUR) -> int:
    return int(await _one(
        conn, "INSERT INTO service_contracts (source, external_id, customer_id, scope,"
        " starts_on, ends_on, annual_value, currency, status) VALUES ('t', %(e)s, %(c)s,"
        " 'customer', %(s)s, %(x)s, %(v)s, %(cur)s, %(st)s) RETURNING id",
        {"e": _ext("SC"), "c": cust, "s": starts, "x": ends, "v": value, "cur": currency,
         "st": status}))


async def renewal(conn: Conn, contract_id: int, decided: str, outcome: str, *, prev_end: str,
                  new_end: str, deleted: bool = False) -> None:
    await conn.execute(
        "INSERT INTO contract_renewals (source, external_id, contract_id, decided_on, outcome,"
        " previous_ends_on, new_ends_on, deleted_at) VALUES ('t', %(e)s, %(c)s, %(d)s, %(o)s,"
        " %(p)s, %(n)s, CASE WHEN %(del)s THEN now() END)",
        {"e": _ext("RN"), "c": contract_id, "d": decided, "o": outcome, "p": prev_end,
         "n": new_end, "del": deleted})


@pytest.fixture
async def case(conn: Conn) -> dict[str, int]:
    """The hand-made case of the module docstring; customer name -> id."""
    await conn.execute("INSERT INTO exchange_rates (currency, valid_from, rate) VALUES"
                       " ('USD', '2024-01-01', 0.9), ('USD', '2025-01-01', 0.8)")
    ids = {name: await customer(conn, name) for name in "ABCDEF"}
    a, b, c, d, e, f = (ids[n] for n in "ABCDEF")

    await invoice(conn, a, "2025-01-06", [("spare_parts", "100"), ("service_contract", "1000")])
    await invoice(conn, a, "2025-01-06", [("field_service", "50")])
    await invoice(conn, a, "2025-02-03", [("spare_parts", "200"), ("new_machine", "50000")])
    await invoice(conn, a, "2025-03-03", [("spare_parts", "300")], status="cancelled")
    await invoice(conn, a, "2025-03-31", [("field_service", "400")],
                  deleted_lines=[("spare_parts", "70")])
    await invoice(conn, a, "2025-04-14", [("spare_parts", "-100")])
    await invoice(conn, a, "2025-05-05", [("spare_parts", "999")], status="draft")
    await invoice(conn, a, "2026-01-05", [("spare_parts", "500")])

    await invoice(conn, b, "2024-06-03", [("spare_parts", "1000")], currency="USD")
    await invoice(conn, b, "2025-06-02", [("spare_parts", "1000"), ("field_service", "500")],
                  currency="USD")
    await invoice(conn, b, "2025-06-02", [("spare_parts", "-250")], currency="USD")

    await invoice(conn, c, "2025-03-01", [("spare_parts", "-50")])
    await invoice(conn, c, "2025-04-01", [("spare_parts", "80")])

    await invoice(conn, d, "2025-05-01", [("spare_parts", "1000")], currency="JPY")

    k1 = await contract(conn, a, "2022-03-01", "2023-02-28", "expired")
    k2 = await contract(conn, a, "2023-03-01", "2024-02-29", "expired")
    k3 = await contract(conn, a, "2024-03-10", "2025-03-09", "expired")
    await contract(conn, a, "2025-03-10", "2026-03-09", "active", value="1200")
    await renewal(conn, k1, "2023-02-01", "renewed", prev_end="2023-02-28", new_end="2024-02-29")
    await renewal(conn, k2, "2024-02-15", "renewed", prev_end="2024-02-29", new_end="2025-03-09")
    await renewal(conn, k2, "2024-02-16", "renewed", prev_end="2024-02-29", new_end="2025-03-09",
                  deleted=True)
    await renewal(conn, k3, "2025-02-20", "upgraded", prev_end="2025-03-09", new_end="2026-03-09")

    long_b = await contract(conn, b, "2023-07-01", "2026-06-30", "active", currency="USD")
    await renewal(conn, long_b, "2024-06-01", "renewed", prev_end="2024-06-30",
                  new_end="2025-06-30")
    await renewal(conn, long_b, "2025-06-01", "renewed", prev_end="2025-06-30",
                  new_end="2026-06-30")
    await contract(conn, b, "2024-01-01", "2024-12-31", "expired", value="500", currency="USD")
    await contract(conn, b, "2025-01-01", "2025-12-31", "cancelled", value="9999")
    await contract(conn, b, "2025-02-01", "2026-01-31", "draft", value="9999")

    await contract(conn, c, "2023-01-01", "2023-12-31", "expired", value="600")
    await contract(conn, c, "2025-06-01", "2026-05-31", "active", value="600")

    await contract(conn, e, "2024-01-01", "2024-09-30", "terminated")
    await contract(conn, f, "2026-02-01", "2027-01-31", "active")
    await conn.commit()
    return ids


async def test_parts_history_by_hand(conn: Conn, case: dict[str, int]) -> None:
    records = {r.customer_id: r for r in await parts_history(conn, on=T,
                                                             reporting_currency=EUR)}
    assert set(records) == {case["A"], case["B"], case["C"], case["D"]}

    a = records[case["A"]]
    assert (a.first_day, a.last_day) == (date(2025, 1, 6), date(2025, 3, 31))
    assert a.frequency == 2
    assert a.recency_weeks == pytest.approx(Decimal(12))
    assert float(a.t_weeks or 0) == pytest.approx(359 / 7)
    assert a.monetary_value == Decimal(250)
    assert a.spend == Decimal(650)
    assert (a.unmatched_credit, a.unconverted_lines) == (Decimal(0), 0)

    b = records[case["B"]]
    assert (b.first_day, b.last_day, b.frequency) == (date(2024, 6, 3), date(2025, 6, 2), 1)
    assert float(b.recency_weeks or 0) == pytest.approx(52.0)
    assert float(b.t_weeks or 0) == pytest.approx(576 / 7)
    assert b.monetary_value == Decimal(1000)
    assert b.spend == Decimal(1900)

    c = records[case["C"]]
    assert (c.first_day, c.frequency, c.recency_weeks) == (date(2025, 4, 1), 0, Decimal(0))
    assert float(c.t_weeks or 0) == pytest.approx(274 / 7)
    assert c.monetary_value is None
    assert (c.spend, c.unmatched_credit) == (Decimal(80), Decimal(-50))

    d = records[case["D"]]
    assert (d.first_day, d.frequency, d.unconverted_lines) == (None, None, 1)


async def test_parts_history_before_a_purchase_sees_less(conn: Conn,
                                                         case: dict[str, int]) -> None:
    # At 2025-03-30 A has bought on 01-06 and 02-03 only (the credit of 04-14 is not yet issued).
    records = {r.customer_id: r for r in await parts_history(conn, on=date(2025, 3, 30),
                                                             reporting_currency=EUR)}
    a = records[case["A"]]
    assert (a.frequency, a.monetary_value, a.spend) == (1, Decimal(200), Decimal(350))
    assert float(a.t_weeks or 0) == pytest.approx(83 / 7)
    assert case["C"] not in records  # only its credit note so far: no purchase


async def test_contract_relationships_by_hand(conn: Conn, case: dict[str, int]) -> None:
    rels = {r.customer_id: r for r in await contract_relationships(conn, on=T,
                                                                  reporting_currency=EUR)}
    assert set(rels) == {case["A"], case["B"], case["C"], case["E"]}

    a = rels[case["A"]]
    assert (a.first_started_on, a.first_ended_on, a.chains) == (date(2022, 3, 1), T, 1)
    assert (a.current_started_on, a.current_contracts) == (date(2022, 3, 1), 4)
    assert (a.renewals, a.next_anniversary) == (3, date(2026, 3, 1))
    assert (a.annual_value, a.renewal_decisions) == (Decimal(1200), 3)

    b = rels[case["B"]]
    assert (b.first_started_on, b.chains, b.current_contracts) == (date(2023, 7, 1), 1, 2)
    assert (b.renewals, b.next_anniversary) == (2, date(2026, 7, 1))
    assert (b.annual_value, b.renewal_decisions) == (Decimal(800), 2)

    c = rels[case["C"]]
    assert (c.first_started_on, c.first_ended_on, c.chains) == (
        date(2023, 1, 1), date(2023, 12, 31), 2)
    assert (c.current_started_on, c.renewals, c.next_anniversary) == (
        date(2025, 6, 1), 0, date(2026, 6, 1))
    assert c.annual_value == Decimal(600)

    e = rels[case["E"]]
    assert (e.first_ended_on, e.current_started_on, e.renewals, e.annual_value) == (
        date(2024, 9, 30), None, None, None)


async def test_a_late_renewal_beyond_the_grace_breaks_the_chain(conn: Conn,
                                                                case: dict[str, int]) -> None:
    # With no grace A's third order (10 days late) starts a new chain: the relationship that
    # began 2022-03-01 ended 2024-02-29, and the live one began 2024-03-10.
    rels = {r.customer_id: r for r in await contract_relationships(
        conn, on=T, reporting_currency=EUR, grace_days=9)}
    a = rels[case["A"]]
    assert (a.chains, a.first_ended_on, a.current_started_on, a.renewals) == (
        2, date(2024, 2, 29), date(2024, 3, 10), 1)


async def test_renewal_cohorts_by_hand(conn: Conn, case: dict[str, int]) -> None:
    cohorts = await renewal_cohorts(conn, on=T)
    assert [(c.year, c.survivors) for c in cohorts] == [
        (2022, (1, 1, 1, 1)), (2023, (2, 1, 1)), (2024, (1, 0))]


async def test_value_customers_on_the_small_case(conn: Conn, case: dict[str, int]) -> None:
    run = await value_customers(conn, on=T, reporting_currency=EUR)
    # Three buyers with a record: far too few for BG/NBD, and the run says so.
    assert run.parts_method == "naive"
    assert any("too few for a stable BG/NBD fit" in n for n in run.notes)
    assert any("1 parts/service lines have no exchange rate" in n for n in run.notes)
    assert (run.buyers, run.repeat_buyers) == (3, 2)
    assert (run.contract_customers, run.live_contract_customers) == (4, 3)
    # A, B, C (parts and contracts), E (contract only); D has neither a record nor a contract.
    assert run.customers == 4

    cur = await conn.execute(
        "SELECT customer_id, method, p_alive, expected_purchases_12m,"
        " expected_spend_per_purchase, contract_annual_value, contract_renewals,"
        " contract_derl_value, total_clv, parts_clv, inputs FROM customer_values"
        " WHERE valued_on = %s", (T,))
    rows = {r[0]: r for r in await cur.fetchall()}
    assert set(rows) == {case[n] for n in "ABCE"}

    # The naive estimate for A: 3 purchase days over max(T, 52) weeks, silent since week 12.
    a = rows[case["A"]]
    rate = 3 / 52
    p_alive = math.exp(-rate * (359 / 7 - 12))
    assert a[2] == pytest.approx(p_alive)
    assert a[3] == pytest.approx(p_alive * rate * 52)
    assert a[4] == Decimal("216.67")  # own mean 650 / 3
    assert a[10]["parts"]["frequency"] == 2
    assert a[10]["parts"]["monetary_value"] == 250
    assert a[10]["contract"]["renewals"] == 3
    assert (a[5], a[6]) == (Decimal(1200), 3)
    # The contract side, by hand. The cohorts lose 2 of 4 at the first renewal and none of the
    # 3 at risk later: LL = 2 ln P(T=1) + ln S(3) + ln S(2), and as S(t) <= S(1) = 1 - p with
    # p = alpha / (alpha + beta), LL <= 2 ln p + 2 ln(1 - p) <= 4 ln 1/2, reached only in the
    # limit alpha, beta -> 0 with p = 1/2: half the customers leave at once, half never. So a
    # customer who has renewed renews for ever: DERL = 1 + 1/1.1 + 1/1.1^2 + ... = 11 at 10%,
    # and one in its first term renews with probability 1/2 first: DERL = 5.5. Each is
    # discounted from its next anniversary, (days to it) / 365.25 years after T:
    #   A 1200 x 11  x 1.1^-(60/365.25)  = 13200 x 0.984465 = 12994.94
    #   B  800 x 11  x 1.1^-(182/365.25) =  8800 x 0.953618 =  8391.84
    #   C  600 x 5.5 x 1.1^-(152/365.25) =  3300 x 0.961113 =  3171.67
    assert run.contract_method == "sbg", run.notes
    assert run.parameters["sbg"]["log_likelihood"] == pytest.approx(4 * math.log(0.5))
    assert max(run.parameters["sbg"]["alpha"], run.parameters["sbg"]["beta"]) < 1e-6
    assert a[7] == Decimal("12994.94")
    assert rows[case["B"]][7] == Decimal("8391.84")
    # C's value moves with p itself, which the optimiser leaves at 0.50002 on its way to the
    # edge: within 0.5 of 3171.67.
    assert float(rows[case["C"]][7]) == pytest.approx(3171.67, abs=0.5)
    assert a[8] == a[7] + a[9]

    e = rows[case["E"]]
    assert (e[2], e[7], e[8]) == (None, Decimal(0), Decimal(0))  # relationship over

    # A rerun replaces the day's rows.
    await value_customers(conn, on=T, reporting_currency=EUR)
    assert await _one(conn, "SELECT count(*) FROM customer_values", {}) == 4


def test_pooled_sbg_sums_cohort_likelihoods() -> None:
    # Splitting one cohort's members into two identical halves changes nothing.
    whole = fit_pooled_sbg([[1000, 869, 743, 653, 593, 551, 517, 491]])
    halves = fit_pooled_sbg([[500, 434.5, 371.5, 326.5, 296.5, 275.5, 258.5, 245.5]] * 2)
    assert (halves.alpha_, halves.beta_) == pytest.approx((whole.alpha_, whole.beta_), rel=1e-4)
    # A young cohort adds its first years only: the fit moves towards its (worse) retention.
    young = fit_pooled_sbg([[1000, 869, 743, 653, 593, 551, 517, 491], [1000, 700, 550]])
    assert float(young.survival(2)) < float(whole.survival(2))
    assert pooled_retention([[4, 3, 3], [2, 1]]) == pytest.approx((3 + 3 + 1) / (4 + 3 + 2))
    with pytest.raises(ValueError, match="nobody churned"):
        fit_pooled_sbg([[3, 3, 3], [2, 2]])


async def test_demo_world_values(conn: Conn, database_url: str, tmp_path: Path) -> None:
    end = date(2026, 5, 1)
    world = World.generate(5, end, customers=60, machines=200, years=3)
    write_world(world, tmp_path)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as load:
        await sync_files(load, tmp_path, source="demo")
        await load_exchange_rates(load, tmp_path / "exchange_rates.csv", source="demo")

    run = await value_customers(conn, on=end, reporting_currency=EUR)
    ids: dict[str, int] = dict(await (await conn.execute(
        "SELECT external_id, id FROM customers WHERE source = 'demo'")).fetchall())
    planted = truth(world)["customers"]
    formers = {ext for ext, t in planted.items()
               if t["churned"] and date.fromisoformat(t["churn_date"]) < world.window_start}
    # 60 customers on the books when the window opened, and those lost at a renewal before.
    assert run.customers == len(ids) == 60 + len(formers)
    assert run.parts_method == "bgnbd+gamma_gamma", run.notes
    # The world plants a beta distribution of renewal propensities: its cohorts (here as the
    # records say, computed apart from clv.sql) lose their likely leavers first, and the sBG
    # is fitted to them with finite estimates and standard errors.
    assert [list(s) for _, s in run.cohorts] == cohorts_from_records(world.records, end)
    assert run.contract_method == "sbg", run.notes
    assert not any("sBG" in n for n in run.notes), run.notes
    fitted = run.parameters["sbg"]
    for value in (fitted["alpha"], fitted["beta"], *fitted["standard_errors"].values()):
        assert math.isfinite(value) and value > 0, fitted

    cur = await conn.execute(
        "SELECT customer_id, p_alive, expected_purchases_12m, expected_spend_per_purchase,"
        " parts_clv, contract_derl_value, contract_expected_lifetime_years, total_clv,"
        " inputs FROM customer_values WHERE valued_on = %s", (end,))
    rows = {r[0]: r for r in await cur.fetchall()}
    assert set(rows) == set(ids.values())
    for row in rows.values():
        values = [v for v in row[1:8] if v is not None]
        assert all(math.isfinite(float(v)) and float(v) >= 0 for v in values), row
        assert row[7] is not None
        assert row[7] == (row[4] or 0) + (row[5] or 0)
    # Every customer of the world holds a contract, and nearly all buy parts.
    assert sum(1 for r in rows.values() if r[1] is not None) == run.buyers >= 50
    years = [r[6] for r in rows.values() if r[6] is not None]
    assert all(y <= CONTRACT_YEARS_CAP + 1 for y in years)

    # Churners (truth) valued after their churn look less alive than those who stayed.
    churned = [ids[ext] for ext, t in planted.items()
               if t["churned"] and date.fromisoformat(t["churn_date"]) < end - timedelta(days=90)]
    stayed = [ids[ext] for ext, t in planted.items() if not t["churned"]]
    assert len(churned) >= 3, "the world should hold churners by now"
    alive_churned = [rows[c][1] for c in churned if rows[c][1] is not None]
    alive_stayed = [rows[c][1] for c in stayed if rows[c][1] is not None]
    assert np.mean(alive_churned) < np.mean(alive_stayed) - 0.1, (
        np.mean(alive_churned), np.mean(alive_stayed))
    # And their contract relationship is over: no contract value left.
    assert all(rows[c][5] == 0 for c in churned)


async def test_the_standard_demo_world_is_valued_with_sbg_near_its_planted_beta(
        conn: Conn, database_url: str, tmp_path: Path) -> None:
    # The world `run.sh` brings up (seed 7, standard size): its contract book is valued with
    # the sBG, not a constant retention, and the fit finds the planted beta distribution of
    # renewal propensities (truth.json, world.renewals) within two standard errors.
    end = date(2026, 5, 1)
    size = SIZES["standard"]
    world = World.generate(7, end, customers=size.customers, machines=size.machines,
                           years=size.years)
    write_world(world, tmp_path)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as load:
        await sync_files(load, tmp_path, source="demo")
        await load_exchange_rates(load, tmp_path / "exchange_rates.csv", source="demo")
    run = await value_customers(conn, on=end, reporting_currency=EUR)
    assert run.contract_method == "sbg", run.notes
    fitted = run.parameters["sbg"]
    planted = truth(world)["world"]["renewals"]
    for name in ("alpha", "beta"):
        error = fitted["standard_errors"][name]
        assert math.isfinite(fitted[name]) and math.isfinite(error) and error > 0, fitted
        assert abs(fitted[name] - planted[name]) < 2 * error, (name, fitted, planted)


async def test_a_fit_at_the_edge_of_its_range_is_stored(conn: Conn, database_url: str,
                                                        tmp_path: Path) -> None:
    """On this world and day a fit's standard errors are NaN; jsonb refused them before."""
    world = World.generate(5, date(2026, 5, 1), customers=60, machines=200, years=2)
    write_world(world, tmp_path)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as load:
        await sync_files(load, tmp_path, source="demo")
        await load_exchange_rates(load, tmp_path / "exchange_rates.csv", source="demo")
    run = await value_customers(conn, on=date(2025, 8, 1), reporting_currency="EUR")
    assert run.customers > 0
    assert await rows(conn, "SELECT count(*) FROM customer_values"
                            " WHERE valued_on = '2025-08-01'") == [(run.customers,)]
