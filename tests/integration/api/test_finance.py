"""Finance routes: every figure equal to analytics' own functions and to a computation of the
test's own (plain SQL over the rows, Python sums and rates), paging and export, roles, the
portal's reach, and refusals of bad parameters. Writes (pay-per-use terms) in a database of
their own."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openpyxl
import psycopg
import pytest

from analytics import billing, churn, customer_value, receivables, renewals
from core.paging import PageRequest
from tests.integration.api.conftest import REPORTING, WorldApi
from tests.integration.api_server import ApiServer, problem, running_api

T = TypeVar("T")
CENT = Decimal("0.01")


def _run(url: str, read: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
    """What an analytics function answers, on the owner's connection (staff see everything)."""
    async def go() -> T:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await read(conn)
    return asyncio.run(go())


def _rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def _rates(url: str, on: date) -> dict[str, Decimal]:
    """Each currency's latest rate on or before ``on`` (the reporting currency: 1)."""
    rates = {REPORTING: Decimal(1)}
    for currency, valid_from, rate in _rows(url, "SELECT currency, valid_from, rate"
                                                 " FROM exchange_rates ORDER BY valid_from"):
        if valid_from <= on:
            rates[currency.strip()] = rate
    return rates


def _rate_on(url: str) -> Callable[[str, date], Decimal]:
    history = _rows(url, "SELECT currency, valid_from, rate FROM exchange_rates"
                         " ORDER BY valid_from")

    def rate(currency: str, day: date) -> Decimal:
        if currency == REPORTING:
            return Decimal(1)
        return [r for c, v, r in history if c.strip() == currency and v <= day][-1]
    return rate


def _all_pages(client: httpx.Client, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        answer = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


# -- renewals ----------------------------------------------------------------------------------


def _pipeline_by_hand(url: str, on: date, within: int) -> dict[int, dict[str, Any]]:
    """In force on ``on``, notice date or term end within ``within`` days; value, probability
    and revenue at risk computed here (no renewal of the world decides a term still running)."""
    assert _rows(url, "SELECT count(*) FROM contract_renewals WHERE previous_ends_on >= %s",
                 (on,)) == [(0,)]
    rates = _rates(url, on)
    day = _rows(url, "SELECT max(scored_on) FROM churn_scores WHERE scored_on <= %s", (on,))[0][0]
    scores = dict(_rows(url, "SELECT customer_id, probability FROM churn_scores"
                             " WHERE scored_on = %s", (day,)))
    out = {}
    for cid, customer, ends, notice, value, currency in _rows(
            url, "SELECT id, customer_id, ends_on, notice_period_days, annual_value, currency"
                 " FROM service_contracts WHERE deleted_at IS NULL AND status <> 'draft'"
                 " AND starts_on <= %(on)s AND ends_on >= %(on)s", {"on": on}):
        notice_date = ends - timedelta(days=notice)
        if not (on <= notice_date <= on + timedelta(days=within)
                or ends <= on + timedelta(days=within)):
            continue
        value_rc = (value * rates[currency.strip()]).quantize(CENT)
        p = scores.get(customer)
        out[cid] = {"customer_id": customer, "currency": currency.strip(),
                    "value_reporting": value_rc, "probability": p,
                    "revenue_at_risk": None if p is None else value_rc * Decimal(repr(p))}
    return out


def test_renewals_pipeline_equals_analytics_and_a_computation_by_hand(world_api: WorldApi
                                                                      ) -> None:
    url, today = world_api.database_url, world_api.today
    with world_api.api.client("finance") as client:
        items = _all_pages(client, "/finance/renewals", {"within_days": 120, "limit": 1000})
    where = renewals.PipelineFilter(on=today, reporting_currency=REPORTING, within_days=120)
    mine = _run(url, lambda c: renewals.pipeline(c, PageRequest(limit=5000, sort="notice_date"),
                                                 where=where))
    assert [i["contract_id"] for i in items] == [r["id"] for r in mine.items]
    assert [_money(i["revenue_at_risk"]) for i in items] == [r["at_risk"] for r in mine.items]
    by_hand = _pipeline_by_hand(url, today, 120)
    assert {i["contract_id"] for i in items} == set(by_hand)
    assert len({i["currency"] for i in items}) >= 3, "contracts in several currencies"
    for item in items:
        expected = by_hand[item["contract_id"]]
        assert _money(item["value_reporting"]) == expected["value_reporting"], item
        assert item["churn_probability"] == expected["probability"]
        assert abs(_money(item["revenue_at_risk"]) - expected["revenue_at_risk"]) <= CENT
        notice = date.fromisoformat(item["notice_date"])
        assert item["days_to_notice"] == (notice - today).days
    assert [i["notice_date"] for i in items] == sorted(i["notice_date"] for i in items)
    assert any(i["reasons"] for i in items)


def test_a_customers_contracts_add_up_to_its_revenue_at_risk(world_api: WorldApi) -> None:
    """Every contract in force (term end within ten years) summed per customer: the customer's
    revenue at risk of analytics.churn.revenue_at_risk, the same number."""
    url, today = world_api.database_url, world_api.today
    with world_api.api.client("viewer") as client:
        items = _all_pages(client, "/finance/renewals",
                           {"within_days": 3650, "due": "end", "limit": 1000})
    per_customer: dict[int, Decimal] = defaultdict(Decimal)
    contracts: dict[int, int] = defaultdict(int)
    for item in items:
        per_customer[item["customer_id"]] += _money(item["revenue_at_risk"]) or 0
        contracts[item["customer_id"]] += 1
    at_risk = _run(url, lambda c: churn.revenue_at_risk(c, on=today))
    assert len(per_customer) > 20
    for customer, total in per_customer.items():
        # Each contract's share is rounded to the cent, the customer's once.
        assert abs(total - (at_risk[customer] or 0)) <= CENT * contracts[customer], customer


def test_renewals_filters_sorts_pages_and_export(world_api: WorldApi) -> None:
    with world_api.api.client("finance") as client:
        everything = _all_pages(client, "/finance/renewals", {"within_days": 365,
                                                               "limit": 1000})
        paged = _all_pages(client, "/finance/renewals", {"within_days": 365, "limit": 7,
                                                         "sort": "-revenue_at_risk"})
        assert sorted(i["contract_id"] for i in paged) == sorted(
            i["contract_id"] for i in everything)
        keys = [(_money(i["revenue_at_risk"]) or Decimal(-1), i["contract_id"]) for i in paged]
        assert keys == sorted(keys, reverse=True)
        auto = client.get("/finance/renewals", params={"within_days": 365, "limit": 1000,
                                                       "auto_renew": "true"}).json()["items"]
        assert {i["contract_id"] for i in auto} == {
            i["contract_id"] for i in everything if i["auto_renew"]}
        risky = client.get("/finance/renewals", params={
            "within_days": 365, "limit": 1000, "min_probability": 0.1}).json()["items"]
        assert {i["contract_id"] for i in risky} == {
            i["contract_id"] for i in everything
            if i["churn_probability"] is not None and i["churn_probability"] >= 0.1}
        notice = client.get("/finance/renewals", params={
            "within_days": 60, "due": "notice", "limit": 1000}).json()["items"]
        assert all(0 <= i["days_to_notice"] <= 60 for i in notice)
        country = everything[0]["customer_id"]
        code = _rows(world_api.database_url, "SELECT country FROM customers WHERE id = %s",
                     (country,))[0][0]
        in_country = client.get("/finance/renewals", params={
            "within_days": 365, "limit": 1000, "dimension": "country",
            "segment": code}).json()["items"]
        ids = {r[0] for r in _rows(world_api.database_url,
                                   "SELECT id FROM customers WHERE country = %s", (code,))}
        assert in_country and {i["customer_id"] for i in in_country} <= ids
        assert len(in_country) == sum(1 for i in everything if i["customer_id"] in ids)
        exported = client.get("/finance/renewals", params={"within_days": 365, "format": "csv",
                                                           "sort": "-value"})
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert len(rows) == len(everything)
    assert {int(r["contract_id"]) for r in rows} == {i["contract_id"] for i in everything}
    values = [Decimal(r["value_reporting"]) for r in rows]
    assert values == sorted(values, reverse=True)


def test_revenue_at_risk_by_month_and_by_segment(world_api: WorldApi) -> None:
    url, today = world_api.database_url, world_api.today
    with world_api.api.client("finance") as client:
        items = _all_pages(client, "/finance/renewals", {"within_days": 365, "due": "end",
                                                         "limit": 1000})
        by_month = client.get("/finance/revenue-at-risk", params={
            "by": "month", "due": "end", "within_days": 365}).json()
        since = today.replace(day=1) - timedelta(days=60)
        by_segment = client.get("/finance/revenue-at-risk", params={
            "by": "segment", "dimension": "size_class", "since": since.isoformat(),
            "until": today.isoformat()}).json()
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for item in items:
        expected[item["ends_on"][:7] + "-01"] += _money(item["revenue_at_risk"]) or 0
    assert {m["month"]: _money(m["revenue_at_risk"]) for m in by_month["months"]} == expected
    assert sum(m["contracts"] for m in by_month["months"]) == len(items)
    mine = _run(url, lambda c: churn.revenue_at_risk_by_segment(
        c, segment="size_class", since=since, until=today))
    assert [(s["month"], s["segment"], _money(s["revenue_at_risk"]))
            for s in by_segment["segments"]] == [
        (r.month.isoformat(), r.segment, r.revenue_at_risk) for r in mine]
    # This month's: the scores of today, summed per size class here.
    sizes = dict(_rows(url, "SELECT id, coalesce(size_class, 'unknown') FROM customers"))
    at_risk = _run(url, lambda c: churn.revenue_at_risk(c, on=today))
    per_size: dict[str, Decimal] = defaultdict(Decimal)
    for customer, value in at_risk.items():
        per_size[sizes[customer]] += value or 0
    this_month = {s["segment"]: _money(s["revenue_at_risk"]) for s in by_segment["segments"]
                  if s["month"] == today.replace(day=1).isoformat()}
    assert this_month.keys() == per_size.keys()
    for size, value in per_size.items():
        assert abs(this_month[size] - value) <= CENT * len(at_risk), size


# -- receivables -------------------------------------------------------------------------------


def _receivables_by_hand(url: str, on: date) -> dict[int, dict[str, Any]]:
    rate = _rate_on(url)
    out: dict[int, dict[str, Any]] = defaultdict(lambda: {
        "open": Decimal(0), "overdue": Decimal(0), "open_n": 0, "overdue_n": 0,
        "oldest": None, "revenue": Decimal(0)})
    for customer, issued, due, amount, currency, state in _rows(
            url, "SELECT customer_id, issued_on, due_on, net_amount, currency, status"
                 " FROM invoices WHERE deleted_at IS NULL AND issued_on <= %s", (on,)):
        value = amount * rate(currency.strip(), issued)
        row = out[customer]
        if state == "open":
            row["open"] += value
            row["open_n"] += 1
            if due is not None and due < on:
                row["overdue"] += value
                row["overdue_n"] += 1
                row["oldest"] = max(row["oldest"] or 0, (on - due).days)
        if state not in ("draft", "cancelled") and issued > on - timedelta(days=90):
            row["revenue"] += value
    return {c: r for c, r in out.items() if r["open_n"] or r["revenue"]}


def test_receivables_equal_analytics_and_a_computation_by_hand(world_api: WorldApi) -> None:
    url, today = world_api.database_url, world_api.today
    with world_api.api.client("finance") as client:
        items = _all_pages(client, "/finance/receivables", {"limit": 25})
        overdue = client.get("/finance/receivables", params={"overdue_only": "true",
                                                             "limit": 1000}).json()["items"]
    where = receivables.ReceivablesFilter(on=today, reporting_currency=REPORTING)
    mine = _run(url, lambda c: receivables.per_customer(
        c, PageRequest(limit=5000, sort="overdue_amount", descending=True), where=where))
    assert [i["customer_id"] for i in items] == [r["customer_id"] for r in mine.items]
    by_hand = _receivables_by_hand(url, today)
    assert {i["customer_id"] for i in items} == set(by_hand)
    assert any(i["overdue_invoices"] for i in items)
    for item in items:
        expected = by_hand[item["customer_id"]]
        assert _money(item["open_amount"]) == expected["open"].quantize(CENT)
        assert _money(item["overdue_amount"]) == expected["overdue"].quantize(CENT)
        assert item["overdue_invoices"] == expected["overdue_n"]
        assert item["oldest_overdue_days"] == expected["oldest"]
        assert _money(item["revenue_90d"]) == expected["revenue"].quantize(CENT)
        dso = (None if not expected["revenue"] else
               (expected["open"] / expected["revenue"] * 90).quantize(Decimal("0.1")))
        assert _money(item["dso_days"]) == dso, item
    assert {i["customer_id"] for i in overdue} == {
        c for c, r in by_hand.items() if r["overdue_n"]}


def test_a_portal_user_sees_its_own_receivables_and_invoices_only(world_api: WorldApi) -> None:
    url = world_api.database_url
    mine, other = (r[0] for r in _rows(
        url, "SELECT customer_id FROM invoices WHERE status = 'open' GROUP BY customer_id"
             " ORDER BY count(*) DESC, customer_id LIMIT 2"))
    with world_api.api.client("customer", customer_id=mine) as portal:
        rows = portal.get("/finance/receivables", params={"limit": 1000}).json()["items"]
        assert [r["customer_id"] for r in rows] == [mine]
        invoices = portal.get(f"/finance/receivables/{mine}/invoices")
        assert invoices.status_code == 200
        expected = _rows(url, "SELECT id FROM invoices WHERE customer_id = %s AND status ="
                              " 'open' AND deleted_at IS NULL ORDER BY due_on, id", (mine,))
        assert [i["id"] for i in invoices.json()] == [r[0] for r in expected]
        assert "no customer" in problem(portal.get(f"/finance/receivables/{other}/invoices"),
                                        404)["detail"]
        assert portal.get("/finance/receivables",
                          params={"customer_id": other}).json()["items"] == []
        for path in ("/finance/renewals", "/finance/clv", "/finance/unbilled",
                     "/finance/revenue-at-risk", "/finance/usage-billing"):
            problem(portal.get(path), 403)
    with world_api.api.client("finance") as client:
        assert client.get(f"/finance/receivables/{other}/invoices").status_code == 200
        problem(client.get("/finance/receivables/999999/invoices"), 404)


# -- CLV ---------------------------------------------------------------------------------------


def test_clv_per_customer_and_segment(world_api: WorldApi) -> None:
    url, today = world_api.database_url, world_api.today
    with world_api.api.client("viewer") as client:
        items = _all_pages(client, "/finance/clv", {"limit": 30})
        by_country = client.get("/finance/clv", params={"by": "segment",
                                                        "dimension": "country"}).json()
    stored = dict(_rows(
        url, "SELECT customer_id, total_clv FROM customer_values WHERE valued_on ="
             " (SELECT max(valued_on) FROM customer_values WHERE valued_on <= %s)", (today,)))
    assert len(items) == len(stored) > 50
    assert {i["customer_id"]: _money(i["total_clv"]) for i in items} == stored
    totals = [_money(i["total_clv"]) for i in items]
    assert totals == sorted(totals, reverse=True)
    mine = _run(url, lambda c: customer_value.values_by_segment(
        c, on=today, reporting_currency=REPORTING, dimension="country"))
    assert [(s["segment"], _money(s["total_clv"])) for s in by_country["segments"]] == [
        (v.segment, v.total_clv) for v in mine]
    countries = dict(_rows(url, "SELECT id, coalesce(country, 'unknown') FROM customers"))
    per_country: dict[str, list[Decimal]] = defaultdict(list)
    for customer, value in stored.items():
        per_country[countries[customer].strip()].append(value)
    for segment in by_country["segments"]:
        values = sorted(per_country[segment["segment"]])
        assert segment["customers"] == len(values)
        assert _money(segment["total_clv"]) == sum(values)
        assert _money(segment["median_clv"]) == values[(len(values) - 1) // 2]


# -- unbilled work -----------------------------------------------------------------------------


def _unbilled_by_hand(url: str, on: date, older: int, window: int) -> set[str]:
    """Work from a year back, older than ``older`` days, with no line of its kind on its
    machine issued within ``window`` days of it: matched here in Python."""
    lines: dict[tuple[int, str], list[date]] = defaultdict(list)
    for ib, kind, issued in _rows(
            url, "SELECT l.installed_base_id, l.kind, i.issued_on FROM invoice_lines l JOIN"
                 " invoices i ON i.id = l.invoice_id WHERE l.installed_base_id IS NOT NULL"
                 " AND i.status <> 'cancelled' AND i.deleted_at IS NULL"
                 " AND l.deleted_at IS NULL"):
        lines[ib, kind].append(issued)
    serials = {s: i for i, s in _rows(url, "SELECT id, serial FROM installed_base"
                                           " WHERE deleted_at IS NULL")}
    machines = dict(_rows(url, "SELECT id, serial FROM machines"))
    out = set()
    for machine, key, when, kind in _rows(
            url, "SELECT machine_id, event_key, time, kind FROM machine_events"
                 " WHERE kind IN ('maintenance', 'part_replaced')"):
        day = when.astimezone(UTC).date()
        if not (on - timedelta(days=365) <= day < on - timedelta(days=older)):
            continue
        ib = serials.get(machines[machine])
        if ib is None:
            continue
        line = "field_service" if kind == "maintenance" else "spare_parts"
        if not any(abs((d - day).days) <= window for d in lines[ib, line]):
            out.add(f"{machine}:{key}:{int(when.timestamp())}")
    return out


def test_unbilled_work_equals_analytics_and_a_match_by_hand(world_api: WorldApi) -> None:
    url, today = world_api.database_url, world_api.today
    with world_api.api.client("service") as client:
        items = _all_pages(client, "/finance/unbilled", {"older_than_days": 3, "limit": 500})
        uncovered = _all_pages(client, "/finance/unbilled", {
            "older_than_days": 3, "limit": 500, "coverage": "uncovered"})
        csv_rows = list(csv.DictReader(io.StringIO(client.get("/finance/unbilled", params={
            "older_than_days": 3, "format": "csv"}).content.decode("utf-8-sig"))))
    where = billing.UnbilledFilter(on=today, reporting_currency=REPORTING,
                                   since=today - timedelta(days=365), older_than_days=3)
    mine = _run(url, lambda c: billing.unbilled(
        c, PageRequest(limit=10000, sort="occurred_at", descending=True), where=where))
    assert [i["id"] for i in items] == [r["id"] for r in mine.items]
    assert {i["id"] for i in items} == _unbilled_by_hand(url, today, 3, 30)
    assert len(items) > 10
    assert {r["id"] for r in csv_rows} == {i["id"] for i in items}
    assert {i["id"] for i in uncovered} == {i["id"] for i in items if i["contract_id"] is None}
    # The world bills every visit on a machine without a contract two days after it: what
    # goes unbilled is, nearly always, work under a contract that includes it.
    assert len(uncovered) <= len(items) / 10
    assert all(i["age_days"] > 3 and i["estimated_value"] is not None for i in items)
    total = _run(url, lambda c: billing.unbilled_total(c, where=where))
    assert total.items == len(items)
    assert total.estimated_value == sum(_money(i["estimated_value"]) for i in items)
    with world_api.api.client("service") as client:
        summary = client.get("/finance/unbilled/summary", params={"older_than_days": 3}).json()
    assert (summary["items"], _money(summary["estimated_value"]), summary["unvalued"]) == (
        total.items, total.estimated_value, 0)


def test_unbilled_work_is_valued_at_the_models_median_billed_visit(world_api: WorldApi
                                                                   ) -> None:
    url, today = world_api.database_url, world_api.today
    rate = _rate_on(url)
    visits: dict[tuple[str, int, int], Decimal] = defaultdict(Decimal)
    for model, invoice, ib, amount, currency, issued in _rows(
            url, "SELECT ib.model, i.id, l.installed_base_id, l.net_amount, i.currency,"
                 " i.issued_on FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id"
                 " JOIN installed_base ib ON ib.id = l.installed_base_id"
                 " WHERE l.kind = 'field_service' AND i.status NOT IN ('draft', 'cancelled')"
                 " AND i.issued_on > %(on)s::date - 365 AND i.issued_on <= %(on)s",
            {"on": today}):
        visits[model, invoice, ib] += amount * rate(currency.strip(), issued)
    per_model: dict[str, list[Decimal]] = defaultdict(list)
    for (model, _, _), value in visits.items():
        per_model[model].append(value)
    with world_api.api.client("finance") as client:
        items = client.get("/finance/unbilled", params={
            "older_than_days": 3, "limit": 200, "kind": "maintenance"}).json()["items"]
    assert items
    for item in items:
        values = sorted(per_model[item["model"]])
        assert item["value_basis"] == "model"
        assert _money(item["estimated_value"]) == values[(len(values) - 1) // 2].quantize(CENT)


# -- roles and bad parameters ------------------------------------------------------------------


def test_roles_on_finance_routes(world_api: WorldApi) -> None:
    api = world_api.api
    with api.client("service") as service:
        assert service.get("/finance/unbilled").status_code == 200
        for path in ("/finance/renewals", "/finance/clv", "/finance/receivables",
                     "/finance/revenue-at-risk", "/finance/usage-billing"):
            assert "may not" in problem(service.get(path), 403)["detail"], path
    with api.client("viewer") as viewer:
        for path in ("/finance/renewals", "/finance/clv", "/finance/receivables",
                     "/finance/unbilled", "/finance/usage-billing"):
            assert viewer.get(path).status_code == 200, path
        problem(viewer.put("/finance/usage-billing/1", json={
            "rate_per_hour": "10", "currency": "EUR", "starts_on": "2026-01-01"}), 403)
        problem(viewer.delete("/finance/usage-billing/1"), 403)
    with api.client() as anonymous:
        problem(anonymous.get("/finance/renewals"), 401)


@pytest.mark.parametrize(("path", "params"), [
    ("/finance/renewals", {"within_days": -1}),
    ("/finance/renewals", {"within_days": 100000}),
    ("/finance/renewals", {"min_probability": 1.5}),
    ("/finance/renewals", {"dimension": "country"}),
    ("/finance/renewals", {"dimension": "planet", "segment": "x"}),
    ("/finance/renewals", {"sort": "name"}),
    ("/finance/renewals", {"due": "soon"}),
    ("/finance/revenue-at-risk", {"by": "segment", "since": "2026-05-01",
                                  "until": "2026-01-01"}),
    ("/finance/revenue-at-risk", {"by": "month", "since": "2026-01-01"}),
    ("/finance/revenue-at-risk", {"by": "quarter"}),
    ("/finance/clv", {"by": "segment", "segment": "DE"}),
    ("/finance/clv", {"segment": "DE"}),
    ("/finance/unbilled", {"older_than_days": -5}),
    ("/finance/unbilled", {"since": "2999-01-01"}),
    ("/finance/unbilled", {"coverage": "some"}),
    ("/finance/unbilled/summary", {"window_days": 1000}),
    ("/finance/usage-billing/billable", {"from": "2026-06", "to": "2026-01"}),
    ("/finance/usage-billing/billable", {"from": "2026-13", "to": "2027-01"}),
    ("/finance/usage-billing/billable", {"to": "2026-01"}),
    ("/finance/receivables/0/invoices", {}),
])
def test_bad_parameters_are_422_problems(world_api: WorldApi, path: str,
                                         params: dict[str, Any]) -> None:
    with world_api.api.client("finance") as client:
        body = problem(client.get(path, params=params), 422)
    assert body["detail"]


def test_a_cursor_of_another_sort_is_refused(world_api: WorldApi) -> None:
    with world_api.api.client("finance") as client:
        first = client.get("/finance/renewals", params={"within_days": 365, "limit": 2}).json()
        assert first["next_cursor"]
        problem(client.get("/finance/renewals", params={
            "within_days": 365, "limit": 2, "sort": "-value",
            "cursor": first["next_cursor"]}), 400)
        problem(client.get("/finance/renewals", params={"cursor": "nonsense!"}), 400)


# -- pay-per-use: writes, in a database of their own ---------------------------------------------


def _small_book(url: str) -> dict[str, int]:
    """Two customers, three machines with counters, a machine contract in CHF and a customer
    contract in EUR; rates for CHF."""
    with psycopg.connect(url) as conn:
        def one(query: str, params: Any) -> int:
            row = conn.execute(query + " RETURNING id", params).fetchone()
            assert row is not None
            return int(row[0])
        a = one("INSERT INTO customers (source, external_id, name) VALUES"
                " ('t', 'A', 'Alpha AG')", None)
        b = one("INSERT INTO customers (source, external_id, name) VALUES"
                " ('t', 'B', 'Beta GmbH')", None)
        ids: dict[str, int] = {"a": a, "b": b}
        for n, (customer, serial) in enumerate(((a, "S-1"), (b, "S-2"), (b, "S-3"))):
            ids[serial] = one("INSERT INTO installed_base (source, external_id, serial, model,"
                              " customer_id) VALUES ('t', %s, %s, 'M', %s)",
                              (f"IB{n}", serial, customer))
            machine = one("INSERT INTO machines (tenant, serial, protocol) VALUES"
                          " ('default', %s, 'json')", (serial,))
            ids[f"m{serial}"] = machine
            day = date(2026, 1, 1)
            while day <= date(2026, 3, 31):
                # 4, 5 and 6 hours a day by machine, more on the 15th (a day's peak).
                hours = 4 + n + (10 if day.day == 15 else 0)
                conn.execute("INSERT INTO machine_days (machine_id, day, operating_hours)"
                             " VALUES (%s, %s, %s)", (machine, day, hours))
                day += timedelta(days=1)
        ids["machine_contract"] = one(
            "INSERT INTO service_contracts (source, external_id, customer_id, installed_base_id,"
            " scope, starts_on, ends_on, annual_value, currency, status) VALUES ('t', 'K1', %s,"
            " %s, 'machine', '2025-06-01', '2026-05-31', 1000, 'CHF', 'active')",
            (a, ids["S-1"]))
        ids["customer_contract"] = one(
            "INSERT INTO service_contracts (source, external_id, customer_id, scope, starts_on,"
            " ends_on, annual_value, currency, status) VALUES ('t', 'K2', %s, 'customer',"
            " '2026-02-10', '2027-02-09', 5000, 'EUR', 'active')", (b,))
    return ids


@pytest.fixture
def book_api(database_url: str, tmp_path: Path) -> Iterator[tuple[ApiServer, dict[str, int]]]:
    ids = _small_book(database_url)
    with running_api(database_url, log=tmp_path / "api.log") as api:
        yield api, ids


def _billable_by_hand(url: str, ids: dict[str, int], terms: dict[int, dict[str, Any]],
                      months: list[date]) -> dict[tuple[int, str], dict[str, Decimal]]:
    days = _rows(url, "SELECT machine_id, day, operating_hours FROM machine_days")
    spans = {ids["machine_contract"]: ([ids["mS-1"]], date(2025, 6, 1), date(2026, 5, 31)),
             ids["customer_contract"]: ([ids["mS-2"], ids["mS-3"]], date(2026, 2, 10),
                                        date(2027, 2, 9))}
    out = {}
    for contract, t in terms.items():
        machines, start, end = spans[contract]
        start = max(start, date.fromisoformat(t["starts_on"]))
        for month in months:
            last = (month + timedelta(days=32)).replace(day=1) - timedelta(days=1)
            if start > last or end < month:
                continue
            hours = Decimal(str(sum(h for m, d, h in days if m in machines
                                    and max(month, start) <= d <= min(last, end))))
            billable = max(hours - Decimal(t["included_hours"]), Decimal(0))
            out[contract, f"{month:%Y-%m}"] = {
                "hours": hours, "billable": billable,
                "amount": (billable * Decimal(t["rate_per_hour"])).quantize(CENT)}
    return out


def test_pay_per_use_terms_are_managed_audited_and_billed(
        book_api: tuple[ApiServer, dict[str, int]], database_url: str) -> None:
    api, ids = book_api
    machine_terms = {"rate_per_hour": "12.5", "currency": "CHF", "included_hours": "100",
                     "starts_on": "2026-01-20"}
    customer_terms = {"rate_per_hour": "7.25", "currency": "EUR", "included_hours": "0",
                      "starts_on": "2026-01-01"}
    with api.client("finance") as finance:
        made = finance.put(f"/finance/usage-billing/{ids['machine_contract']}",
                           json=machine_terms)
        assert made.status_code == 201, made.text
        assert made.json()["customer_id"] == ids["a"]
        assert finance.put(f"/finance/usage-billing/{ids['customer_contract']}",
                           json={**customer_terms, "rate_per_hour": "9"}).status_code == 201
        replaced = finance.put(f"/finance/usage-billing/{ids['customer_contract']}",
                               json=customer_terms)
        assert replaced.status_code == 200 and replaced.json()["rate_per_hour"] == "7.2500"
        listed = finance.get("/finance/usage-billing").json()
        assert [t["contract_id"] for t in listed] == sorted(
            [ids["machine_contract"], ids["customer_contract"]])
        billed = _all_pages(finance, "/finance/usage-billing/billable",
                            {"from": "2026-01", "to": "2026-04", "limit": 2})
        exported = finance.get("/finance/usage-billing/billable", params={
            "from": "2026-01", "to": "2026-04", "format": "xlsx", "sort": "period"})
        problem(finance.put("/finance/usage-billing/999999", json=customer_terms), 404)
        for bad in ({**customer_terms, "rate_per_hour": "-1"},
                    {**customer_terms, "currency": "euro"},
                    {**customer_terms, "included_hours": "-3"},
                    {**customer_terms, "surprise": 1}):
            problem(finance.put(f"/finance/usage-billing/{ids['machine_contract']}",
                                json=bad), 422)
        assert finance.delete(
            f"/finance/usage-billing/{ids['machine_contract']}").status_code == 204
        problem(finance.delete(f"/finance/usage-billing/{ids['machine_contract']}"), 404)
        problem(finance.get(f"/finance/usage-billing/{ids['machine_contract']}"), 404)
        after = finance.get("/finance/usage-billing/billable",
                            params={"from": "2026-01", "to": "2026-04"}).json()["items"]
    months = [date(2026, m, 1) for m in (1, 2, 3, 4)]
    expected = _billable_by_hand(database_url, ids, {
        ids["machine_contract"]: machine_terms, ids["customer_contract"]: customer_terms},
        months)
    assert {(b["contract_id"], b["month"]) for b in billed} == set(expected)
    for b in billed:
        want = expected[b["contract_id"], b["month"]]
        assert Decimal(b["operating_hours"]) == want["hours"], b
        assert Decimal(b["billable_hours"]) == want["billable"], b
        assert Decimal(b["amount"]) == want["amount"], b
    # January of the machine contract: 12 days from the 20th at 4 h, less 100 included: none.
    assert expected[ids["machine_contract"], "2026-01"]["billable"] == 0
    assert any(w["amount"] > 0 for w in expected.values())
    sheet = openpyxl.load_workbook(io.BytesIO(exported.content)).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    header = list(rows[0])
    assert len(rows) - 1 == len(billed)
    periods = [(r[header.index("month")], r[header.index("contract_id")]) for r in rows[1:]]
    assert periods == sorted(periods)
    assert {b["contract_id"] for b in after} == {ids["customer_contract"]}
    trail = _rows(database_url, "SELECT action, entity_id, before IS NOT NULL, after IS NOT NULL"
                                " FROM audit_log WHERE entity = 'usage_billing' ORDER BY id")
    m, c = str(ids["machine_contract"]), str(ids["customer_contract"])
    assert trail == [("usage_billing.put", m, False, True), ("usage_billing.put", c, False, True),
                     ("usage_billing.put", c, True, True),
                     ("usage_billing.delete", m, True, False)]


def test_pay_per_use_terms_are_only_visible_to_staff(
        book_api: tuple[ApiServer, dict[str, int]], database_url: str) -> None:
    api, ids = book_api
    with api.client("finance") as finance:
        assert finance.put(f"/finance/usage-billing/{ids['customer_contract']}", json={
            "rate_per_hour": "1", "currency": "EUR", "starts_on": "2026-01-01"}
            ).status_code == 201
    with api.client("customer", customer_id=ids["b"]) as portal:
        problem(portal.get("/finance/usage-billing"), 403)
    # Below the application: the API's role in another customer's scope sees no terms.
    with psycopg.connect(database_url, user="oemr_api") as conn:
        for scope, customer, seen in (("customer", ids["a"], 0), ("customer", ids["b"], 1),
                                      ("staff", None, 1)):
            conn.execute("SELECT set_config('app.scope', %s, true),"
                         " set_config('app.customer_id', %s, true)",
                         (scope, "" if customer is None else str(customer)))
            count = conn.execute("SELECT count(*) FROM usage_billing").fetchone()
            assert count == (seen,), (scope, customer)
            conn.rollback()

