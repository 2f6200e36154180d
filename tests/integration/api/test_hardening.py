"""Inputs that once gave a 500 or a dangerous file, and writes the trail must show whole.

Exports: an XLSX holds one pool connection (an API with a pool of one still answers it), and a
stored text that would be a formula or holds a control character is exported as plain text.
Forged cursors and days a calendar cannot compute with are 4xx problems. Resetting a user or
revoking a key keeps the row before in the audit trail.
"""

from __future__ import annotations

import base64
import csv
import io
import secrets
from pathlib import Path

import psycopg
import pytest
from openpyxl import load_workbook

from tests.integration.api.conftest import WorldApi
from tests.integration.api_server import problem, running_api

FORMULA = '=HYPERLINK("http://evil.example","x")'


def test_exports_hold_one_connection_and_are_plain_text(database_url: str,
                                                        tmp_path: Path) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO customers (source, external_id, name, industry)"
                     " VALUES ('test', 'c1', %s, %s), ('test', 'c2', 'Plain GmbH', '-x')",
                     (FORMULA + "\x07", "@home"))
    # A pool of one: an XLSX export that held a second connection waited for it until the
    # pool's timeout, then answered 503.
    with running_api(database_url, log=tmp_path / "api.log", api_pool_max="1") as api, \
            api.client("finance") as staff:
        xlsx = staff.get("/customers", params={"format": "xlsx", "sort": "name"}, timeout=20)
        assert xlsx.status_code == 200, xlsx.text
        sheet = load_workbook(io.BytesIO(xlsx.content), read_only=True).active
        assert sheet is not None
        rows = [list(r) for r in sheet.iter_rows(values_only=True)]
        header = rows[0]
        got = {(r[header.index("name")], r[header.index("industry")]) for r in rows[1:]}
        assert got == {("'" + FORMULA, "'@home"), ("Plain GmbH", "'-x")}
        text = staff.get("/customers", params={"format": "csv", "sort": "name"}, timeout=20)
        assert text.status_code == 200, text.text
        lines = list(csv.DictReader(io.StringIO(text.content.decode("utf-8-sig"))))
        assert {(r["name"], r["industry"]) for r in lines} == got


def _first_id(world_api: WorldApi, path: str) -> int:
    with world_api.api.client("finance") as staff:
        answer = staff.get(path, params={"limit": 1})
        assert answer.status_code == 200, answer.text
        return int(answer.json()["items"][0]["id"])


def test_a_forged_cursor_is_a_bad_request(world_api: WorldApi) -> None:
    with world_api.api.client("finance") as staff:
        # The JSON a cursor of this sort holds, but with a number where a time belongs: it
        # failed in PostgreSQL (42883) as a 500 before cursors were signed.
        forged = base64.urlsafe_b64encode(b'["last_seen",5,1]').decode().rstrip("=")
        body = problem(staff.get("/fleet/machines",
                                 params={"sort": "last_seen", "cursor": forged}), 400)
        assert body["type"].endswith("bad-cursor")
        first = staff.get("/fleet/machines", params={"sort": "last_seen", "limit": 2})
        cursor = first.json()["next_cursor"]
        assert cursor is not None
        assert staff.get("/fleet/machines", params={"sort": "last_seen", "limit": 2,
                                                    "cursor": cursor}).status_code == 200


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31", "1969-12-31", "2101-01-01"])
def test_days_beyond_the_calendar_we_compute_with_are_refused(world_api: WorldApi,
                                                             day: str) -> None:
    customer = _first_id(world_api, "/customers")
    machine = _first_id(world_api, "/fleet/machines")
    asks = [(f"/customers/{customer}", {"on": day}),
            ("/segments/slipping", {"on": day}),
            ("/segments/kpis", {"on": day}),
            (f"/fleet/machines/{machine}/usage", {"to": day}),
            (f"/fleet/machines/{machine}/metrics/temperature", {"to": f"{day}T00:00:00Z"}),
            (f"/fleet/machines/{machine}/states", {"to": f"{day}T00:00:00Z"}),
            (f"/fleet/machines/{machine}/events", {"from": f"{day}T00:00:00Z"}),
            ("/finance/revenue-at-risk", {"since": day}),
            ("/maintenance/records", {"since": f"{day}T00:00:00Z"})]
    with world_api.api.client("finance") as staff:
        for path, params in asks:
            body = problem(staff.get(path, params=params), 422)
            assert "1970-01-01 and 2100-12-31" in body["detail"], (path, body)


def test_resetting_a_user_and_revoking_a_key_keep_the_row_before(world_api: WorldApi) -> None:
    username = f"reset-{secrets.token_hex(4)}"
    with world_api.api.client("admin") as admin:
        made = admin.post("/admin/users", json={"username": username, "password": "p" * 16,
                                                "role": "viewer"})
        assert made.status_code == 201, made.text
        reset = admin.post("/admin/users", json={"username": username, "password": "q" * 16,
                                                 "role": "service"})
        assert reset.status_code == 201, reset.text
        key = admin.post("/admin/keys", json={"name": f"k-{username}", "role": "viewer"})
        assert key.status_code == 201, key.text
        key_id = key.json()["id"]
        assert admin.delete(f"/admin/keys/{key_id}").status_code == 200
    with psycopg.connect(world_api.database_url) as conn:
        puts = conn.execute(
            "SELECT before, after FROM audit_log WHERE action = 'user.put' AND entity_id = %s"
            " ORDER BY id", (str(made.json()["id"]),)).fetchall()
        revoked = conn.execute(
            "SELECT before, after FROM audit_log WHERE action = 'key.revoke'"
            " AND entity_id = %s", (str(key_id),)).fetchall()
    assert [(b and b["role"], a["role"]) for b, a in puts] == [(None, "viewer"),
                                                               ("viewer", "service")]
    assert puts[1][0]["username"] == username
    assert len(revoked) == 1
    assert revoked[0][0]["revoked_at"] is None and revoked[0][1]["revoked_at"] is not None
