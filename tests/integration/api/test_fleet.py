"""The fleet routes against the shared demo world: every number checked against a computation of
its own from the raw rows (telemetry, states, events, contracts), never against fleet_status or
the rollups the code under test reads."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from analytics import fleet
from tests.integration.api.conftest import WorldApi
from tests.integration.api_server import problem

SORTS = ("serial", "last_seen", "utilisation", "utilisation_trend", "customer")
# How the list sorts a missing value (fleet_status' *_key columns): lowest.
MISSING = {"utilisation": -1.0, "utilisation_trend": -2.0}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def staff(world_api: WorldApi) -> Iterator[httpx.Client]:
    """A viewer: the least of the staff roles."""
    with world_api.api.client("viewer") as client:
        yield client


@pytest.fixture(scope="module")
def fleet_items(staff: httpx.Client) -> list[dict[str, Any]]:
    """The whole fleet through the API, in pages of 1000."""
    return walk(staff, {"sort": "serial", "limit": 1000})


def walk(client: httpx.Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of the list, page after page."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        answer = client.get("/fleet/machines", params={**params, **({"cursor": cursor}
                                                                    if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the pages never ended")


def rows(url: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    """Rows of a query as the database's owner."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def counter_at(url: str, machine_id: int, moment: datetime) -> float | None:
    """The operating-hours counter's last reading before ``moment`` (raw telemetry)."""
    got = rows(url, "SELECT value FROM telemetry WHERE machine_id = %s AND metric_id = 1"
                    " AND time < %s ORDER BY time DESC LIMIT 1", (machine_id, moment))
    return float(got[0]["value"]) if got else None


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def hours_between(url: str, machine_id: int, start: date, end: date) -> float:
    """Operating hours in [start, end) from the raw counter: the reading before end less the one
    before start (the world's counters never fall)."""
    last = counter_at(url, machine_id, midnight(end))
    first = counter_at(url, machine_id, midnight(start))
    if last is None:
        return 0.0
    if first is None:
        got = rows(url, "SELECT value FROM telemetry WHERE machine_id = %s AND metric_id = 1"
                        " ORDER BY time LIMIT 1", (machine_id,))
        first = float(got[0]["value"])
    return last - first


def expected_status(url: str, item: dict[str, Any]) -> dict[str, Any]:
    """One machine's status worked out from the raw rows, as docs/api-fleet.md defines it."""
    as_of = datetime.fromisoformat(item["as_of"])
    today = as_of.astimezone(UTC).date()
    ib = rows(url, "SELECT * FROM installed_base WHERE id = %s", (item["id"],))[0]
    machine = rows(url, "SELECT id FROM machines WHERE serial = %s", (ib["serial"],))
    mid = machine[0]["id"] if machine else None
    out: dict[str, Any] = {"telemetry_id": mid, "serial": ib["serial"], "model": ib["model"]}
    commissioned = ib["commissioned_on"]

    def calendar_hours(first: date, end: date) -> float:
        start = max(first, commissioned) if commissioned else first
        return 24.0 * max(0, (end - start).days)

    if mid is None:
        out |= {"utilisation": None, "utilisation_trend": None, "last_seen": None}
    else:
        cal = calendar_hours(today - timedelta(days=30), today)
        prev_cal = calendar_hours(today - timedelta(days=60), today - timedelta(days=30))
        hours = hours_between(url, mid, today - timedelta(days=30), today)
        prev = hours_between(url, mid, today - timedelta(days=60), today - timedelta(days=30))
        util = hours / cal if cal else None
        prev_util = prev / prev_cal if prev_cal else None
        trend = util / prev_util - 1 if util is not None and prev_util else None
        seen = rows(url, "SELECT max(t) AS t FROM (SELECT max(time) AS t FROM telemetry"
                         " WHERE machine_id = %(m)s UNION ALL"
                         " SELECT max(time) FROM machine_states WHERE machine_id = %(m)s"
                         " UNION ALL SELECT max(time) FROM machine_events"
                         " WHERE machine_id = %(m)s) x", {"m": mid})[0]["t"]
        faults = rows(url, "SELECT count(*) AS n FROM machine_events WHERE machine_id = %s"
                           " AND kind = 'fault' AND time >= %s AND time < %s",
                      (mid, midnight(today - timedelta(days=30)), midnight(today)))[0]["n"]
        out |= {"utilisation": util, "utilisation_trend": trend, "last_seen": seen,
                "faults_30d": faults}
    live = [c for c in rows(url, "SELECT * FROM service_contracts WHERE customer_id = %s",
                            (ib["customer_id"],))
            if c["deleted_at"] is None and c["status"] not in {"draft", "cancelled"}
            and c["starts_on"] <= today <= c["ends_on"]
            and (c["scope"] == "customer" or c["installed_base_id"] == ib["id"])]
    if live:
        out["coverage"] = "covered"
        out["contract_ends_on"] = max(c["ends_on"] for c in live)
    elif ib["warranty_end"] is not None and ib["warranty_end"] >= today:
        out["coverage"] = "warranty"
    else:
        out["coverage"] = "uncovered"
    return out


def band_of(item: dict[str, Any]) -> str:
    """The health band the rules of docs/api-fleet.md give for an item's own values."""
    trend = item["utilisation_trend"]
    if item["connectivity"] in {"silent", "never_reported"}:
        return "silent"
    if (trend is not None and trend <= -0.5) or item["faults_30d"] >= 3:
        return "at_risk"
    if item["connectivity"] == "quiet" or (trend is not None and trend <= -0.2) \
            or item["coverage"] == "uncovered":
        return "watch"
    return "healthy"


def test_list_values_equal_an_independent_computation(world_api: WorldApi,
                                                      fleet_items: list[dict[str, Any]]) -> None:
    url = world_api.database_url
    live = rows(url, "SELECT id FROM installed_base WHERE deleted_at IS NULL ORDER BY id")
    assert sorted(i["id"] for i in fleet_items) == [r["id"] for r in live]
    # Machines of every band there is, and the first few by id.
    chosen = {i["health_band"]: i for i in fleet_items} | {i["id"]: i for i in fleet_items[:6]}
    assert len(chosen) >= 8
    for item in chosen.values():
        want = expected_status(url, item)
        for key, value in want.items():
            got = item[key]
            if key == "last_seen":
                got = datetime.fromisoformat(got) if got else None
            elif key == "contract_ends_on":
                got = date.fromisoformat(got)
            if isinstance(value, float):
                assert got == pytest.approx(value, abs=1e-9), (item["serial"], key)
            else:
                assert got == value, (item["serial"], key, item)
    # The band and its reason follow from the values, for every machine.
    for item in fleet_items:
        assert item["health_band"] == band_of(item), item
        as_of = datetime.fromisoformat(item["as_of"])
        seen = datetime.fromisoformat(item["last_seen"]) if item["last_seen"] else None
        if item["telemetry_id"] is None:
            assert item["connectivity"] == "never_reported"
        elif seen is not None and as_of - seen <= timedelta(days=4):
            assert item["connectivity"] == "reporting"
        elif seen is not None and as_of - seen <= timedelta(days=14):
            assert item["connectivity"] == "quiet"
        else:
            assert item["connectivity"] == "silent"
    assert len({i["health_band"] for i in fleet_items}) >= 2


def test_values_equal_the_analytics_functions(world_api: WorldApi, staff: httpx.Client,
                                              fleet_items: list[dict[str, Any]]) -> None:
    async def direct(ids: list[int]) -> list[dict[str, Any] | None]:
        async with await psycopg.AsyncConnection.connect(world_api.database_url) as conn:
            return [await fleet.machine(conn, i) for i in ids]

    ids = [i["id"] for i in fleet_items[::37]]
    for row, machine_id in zip(asyncio.run(direct(ids)), ids, strict=True):
        assert row is not None
        detail = staff.get(f"/fleet/machines/{machine_id}").json()
        assert detail["utilisation"] == row["utilisation"]
        assert detail["utilisation_prev"] == row["utilisation_prev"]
        assert detail["health_reason"] == row["health_reason"]
        assert detail["serial"] == row["serial"] and detail["customer_id"] == row["customer_id"]
        ib = rows(world_api.database_url, "SELECT * FROM installed_base WHERE id = %s",
                  (machine_id,))[0]
        assert detail["commissioned_on"] == (ib["commissioned_on"].isoformat()
                                             if ib["commissioned_on"] else None)
        assert detail["under_warranty"] == (ib["warranty_end"] is not None and ib["warranty_end"]
                                            >= datetime.fromisoformat(detail["as_of"]).date())
        if detail["contract"] is not None:
            contract = rows(world_api.database_url,
                            "SELECT * FROM service_contracts WHERE id = %s",
                            (detail["contract"]["id"],))[0]
            assert detail["contract"]["ends_on"] == contract["ends_on"].isoformat()
            assert detail["contract"]["annual_value"] == str(contract["annual_value"])
            assert contract["customer_id"] == detail["customer_id"]


def _key(item: dict[str, Any], sort: str) -> Any:
    if sort == "last_seen":
        return datetime.fromisoformat(item["last_seen"]) if item["last_seen"] else EPOCH
    value = item[sort]
    return MISSING[sort] if value is None else value


@pytest.mark.parametrize("sort", [*SORTS, *(f"-{s}" for s in SORTS)])
def test_paging_walks_the_fleet_once_in_a_stable_order(world_api: WorldApi, staff: httpx.Client,
                                                       sort: str) -> None:
    items = walk(staff, {"sort": sort, "limit": 37})
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids))
    name = sort.removeprefix("-")
    descending = sort.startswith("-")
    if name in {"serial", "customer"}:
        # Text in the database's collation: ordered by the database from the raw tables.
        column = "ib.serial" if name == "serial" else "c.name"
        direction = "DESC" if descending else "ASC"
        want = [r["id"] for r in rows(
            world_api.database_url,
            f"SELECT ib.id FROM installed_base ib JOIN customers c ON c.id = ib.customer_id"
            f" WHERE ib.deleted_at IS NULL ORDER BY {column} {direction}, ib.id {direction}")]
    else:
        want = [i["id"] for i in sorted(items, key=lambda i: (_key(i, name), i["id"]),
                                        reverse=descending)]
    assert ids == want
    # The same walk again gives the same order.
    assert [i["id"] for i in walk(staff, {"sort": sort, "limit": 101})] == ids


def test_filters(world_api: WorldApi, staff: httpx.Client,
                 fleet_items: list[dict[str, Any]]) -> None:
    url = world_api.database_url

    def ids(params: dict[str, Any]) -> set[int]:
        return {i["id"] for i in walk(staff, {**params, "limit": 1000})}

    customer = fleet_items[0]["customer_id"]
    assert ids({"customer": customer}) == {r["id"] for r in rows(
        url, "SELECT id FROM installed_base WHERE customer_id = %s AND deleted_at IS NULL",
        (customer,))}
    model = fleet_items[0]["model"]
    assert ids({"model": model}) == {r["id"] for r in rows(
        url, "SELECT id FROM installed_base WHERE model = %s AND deleted_at IS NULL", (model,))}
    country = next(i["country"] for i in fleet_items if i["country"])
    assert ids({"country": country.lower()}) == {r["id"] for r in rows(
        url, "SELECT ib.id FROM installed_base ib JOIN customers c ON c.id = ib.customer_id"
             " LEFT JOIN sites s ON s.id = ib.site_id WHERE ib.deleted_at IS NULL"
             " AND coalesce(s.country, c.country) = %s", (country,))}
    site = next(i["site_id"] for i in fleet_items if i["site_id"])
    assert ids({"site": site}) == {i["id"] for i in fleet_items if i["site_id"] == site}
    prefix = fleet_items[0]["serial"][:4]
    assert ids({"serial_prefix": prefix}) == {i["id"] for i in fleet_items
                                              if i["serial"].startswith(prefix)}
    assert ids({"serial_prefix": "%"}) == set()  # a wildcard is a character like any other
    word = fleet_items[3]["customer_name"].split()[0].lower()
    assert ids({"search": word}) == {i["id"] for i in fleet_items
                                     if word in i["customer_name"].lower()
                                     or word in i["serial"].lower()}
    for name, values in (("band", ["watch", "at_risk"]), ("coverage", ["uncovered"]),
                         ("connectivity", ["quiet", "silent"]), ("state", ["running", "off"])):
        field = {"band": "health_band"}.get(name, name)
        assert ids({name: values}) == {i["id"] for i in fleet_items if i[field] in values}, name
    both = ids({"coverage": "covered", "band": "healthy", "model": model})
    assert both == {i["id"] for i in fleet_items if i["coverage"] == "covered"
                    and i["health_band"] == "healthy" and i["model"] == model}


@pytest.mark.parametrize(("params", "status"), [
    ({"band": "dire"}, 422), ({"coverage": "some"}, 422), ({"country": "DEU"}, 422),
    ({"sort": "price"}, 422), ({"limit": 0}, 422), ({"limit": 1001}, 422),
    ({"customer": "x"}, 422), ({"state": "broken"}, 422), ({"cursor": "nonsense"}, 400),
    ({"format": "pdf"}, 422), ({"serial_prefix": ""}, 422)])
def test_bad_filters_are_problems(staff: httpx.Client, params: dict[str, Any],
                                  status: int) -> None:
    body = problem(staff.get("/fleet/machines", params=params), status)
    assert body["detail"]


def test_a_cursor_of_another_sort_is_refused(staff: httpx.Client) -> None:
    first = staff.get("/fleet/machines", params={"sort": "utilisation", "limit": 5}).json()
    body = problem(staff.get("/fleet/machines", params={
        "sort": "serial", "cursor": first["next_cursor"]}), 400)
    assert "sort" in body["detail"]


def test_csv_export_rows_equal_the_json_pages(staff: httpx.Client) -> None:
    params = {"sort": "-utilisation", "coverage": ["covered", "warranty"]}
    pages = walk(staff, {**params, "limit": 23})
    answer = staff.get("/fleet/machines", params={**params, "format": "csv"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert [int(r["id"]) for r in lines] == [i["id"] for i in pages]
    for line, item in zip(lines, pages, strict=True):
        assert line["serial"] == item["serial"]
        assert line["health_band"] == item["health_band"]
        assert line["health_reason"] == item["health_reason"]
        assert (float(line["utilisation"]) if line["utilisation"] else None) == \
            item["utilisation"]
    xlsx = staff.get("/fleet/machines", params={**params, "format": "xlsx"})
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"


def test_summary_counts_the_fleet(world_api: WorldApi, staff: httpx.Client,
                                  fleet_items: list[dict[str, Any]]) -> None:
    body = staff.get("/fleet/summary").json()
    live = rows(world_api.database_url,
                "SELECT count(*) AS n FROM installed_base WHERE deleted_at IS NULL")[0]["n"]
    assert body["machines"] == live == len(fleet_items)
    for dimension, field in (("health_band", "health_band"), ("coverage", "coverage"),
                             ("connectivity", "connectivity")):
        assert sum(body[dimension].values()) == live
        for value, count in body[dimension].items():
            assert count == sum(1 for i in fleet_items if i[field] == value), (dimension, value)
    model = fleet_items[0]["model"]
    assert staff.get("/fleet/summary", params={"model": model}).json()["machines"] == \
        sum(1 for i in fleet_items if i["model"] == model)


def _with_metric(url: str) -> dict[str, Any]:
    """A machine with process samples, its installed-base id and the samples' last hour."""
    return rows(url, "SELECT ib.id AS installed_base_id, m.id AS machine_id,"
                     " date_trunc('hour', max(t.time)) AS last_hour"
                     " FROM telemetry t JOIN machines m ON m.id = t.machine_id"
                     " JOIN installed_base ib ON ib.serial = m.serial AND ib.deleted_at IS NULL"
                     " WHERE t.metric_id = (SELECT id FROM metrics WHERE name = 'spindle_load_pct')"
                     " GROUP BY 1, 2 ORDER BY count(*) DESC, 1 LIMIT 1")[0]


def _check_buckets(url: str, body: dict[str, Any], machine_id: int) -> None:
    width = timedelta(seconds=body["bucket_seconds"])
    raw = rows(url, "SELECT time, value FROM telemetry WHERE machine_id = %s AND metric_id ="
                    " (SELECT id FROM metrics WHERE name = %s) AND time >= %s AND time < %s",
               (machine_id, body["metric"], datetime.fromisoformat(body["origin"]),
                datetime.fromisoformat(body["end"])))
    assert len(body["buckets"]) <= body["points"]
    assert sum(b["samples"] for b in body["buckets"]) == len(raw) > 0
    for b in body["buckets"]:
        start = datetime.fromisoformat(b["time"])
        inside = [r["value"] for r in raw if start <= r["time"] < start + width]
        assert b["samples"] == len(inside)
        assert b["avg"] == pytest.approx(sum(inside) / len(inside), rel=1e-9)
        assert (b["min"], b["max"]) == (min(inside), max(inside))


def test_downsampling_a_short_range_reads_the_samples(world_api: WorldApi,
                                                      staff: httpx.Client) -> None:
    m = _with_metric(world_api.database_url)
    end = m["last_hour"] + timedelta(hours=1)
    answer = staff.get(f"/fleet/machines/{m['installed_base_id']}/metrics/spindle_load_pct",
                       params={"from": (end - timedelta(hours=36)).isoformat(),
                               "to": end.isoformat(), "points": 7})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["source"] == "raw"
    assert 0 < len(body["buckets"]) <= 7
    _check_buckets(world_api.database_url, body, m["machine_id"])


def test_downsampling_a_year_reads_the_hourly_rollup(world_api: WorldApi,
                                                     staff: httpx.Client) -> None:
    m = _with_metric(world_api.database_url)
    end = m["last_hour"] + timedelta(hours=1)
    for points in (50, 500):
        answer = staff.get(f"/fleet/machines/{m['installed_base_id']}/metrics/spindle_load_pct",
                           params={"from": (end - timedelta(days=365)).isoformat(),
                                   "to": end.isoformat(), "points": points})
        body = answer.json()
        assert body["source"] == "hourly"
        assert body["bucket_seconds"] % 3600 == 0
        assert body["rollup_through"] is not None
        assert 0 < len(body["buckets"]) <= points
        _check_buckets(world_api.database_url, body, m["machine_id"])
    default = staff.get(f"/fleet/machines/{m['installed_base_id']}/metrics/spindle_load_pct",
                        params={"from": (end - timedelta(days=365)).isoformat()}).json()
    assert default["points"] == 500 and len(default["buckets"]) <= 500


def test_bad_chart_requests(world_api: WorldApi, staff: httpx.Client,
                            fleet_items: list[dict[str, Any]]) -> None:
    machine = fleet_items[0]["id"]
    path = f"/fleet/machines/{machine}/metrics/spindle_load_pct"
    problem(staff.get(path, params={"points": 5001}), 422)
    problem(staff.get(path, params={"points": 0}), 422)
    problem(staff.get(path, params={"from": "yesterday"}), 422)
    problem(staff.get(path, params={"from": "2026-01-02T00:00:00Z",
                                    "to": "2026-01-01T00:00:00Z"}), 400)
    problem(staff.get(f"/fleet/machines/{machine}/metrics/no_such_metric"), 404)
    assert "usage" in problem(staff.get(f"/fleet/machines/{machine}/metrics/operating_hours"),
                              400)["detail"]
    problem(staff.get("/fleet/machines/2147483000/metrics/spindle_load_pct"), 404)
    problem(staff.get(f"/fleet/machines/{machine}/usage", params={"by": "month"}), 422)
    problem(staff.get(f"/fleet/machines/{machine}/usage",
                      params={"from": "2020-01-01", "to": "2026-01-01"}), 400)
    problem(staff.get(f"/fleet/machines/{machine}/events", params={"kind": "party"}), 422)
    problem(staff.get(f"/fleet/machines/{machine}/states", params={"limit": 0}), 422)
    problem(staff.get("/fleet/machines/0"), 422)


def test_usage_by_day_and_week_equals_the_counter(world_api: WorldApi, staff: httpx.Client,
                                                  fleet_items: list[dict[str, Any]]) -> None:
    url = world_api.database_url
    item = next(i for i in fleet_items if i["connectivity"] in {"reporting", "quiet"})
    end = world_api.today
    start = end - timedelta(days=28)
    for by in ("day", "week"):
        answer = staff.get(f"/fleet/machines/{item['id']}/usage",
                           params={"by": by, "from": start.isoformat(), "to": end.isoformat()})
        assert answer.status_code == 200, answer.text
        periods = answer.json()["periods"]
        assert len(periods) == (28 if by == "day" else len({
            (start + timedelta(days=d)).isocalendar()[:2] for d in range(28)}))
        for p in periods:
            first = max(date.fromisoformat(p["period"]), start)
            last = min(first + timedelta(days=1 if by == "day" else 7 - first.weekday()), end)
            assert p["calendar_hours"] == 24 * (last - first).days
            want = hours_between(url, item["telemetry_id"], first, last)
            assert p["operating_hours"] == pytest.approx(want, abs=1e-6), p
            assert p["utilisation"] == pytest.approx(want / p["calendar_hours"], abs=1e-9)


def test_state_timeline_is_the_reports_merged(world_api: WorldApi, staff: httpx.Client,
                                              fleet_items: list[dict[str, Any]]) -> None:
    item = next(i for i in fleet_items if i["connectivity"] in {"reporting", "quiet"})
    end = datetime.combine(world_api.today, datetime.min.time(), tzinfo=UTC)
    start = end - timedelta(days=5)
    body = staff.get(f"/fleet/machines/{item['id']}/states",
                     params={"from": start.isoformat(), "to": end.isoformat()}).json()
    reports = rows(world_api.database_url,
                   "SELECT time, state::text FROM machine_states WHERE machine_id = %s"
                   " AND time >= %s AND time < %s ORDER BY time",
                   (item["telemetry_id"], start, end))
    before = rows(world_api.database_url,
                  "SELECT state::text FROM machine_states WHERE machine_id = %s AND time < %s"
                  " AND time >= %s ORDER BY time DESC LIMIT 1",
                  (item["telemetry_id"], start, start - timedelta(days=30)))
    merged: list[list[Any]] = []
    for at, state in ([(start, before[0]["state"])] if before else []) + \
            [(r["time"], r["state"]) for r in reports]:
        if merged and merged[-1][1] == state:
            merged[-1][2] += 1
        else:
            merged.append([at, state, 1])
    got = body["intervals"]
    assert [(datetime.fromisoformat(i["started_at"]), i["state"], i["reports"]) for i in got] \
        == [tuple(m) for m in merged]
    for a, b in itertools.pairwise(got):
        assert a["ended_at"] == b["started_at"] and a["state"] != b["state"]
    assert datetime.fromisoformat(got[-1]["ended_at"]) == end
    short = staff.get(f"/fleet/machines/{item['id']}/states",
                      params={"from": start.isoformat(), "to": end.isoformat(),
                              "limit": 2}).json()
    assert short["truncated"] is True and short["intervals"] == got[:2]


def test_events_are_the_newest_of_their_kind(world_api: WorldApi, staff: httpx.Client) -> None:
    url = world_api.database_url
    m = rows(url, "SELECT ib.id, m.id AS machine_id FROM machine_events e"
                  " JOIN machines m ON m.id = e.machine_id JOIN installed_base ib"
                  " ON ib.serial = m.serial AND ib.deleted_at IS NULL WHERE e.kind = 'fault'"
                  " GROUP BY 1, 2 ORDER BY count(*) DESC, 1 LIMIT 1")[0]
    body = staff.get(f"/fleet/machines/{m['id']}/events",
                     params={"kind": "fault", "limit": 5}).json()
    want = rows(url, "SELECT time, code FROM machine_events WHERE machine_id = %s"
                     " AND kind = 'fault' ORDER BY time DESC LIMIT 5", (m["machine_id"],))
    assert [(datetime.fromisoformat(e["time"]), e["code"]) for e in body["events"]] == \
        [(w["time"], w["code"]) for w in want]
    every = staff.get(f"/fleet/machines/{m['id']}/events",
                      params={"kind": ["fault", "maintenance"], "limit": 500}).json()["events"]
    assert {e["kind"] for e in every} <= {"fault", "maintenance"}
    assert len(every) == min(500, rows(
        url, "SELECT count(*) AS n FROM machine_events WHERE machine_id = %s"
             " AND kind IN ('fault', 'maintenance')", (m["machine_id"],))[0]["n"])


def test_anonymous_callers_are_refused(world_api: WorldApi,
                                       fleet_items: list[dict[str, Any]]) -> None:
    # Every role reads the fleet (a portal user its own company's), so no role gets a 403 here.
    with world_api.api.client() as anonymous:
        for path in ("/fleet/machines", "/fleet/summary",
                     f"/fleet/machines/{fleet_items[0]['id']}"):
            problem(anonymous.get(path), 401)
    for role in ("service", "finance", "admin"):
        with world_api.api.client(role) as client:
            assert client.get("/fleet/summary").status_code == 200


def test_a_portal_user_sees_its_company_only(world_api: WorldApi,
                                             fleet_items: list[dict[str, Any]]) -> None:
    url = world_api.database_url
    mine = max({i["customer_id"] for i in fleet_items},
               key=lambda c: (sum(1 for i in fleet_items if i["customer_id"] == c), -c))
    theirs = next(i for i in fleet_items if i["customer_id"] != mine
                  and i["telemetry_id"] is not None)
    own = next(i for i in fleet_items if i["customer_id"] == mine)
    with world_api.api.client("customer", customer_id=mine) as portal:
        items = walk(portal, {"limit": 7})
        assert {i["id"] for i in items} == {r["id"] for r in rows(
            url, "SELECT id FROM installed_base WHERE customer_id = %s AND deleted_at IS NULL",
            (mine,))}
        assert portal.get("/fleet/summary").json()["machines"] == len(items)
        # Filtering by another company finds nothing, rather than its machines.
        assert walk(portal, {"customer": theirs["customer_id"]}) == []
        for suffix in ("", "/usage", "/metrics/spindle_load_pct", "/states", "/events"):
            body = problem(portal.get(f"/fleet/machines/{theirs['id']}{suffix}"), 404)
            assert theirs["serial"] not in body["detail"]
            assert portal.get(f"/fleet/machines/{own['id']}{suffix}").status_code == 200
        export = portal.get("/fleet/machines", params={"format": "csv"})
        assert {int(r["id"]) for r in csv.DictReader(
            io.StringIO(export.content.decode("utf-8-sig")))} == {i["id"] for i in items}


def test_the_detail_has_an_etag(staff: httpx.Client, fleet_items: list[dict[str, Any]]) -> None:
    path = f"/fleet/machines/{fleet_items[0]['id']}"
    first = staff.get(path)
    again = staff.get(path, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
