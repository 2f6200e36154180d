"""The demo world: deterministic, valid, consistent, and the planted churn is in the data.

The signal tests compute behaviour from the generated records and machine hours (what the
platform will see), and use the truth only to say who is in which group.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from analytics.customer_value import fit_pooled_sbg
from demo.world import World, write_world
from demo.world.files import MACHINES, RATES, TRUTH
from demo.world.files import truth as make_truth
from demo.world.generator import RENEWAL_ALPHA, RENEWAL_BETA, MachinePlan
from erp_connectors.files import ENTITY_MODELS, read_rows
from tests.renewal_cohorts import renewal_cohorts

END = date(2026, 5, 1)


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(7, END)


@pytest.fixture(scope="module")
def truth(world: World) -> dict[str, Any]:
    customers: dict[str, Any] = make_truth(world)["customers"]
    return customers


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_same_seed_same_files_and_another_seed_other_files(tmp_path: Path) -> None:
    small = {"customers": 40, "machines": 150, "years": 2}
    write_world(World.generate(11, END, **small), tmp_path / "a")
    write_world(World.generate(11, END, **small), tmp_path / "b")
    write_world(World.generate(12, END, **small), tmp_path / "c")
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert set(a) == set(c)
    assert all(a[name] != c[name] for name in a if name != "machine_models.csv")


def test_size_is_as_asked(world: World, truth: dict[str, Any]) -> None:
    # 300 customers on the books when the window opens; the former customers, lost at a
    # renewal before it, come on top (the cohorts of contract relationships need them).
    ids = [c["external_id"] for c in world.records["customers"]]
    formers = {ext for ext, t in truth.items()
               if t["churned"] and date.fromisoformat(t["churn_date"]) < world.window_start}
    assert len(ids) - len(formers) == 300
    assert ids[:300] == [f"C-{n:04d}" for n in range(1, 301)]
    assert formers == set(ids[300:])
    # truth.json says so itself, and who holds a renewal propensity: those on the books.
    assert {ext for ext, t in truth.items() if t["former"]} == formers
    assert {ext for ext, t in truth.items() if t["churn_probability"] is None} == formers
    assert all(0 < t["churn_probability"] < 1 for t in truth.values() if not t["former"])
    assert len(world.records["installed_base"]) == 1500
    assert len(world.machines) == 1500
    assert world.window_start.weekday() == 0
    assert 3 * 365 - 7 < (END - world.window_start).days <= 3 * 365


def test_every_record_is_valid_for_its_model(world: World) -> None:
    for entity, model in ENTITY_MODELS.items():
        records = world.records[entity]
        assert records, entity
        for record in records:
            model.model_validate(record)


def test_written_files_read_back_as_the_same_valid_records(tmp_path: Path) -> None:
    small = World.generate(3, END, customers=30, machines=90, years=1)
    write_world(small, tmp_path)
    for entity, model in ENTITY_MODELS.items():
        with (tmp_path / f"{entity}.csv").open("rb") as binary:
            rows = list(read_rows(binary, entity=entity, name=f"{entity}.csv"))
        assert [r.reject for r in rows if r.reject] == []
        parsed = [model.model_validate(r.record) for r in rows]
        expected = [model.model_validate(r) for r in small.records[entity]]
        assert parsed == expected, entity
    rates = (tmp_path / RATES).read_text().splitlines()
    assert rates[0] == "currency,valid_from,rate"
    assert {line.split(",")[0] for line in rates[1:]} == {"EUR", "CHF", "USD", "PLN", "CNY"}
    truth = orjson.loads((tmp_path / TRUTH).read_bytes())
    assert truth["world"]["seed"] == 3
    assert set(truth["customers"]) == {c["external_id"] for c in small.records["customers"]}
    machines = orjson.loads((tmp_path / MACHINES).read_bytes())
    assert [m["serial"] for m in machines] == [r["serial"] for r in
                                               small.records["installed_base"]]


def _ids(world: World, entity: str) -> dict[str, dict[str, Any]]:
    return {r["external_id"]: r for r in world.records[entity]}


def test_every_parent_exists_and_belongs_to_the_same_customer(world: World) -> None:
    customers, sites = _ids(world, "customers"), _ids(world, "sites")
    contacts, machines = _ids(world, "contacts"), _ids(world, "installed_base")
    contracts, invoices = _ids(world, "service_contracts"), _ids(world, "invoices")
    orders = _ids(world, "orders")
    for entity in ENTITY_MODELS:
        ids = [r["external_id"] for r in world.records[entity]]
        assert len(ids) == len(set(ids)), f"{entity}: external ids repeat"
    serials = [m["serial"] for m in machines.values()]
    assert len(serials) == len(set(serials))
    models = {r["model"] for r in world.records["machine_models"]}
    for site in sites.values():
        assert site["customer_external_id"] in customers
    for owned in (*contacts.values(), *machines.values()):
        assert sites[owned["site_external_id"]]["customer_external_id"] == (
            owned["customer_external_id"])
    assert {m["model"] for m in machines.values()} <= models
    for contract in contracts.values():
        assert contract["customer_external_id"] in customers
        if contract["scope"] == "machine":
            assert machines[contract["installed_base_external_id"]]["customer_external_id"] == (
                contract["customer_external_id"])
    for renewal in world.records["contract_renewals"]:
        assert renewal["contract_external_id"] in contracts
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for line in world.records["invoice_lines"]:
        invoice = invoices[line["invoice_external_id"]]
        totals[invoice["external_id"]] += line["net_amount"]
        for key, parents in (("installed_base_external_id", machines),
                             ("contract_external_id", contracts)):
            if key in line:
                assert parents[line[key]]["customer_external_id"] == (
                    invoice["customer_external_id"])
    assert all(totals[i] == inv["net_amount"] for i, inv in invoices.items())
    order_totals: dict[str, Decimal] = defaultdict(Decimal)
    for line in world.records["order_lines"]:
        order = orders[line["order_external_id"]]
        order_totals[order["external_id"]] += line["net_amount"]
        assert machines[line["installed_base_external_id"]]["customer_external_id"] == (
            order["customer_external_id"])
    assert all(order_totals[i] == o["net_amount"] for i, o in orders.items())
    for answer in world.records["survey_responses"]:
        assert contacts[answer["contact_external_id"]]["customer_external_id"] == (
            answer["customer_external_id"])


def _lapsed_customers(world: World) -> dict[str, date]:
    """Customers whose every contract ended before the end, with the last end: from data."""
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for contract in world.records["service_contracts"]:
        by_customer[contract["customer_external_id"]].append(contract)
    return {ext: max(c["ends_on"] for c in contracts)
            for ext, contracts in by_customer.items()
            if all(c["status"] == "expired" and c["ends_on"] < END for c in contracts)}


def test_churn_in_the_contracts_is_the_truth(world: World, truth: dict[str, Any]) -> None:
    lapsed = _lapsed_customers(world)
    churned = {ext: date.fromisoformat(t["churn_date"]) for ext, t in truth.items()
               if t["churned"]}
    assert lapsed == churned
    renewals = world.records["contract_renewals"]
    lapses = {r["contract_external_id"]: r["previous_ends_on"] for r in renewals
              if r["outcome"] == "lapsed"}
    for contract in world.records["service_contracts"]:
        ext = contract["customer_external_id"]
        if ext in churned:
            assert lapses[contract["external_id"]] == churned[ext]


def _first_contracts(world: World) -> dict[str, str]:
    """Each customer's first contract, the one its relationship starts with: from data."""
    first: dict[str, str] = {}
    for c in sorted(world.records["service_contracts"],
                    key=lambda c: (c["starts_on"], c["external_id"])):
        first.setdefault(c["customer_external_id"], c["external_id"])
    return first


def test_the_window_s_lapses_follow_the_planted_propensities(world: World,
                                                             truth: dict[str, Any]) -> None:
    # Every renewal decision in the window (of each relationship's first contract, which runs
    # until the customer lapses) is a draw with the customer's planted chance: the lapses
    # number the chances summed over the decisions, within three standard deviations.
    owner = {v: k for k, v in _first_contracts(world).items()}
    decisions = [(owner[r["contract_external_id"]], r["outcome"] == "lapsed")
                 for r in world.records["contract_renewals"]
                 if r["contract_external_id"] in owner
                 and r["previous_ends_on"] >= world.window_start]
    chance = [world.plans[ext].churn_probability for ext, _ in decisions]
    assert all(p is not None and 0 < p < 1 for p in chance)
    p = np.array(chance, dtype=float)
    lapses = sum(lapsed for _, lapsed in decisions)
    assert lapses == sum(1 for t in truth.values() if t["churned"] and date.fromisoformat(
        t["churn_date"]) >= world.window_start)
    assert abs(lapses - p.sum()) < 3 * math.sqrt(float(np.sum(p * (1 - p)))), (lapses, p.sum())


def test_former_customers_left_only_their_contracts(world: World,
                                                    truth: dict[str, Any]) -> None:
    formers = {ext for ext, t in truth.items()
               if t["churned"] and date.fromisoformat(t["churn_date"]) < world.window_start}
    assert formers
    for entity in ("installed_base", "invoices", "orders", "survey_responses"):
        assert not {r["customer_external_id"] for r in world.records[entity]} & formers, entity
    contracts = [c for c in world.records["service_contracts"]
                 if c["customer_external_id"] in formers]
    assert {c["customer_external_id"] for c in contracts} == formers
    assert all(c["scope"] == "customer" and c["status"] == "expired"
               and c["ends_on"] < world.window_start for c in contracts)


def test_the_renewal_cohorts_recover_the_planted_beta() -> None:
    # On a world of 2,000 relationships followed for up to six years, the shifted-beta-geometric
    # fitted to the cohorts (as the valuation builds them, here from the records) finds the
    # beta distribution the renewals were drawn from, within two of its standard errors, and
    # each standard error under a fifth of its estimate.
    big = World.generate(7, END, customers=2000, machines=2000, years=3)
    cohorts = renewal_cohorts(big.records, END)
    assert len(cohorts) >= 5 and sum(c[0] for c in cohorts) > 2000
    fit = fit_pooled_sbg(cohorts)
    for name, estimate, planted in (("alpha", fit.alpha_, RENEWAL_ALPHA),
                                    ("beta", fit.beta_, RENEWAL_BETA)):
        se = fit.standard_errors_[name]
        assert abs(estimate - planted) < 2 * se, (name, estimate, se, planted)
        assert se < estimate / 5, (name, estimate, se)


def test_false_alarms_and_silent_churners_exist(world: World, truth: dict[str, Any]) -> None:
    false_alarms = [t for t in truth.values() if t["false_alarm"]]
    silent = [t for t in truth.values() if t["silent_churn"]]
    warned = [t for t in truth.values() if t["churned"] and t["causes"]]
    assert len(false_alarms) >= 10
    assert all(not t["churned"] and t["causes"] for t in false_alarms)
    assert silent
    assert all(t["churned"] and not t["causes"] and t["warning_start"] is None for t in silent)
    assert all(90 <= t["lead_days"] <= 365 or t["lead_days"] >= 60 for t in warned)
    assert statistics.median(t["lead_days"] for t in warned) >= 150


def _weekly(world: World, m: MachinePlan) -> dict[date, float]:
    return {world.window_start + timedelta(weeks=m.first_week + k): h
            for k, h in enumerate(m.weekly_hours)}


def _hours(world: World, machines: list[MachinePlan], start: date, end: date) -> float:
    return sum(h for m in machines for monday, h in _weekly(world, m).items()
               if start <= monday < end)


def _group(truth: dict[str, Any], cause: str) -> list[tuple[str, date, date]]:
    return [(ext, date.fromisoformat(t["warning_start"]), date.fromisoformat(t["churn_date"]))
            for ext, t in truth.items() if t["churned"] and cause in t["causes"]]


def _stayers(truth: dict[str, Any]) -> list[str]:
    return [ext for ext, t in truth.items() if not t["churned"] and not t["false_alarm"]]


def _machines(world: World) -> dict[str, list[MachinePlan]]:
    out: dict[str, list[MachinePlan]] = defaultdict(list)
    for m in world.machines:
        out[m.customer_external_id].append(m)
    return out


def test_utilisation_falls_before_churn(world: World, truth: dict[str, Any]) -> None:
    machines = _machines(world)

    def change(ext: str, before: date, late: date) -> float:
        early = _hours(world, machines[ext], before - timedelta(days=84), before)
        recent = _hours(world, machines[ext], late - timedelta(days=84), late)
        return recent / early - 1 if early else 0.0

    churners = [change(ext, start, churn) for ext, start, churn in _group(
        truth, "utilisation_decline") if (start - world.window_start).days > 84]
    anchor = END - timedelta(days=200)
    stayers = [change(ext, anchor - timedelta(days=200), anchor) for ext in _stayers(truth)]
    assert len(churners) >= 5
    assert statistics.median(churners) < -0.25
    assert abs(statistics.median(stayers)) < 0.1


def _eur(world: World, amount: Decimal, currency: str, day: date) -> float:
    return float(amount) * world.rate(currency, day)


def test_oem_parts_per_operating_hour_drop_for_parts_elsewhere(world: World,
                                                               truth: dict[str, Any]) -> None:
    machines = _machines(world)
    spend: dict[str, list[tuple[date, float]]] = defaultdict(list)
    for order in world.records["orders"]:
        if order["kind"] == "spare_parts" and order["status"] != "cancelled":
            spend[order["customer_external_id"]].append((order["ordered_on"], _eur(
                world, order["net_amount"], order["currency"], order["ordered_on"])))

    def per_hour(ext: str, start: date, end: date) -> float | None:
        hours = _hours(world, machines[ext], start, end)
        value = sum(v for day, v in spend[ext] if start <= day < end)
        return value / hours if hours > 500 else None

    churners = [per_hour(ext, churn - timedelta(days=180), churn)
                for ext, _, churn in _group(truth, "parts_elsewhere")]
    stayers = [per_hour(ext, END - timedelta(days=180), END) for ext in _stayers(truth)]
    low = [v for v in churners if v is not None]
    normal = [v for v in stayers if v is not None]
    assert len(low) >= 5
    assert statistics.median(low) < 0.7 * statistics.median(normal)


def test_payments_slip_before_churn_for_late_payers(world: World, truth: dict[str, Any]) -> None:
    delays: dict[str, list[tuple[date, int]]] = defaultdict(list)
    for invoice in world.records["invoices"]:
        if "paid_on" in invoice:
            delays[invoice["customer_external_id"]].append(
                (invoice["issued_on"], (invoice["paid_on"] - invoice["due_on"]).days))
    shifts = []
    for ext, start, churn in _group(truth, "late_payments"):
        before = [d for day, d in delays[ext] if day < start]
        late = [d for day, d in delays[ext] if churn - timedelta(days=150) <= day < churn]
        if before and late:
            shifts.append(statistics.mean(late) - statistics.mean(before))
    assert len(shifts) >= 4
    assert statistics.median(shifts) > 20


def test_detractor_answers_before_churn(world: World, truth: dict[str, Any]) -> None:
    scores: dict[str, list[tuple[date, int]]] = defaultdict(list)
    for answer in world.records["survey_responses"]:
        scores[answer["customer_external_id"]].append(
            (answer["answered_at"].date(), answer["score"]))
    late = [s for ext, start, churn in _group(truth, "detractor_nps")
            for day, s in scores[ext] if start + (churn - start) / 3 <= day <= churn]
    everyone = [s for ext in _stayers(truth) for _, s in scores[ext]]
    assert len(late) >= 5
    assert statistics.mean(late) < statistics.mean(everyone) - 1.5


def test_services_are_skipped_before_churn(world: World, truth: dict[str, Any]) -> None:
    machines = _machines(world)

    def services_per_1000h(ext: str, start: date, end: date) -> float | None:
        hours = _hours(world, machines[ext], start, end)
        done = sum(1 for m in machines[ext] for when, _, _ in m.services
                   if start <= when.date() < end)
        return 1000 * done / hours if hours > 1000 else None

    skipped = [services_per_1000h(ext, churn - timedelta(days=180), churn)
               for ext, _, churn in _group(truth, "skipped_maintenance")]
    normal = [services_per_1000h(ext, END - timedelta(days=180), END) for ext in _stayers(truth)]
    low = [v for v in skipped if v is not None]
    assert len(low) >= 4
    assert statistics.median(low) < 0.6 * statistics.median([v for v in normal if v is not None])
