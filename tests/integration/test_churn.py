"""Churn risk on a small demo world: end to end, stored with reasons, no leakage, rule fallback."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from analytics.backtest import backtest, truth_churn_dates
from analytics.churn import (
    MIN_CHURN_EVENTS,
    revenue_at_risk,
    revenue_at_risk_by_segment,
    score_customers,
    train,
)
from analytics.features import FEATURE_NAMES, churn_dates, data_span, features_at
from demo.world import World, truth
from demo.world import catalogue as cat
from tests.integration.conftest import rows
from tests.integration.worlds import demo_world_database, load_demo_world

END = date(2026, 5, 1)
T = date(2025, 11, 1)  # the leakage test's cut-off
Connection = psycopg.AsyncConnection[tuple[Any, ...]]


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(11, END, customers=60, machines=200, years=2)


@pytest.fixture(scope="module")
def world_db(template_db: str, world: World, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    """A database with the whole small world, shared by the module's tests (read-mostly)."""
    with demo_world_database(template_db, world, tmp_path_factory.mktemp("world")) as url:
        yield url


@pytest.fixture
async def wconn(world_db: str) -> AsyncIterator[Connection]:
    async with await psycopg.AsyncConnection.connect(world_db) as conn:
        yield conn
        await conn.execute("DELETE FROM churn_scores")
        await conn.commit()


async def test_scores_are_stored_with_reasons_and_the_rule_fallback(wconn: Connection,
                                                                    world: World) -> None:
    on = date(2026, 1, 1)
    churned = await churn_dates(wconn, on)
    start, _ = await data_span(wconn)
    await wconn.rollback()
    # A small world: too few churns since its history began to learn from (the customers
    # lost before it are in the ERP, but no training day saw them go).
    assert start is not None
    assert 0 < sum(1 for d in churned.values() if d > start) < MIN_CHURN_EVENTS
    scores = await score_customers(wconn, on=on)
    stored = await rows(wconn, "SELECT customer_id, probability, method, reasons, model_version,"
                               " annual_value, horizon_days FROM churn_scores"
                               " WHERE scored_on = %s", (on,))
    assert {s.method for s in scores} == {"rules"}
    assert len(stored) == len(scores) > 0
    by_id = {s.customer_id: s for s in scores}
    for customer_id, p, method, reasons, version, value, horizon in stored:
        s = by_id[customer_id]
        assert (p, method, version, value, horizon) == (
            pytest.approx(s.probability), "rules", "rules-v1", s.annual_value, 180)
        assert [r["factor"] for r in reasons] == [r.factor for r in s.reasons]
        assert all(r["effect"] > 0 and r["label"] for r in reasons)
    # The riskiest customers have reasons, in their own values.
    top = max(scores, key=lambda s: s.probability)
    assert top.reasons and top.reasons[0].value is not None
    # Customers on the books on the day: not the ones that churned before it.
    external = {s.external_id for s in scores}
    gone = {ext for ext, c in truth(world)["customers"].items()
            if c["churned"] and date.fromisoformat(c["churn_date"]) < on}
    assert gone and not external & gone
    # Revenue at risk: the segment sums are the customers' value x probability.
    segments = await revenue_at_risk_by_segment(wconn, segment="industry", since=on, until=on)
    expected = sum((s.revenue_at_risk or Decimal(0)) for s in scores)
    assert sum((r.revenue_at_risk or Decimal(0)) for r in segments) == pytest.approx(
        expected, abs=Decimal("0.01") * len(scores))
    assert sum(r.customers for r in segments) == len(scores)
    per_customer = await revenue_at_risk(wconn, on=on)
    assert per_customer == pytest.approx({s.customer_id: s.revenue_at_risk for s in scores},
                                         abs=Decimal("0.011"))


async def test_the_model_trains_on_the_history_and_explains(wconn: Connection) -> None:
    on = date(2026, 1, 1)
    model = await train(wconn, cutoff=on, min_churn_events=3)
    assert model.method_ == "model" and model.churn_events_ >= 3
    scores = await score_customers(wconn, on=on, model=model)
    assert {s.method for s in scores} == {"model"}
    assert all(0 <= s.probability <= 1 for s in scores)
    explained = [s for s in scores if s.reasons]
    assert explained
    for s in explained:
        effects = [r.effect for r in s.reasons]
        assert effects == sorted(effects, reverse=True) and effects[0] > 0
        assert all(r.factor in FEATURE_NAMES for r in s.reasons)
    stored = await rows(wconn, "SELECT DISTINCT method, model_version FROM churn_scores")
    assert stored == [("model", model.version_)]


async def test_backtest_runs_against_data_and_truth(wconn: Connection, world: World) -> None:
    report = await backtest(wconn, cutoff=date(2025, 6, 1),
                            truth=truth_churn_dates(truth(world)))
    assert report.method == "rules"
    assert report.scoring_days[0] == date(2025, 6, 1)
    assert report.truth is not None
    # The data's churns are the truth's: the same positives.
    assert report.data.positives == report.truth.positives > 0
    assert report.data.roc_auc is not None and 0.5 < report.data.roc_auc <= 1
    assert any("ROC AUC" in line for line in report.lines())


def _as_known_on(world: World, t: date) -> World:
    """The world's business records as the ERP showed them on day ``t``.

    Records dated after ``t`` are left out; an invoice paid after ``t`` is open; a contract
    shows the term running on ``t``: its end, value and tier then (a renewal takes effect on the
    new term), active if it had not ended by ``t``.
    """
    past = copy.copy(world)
    r = {entity: [dict(x) for x in records] for entity, records in world.records.items()}
    r["customers"] = [c for c in r["customers"] if c["customer_since"] <= t]
    customers = {c["external_id"] for c in r["customers"]}
    # A machine sold by t but commissioned later is known to the ERP already (its invoice).
    invoiced = {i["external_id"] for i in r["invoices"] if i["issued_on"] <= t}
    sold = {x.get("installed_base_external_id") for x in r["invoice_lines"]
            if x["invoice_external_id"] in invoiced}
    r["installed_base"] = [m for m in r["installed_base"] if m["customer_external_id"] in customers
                           and (m["commissioned_on"] <= t or m["external_id"] in sold)]
    machines = {m["external_id"] for m in r["installed_base"]}
    renewals: dict[str, list[dict[str, Any]]] = {}
    for x in r["contract_renewals"]:
        renewals.setdefault(x["contract_external_id"], []).append(x)
    contracts = []
    for c in r["service_contracts"]:
        if c["starts_on"] > t or c["customer_external_id"] not in customers or (
                c.get("installed_base_external_id") and c["installed_base_external_id"]
                not in machines):
            continue
        later = sorted((x for x in renewals.get(c["external_id"], [])
                        if x["previous_ends_on"] >= t), key=lambda x: x["previous_ends_on"])
        if later:
            # The row shows the tier after every renewal decided by t, as the ERP's row does
            # after each decision (the features step back over those taking effect after t):
            # only the decisions still to come are undone.
            undecided = [x for x in later if x["decided_on"] > t]
            tier = cat.TIER_ORDER.index(c["tier"])
            tier -= sum(x["outcome"] == "upgraded" for x in undecided)
            tier += sum(x["outcome"] == "downgraded" for x in undecided)
            c |= {"ends_on": later[0]["previous_ends_on"],
                  "annual_value": later[0]["previous_value"], "status": "active",
                  "tier": cat.TIER_ORDER[tier]}
        contracts.append(c)
    r["service_contracts"] = contracts
    kept = {c["external_id"] for c in contracts}
    r["contract_renewals"] = [x for x in r["contract_renewals"]
                              if x["contract_external_id"] in kept and x["decided_on"] <= t]
    r["invoices"] = [i for i in r["invoices"] if i["issued_on"] <= t
                     and i["customer_external_id"] in customers]
    for i in r["invoices"]:
        if i.get("paid_on") and i["paid_on"] > t:
            i["status"] = "open"
            del i["paid_on"]
    invoices = {i["external_id"] for i in r["invoices"]}
    r["invoice_lines"] = [x for x in r["invoice_lines"] if x["invoice_external_id"] in invoices
                          and x.get("contract_external_id", next(iter(kept), None)) in kept
                          | {None} and x.get("installed_base_external_id") in machines | {None}]
    r["orders"] = [o for o in r["orders"] if o["ordered_on"] <= t
                   and o["customer_external_id"] in customers]
    orders = {o["external_id"] for o in r["orders"]}
    r["order_lines"] = [x for x in r["order_lines"] if x["order_external_id"] in orders
                        and x.get("installed_base_external_id") in machines | {None}]
    r["survey_responses"] = [s for s in r["survey_responses"]
                             if s["answered_at"].date() <= t
                             and s["customer_external_id"] in customers]
    for entity in ("sites", "contacts"):
        r[entity] = [x for x in r[entity] if x["customer_external_id"] in customers]
    past.records = r
    return past


async def test_features_at_t_do_not_change_when_later_data_arrives(
        wconn: Connection, world: World, database_url: str, tmp_path: Path) -> None:
    full = await features_at(wconn, T)
    await load_demo_world(database_url, _as_known_on(world, T), tmp_path,
                telemetry_until=datetime.combine(T + timedelta(days=1), datetime.min.time(),
                                                 UTC))
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        known = await features_at(conn, T)
    assert known.external_ids == full.external_ids
    mismatched = {name for j, name in enumerate(FEATURE_NAMES)
                  if not np.allclose(known.values[:, j], full.values[:, j], equal_nan=True)}
    assert mismatched == set()
    assert known.annual_values == full.annual_values


async def _customer(conn: Connection, ext: str, *, key_account: bool = False,
                    deleted_at: datetime | None = None) -> int:
    cur = await conn.execute(
        "INSERT INTO customers (source, external_id, name, key_account, customer_since,"
        " deleted_at) VALUES ('t', %s, %s, %s, '2023-01-01', %s) RETURNING id",
        (ext, ext, key_account, deleted_at))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_customer_archived_after_t_is_on_the_books_at_t(database_url: str) -> None:
    # ERPs archive churned customers (the Odoo connector marks them deleted): the population and
    # the fleet at T must not depend on a deletion after T, or training learns from survivors.
    archived = datetime(2026, 1, 15, tzinfo=UTC)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        arch = await _customer(conn, "ARCH", deleted_at=archived)
        gone = await _customer(conn, "GONE", deleted_at=datetime(2025, 3, 1, tzinfo=UTC))
        for cid, ext in ((arch, "ARCH"), (gone, "GONE")):
            await conn.execute(
                "INSERT INTO service_contracts (source, external_id, customer_id, scope, tier,"
                " starts_on, ends_on, annual_value, currency, status) VALUES ('t', %s, %s,"
                " 'customer', 'standard', '2024-01-01', '2025-12-31', 1000, 'EUR', 'expired')",
                (f"K-{ext}", cid))
            await conn.execute(
                "INSERT INTO invoices (source, external_id, customer_id, issued_on, due_on,"
                " paid_on, currency, net_amount, status) VALUES ('t', %s, %s, '2025-01-05',"
                " '2025-02-04', '2025-02-01', 'EUR', 1000, 'paid')", (f"I-{ext}", cid))
        await conn.execute(
            "INSERT INTO installed_base (source, external_id, serial, model, customer_id,"
            " commissioned_on, deleted_at) VALUES ('t', 'M-1', 'S-1', 'X', %s, '2024-01-01', %s),"
            " ('t', 'M-2', 'S-2', 'X', %s, '2024-01-01', '2025-06-01')", (arch, archived, arch))
        await conn.commit()
        features = await features_at(conn, date(2025, 9, 1))
        churned = await churn_dates(conn, date(2026, 5, 1))
    # GONE was deleted before T: the data of T says nothing else, it stays out.
    assert features.external_ids == ["ARCH"]
    assert features.row(0)["machines"] == 1  # M-1 was there on T, M-2 was gone
    assert churned[arch] == date(2025, 12, 31)


async def _score(conn: Connection, customer: int, on: date, p: float, value: int) -> None:
    await conn.execute(
        "INSERT INTO churn_scores (customer_id, scored_on, horizon_days, probability, method,"
        " reasons, model_version, annual_value, currency)"
        " VALUES (%s, %s, 180, %s, 'rules', '[]', 'rules-v1', %s, 'EUR')",
        (customer, on, p, value))


async def test_revenue_at_risk_reads_only_the_latest_scoring_day(database_url: str) -> None:
    # LEFT churned after 1 Jan and was not scored on 1 Feb: its January score is not at risk
    # on 15 Feb any more.
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        stay = await _customer(conn, "STAY")
        left = await _customer(conn, "LEFT")
        await _score(conn, stay, date(2026, 1, 1), 0.5, 1000)
        await _score(conn, left, date(2026, 1, 1), 0.8, 2000)
        await _score(conn, stay, date(2026, 2, 1), 0.25, 1000)
        await conn.commit()
        assert await revenue_at_risk(conn, on=date(2026, 2, 15)) == {stay: Decimal("250.00")}
        assert await revenue_at_risk(conn, on=date(2026, 1, 31)) == {
            stay: Decimal("500.00"), left: Decimal("1600.00")}
        # Per month likewise: the month's last scoring day.
        month = await revenue_at_risk_by_segment(conn, segment="all", since=date(2026, 1, 1),
                                                 until=date(2026, 2, 28))
    assert [(r.month, r.customers, r.revenue_at_risk) for r in month] == [
        (date(2026, 1, 1), 2, Decimal("2100.00")), (date(2026, 2, 1), 1, Decimal("250.00"))]


async def test_revenue_at_risk_is_cut_by_the_kpi_segments(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        key = await _customer(conn, "KEY", key_account=True)
        other = await _customer(conn, "OTHER")
        await conn.execute(
            "INSERT INTO service_contracts (source, external_id, customer_id, scope, tier,"
            " starts_on, ends_on, annual_value, currency, status) VALUES ('t', 'K1', %s,"
            " 'customer', 'premium', '2025-01-01', '2026-12-31', 1000, 'EUR', 'active')", (key,))
        await conn.execute(
            "INSERT INTO installed_base (source, external_id, serial, model, customer_id,"
            " commissioned_on) VALUES ('t', 'M-1', 'S-1', 'MX', %s, '2024-01-01'),"
            " ('t', 'M-2', 'S-2', 'MY', %s, '2024-01-01')", (key, key))
        await conn.execute(
            "INSERT INTO segment_memberships (customer_id, kind, segment, assigned_on, inputs)"
            " VALUES (%s, 'value_tier', 'high', '2025-12-01', '{}')", (key,))
        on = date(2026, 1, 1)
        await _score(conn, key, on, 0.5, 1000)
        await _score(conn, other, on, 0.1, 3000)
        await conn.commit()

        async def cut(segment: str) -> dict[str, tuple[int, Decimal | None]]:
            got = await revenue_at_risk_by_segment(conn, segment=segment, since=on, until=on)
            return {r.segment: (r.customers, r.revenue_at_risk) for r in got}

        # The KPIs' labels (customer_segments, migration 007) and cuts, not our own.
        assert await cut("key_account") == {"true": (1, Decimal("500.00")),
                                            "false": (1, Decimal("300.00"))}
        assert await cut("tier") == {"premium": (1, Decimal("500.00")),
                                     "none": (1, Decimal("300.00"))}
        # A customer with two models is in both model segments; one without machines in 'none'.
        assert await cut("model") == {"MX": (1, Decimal("500.00")), "MY": (1, Decimal("500.00")),
                                      "none": (1, Decimal("300.00"))}
        assert await cut("value_tier") == {"high": (1, Decimal("500.00")),
                                           "unassigned": (1, Decimal("300.00"))}


async def test_maintenance_adherence_counts_only_machines_with_a_service_plan(
        conn: Connection) -> None:
    """Two machines, 2,000 h each in the last 180 days; the PX model is serviced every 1,000 h
    (2 due, 1 done), the LATHE has no plan (3 services): adherence is 1 / 2 = 0.5, not 4 / 2."""
    t = date(2026, 3, 1)
    await conn.execute("""
        INSERT INTO customers (source, external_id, name) VALUES ('t', 'C', 'C');
        INSERT INTO machine_models (source, external_id, model, service_interval_hours)
            VALUES ('t', 'M', 'PX', 1000);
        INSERT INTO service_contracts (source, external_id, customer_id, scope, starts_on,
                                       ends_on, annual_value, currency, status)
            SELECT 't', 'SC', id, 'customer', '2025-06-01', '2026-05-31', 1000, 'EUR', 'active'
            FROM customers;
        INSERT INTO installed_base (source, external_id, serial, model, customer_id)
            SELECT 't', 'IB' || n, 'SN' || n, CASE n WHEN 1 THEN 'PX' ELSE 'LATHE' END, id
            FROM customers, generate_series(1, 2) AS n;
        INSERT INTO machines (tenant, serial, protocol)
            VALUES ('t', 'SN1', 'json'), ('t', 'SN2', 'json');
        INSERT INTO machine_days (machine_id, day, operating_hours, services)
            SELECT m.id, DATE '2026-01-01' + d, 2000.0 / 50,
                   CASE WHEN m.serial = 'SN1' AND d = 10 THEN 1
                        WHEN m.serial = 'SN2' AND d IN (5, 15, 25) THEN 1 ELSE 0 END
            FROM machines m, generate_series(0, 49) AS d;
        -- The services as the machines report them (services_done reads the events, not
        -- the rollup's count).
        INSERT INTO machine_events (time, machine_id, kind, event_key, payload)
            SELECT ((DATE '2026-01-01' + d) + time '10:00') AT TIME ZONE 'UTC', m.id,
                   'maintenance', 'service-' || d, '{}'
            FROM machines m, generate_series(0, 49) AS d
            WHERE (m.serial = 'SN1' AND d = 10) OR (m.serial = 'SN2' AND d IN (5, 15, 25))""")
    await conn.commit()
    features = await features_at(conn, t)
    adherence = features.values[0][FEATURE_NAMES.index("maint_adherence_180")]
    assert adherence == pytest.approx(0.5)
