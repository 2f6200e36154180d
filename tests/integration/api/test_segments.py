"""Segment routes against the shared demo world (snapshots of today and a week ago): segments
and their customers, every KPI per segment with its trend, who slips, who may ask.

Figures are checked against analytics' own functions and against counts made here from the
rows (customers, memberships, contracts and invoices, the stored snapshots).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest

from analytics import segment_kpis as analytics
from analytics.kpi_snapshot import latest_snapshot
from analytics.periods import Period
from analytics.segments import segment_trends
from tests.integration.api.conftest import REPORTING, WorldApi
from tests.integration.api_server import problem

T = TypeVar("T")




@pytest.fixture(scope="module")
def staff(world_api: WorldApi) -> Any:
    with world_api.api.client("finance") as client:
        yield client


def _active(world_api: WorldApi, day: date) -> set[int]:
    """Active customers on ``day``, counted here: a live contract or a positive invoice in the
    365 days up to it (docs/kpis.md)."""
    return {r["customer_id"] for r in world_api.rows("""
        SELECT customer_id FROM service_contracts
        WHERE deleted_at IS NULL AND status IN ('active', 'expired', 'terminated')
          AND starts_on <= %(d)s AND ends_on >= %(d)s
        UNION
        SELECT customer_id FROM invoices
        WHERE deleted_at IS NULL AND status IN ('open', 'paid', 'credited') AND net_amount > 0
          AND issued_on > %(d)s::date - 365 AND issued_on <= %(d)s""", {"d": day})}


def test_segments_and_their_customers(world_api: WorldApi, staff: httpx.Client) -> None:
    today = world_api.today
    body = staff.get("/segments", params={"on": today.isoformat()}).json()
    found = {d["dimension"]: {s["segment"]: (s["customers"], s["active"]) for s in d["segments"]}
             for d in body["dimensions"]}
    customers = world_api.rows("SELECT id, country, size_class FROM customers")
    active = _active(world_api, today)
    by_country: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in customers:
        counts = by_country[c["country"].strip() if c["country"] else "unknown"]
        counts[0] += 1
        counts[1] += c["id"] in active
    assert found["country"] == {k: tuple(v) for k, v in by_country.items()}
    latest: dict[int, str] = {}
    for m in world_api.rows("SELECT customer_id, segment FROM segment_memberships"
                              " WHERE kind = 'usage' AND assigned_on <= %s"
                              " ORDER BY assigned_on", (today,)):
        latest[m["customer_id"]] = m["segment"]
    usage: dict[str, int] = defaultdict(int)
    for c in customers:
        usage[latest.get(c["id"], "unassigned")] += 1
    assert {k: v[0] for k, v in found["usage"].items()} == usage
    for dimension, segments in found.items():
        if dimension != "model":
            assert sum(n for n, _ in segments.values()) == len(customers), dimension
    assert found["all"] == {"all": (len(customers), len(active))}
    mine = world_api.analytics(lambda conn: analytics.segment_counts(conn, on=today))
    assert {(c.dimension, c.segment): (c.customers, c.active) for c in mine} == \
        {(d, s): v for d, segs in found.items() for s, v in segs.items()}


def test_kpis_per_segment_are_the_snapshot_with_its_trend(world_api: WorldApi,
                                                          staff: httpx.Client) -> None:
    answer = staff.get("/segments/kpis", params={"dimension": "country", "period": "month"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["taken_on"] == world_api.today.isoformat()
    items = {(i["segment"], i["kpi"]): i for i in body["items"]}
    # What analytics' own reader says.
    latest = world_api.analytics(lambda conn: latest_snapshot(
        conn, dimension="country", period_kind="month"))
    assert {(v.segment, v.kpi) for v in latest} == set(items)
    for v in latest:
        part = items[(v.segment, v.kpi)]["current" if v.period.last_day == v.taken_on
                                         else "previous"]
        assert part["period"] == v.period.label
        assert (Decimal(part["value"]) if part["value"] is not None else None) == v.value
    # The stored rows, read here; the trend from every snapshot's complete months.
    stored = world_api.rows("SELECT * FROM kpi_snapshots WHERE dimension = 'country'"
                              " AND period_kind = 'month' ORDER BY taken_on")
    complete: dict[tuple[str, str], dict[date, Decimal | None]] = defaultdict(dict)
    for r in stored:
        if r["period_last"] < r["taken_on"]:
            complete[(r["segment"], r["kpi"])][r["period_start"]] = r["value"]
    for key, item in items.items():
        months = complete[key]
        assert [(p["period_start"], Decimal(p["value"]) if p["value"] is not None else None)
                for p in item["trend"]] == \
            [(d.isoformat(), months[d]) for d in sorted(months)]
        values = [months[d] for d in sorted(months)]
        if len(values) >= 2 and None not in values[-2:]:
            assert Decimal(item["change"]) == values[-1] - values[-2]
        known = [(i, float(v)) for i, v in enumerate(values) if v is not None]
        if len(known) >= 2 and len(known) == len(values):
            slope = np.polyfit([i for i, _ in known], [v for _, v in known], 1)[0]
            assert float(item["slope"]) == pytest.approx(slope, abs=1e-9)
    # The counts the retention of the last complete month came from, counted here.
    month = Period.containing("month", world_api.today).previous()
    country = world_api.rows("SELECT id FROM customers WHERE country = 'DE'")
    ids = {r["id"] for r in country}
    start = _active(world_api, month.start - timedelta(days=1)) & ids
    end = _active(world_api, month.last_day) & ids
    retention = items[("DE", "retention_rate")]["previous"]
    assert retention["period"] == month.label
    assert Decimal(retention["denominator"]) == len(start)
    assert Decimal(retention["numerator"]) == len(start & end)
    only = staff.get("/segments/kpis", params={"dimension": "rfm", "period": "quarter",
                                               "kpi": "nps"}).json()
    assert only["items"] and {i["kpi"] for i in only["items"]} == {"nps"}


def _points(trend: dict[str, Any]) -> list[tuple[int, int]]:
    return [(p["customers_start"], p["customers_retained"]) for p in trend["points"]]


def test_slipping_segments_and_why(world_api: WorldApi, staff: httpx.Client) -> None:
    today = world_api.today
    params = {"dimension": "country", "period": "quarter", "periods": 4,
              "on": today.isoformat()}
    every = staff.get("/segments/slipping", params={**params, "steady": "true"}).json()
    quarters = [Period.containing("quarter", today).previous()]
    while len(quarters) < 4:
        quarters.insert(0, quarters[0].previous())
    assert every["periods"] == [q.label for q in quarters]
    countries = {r["id"]: r["country"].strip() if r["country"] else "unknown"
                 for r in world_api.rows("SELECT id, country FROM customers")}
    counted: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for q in quarters:
        start = _active(world_api, q.start - timedelta(days=1))
        end = _active(world_api, q.last_day)
        for country in set(countries.values()):
            mine = {c for c, k in countries.items() if k == country}
            counted[country].append((len(start & mine), len(start & end & mine)))
    found = {i["segment"]: i for i in every["items"]}
    assert {s: _points(found[s]) for s in found} == \
        {s: p for s, p in counted.items() if any(n for n, _ in p)}
    base = [sum(counted[c][i][1] for c in counted) / sum(counted[c][i][0] for c in counted)
            for i in range(4)]
    for segment, item in found.items():
        kept = [(i, r / n) for i, (n, r) in enumerate(counted[segment]) if n]
        if len(kept) >= 2:
            slope = np.polyfit([i for i, _ in kept], [v for _, v in kept], 1)[0]
            assert float(item["slope"]) == pytest.approx(slope, abs=1e-9), segment
            assert item["slipping"] is (float(item["slope"]) < 0)
        assert float(item["base_slope"]) == pytest.approx(
            np.polyfit(range(4), base, 1)[0], abs=1e-9)
        assert "retention" in item["why"] or "no trend" in item["why"]
    slipping = staff.get("/segments/slipping", params=params).json()["items"]
    assert [i["segment"] for i in slipping] == \
        [i["segment"] for i in sorted(every["items"], key=lambda i: Decimal(i["slope"] or 0))
         if i["slipping"]]
    usage = staff.get("/segments/slipping", params={**params, "dimension": "usage",
                                                    "steady": "true"}).json()["items"]
    trends = world_api.analytics(lambda conn: segment_trends(
        conn, kind="usage", periods=quarters, reporting_currency=REPORTING))
    assert {i["segment"]: _points(i) for i in usage} == \
        {t.segment: [(p.customers_start, p.customers_retained) for p in t.points]
         for t in trends}
    every_cut = staff.get("/segments/slipping", params={"on": today.isoformat()}).json()
    assert all(i["slipping"] for i in every_cut["items"])


def test_segments_are_for_staff(world_api: WorldApi) -> None:
    cid = world_api.rows("SELECT min(id) AS id FROM customers")[0]["id"]
    with world_api.api.client("customer", customer_id=cid) as portal:
        for path in ("/segments", "/segments/kpis", "/segments/slipping"):
            assert "may not" in problem(portal.get(path), 403)["detail"]


@pytest.mark.parametrize(("path", "params", "says"), [
    ("/segments/kpis", {"dimension": "colour"}, "dimension"),
    ("/segments/kpis", {"period": "week"}, "period"),
    ("/segments/kpis", {"kpi": "happiness"}, "kpi"),
    ("/segments/slipping", {"periods": "1"}, "periods"),
    ("/segments/slipping", {"dimension": "all", "period": "decade"}, "period"),
    ("/segments", {"on": "2026-13-01"}, "on"),
])
def test_bad_segment_requests_are_problems(staff: httpx.Client, path: str,
                                           params: dict[str, str], says: str) -> None:
    assert says in problem(staff.get(path, params=params), 422)["detail"]
