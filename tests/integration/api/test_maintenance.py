"""Maintenance planning through the API: due and overdue machines checked against a computation
in Python over the raw rows, the work list, roles and the portal; and, on a world of its own
(the shared one is read by other modules), what writes do: a recorded service moves the due
date at once and counts in maintenance adherence, once per Idempotency-Key, and a plan edit
moves the due dates of its model's machines."""

from __future__ import annotations

import asyncio
import csv
import io
import math
import secrets
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from analytics import kpi, maintenance
from analytics.periods import Period
from core.paging import PageRequest
from demo.world import World
from tests.integration.api.conftest import REPORTING, WorldApi
from tests.integration.api.test_access import api_rows
from tests.integration.api_server import ApiServer, problem, running_api
from tests.integration.conftest import _server_url
from tests.integration.worlds import load_demo_world

USAGE_DAYS = 90
SOON_DAYS = 28


# -- the independent computation: Python over the raw rows -----------------------------------


@dataclass
class Raw:
    """What the due list is computed from, read straight from the tables."""

    machines: dict[int, dict[str, Any]]
    days: dict[int, list[tuple[date, float]]]
    services: dict[int, list[datetime]]
    plans: dict[str, tuple[int | None, int | None]]


def read_raw(url: str, today: date) -> Raw:
    """The fleet, its days, its services (events and records) and the plans in force."""
    with psycopg.connect(url) as conn:
        fleet = conn.execute(
            "SELECT m.id, ib.serial, ib.model, ib.customer_id, ib.site_id, ib.commissioned_on,"
            " coalesce(s.country, c.country) FROM installed_base ib"
            " JOIN machines m ON m.serial = ib.serial JOIN customers c ON c.id = ib.customer_id"
            " LEFT JOIN sites s ON s.id = ib.site_id WHERE ib.deleted_at IS NULL").fetchall()
        days: dict[int, list[tuple[date, float]]] = defaultdict(list)
        for machine_id, day, hours in conn.execute(
                "SELECT machine_id, day, operating_hours FROM machine_days WHERE day <= %s"
                " ORDER BY machine_id, day", (today,)):
            days[machine_id].append((day, hours))
        services: dict[int, list[datetime]] = defaultdict(list)
        for machine_id, at in conn.execute(
                "SELECT machine_id, time FROM machine_events WHERE kind = 'maintenance'"
                " UNION ALL SELECT machine_id, performed_at FROM maintenance_records"):
            services[machine_id].append(at)
        erp = {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT model, service_interval_hours, service_interval_days FROM machine_models"
            " WHERE deleted_at IS NULL ORDER BY synced_at, id")}
        put = {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT model, interval_hours, interval_days FROM maintenance_plans")}
    machines = {r[0]: dict(zip(("machine_id", "serial", "model", "customer_id", "site_id",
                                "commissioned_on", "region"), r, strict=True)) for r in fleet}
    return Raw(machines, days, services, {**erp, **put})


def expected_status(raw: Raw, machine_id: int, today: date) -> dict[str, Any]:
    """A machine's maintenance status as docs/api-maintenance.md defines it."""
    m = raw.machines[machine_id]
    days = raw.days.get(machine_id, [])
    done = [t for t in raw.services.get(machine_id, []) if t.astimezone(UTC).date() <= today]
    last_at = max(done, default=None)
    first_day = days[0][0] if days else None
    known = [d for d in (first_day, m["commissioned_on"]) if d is not None]
    base = last_at.astimezone(UTC).date() if last_at else (max(known) if known else None)
    hours_since = sum(h for d, h in days if base is not None and base < d <= today)
    window = [h for d, h in days if today - timedelta(days=USAGE_DAYS) <= d < today]
    window_days = max(min(USAGE_DAYS, (today - first_day).days), 0) if first_day else 0
    rate = sum(window) / window_days if window_days else None
    ih, iday = raw.plans.get(m["model"], (None, None))
    by_days = base + timedelta(days=iday) if iday and base else None
    by_hours = None
    if ih is not None and hours_since < ih:
        if rate:
            by_hours = today + timedelta(days=math.ceil((ih - hours_since) / rate))
    elif ih is not None:
        total = 0.0
        for d, h in days:
            if base is not None and base < d <= today:
                total += h
                if total >= ih:
                    by_hours = d
                    break
    due_on = min((d for d in (by_days, by_hours) if d is not None), default=None)
    if ih is None and iday is None:
        status = "no_plan"
    elif (ih is not None and hours_since > ih) or (by_days is not None and today > by_days):
        status = "overdue"
    elif due_on is not None and due_on <= today + timedelta(days=SOON_DAYS):
        status = "due"
    else:
        status = "ok"
    return {"machine_id": machine_id, "serial": m["serial"], "customer_id": m["customer_id"],
            "region": m["region"], "last_service_at": last_at, "hours_since": hours_since,
            "days_since": (today - base).days if base else None, "usage_per_day": rate,
            "due_by_days_on": by_days, "due_by_hours_on": by_hours, "due_on": due_on,
            "status": status,
            "overdue_hours": max(hours_since - ih, 0) if ih is not None else None,
            "overdue_days": max((today - due_on).days, 0)
            if status == "overdue" and due_on else 0}


def assert_status_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    """An answer's status equals the expected one (hours to float rounding)."""
    for key in ("machine_id", "serial", "customer_id", "region", "days_since", "status",
                "overdue_days"):
        assert got[key] == want[key], (key, got, want)
    for key in ("due_by_days_on", "due_by_hours_on", "due_on"):
        assert got[key] == (want[key].isoformat() if want[key] else None), (key, got, want)
    assert (datetime.fromisoformat(got["last_service_at"]) if got["last_service_at"]
            else None) == want["last_service_at"]
    for key in ("hours_since", "usage_per_day", "overdue_hours"):
        assert (got[key] is None) == (want[key] is None), (key, got, want)
        if want[key] is not None:
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-6), (key, got, want)


def every_page(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """All items of a list, page by page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        answer = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def _today() -> date:
    return datetime.now(UTC).date()


# -- the shared world: reads -------------------------------------------------------------------


def test_due_values_equal_an_independent_computation(world_api: WorldApi) -> None:
    today = _today()
    raw = read_raw(world_api.database_url, today)
    with world_api.api.client("service") as client:
        items = every_page(client, "/maintenance/due", limit=1000)
    assert len(items) == len(raw.machines) > 200
    statuses = {i["status"] for i in items}
    assert {"overdue", "ok"} <= statuses, statuses
    for item in items:
        assert_status_equal(item, expected_status(raw, item["machine_id"], today))
    # The same rows as analytics' own function gives.

    async def own() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(world_api.database_url) as conn:
            page = await maintenance.due_page(conn, PageRequest(limit=5000, sort="due"),
                                              filters=maintenance.DueFilters(), today=today)
            return list(page.items)
    mine = asyncio.run(own())
    assert [r["machine_id"] for r in mine] == [i["machine_id"] for i in items]
    assert [r["due_on"].isoformat() if r["due_on"] else None for r in mine] == \
        [i["due_on"] for i in items]


def test_due_pages_sorts_filters_and_export(world_api: WorldApi) -> None:
    today = _today()
    with world_api.api.client("viewer") as client:
        whole = client.get("/maintenance/due", params={"limit": 1000}).json()["items"]
        for sort in ("due", "-due", "serial", "-overdue_days"):
            paged = every_page(client, "/maintenance/due", limit=37, sort=sort)
            assert sorted(i["machine_id"] for i in paged) == sorted(i["machine_id"]
                                                                    for i in whole)
            name = sort.lstrip("-")
            keys = [(i["due_on"] or "9999-12-31") if name == "due" else i[name] for i in paged]
            assert keys == sorted(keys, reverse=sort.startswith("-")), sort
        overdue = every_page(client, "/maintenance/due", status="overdue")
        assert overdue and {i["status"] for i in overdue} == {"overdue"}
        assert len(overdue) == sum(i["status"] == "overdue" for i in whole)
        customer = whole[0]["customer_id"]
        mine = every_page(client, "/maintenance/due", customer_id=customer)
        assert {i["machine_id"] for i in mine} == {i["machine_id"] for i in whole
                                                  if i["customer_id"] == customer}
        region = whole[0]["region"]
        assert {i["machine_id"] for i in every_page(client, "/maintenance/due",
                                                    region=region)} == \
            {i["machine_id"] for i in whole if i["region"] == region}
        horizon = (today + timedelta(weeks=2)).isoformat()
        soon = every_page(client, "/maintenance/due", within_weeks=2)
        assert {i["machine_id"] for i in soon} == \
            {i["machine_id"] for i in whole if i["due_on"] and i["due_on"] <= horizon}
        exported = client.get("/maintenance/due", params={"format": "csv", "status": "overdue"})
        assert exported.status_code == 200
        rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
        assert [int(r["machine_id"]) for r in rows] == [i["machine_id"] for i in overdue]
        assert [r["due_on"] for r in rows] == [i["due_on"] for i in overdue]


def test_worklist_groups_the_machines_due_by_week(world_api: WorldApi) -> None:
    today = _today()
    with world_api.api.client("service") as client:
        whole = client.get("/maintenance/due", params={"limit": 1000}).json()["items"]
        for by, key in (("customer", "customer_id"), ("region", "region"), ("site", "site_id")):
            answer = client.get("/maintenance/worklist", params={"weeks": 3, "by": by})
            assert answer.status_code == 200, answer.text
            work = answer.json()
            horizon = today + timedelta(weeks=3)
            due = {i["machine_id"]: i for i in whole
                   if i["due_on"] and date.fromisoformat(i["due_on"]) <= horizon}
            listed = [(g, i) for g in work["groups"] for i in g["items"]]
            assert sorted(i["machine_id"] for _, i in listed) == sorted(due)
            for group, item in listed:
                day = max(date.fromisoformat(item["due_on"]), today)
                assert group["week"] == (day - timedelta(days=day.weekday())).isoformat()
                assert group["group_key"] == str(due[item["machine_id"]][key] or "")
                assert item["due_on"] == due[item["machine_id"]]["due_on"]
            for group in work["groups"]:
                assert group["machines"] == len(group["items"])
                assert group["overdue"] == sum(i["status"] == "overdue" for i in group["items"])


def test_plans_follow_the_erp_until_one_is_put(world_api: WorldApi) -> None:
    with psycopg.connect(world_api.database_url) as conn:
        erp = {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT model, service_interval_hours, service_interval_days FROM machine_models"
            " WHERE deleted_at IS NULL")}
    with world_api.api.client("finance") as client:
        plans = client.get("/maintenance/plans").json()
        one = client.get(f"/maintenance/plans/{plans[0]['model']}")
        assert one.status_code == 200 and one.json() == plans[0]
        problem(client.get("/maintenance/plans/NO-SUCH-MODEL"), 404)
    assert {p["model"]: (p["interval_hours"], p["interval_days"]) for p in plans} == erp
    assert {p["source"] for p in plans} == {"erp"}


def test_roles_portal_and_bad_input(world_api: WorldApi) -> None:
    api = world_api.api
    with psycopg.connect(world_api.database_url) as conn:
        mine, other = conn.execute(
            "SELECT ib.customer_id, min(m.id) FROM installed_base ib JOIN machines m"
            " ON m.serial = ib.serial WHERE ib.deleted_at IS NULL GROUP BY ib.customer_id"
            " ORDER BY ib.customer_id LIMIT 2").fetchall()
        own_machines = {r[0] for r in conn.execute(
            "SELECT m.id FROM installed_base ib JOIN machines m ON m.serial = ib.serial"
            " WHERE ib.deleted_at IS NULL AND ib.customer_id = %s", (mine[0],))}
    with api.client("customer", customer_id=mine[0]) as portal:
        assert portal.get(f"/maintenance/machines/{mine[1]}").status_code == 200
        assert "no machine" in problem(portal.get(f"/maintenance/machines/{other[1]}"),
                                       404)["detail"]
        seen = every_page(portal, "/maintenance/due")
        assert {i["machine_id"] for i in seen} == own_machines
        for path in ("/maintenance/plans", "/maintenance/worklist", "/maintenance/records"):
            problem(portal.get(path), 403)
    with api.client("viewer") as viewer:
        problem(viewer.put("/maintenance/plans/VMC-650", json={"interval_days": 30}), 403)
        problem(viewer.post("/maintenance/records", json={
            "machine_id": mine[1], "performed_at": datetime.now(UTC).isoformat(),
            "work": "oil", "technician": "x"}), 403)
        for params in ({"status": "late"}, {"region": "germany"}, {"within_weeks": -1},
                       {"sort": "price"}, {"limit": 0}, {"customer_id": 0}):
            problem(viewer.get("/maintenance/due", params=params), 422)
        problem(viewer.get("/maintenance/due", params={"cursor": "garbage"}), 400)
        problem(viewer.get("/maintenance/worklist", params={"by": "planet"}), 422)
        problem(viewer.get("/maintenance/worklist", params={"weeks": 0}), 422)
        problem(viewer.get("/maintenance/machines/0"), 422)
        problem(viewer.get("/maintenance/machines/2000000000"), 404)
    with api.client("service") as service:
        for body in ({}, {"interval_hours": 0}, {"interval_days": 10, "parts_kit": [{}]},
                     {"interval_days": 10, "colour": "red"}):
            problem(service.put("/maintenance/plans/VMC-650", json=body), 422)
        problem(service.put("/maintenance/plans/NO-SUCH-MODEL", json={"interval_days": 9}), 404)
        now = datetime.now(UTC)
        good = {"machine_id": mine[1], "performed_at": now.isoformat(), "work": "oil",
                "technician": "x"}
        for change in ({"performed_at": (now + timedelta(days=2)).isoformat()},
                       {"performed_at": "2026-01-01T10:00:00"}, {"work": ""},
                       {"machine_id": "one"}, {"parts": [{"part_number": "P", "quantity": 0}]}):
            problem(service.post("/maintenance/records", json={**good, **change}), 422)


# -- a world of its own: writes ----------------------------------------------------------------


@dataclass(frozen=True)
class OwnWorld:
    """A small world in a database of its own, behind an API of its own."""

    url: str
    api: ApiServer


@pytest.fixture(scope="module")
def own_world(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnWorld]:
    """A 12-customer world for the writing tests, dropped after the module."""
    name = f"oemr_test_maint_{secrets.token_hex(5)}"
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    url = _server_url(name)
    try:
        world = World.generate(11, _today(), customers=12, machines=40, years=2)
        asyncio.run(load_demo_world(url, world, tmp_path_factory.mktemp("maint-world"),
                                    process_days=0))
        with running_api(url, log=tmp_path_factory.mktemp("maint-log") / "api.log") as api:
            yield OwnWorld(url, api)
    finally:
        with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def _adherence(url: str, period: Period) -> kpi.KpiValue:
    async def run() -> kpi.KpiValue:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await kpi.maintenance_adherence(conn, period, reporting_currency=REPORTING)
    return asyncio.run(run())


def test_a_recorded_service_moves_the_due_date_once_per_key(own_world: OwnWorld) -> None:
    today = _today()
    with own_world.api.client("service") as client:
        whole = client.get("/maintenance/due", params={"limit": 1000}).json()["items"]
        target = next(i for i in whole if i["status"] == "overdue" and i["usage_per_day"])
        at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        body = {"machine_id": target["machine_id"], "performed_at": at.isoformat(),
                "work": "500 h service: oil, filters", "technician": "A. Meier",
                "parts": [{"part_number": "F-100", "description": "oil filter", "quantity": 1}]}
        key = {"Idempotency-Key": f"visit-{secrets.token_hex(4)}"}
        first = client.post("/maintenance/records", json=body, headers=key)
        assert first.status_code == 201, first.text
        again = client.post("/maintenance/records", json=body, headers=key)
        assert again.status_code == 201 and again.json() == first.json()
        refused = problem(client.post("/maintenance/records",
                                      json={**body, "work": "something else"}, headers=key), 422)
        assert "different request" in refused["detail"]
        answer = first.json()
        assert answer["record"]["technician"] == "A. Meier"
        assert answer["record"]["recorded_by"].startswith("user:")
        status = answer["status"]
        # At once: the service is the last one, nothing is overdue, the due date is a plan
        # interval from today, as worked out from the rows.
        assert datetime.fromisoformat(status["last_service_at"]) == at
        assert status["status"] in {"ok", "due"} and status["overdue_days"] == 0
        assert status["hours_since"] == 0 and status["days_since"] == 0
        assert_status_equal(status, expected_status(read_raw(own_world.url, today),
                                                    target["machine_id"], today))
        assert client.get(f"/maintenance/machines/{target['machine_id']}").json() == status
        records = every_page(client, "/maintenance/records", machine_id=target["machine_id"])
        assert [r["id"] for r in records] == [answer["record"]["id"]]
    with own_world.api.client("admin") as admin:
        trail = admin.get("/admin/audit", params={"entity": "maintenance_record"}).json()
    assert str(answer["record"]["id"]) in [e["entity_id"] for e in trail["items"]]
    # The record is its customer's: its portal sees the service, another customer nothing.
    owner = target["customer_id"]
    other = next(i["customer_id"] for i in whole if i["customer_id"] != owner)
    with own_world.api.client("customer", customer_id=owner) as portal:
        mine = portal.get(f"/maintenance/machines/{target['machine_id']}").json()
        assert mine["last_service_at"] == status["last_service_at"]
    count = "SELECT count(*) FROM maintenance_records WHERE id = %s"
    rid = (answer["record"]["id"],)
    assert api_rows(own_world.url, count, scope="customer", customer_id=owner,
                    params=rid) == [(1,)]
    assert api_rows(own_world.url, count, scope="customer", customer_id=other,
                    params=rid) == [(0,)]
    assert api_rows(own_world.url, count, scope=None, params=rid) == [(0,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        api_rows(own_world.url, "INSERT INTO maintenance_plans (model, interval_days, updated_by)"
                 " VALUES ('VMC-650', 1, 'portal') RETURNING model", scope="customer",
                 customer_id=owner)


def test_a_recorded_service_counts_in_maintenance_adherence(own_world: OwnWorld) -> None:
    first_of_month = _today().replace(day=1)
    period = Period("month", (first_of_month - timedelta(days=1)).replace(day=1))
    with psycopg.connect(own_world.url) as conn:
        # A machine with a plan, reporting last month, and no service in it: one service
        # recorded adds one to done and one to on plan (its due is above zero, so rounded up
        # at least one), and a second on the day of a maintenance event of another machine
        # adds nothing (the visit reported by both counts once).
        quiet = conn.execute(
            "SELECT m.id FROM machines m JOIN installed_base ib ON ib.serial = m.serial"
            " WHERE ib.deleted_at IS NULL AND ib.commissioned_on < %(start)s"
            "   AND EXISTS (SELECT 1 FROM machine_days d WHERE d.machine_id = m.id"
            "               AND d.day BETWEEN %(start)s AND %(last)s AND d.samples > 0)"
            "   AND NOT EXISTS (SELECT 1 FROM machine_events e WHERE e.machine_id = m.id"
            "       AND e.kind = 'maintenance' AND e.time >= %(start)s AND e.time < %(stop)s)"
            " ORDER BY m.id LIMIT 1",
            {"start": period.start, "last": first_of_month - timedelta(days=1),
             "stop": first_of_month}).fetchone()[0]
        serviced, visit = conn.execute(
            "SELECT machine_id, time FROM machine_events WHERE kind = 'maintenance'"
            " AND time >= %s AND time < %s ORDER BY time LIMIT 1",
            (period.start, first_of_month)).fetchone()
    before = _adherence(own_world.url, period)
    with own_world.api.client("service") as client:
        for machine, at in ((quiet, datetime.combine(period.start + timedelta(days=14),
                                                     datetime.min.time(), UTC)),
                            (serviced, datetime.combine(visit.astimezone(UTC).date(),
                                                        datetime.min.time(), UTC))):
            answer = client.post("/maintenance/records", json={
                "machine_id": machine, "performed_at": at.isoformat(), "work": "service",
                "technician": "B. Roth"})
            assert answer.status_code == 201, answer.text
    after = _adherence(own_world.url, period)
    assert after.counts["services_done"] == before.counts["services_done"] + 1
    assert after.numerator == before.numerator + 1
    assert after.denominator == before.denominator
    assert after.value is not None and after.numerator is not None
    assert float(after.value) == pytest.approx(min(float(after.numerator / after.denominator), 1))


def test_a_plan_edit_moves_the_due_dates_of_its_model(own_world: OwnWorld) -> None:
    today = _today()
    with own_world.api.client("service") as client:
        whole = client.get("/maintenance/due", params={"limit": 1000}).json()["items"]
        model = whole[0]["model"]
        put = client.put(f"/maintenance/plans/{model}", json={
            "interval_days": 30, "work": "inspection",
            "parts_kit": [{"part_number": "K-1", "description": "kit", "quantity": 2}]})
        assert put.status_code == 200, put.text
        plan = put.json()
        assert (plan["interval_hours"], plan["interval_days"], plan["source"]) == \
            (None, 30, "plan")
        assert plan["erp_interval_days"] is not None
        moved = every_page(client, "/maintenance/due", model=model)
        assert moved and {i["interval_days"] for i in moved} == {30}
        raw = read_raw(own_world.url, today)
        for item in moved:
            assert item["due_by_hours_on"] is None and item["due_by"] == "days"
            assert_status_equal(item, expected_status(raw, item["machine_id"], today))
        others = {i["machine_id"]: i for i in whole if i["model"] != model}
        for item in every_page(client, "/maintenance/due", limit=1000):
            if item["machine_id"] in others:
                assert item["due_on"] == others[item["machine_id"]]["due_on"]
    with own_world.api.client("admin") as admin:
        trail = admin.get("/admin/audit", params={"entity": "maintenance_plan"}).json()["items"]
    assert trail[0]["entity_id"] == model and trail[0]["before"]["source"] == "erp"
    assert trail[0]["after"]["interval_days"] == 30
