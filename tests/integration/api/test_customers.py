"""Customer routes against the shared demo world: the list (pages, filters, exports), the 360,
its paged parts, who may see what, and bad requests.

Every figure is checked twice: against analytics' own function (what the route must pass on)
and against a computation of this file from the rows (plain SQL over the tables, or Python),
written apart from analytics/sql/customers.sql and the SQL definitions it calls.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any, TypeVar

import httpx
import pytest
from openpyxl import load_workbook

from analytics import customers as analytics
from core.paging import PageRequest
from tests.integration.api.conftest import REPORTING, WorldApi
from tests.integration.api_server import problem

T = TypeVar("T")
AFTER_SALES = ("service_contract", "field_service", "spare_parts", "retrofit")




@pytest.fixture(scope="module")
def staff(world_api: WorldApi) -> Any:
    with world_api.api.client("viewer") as client:
        yield client


def _every(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list route, page by page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        answer = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["items"]) <= body["limit"]
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def _rates(world_api: WorldApi) -> dict[str, list[tuple[date, Decimal]]]:
    rates: dict[str, list[tuple[date, Decimal]]] = defaultdict(list)
    for r in world_api.rows("SELECT currency, valid_from, rate FROM exchange_rates"
                              " ORDER BY currency, valid_from"):
        rates[r["currency"].strip()].append((r["valid_from"], r["rate"]))
    return rates


def _convert(rates: dict[str, list[tuple[date, Decimal]]], amount: Decimal, currency: str,
             day: date) -> Decimal | None:
    if currency == REPORTING:
        return amount
    valid = [rate for since, rate in rates.get(currency, []) if since <= day]
    return amount * valid[-1] if valid else None


def _revenue(world_api: WorldApi, first: date, last: date) -> dict[int, Decimal]:
    """After-sales revenue per customer, from the lines, converted here (docs/kpis.md)."""
    rates = _rates(world_api)
    lines = world_api.rows("""
        SELECT i.customer_id, i.currency, i.issued_on, l.net_amount
        FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
        WHERE i.deleted_at IS NULL AND l.deleted_at IS NULL
          AND i.status NOT IN ('draft', 'cancelled') AND l.kind = ANY(%s)
          AND i.issued_on BETWEEN %s AND %s""", (list(AFTER_SALES), first, last))
    revenue: dict[int, Decimal] = defaultdict(Decimal)
    with localcontext() as ctx:
        ctx.prec = 60
        for line in lines:
            converted = _convert(rates, line["net_amount"], line["currency"].strip(),
                                 line["issued_on"])
            if converted is not None:
                revenue[line["customer_id"]] += converted
    return revenue


def test_the_list_holds_every_customer_once_in_every_sort(world_api: WorldApi,
                                                          staff: httpx.Client) -> None:
    today = world_api.today
    expected = {r["id"]: r for r in world_api.rows(
        "SELECT id, name FROM customers WHERE deleted_at IS NULL")}
    for sort in ("name", "-churn_probability", "clv", "-revenue_12m", "annual_contract_value"):
        items = _every(staff, "/customers", sort=sort, limit=7, on=today.isoformat())
        ids = [i["id"] for i in items]
        assert len(ids) == len(set(ids)) == len(expected), sort
        assert set(ids) == set(expected), sort
        name = sort.removeprefix("-")
        keys = [(_sort_key(i, name), i["id"]) for i in items]
        assert keys == sorted(keys, reverse=sort.startswith("-")), sort
    # Stable: the same pages twice.
    assert _every(staff, "/customers", sort="clv", limit=9, on=today.isoformat()) == \
        _every(staff, "/customers", sort="clv", limit=9, on=today.isoformat())


def _sort_key(item: dict[str, Any], name: str) -> Any:
    if name == "name":
        return item["name"]
    value = item["churn_probability" if name == "churn_probability" else name]
    return Decimal(str(value)) if value is not None else Decimal(-1)


def test_the_list_names_sort_like_the_database(world_api: WorldApi,
                                               staff: httpx.Client) -> None:
    # Names sort by the database's collation, which Python's str order need not match: the
    # order is checked against the database's own ORDER BY.
    ordered = [r["id"] for r in world_api.rows("SELECT id FROM customers"
                                      " WHERE deleted_at IS NULL ORDER BY name, id")]
    items = _every(staff, "/customers", sort="name", limit=11, on=world_api.today.isoformat())
    assert [i["id"] for i in items] == ordered


def test_list_values_equal_analytics_and_the_rows(world_api: WorldApi,
                                                  staff: httpx.Client) -> None:
    today = world_api.today
    answer = staff.get("/customers", params={"limit": 1000, "on": today.isoformat(),
                                             "archived": "true"})
    items = {i["id"]: i for i in answer.json()["items"]}
    page = world_api.analytics(lambda conn: analytics.list_customers(
        conn, PageRequest(limit=1000, sort="name"), on=today, reporting_currency=REPORTING,
        where=analytics.CustomerFilter(archived=True)))
    assert {r["id"] for r in page.items} == set(items)
    for row in page.items:
        item = items[row["id"]]
        assert Decimal(item["revenue_12m"]) == row["revenue_12m"]
        assert item["churn_probability"] == row["probability"]
        assert item["overdue_invoices"] == row["overdue_invoices"]
    # Independently: revenue from the lines, scores and values from their tables, unpaid
    # invoices and live contracts counted here.
    revenue = _revenue(world_api, today - timedelta(days=364), today)
    scores = {r["customer_id"]: r["probability"] for r in world_api.rows(
        "SELECT customer_id, probability FROM churn_scores WHERE scored_on = %s",
        (today,))}
    values = {r["customer_id"]: r["total_clv"] for r in world_api.rows(
        "SELECT customer_id, total_clv FROM customer_values WHERE valued_on = %s",
        (today,))}
    unpaid = world_api.rows("SELECT customer_id, due_on FROM invoices WHERE status = 'open'"
                              " AND deleted_at IS NULL AND issued_on <= %s", (today,))
    overdue: dict[int, int] = defaultdict(int)
    opened: dict[int, int] = defaultdict(int)
    for r in unpaid:
        opened[r["customer_id"]] += 1
        overdue[r["customer_id"]] += r["due_on"] is not None and r["due_on"] < today
    live = world_api.rows("SELECT customer_id, annual_value, currency FROM service_contracts"
                            " WHERE deleted_at IS NULL AND status IN ('active', 'expired',"
                            " 'terminated') AND starts_on <= %s AND ends_on >= %s",
                 (today, today))
    rates = _rates(world_api)
    acv: dict[int, Decimal] = defaultdict(Decimal)
    with localcontext() as ctx:
        ctx.prec = 60
        for r in live:
            converted = _convert(rates, r["annual_value"], r["currency"].strip(), today)
            assert converted is not None
            acv[r["customer_id"]] += converted
    assert scores and values and revenue and acv
    for cid, item in items.items():
        assert Decimal(item["revenue_12m"]) == revenue.get(cid, 0), cid
        assert item["churn_probability"] == scores.get(cid), cid
        assert (Decimal(item["clv"]) if item["clv"] is not None else None) == values.get(cid)
        assert item["open_invoices"] == opened.get(cid, 0)
        assert item["overdue_invoices"] == overdue.get(cid, 0)
        assert Decimal(item["annual_contract_value"]) == acv.get(cid, 0), cid
        assert item["currency"] == REPORTING
        probability = item["churn_probability"]
        assert item["risk_band"] == (None if probability is None else "high"
                                     if probability >= 0.5 else "medium"
                                     if probability >= 0.2 else "low")
    assert sum(overdue.values()) > 0


@pytest.mark.parametrize(("params", "where"), [
    ({"country": "DE"}, "country = 'DE'"),
    ({"size_class": "large", "key_account": "true"}, "size_class = 'large' AND key_account"),
    ({"q": "GMBH"}, "name ILIKE '%%gmbh%%'"),
    ({"has_overdue": "true"}, "id IN (SELECT customer_id FROM invoices WHERE status = 'open'"
     " AND deleted_at IS NULL AND due_on < %(today)s)"),
    ({"min_probability": "0.1"}, "id IN (SELECT customer_id FROM churn_scores"
     " WHERE scored_on = %(today)s AND probability >= 0.1)"),
    ({"risk_band": "low"}, "id IN (SELECT customer_id FROM churn_scores"
     " WHERE scored_on = %(today)s AND probability < 0.2)"),
    ({"segment": "rfm:champions"}, "id IN (SELECT customer_id FROM segment_memberships"
     " WHERE kind = 'rfm' AND assigned_on = %(today)s AND segment = 'champions')"),
])
def test_filters_select_what_the_rows_say(world_api: WorldApi, staff: httpx.Client,
                                          params: dict[str, str], where: str) -> None:
    today = world_api.today
    expected = {r["id"] for r in world_api.rows(
        f"SELECT id FROM customers WHERE deleted_at IS NULL AND {where}",
        {"today": today})}
    assert expected, params
    items = _every(staff, "/customers", limit=13, on=today.isoformat(), **params)
    assert {i["id"] for i in items} == expected, params


def test_exports_hold_what_the_pages_hold(world_api: WorldApi, staff: httpx.Client) -> None:
    params = {"country": "DE", "sort": "-revenue_12m", "on": world_api.today.isoformat()}
    items = _every(staff, "/customers", limit=5, **params)
    answer = staff.get("/customers", params={**params, "format": "csv"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert [int(r["id"]) for r in table] == [i["id"] for i in items]
    assert [Decimal(r["revenue_12m"]) for r in table] == \
        [Decimal(i["revenue_12m"]) for i in items]
    assert [r["name"] for r in table] == [i["name"] for i in items]
    answer = staff.get("/customers", params={**params, "format": "xlsx"})
    assert answer.status_code == 200
    sheet = load_workbook(io.BytesIO(answer.content), read_only=True).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    header = list(rows[0])
    assert [r[header.index("id")] for r in rows[1:]] == [i["id"] for i in items]
    assert [r[header.index("name")] for r in rows[1:]] == [i["name"] for i in items]


def _busy_customer(world_api: WorldApi) -> int:
    """A customer with machines, contracts, an open invoice, orders and survey answers."""
    row = world_api.rows("""
        SELECT c.id FROM customers c
        WHERE c.deleted_at IS NULL
          AND EXISTS (SELECT 1 FROM invoices i WHERE i.customer_id = c.id AND i.status = 'open')
          AND EXISTS (SELECT 1 FROM survey_responses r WHERE r.customer_id = c.id
                      AND r.answered_at > now() - interval '365 days')
          AND EXISTS (SELECT 1 FROM churn_scores s WHERE s.customer_id = c.id)
        ORDER BY (SELECT count(*) FROM installed_machines m WHERE m.customer_id = c.id) DESC,
                 c.id
        LIMIT 1""")
    return int(row[0]["id"])


def _nps(scores: list[tuple[Any, Any, int, int]]) -> tuple[int, Decimal | None]:
    """One answer per contact (its latest), an answer without a contact alone; the NPS."""
    latest: dict[Any, tuple[Any, int, int]] = {}
    for contact, answered_at, answer_id, score in scores:
        key = contact if contact is not None else f"answer {answer_id}"
        if key not in latest or (answered_at, answer_id) > latest[key][:2]:
            latest[key] = (answered_at, answer_id, score)
    counted = [score for _, _, score in latest.values()]
    if not counted:
        return 0, None
    promoters = sum(s >= 9 for s in counted)
    detractors = sum(s <= 6 for s in counted)
    return len(counted), Decimal(100) * (promoters - detractors) / len(counted)


def test_the_360_equals_analytics_and_the_rows(world_api: WorldApi,
                                               staff: httpx.Client) -> None:
    today = world_api.today
    cid = _busy_customer(world_api)
    answer = staff.get(f"/customers/{cid}", params={"on": today.isoformat()})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["view"] == "staff" and body["customer"]["id"] == cid
    mine = world_api.analytics(lambda conn: analytics.customer_360(
        conn, cid, on=today, reporting_currency=REPORTING))
    assert mine is not None
    assert [m["serial"] for m in body["machines"]] == [m["serial"] for m in mine.machines]
    assert [c["id"] for c in body["contracts"]] == [c["id"] for c in mine.contracts]
    assert mine.risk is not None
    assert body["risk"]["probability"] == mine.risk["probability"]
    assert [(c["kind"], c["entity_id"]) for c in body["changes"]] == \
        [(c["kind"], c["entity_id"]) for c in mine.changes]
    assert body["machine_period"] == mine.period.label

    # Independently. Machines: the installed base not deleted.
    serials = [r["serial"] for r in world_api.rows("SELECT serial FROM installed_base"
                                          " WHERE customer_id = %s AND deleted_at IS NULL"
                                          " ORDER BY serial, id", (cid,))]
    assert [m["serial"] for m in body["machines"]] == serials
    # Named as everywhere: the installed-base id and the telemetry machine by serial.
    ids = world_api.rows("SELECT ib.id, m.id AS telemetry_id FROM installed_base ib"
                           " LEFT JOIN machines m ON m.serial = ib.serial"
                           " WHERE ib.customer_id = %s AND ib.deleted_at IS NULL"
                           " ORDER BY ib.serial, ib.id", (cid,))
    assert [(m["installed_base_id"], m["telemetry_id"]) for m in body["machines"]] == \
        [(r["id"], r["telemetry_id"]) for r in ids]
    # Machines' figures are machine_kpis' of the quarter to date; silent: last seen more than
    # 14 days before the day's end.
    end = datetime.combine(today + timedelta(days=1), time(), tzinfo=UTC)
    for machine in body["machines"]:
        figures = mine.machine_figures.get(machine["installed_base_id"])
        assert (Decimal(machine["hours"]) if machine["hours"] is not None else None) == \
            (figures.hours if figures is not None else None)
        seen = machine["last_seen"]
        assert machine["silent"] == (None if seen is None else
                                     datetime.fromisoformat(seen) < end - timedelta(days=14))
    # Unpaid invoices per currency.
    unpaid = world_api.rows("SELECT currency, net_amount, due_on FROM invoices"
                              " WHERE customer_id = %s AND status = 'open'"
                              " AND deleted_at IS NULL AND issued_on <= %s", (cid, today))
    totals: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 4)
    for r in unpaid:
        t = totals[r["currency"].strip()]
        t[0] += 1
        t[1] += r["net_amount"]
        if r["due_on"] < today:
            t[2] += 1
            t[3] += r["net_amount"]
    assert {i["currency"]: [Decimal(i["open_invoices"]), Decimal(i["open_amount"]),
                            Decimal(i["overdue_invoices"]), Decimal(i["overdue_amount"])]
            for i in body["invoices"]} == totals
    # Risk: the churn_scores rows of today and a week before.
    scores = {r["scored_on"]: r for r in world_api.rows(
        "SELECT * FROM churn_scores WHERE customer_id = %s", (cid,))}
    now, before = scores[today], scores.get(today - timedelta(days=7))
    risk = body["risk"]
    assert risk["probability"] == now["probability"]
    assert risk["method"] == now["method"] and risk["model_version"] == now["model_version"]
    assert [r["factor"] for r in risk["reasons"]] == [r["factor"] for r in now["reasons"]]
    if before is not None:
        assert risk["week_before_probability"] == before["probability"]
        assert risk["change"] == pytest.approx(now["probability"] - before["probability"])
    # Value: the customer_values row.
    value = world_api.rows("SELECT * FROM customer_values WHERE customer_id = %s"
                             " AND valued_on = %s", (cid, today))[0]
    assert Decimal(body["value"]["total_clv"]) == value["total_clv"]
    assert body["value"]["method"] == value["method"]
    # Figures: revenue from the lines; NPS from the answers, in Python.
    figures = body["figures"]
    assert Decimal(figures["revenue_12m"]) == _revenue(
        world_api, today - timedelta(days=364), today).get(cid, 0)
    assert Decimal(figures["revenue_prev_12m"]) == _revenue(
        world_api, today - timedelta(days=729), today - timedelta(days=365)).get(cid, 0)
    answers = world_api.rows("""
        SELECT contact_id, answered_at, id, score FROM survey_responses
        WHERE customer_id = %s AND deleted_at IS NULL
          AND answered_at >= %s::date - 364 AND answered_at < %s::date + 1""",
                    (cid, today, today))
    responses, nps = _nps([(a["contact_id"], a["answered_at"], a["id"], a["score"])
                           for a in answers])
    assert figures["nps_responses"] == responses
    assert (Decimal(figures["nps"]) if figures["nps"] is not None else None) == nps
    # Overdue invoices, oldest first; the history of the scores.
    assert [i["id"] for i in body["overdue_invoices"]] == [r["id"] for r in world_api.rows(
        "SELECT id FROM invoices WHERE customer_id = %s AND status = 'open'"
        " AND deleted_at IS NULL AND due_on < %s ORDER BY issued_on, id LIMIT 20",
        (cid, today))]
    assert [(p["day"], p["probability"]) for p in body["risk_history"]] == \
        [(d.isoformat(), scores[d]["probability"]) for d in sorted(scores)]
    assert [a["id"] for a in body["recent_answers"]] == [r["id"] for r in world_api.rows(
        "SELECT id FROM survey_responses WHERE customer_id = %s"
        " AND deleted_at IS NULL ORDER BY answered_at DESC, id DESC LIMIT 5", (cid,))]
    # Segments: the latest assignment of each kind.
    kinds = {r["kind"]: r["segment"] for r in world_api.rows(
        "SELECT kind, segment FROM segment_memberships WHERE customer_id = %s"
        " AND assigned_on = %s", (cid, today))}
    assert {s["dimension"]: s["segment"] for s in body["segments"]
            if s["dimension"] != "tier"} == kinds


def test_what_changed_in_the_week(world_api: WorldApi, staff: httpx.Client) -> None:
    today = world_api.today
    since = today - timedelta(days=7)
    # A customer with an invoice issued in the week and scores on both days.
    cid = world_api.rows("""
        SELECT i.customer_id FROM invoices i
        WHERE i.issued_on > %s AND i.issued_on <= %s AND i.deleted_at IS NULL
          AND i.status <> 'draft'
          AND EXISTS (SELECT 1 FROM churn_scores s WHERE s.customer_id = i.customer_id
                      AND s.scored_on = %s)
          AND EXISTS (SELECT 1 FROM churn_scores s WHERE s.customer_id = i.customer_id
                      AND s.scored_on = %s)
        ORDER BY i.customer_id LIMIT 1""", (since, today, since, today))[0]["customer_id"]
    body = staff.get(f"/customers/{cid}", params={"on": today.isoformat()}).json()
    changes = body["changes"]
    issued = {str(r["id"]) for r in world_api.rows(
        "SELECT id FROM invoices WHERE customer_id = %s AND issued_on > %s"
        " AND issued_on <= %s AND deleted_at IS NULL AND status <> 'draft'",
        (cid, since, today))}
    assert {c["entity_id"] for c in changes if c["kind"] == "invoice_issued"} == issued
    orders = {str(r["id"]) for r in world_api.rows(
        "SELECT id FROM orders WHERE customer_id = %s AND ordered_on > %s"
        " AND ordered_on <= %s AND deleted_at IS NULL AND status <> 'draft'",
        (cid, since, today))}
    assert {c["entity_id"] for c in changes if c["kind"] == "order"} == orders
    paid = {str(r["id"]) for r in world_api.rows(
        "SELECT id FROM invoices WHERE customer_id = %s AND paid_on > %s"
        " AND paid_on <= %s AND deleted_at IS NULL", (cid, since, today))}
    assert {c["entity_id"] for c in changes if c["kind"] == "invoice_paid"} == paid
    fell_due = {str(r["id"]) for r in world_api.rows(
        "SELECT id FROM invoices WHERE customer_id = %s AND status = 'open'"
        " AND due_on >= %s AND due_on < %s AND deleted_at IS NULL",
        (cid, since, today))}
    assert {c["entity_id"] for c in changes if c["kind"] == "invoice_overdue"} == fell_due
    decided = [str(r["contract_id"]) for r in world_api.rows(
        "SELECT r.contract_id FROM contract_renewals r JOIN service_contracts c"
        " ON c.id = r.contract_id WHERE c.customer_id = %s AND r.decided_on > %s"
        " AND r.decided_on <= %s AND r.deleted_at IS NULL AND c.deleted_at IS NULL"
        " ORDER BY 1", (cid, since, today))]
    assert sorted(c["entity_id"] for c in changes if c["kind"] == "contract_decision") == decided
    [risk] = [c for c in changes if c["kind"] == "risk"]
    scores = {r["scored_on"]: r["probability"] for r in world_api.rows(
        "SELECT scored_on, probability FROM churn_scores WHERE customer_id = %s",
        (cid,))}
    assert f"{round(scores[today] * 100)}% on {today}" in risk["text"]
    assert f"{round(scores[since] * 100)}% on {since}" in risk["text"]
    points = (Decimal(repr(scores[today])) - Decimal(repr(scores[since]))) * 100
    assert risk["text"].endswith(f"({int(points.to_integral_value(ROUND_HALF_UP)):+} points)")
    assert all(since < date.fromisoformat(c["day"]) <= today for c in changes)
    assert [c["day"] for c in changes] == sorted((c["day"] for c in changes), reverse=True)


def test_the_360_has_an_etag(world_api: WorldApi, staff: httpx.Client) -> None:
    cid = _busy_customer(world_api)
    params = {"on": world_api.today.isoformat()}
    first = staff.get(f"/customers/{cid}", params=params)
    tag = first.headers["etag"]
    again = staff.get(f"/customers/{cid}", params=params, headers={"If-None-Match": tag})
    assert again.status_code == 304
    other = staff.get(f"/customers/{cid}", params={"on": (world_api.today - timedelta(
        days=7)).isoformat()}, headers={"If-None-Match": tag})
    assert other.status_code == 200


def test_the_parts_list_every_row(world_api: WorldApi, staff: httpx.Client) -> None:
    today = world_api.today
    cid = _busy_customer(world_api)
    invoices = _every(staff, f"/customers/{cid}/invoices", limit=3, on=today.isoformat())
    rows = world_api.rows("SELECT id, net_amount, status, due_on FROM invoices"
                            " WHERE customer_id = %s AND deleted_at IS NULL"
                            " ORDER BY issued_on DESC, id DESC", (cid,))
    assert [i["id"] for i in invoices] == [r["id"] for r in rows]
    assert [Decimal(i["net_amount"]) for i in invoices] == [r["net_amount"] for r in rows]
    overdue = _every(staff, f"/customers/{cid}/invoices", overdue="true", on=today.isoformat())
    assert {i["id"] for i in overdue} == {r["id"] for r in rows if r["status"] == "open"
                                          and r["due_on"] < today}
    by_amount = _every(staff, f"/customers/{cid}/invoices", sort="net_amount", limit=4)
    assert [(Decimal(i["net_amount"]), i["id"]) for i in by_amount] == \
        sorted((r["net_amount"], r["id"]) for r in rows)

    orders = _every(staff, f"/customers/{cid}/orders", limit=5, kind="spare_parts")
    assert [o["id"] for o in orders] == [r["id"] for r in world_api.rows(
        "SELECT id FROM orders WHERE customer_id = %s AND deleted_at IS NULL"
        " AND kind = 'spare_parts' ORDER BY ordered_on DESC, id DESC", (cid,))]

    contracts = _every(staff, f"/customers/{cid}/contracts", limit=1)
    expected = world_api.rows("""
        SELECT c.id, (SELECT count(*) FROM contract_renewals r WHERE r.contract_id = c.id
                      AND r.deleted_at IS NULL) AS renewals
        FROM service_contracts c WHERE c.customer_id = %s AND c.deleted_at IS NULL
        ORDER BY c.starts_on, c.id""", (cid,))
    assert [(c["id"], len(c["renewals"])) for c in contracts] == \
        [(r["id"], r["renewals"]) for r in expected]

    answers = _every(staff, f"/customers/{cid}/nps", limit=2)
    assert [(a["id"], a["score"]) for a in answers] == [
        (r["id"], r["score"]) for r in world_api.rows(
            "SELECT id, score FROM survey_responses WHERE customer_id = %s"
            " AND deleted_at IS NULL ORDER BY answered_at DESC, id DESC", (cid,))]

    detractors = _every(staff, f"/customers/{cid}/nps", category="detractor", sort="score")
    assert [a["id"] for a in detractors] == [r["id"] for r in world_api.rows(
        "SELECT id FROM survey_responses WHERE customer_id = %s"
        " AND deleted_at IS NULL AND score <= 6 ORDER BY score, id", (cid,))]

    history = _every(staff, f"/customers/{cid}/risk-history", limit=1)
    assert [(h["scored_on"], h["probability"]) for h in history] == [
        (r["scored_on"].isoformat(), r["probability"]) for r in world_api.rows(
            "SELECT scored_on, probability FROM churn_scores WHERE customer_id = %s"
                       " ORDER BY scored_on DESC", (cid,))]
    assert len(history) == 2


def test_a_portal_user_sees_its_own_customer_only(world_api: WorldApi,
                                                  staff: httpx.Client) -> None:
    cid = _busy_customer(world_api)
    other = world_api.rows("SELECT min(id) AS id FROM customers WHERE id <> %s", (cid,))[0]["id"]
    with world_api.api.client("customer", customer_id=cid) as portal:
        own = portal.get(f"/customers/{cid}")
        assert own.status_code == 200
        body = own.json()
        assert body["view"] == "customer"
        # The OEM's assessments of it are not shown to it.
        assert body["risk"] is None and body["value"] is None and body["figures"] is None
        assert body["segments"] == []
        assert body["recent_answers"] == body["risk_history"] == body["value_history"] == []
        assert not {c["kind"] for c in body["changes"]} & {"risk", "segment", "nps_answer"}
        assert body["machines"] and body["contracts"]
        assert portal.get(f"/customers/{cid}/invoices", params={"limit": 1000}).json() \
            == staff.get(f"/customers/{cid}/invoices", params={"limit": 1000}).json()
        for path in (f"/customers/{other}", f"/customers/{other}/invoices",
                     f"/customers/{other}/orders", f"/customers/{other}/contracts"):
            found = problem(portal.get(path), 404)
            assert str(other) in found["detail"]
        for path in ("/customers", f"/customers/{cid}/risk-history", f"/customers/{cid}/nps"):
            assert "may not" in problem(portal.get(path), 403)["detail"]


@pytest.mark.parametrize(("path", "params", "status", "says"), [
    ("/customers", {"sort": "probability"}, 422, "sort"),
    ("/customers", {"segment": "colour:blue"}, 422, "segment"),
    ("/customers", {"segment": "usage"}, 422, "segment"),
    ("/customers", {"min_probability": "1.5"}, 422, "min_probability"),
    ("/customers", {"country": "Germany"}, 422, "country"),
    ("/customers", {"risk_band": "extreme"}, 422, "risk_band"),
    ("/customers", {"limit": "0"}, 422, "limit"),
    ("/customers", {"on": "yesterday"}, 422, "on"),
    ("/customers", {"cursor": "not-a-cursor"}, 400, "cursor"),
    ("/customers/0", {}, 422, "customer_id"),
    ("/customers/2000000000", {}, 404, "2000000000"),
    ("/customers/2000000000/invoices", {}, 404, "2000000000"),
    ("/customers/1/invoices", {"status": "lost"}, 422, "status"),
    ("/customers/1/orders", {"sort": "-id"}, 422, "sort"),
])
def test_bad_requests_are_problems(staff: httpx.Client, path: str, params: dict[str, str],
                                   status: int, says: str) -> None:
    assert says in problem(staff.get(path, params=params), status)["detail"]


def test_a_cursor_of_another_sort_is_refused(world_api: WorldApi, staff: httpx.Client) -> None:
    first = staff.get("/customers", params={"sort": "clv", "limit": 2}).json()
    assert "belongs to sort" in problem(staff.get("/customers", params={
        "sort": "name", "cursor": first["next_cursor"]}), 400)["detail"]
