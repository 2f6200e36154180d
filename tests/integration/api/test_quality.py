"""Data quality through the API: dead letters, Sparkplug losses, ERP syncs and the machines the
ERP and the ingester disagree on.

A database of its own (dead letters and syncs are the platform's, and the shared world has none):
its ERP rows come through the files connector (one customer row refused), its machine data
through the ingester's own decoders and store (telemetry of two known serials and a stray one,
bad messages dead-lettered, one of them twice, Sparkplug gaps of two edge nodes), and the sync's
report is built and stored as ``erp sync`` does. Every answer is checked against the rows read
with plain SQL and worked out here, and against analytics' own functions.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from pydantic import BaseModel

from analytics import quality
from api.models.quality import DeadLetterSource, ErpMachineNeverSeen, SyncRun
from core.paging import PageRequest
from erp_connectors.quality import EntityOutcome, build_report, store_report
from ingest import json_contract, topics
from ingest.models import Decoded, Gap, Rejected
from ingest.store import Batch, DeadLetter, Message, Store
from tests.integration.api.erp_files import customer, machine, sync_erp
from tests.integration.api_server import ApiServer, fresh_database, problem, running_api

ROUTES = ("/quality/dead-letters", "/quality/dead-letters/messages", "/quality/sparkplug-gaps",
          "/quality/erp-sync/report", "/quality/erp-sync/runs", "/quality/erp-sync/rejects",
          "/quality/machines-without-erp", "/quality/erp-machines-never-seen")
NOW = datetime.now(UTC)
SKEW = timedelta(hours=1)


@dataclass(frozen=True)
class QualityWorld:
    """The API over a database holding known quality problems."""

    api: ApiServer
    url: str


def _telemetry(serial: str, *, hours: object = 1200.5) -> tuple[str, bytes]:
    payload = {"ts": NOW.isoformat(), "metrics": {"operating_hours": hours}}
    return f"oem/qa/machines/{serial}/telemetry", orjson.dumps(payload)


def _batch(messages: list[tuple[str, bytes]], *, gaps: list[Gap] | None = None) -> Batch:
    """What the ingester would make of these messages: decoded, or dead-lettered with why."""
    batch = Batch()
    for topic, payload in messages:
        try:
            route = topics.parse(topic)
            assert isinstance(route, topics.JsonTopic)
            decoded = json_contract.decode(route, payload, now=NOW, max_skew=SKEW)
        except Rejected as exc:
            batch.dead_letters.append(DeadLetter(topic, payload, exc.reason))
        else:
            batch.messages.append(Message(topic, payload, decoded))
    if gaps:
        batch.messages.append(Message("spBv1.0/line-3/NDATA/edge-7", b"", Decoded(gaps=gaps)))
    return batch


async def _ingest(url: str) -> None:
    store = Store(url, late_after=timedelta(hours=1))
    try:
        await store.write(_batch([
            _telemetry("SN-Q1"), _telemetry("SN-STRAY"),
            ("oem/qa/machines/SN-Q2/telemetry", b"{not json"),
            ("oem/qa/machines/SN-Q2/telemetry", b"{not json"),  # the same, received twice
            _telemetry("SN-Q3", hours="lots"),
        ], gaps=[Gap("line-3", "edge-7", "seq_gap", 5, 9, 3, True),
                 Gap("line-3", "edge-7", "no_birth", None, 12, None, True),
                 Gap("line-4", "edge-1", "seq_gap", 200, 10, 65, False)]))
        # Later, so that each source's latest reason is known.
        await store.write(_batch([
            ("oem/qa/machines/SN-Q2/telemetry", orjson.dumps({"ts": "yesterday"})),
            ("factory/hall-2/press", b"42"),
        ]))
    finally:
        await store.close()


async def _report(url: str, outcomes: list[EntityOutcome]) -> None:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        report = await build_report(conn, outcomes, reporting_currency="EUR")
        await store_report(conn, report, sources=["files"], full=False)


@pytest.fixture(scope="module")
def world(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QualityWorld]:
    """ERP rows, machine data and dead letters of known shape, behind a running API."""
    work: Path = tmp_path_factory.mktemp("quality")
    with fresh_database(template_db) as url:
        results = sync_erp(url, work / "erp", customers=[
            customer("C-1", "Quality Customer One"), customer("C-2", "Quality Customer Two"),
            [*customer("C-3", "Refused Customer")[:5], "maybe", "2020-01-01", ""]],
            installed=[machine("IB-1", "SN-Q1", "C-1"), machine("IB-2", "SN-Q2", "C-2"),
                       machine("IB-3", "SN-Q3", "C-1")])
        asyncio.run(_ingest(url))
        asyncio.run(_report(url, [EntityOutcome.of(r) for r in results]))
        with running_api(url, log=work / "api.log") as api:
            yield QualityWorld(api, url)


def _rows(url: str, query: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(query).fetchall()


def _source(topic: str) -> str:
    """A dead letter's source, worked out from its topic as docs/mqtt.md describes it."""
    levels = topic.split("/")
    if levels[0] == "oem" and len(levels) > 3 and levels[2] == "machines":
        return f"oem/{levels[1]}/{levels[3]}"
    if levels[0] == "spBv1.0" and len(levels) > 3:
        return f"spBv1.0/{levels[1]}/{levels[3]}"
    return levels[0]


def _everything(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, a page of two at a time."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        answer = client.get(path, params={**params, "limit": 2,
                                          **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["items"]) <= 2
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def _analytics(url: str, fetch: Any, sort: str, **filters: Any) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url, user="oemr_api") as conn:
        await conn.execute("SELECT set_config('app.scope', 'staff', true)")
        page = await fetch(conn, PageRequest(limit=1000, sort=sort.removeprefix("-"),
                                             descending=sort.startswith("-")), **filters)
        return [dict(r) for r in page.items]


def _json(rows: list[dict[str, Any]], model: type[BaseModel] | None = None
          ) -> list[dict[str, Any]]:
    """Rows as the API's JSON has them (through its model, when there is one)."""
    if model is not None:
        return [model(**r).model_dump(mode="json") for r in rows]
    return [orjson.loads(orjson.dumps(r)) for r in rows]


def test_dead_letters_by_source(world: QualityWorld) -> None:
    letters = _rows(world.url, "SELECT topic, times_received, last_received_at, reason"
                               " FROM dead_letters")
    expected: dict[str, dict[str, Any]] = {}
    for letter in sorted(letters, key=lambda r: r["last_received_at"]):
        seen = expected.setdefault(_source(letter["topic"]),
                                   {"distinct_messages": 0, "times_received": 0})
        seen["distinct_messages"] += 1
        seen["times_received"] += letter["times_received"]
        seen["latest_reason"] = letter["reason"]
    assert set(expected) == {"oem/qa/SN-Q2", "oem/qa/SN-Q3", "factory"}
    assert expected["oem/qa/SN-Q2"]["times_received"] == 3
    with world.api.client("service") as client:
        listed = _everything(client, "/quality/dead-letters", sort="-times_received")
    assert {r["source"]: {k: r[k] for k in ("distinct_messages", "times_received",
                                            "latest_reason")} for r in listed} == expected
    # Most received first; ties by source, in the same direction (core/paging.py).
    assert [r["source"] for r in listed] == sorted(
        expected, key=lambda s: (expected[s]["times_received"], s), reverse=True)
    assert "ts" in expected["oem/qa/SN-Q2"]["latest_reason"]
    assert listed == _json(asyncio.run(_analytics(
        world.url, quality.dead_letter_sources, "-times_received",
        since=datetime.now(UTC) - timedelta(days=7))), DeadLetterSource)


def test_dead_letters_one_by_one_with_their_reason(world: QualityWorld) -> None:
    letters = _rows(world.url, "SELECT id, topic, reason, payload FROM dead_letters")
    with world.api.client("service") as client:
        listed = _everything(client, "/quality/dead-letters/messages", sort="id")
        numbers = client.get("/quality/dead-letters/messages",
                             params={"reason": "NUMBER", "limit": 1000}).json()["items"]
        prefixed = client.get("/quality/dead-letters/messages",
                              params={"topic_prefix": "oem/qa/machines/SN-Q2/"}).json()["items"]
    assert [(r["id"], r["topic"], r["reason"]) for r in listed] == sorted(
        (r["id"], r["topic"], r["reason"]) for r in letters)
    assert {r["id"]: base64.b64decode(r["payload_start"]) for r in listed} == {
        r["id"]: bytes(r["payload"])[:256] for r in letters}
    assert sorted(r["id"] for r in numbers) == sorted(
        r["id"] for r in letters if "number" in r["reason"].lower())
    assert numbers
    assert sorted(r["id"] for r in prefixed) == sorted(
        r["id"] for r in letters if r["topic"].startswith("oem/qa/machines/SN-Q2/"))


def test_sparkplug_losses_per_node_and_day(world: QualityWorld) -> None:
    gaps = _rows(world.url, "SELECT spb_group, spb_edge_node, detected_at, cause, missing,"
                            " rebirth_requested FROM sparkplug_gaps")
    expected: dict[str, Counter[str]] = {}
    for gap in gaps:
        key = f"{gap['spb_group']}/{gap['spb_edge_node']}/{gap['detected_at'].date()}"
        counts = expected.setdefault(key, Counter())
        counts["seq_gaps"] += gap["cause"] == "seq_gap"
        counts["seq_numbers_missing"] += gap["missing"] or 0
        counts["data_without_birth"] += gap["cause"] == "no_birth"
        counts["rebirths_requested"] += gap["rebirth_requested"]
    with world.api.client("admin") as client:
        listed = _everything(client, "/quality/sparkplug-gaps", sort="-seq_numbers_missing")
        only = client.get("/quality/sparkplug-gaps", params={"spb_group": "line-4"}).json()
    assert {r["id"]: {k: r[k] for k in ("seq_gaps", "seq_numbers_missing",
                                        "data_without_birth", "rebirths_requested")}
            for r in listed} == {k: dict(v) for k, v in expected.items()}
    assert [r["spb_edge_node"] for r in listed] == ["edge-1", "edge-7"]  # 65 lost, then 3
    assert [r["spb_group"] for r in only["items"]] == ["line-4"]


def test_erp_sync_runs_rejects_and_report(world: QualityWorld) -> None:
    runs = _rows(world.url, "SELECT id, source, entity, status, records_read, rows_upserted,"
                            " rows_rejected FROM sync_runs ORDER BY id DESC")
    rejects = _rows(world.url, "SELECT id, run_id, external_id, reason FROM sync_rejects")
    stored = _rows(world.url, "SELECT id, report FROM sync_reports ORDER BY id DESC LIMIT 1")[0]
    with world.api.client("service") as client:
        listed_runs = _everything(client, "/quality/erp-sync/runs")
        failed = client.get("/quality/erp-sync/runs", params={"status": "failed"}).json()
        listed_rejects = _everything(client, "/quality/erp-sync/rejects",
                                     entity="customers")
        report = client.get("/quality/erp-sync/report")
    assert [{k: r[k] for k in runs[0]} for r in listed_runs] == _json(runs)
    assert listed_runs == _json(asyncio.run(_analytics(world.url, quality.sync_runs, "-id")),
                                SyncRun)
    assert failed["items"] == []
    assert [(r["id"], r["run_id"], r["external_id"], r["reason"]) for r in listed_rejects] == \
        sorted(((r["id"], r["run_id"], r["external_id"], r["reason"]) for r in rejects),
               reverse=True)
    assert [r["external_id"] for r in listed_rejects] == ["C-3"]
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["id"], body["ok"]) == (stored["id"], stored["report"]["ok"])
    assert body["entities"] == stored["report"]["entities"]
    checks = {c["check"]: c for c in body["checks"]}
    assert checks == {c["check"]: c for c in stored["report"]["checks"]}
    assert checks["machines_without_erp"]["total"] == 1
    assert checks["erp_machines_never_seen"]["total"] == 2
    assert report.headers["etag"]
    again = client_etag(world.api, report.headers["etag"])
    assert again.status_code == 304


def client_etag(api: ApiServer, etag: str) -> httpx.Response:
    """The report asked for again with the ETag the client holds."""
    with api.client("service") as client:
        return client.get("/quality/erp-sync/report", headers={"If-None-Match": etag})


def test_machines_the_erp_and_the_ingester_disagree_on(world: QualityWorld) -> None:
    machines = {r["serial"] for r in _rows(world.url, "SELECT serial FROM machines")}
    installed = {r["serial"]: r for r in _rows(
        world.url, "SELECT ib.serial, c.name FROM installed_base ib"
                   " JOIN customers c ON c.id = ib.customer_id WHERE ib.deleted_at IS NULL")}
    with world.api.client("service") as client:
        strays = _everything(client, "/quality/machines-without-erp")
        never = _everything(client, "/quality/erp-machines-never-seen", sort="-serial")
        exported = client.get("/quality/erp-machines-never-seen", params={"format": "csv"})
    assert [m["serial"] for m in strays] == sorted(machines - set(installed)) == ["SN-STRAY"]
    assert [m["serial"] for m in never] == sorted(set(installed) - machines, reverse=True)
    assert [m["serial"] for m in never] == ["SN-Q3", "SN-Q2"]  # SN-Q3 sent bad data only
    assert {m["serial"]: m["customer"] for m in never} == {
        s: installed[s]["name"] for s in ("SN-Q2", "SN-Q3")}
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert sorted(r["serial"] for r in rows) == ["SN-Q2", "SN-Q3"]
    assert never == _json(asyncio.run(_analytics(world.url, quality.erp_machines_never_seen,
                                                 "-serial")), ErpMachineNeverSeen)


@pytest.mark.parametrize("role", ["finance", "viewer", "customer"])
def test_other_roles_are_refused(world: QualityWorld, role: str) -> None:
    # Portal users get no quality route at all: the rows are the platform's, no customer's.
    customer_id = _rows(world.url, "SELECT min(id) AS id FROM customers")[0]["id"]
    with world.api.client(role, customer_id=customer_id if role == "customer" else None) as c:
        for route in ROUTES:
            assert "may not" in problem(c.get(route), 403)["detail"], route
    with world.api.client() as anonymous:
        problem(anonymous.get(ROUTES[0]), 401)


@pytest.mark.parametrize(("route", "params", "status", "field"), [
    ("/quality/dead-letters", {"days": 0}, 422, "days"),
    ("/quality/dead-letters", {"sort": "payload"}, 422, "sort"),
    ("/quality/dead-letters", {"cursor": "not-a-cursor"}, 400, "cursor"),
    ("/quality/dead-letters/messages", {"reason": "a\x00b"}, 422, "reason"),
    ("/quality/erp-sync/runs", {"status": "exploded"}, 422, "status"),
    ("/quality/erp-sync/rejects", {"run_id": "first"}, 422, "run_id"),
    ("/quality/sparkplug-gaps", {"limit": 5000}, 422, "limit"),
])
def test_bad_filters_are_problems(world: QualityWorld, route: str, params: dict[str, Any],
                                  status: int, field: str) -> None:
    with world.api.client("service") as client:
        assert field in problem(client.get(route, params=params), status)["detail"]


def test_a_cursor_of_another_sort_is_refused(world: QualityWorld) -> None:
    with world.api.client("service") as client:
        first = client.get("/quality/dead-letters", params={"limit": 1, "sort": "source"})
        cursor = first.json()["next_cursor"]
        assert cursor
        answer = client.get("/quality/dead-letters", params={"cursor": cursor,
                                                             "sort": "-times_received"})
    assert "sort" in problem(answer, 400)["detail"]
