"""Who may see what: row-level security below the application, roles on every route, users,
keys and tokens, and the problem+json every refusal comes as."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from tests.integration.api.conftest import WorldApi
from tests.integration.api_server import problem

# Tables with no customer's rows: the API's role may read them whatever the scope.
NO_CUSTOMER_ROWS = {
    "api_users", "api_keys", "idempotency_keys", "schema_migrations", "schema_definitions",
    "metrics", "machine_models", "exchange_rates", "rollup_watermarks", "rollup_late_days",
    "period_segments_cache",
}


def api_rows(url: str, query: str, *, scope: str | None, customer_id: int | None = None,
             params: Any = None) -> list[tuple[Any, ...]]:
    """Rows of ``query`` as the API's role sees them in a transaction with that scope."""
    with psycopg.connect(url, user="oemr_api") as conn:
        if scope is not None:
            conn.execute("SELECT set_config('app.scope', %s, true),"
                         " set_config('app.customer_id', %s, true)",
                         (scope, "" if customer_id is None else str(customer_id)))
        return conn.execute(query, params).fetchall()


def test_every_table_with_customer_rows_has_a_policy(world_api: WorldApi) -> None:
    with psycopg.connect(world_api.database_url) as conn:
        readable = conn.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
            "   AND has_table_privilege('oemr_api', c.oid, 'SELECT')").fetchall()
        role = conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles"
                            " WHERE rolname = 'oemr_api'").fetchone()
        owner = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_roles r"
                             " ON r.oid = c.relowner WHERE r.rolname = 'oemr_api'").fetchone()
    assert role == (False, False)
    assert owner == (0,)
    assert len(readable) > 30
    unprotected = sorted(name for name, rls, _ in readable
                         if not rls and name not in NO_CUSTOMER_ROWS)
    assert unprotected == []


def test_every_view_the_api_reads_runs_as_its_reader(world_api: WorldApi) -> None:
    # A view runs with its owner's rights unless security_invoker: the owner is not subject to
    # row-level security, so such a view would show a portal user every customer's rows.
    with psycopg.connect(world_api.database_url) as conn:
        views = conn.execute(
            "SELECT c.relname, coalesce('security_invoker=true' = ANY (c.reloptions), false)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')"
            "   AND has_table_privilege('oemr_api', c.oid, 'SELECT')").fetchall()
    assert {"installed_machines", "services_done"} <= {name for name, _ in views}
    assert [name for name, invoker in views if not invoker] == []


def test_a_transaction_without_scope_sees_no_customer(world_api: WorldApi) -> None:
    url = world_api.database_url
    for table in ("customers", "service_contracts", "invoices", "invoice_lines", "machines",
                  "telemetry", "machine_days", "churn_scores", "kpi_snapshots"):
        assert api_rows(url, f"SELECT count(*) FROM {table}", scope=None) == [(0,)], table
        assert api_rows(url, f"SELECT count(*) FROM {table}", scope="nonsense") == [(0,)]


def test_a_customer_scope_sees_its_own_rows_only(world_api: WorldApi) -> None:
    url = world_api.database_url
    with psycopg.connect(url) as conn:
        customer = conn.execute(
            "SELECT customer_id FROM installed_machines WHERE machine_id IS NOT NULL"
            " GROUP BY customer_id ORDER BY count(*) DESC, customer_id LIMIT 1").fetchone()[0]
        expected = {
            "customers": conn.execute("SELECT count(*) FROM customers WHERE id = %s",
                                      (customer,)).fetchone()[0],
            "invoice_lines": conn.execute(
                "SELECT count(*) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id"
                " WHERE i.customer_id = %s", (customer,)).fetchone()[0],
            "machines": conn.execute(
                "SELECT count(*) FROM machines WHERE serial IN"
                " (SELECT serial FROM installed_base WHERE customer_id = %s)",
                (customer,)).fetchone()[0],
            "machine_days": conn.execute(
                "SELECT count(*) FROM machine_days WHERE machine_id IN (SELECT m.id FROM machines"
                " m JOIN installed_base ib ON ib.serial = m.serial WHERE ib.customer_id = %s)",
                (customer,)).fetchone()[0],
            # What the OEM thinks of its customers is staff's alone.
            "kpi_snapshots": 0, "churn_scores": 0, "customer_values": 0,
            "segment_memberships": 0,
        }
        totals = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in expected}
    for table, count in expected.items():
        seen = api_rows(url, f"SELECT count(*) FROM {table}", scope="customer",
                        customer_id=customer)
        assert seen == [(count,)], table
        assert totals[table] > count, table
        assert api_rows(url, f"SELECT count(*) FROM {table}", scope="staff") == \
            [(totals[table],)]


def test_logging_in_and_who_am_i(world_api: WorldApi) -> None:
    api = world_api.api
    username, password = api.user("finance")
    answer = httpx.post(f"{api.url}/api/v1/auth/token",
                        json={"username": username, "password": password})
    assert answer.status_code == 200
    token = answer.json()
    assert token["token_type"] == "bearer" and token["role"] == "finance"
    me = httpx.get(f"{api.url}/api/v1/auth/me",
                   headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    assert me["subject"] == username and me["role"] == "finance" and me["tenant"] == "default"
    for body in ({"username": username, "password": password + "x"},
                 {"username": "nobody-at-all", "password": password}):
        assert "wrong username or password" in problem(
            httpx.post(f"{api.url}/api/v1/auth/token", json=body), 401)["detail"]


def test_requests_without_good_credentials_are_refused(world_api: WorldApi) -> None:
    api = world_api.api
    with api.client() as anonymous:
        assert "Authorization" in problem(anonymous.get("/auth/me"), 401)["detail"]
    token = api.token(*api.user("viewer"))
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode({**claims, "role": "admin"}, "not-the-key-of-this-server-at-all-xx",
                        algorithm="HS256")
    expired = jwt.encode({**claims, "exp": int(time.time()) - 10},
                         "development-only-this-key-is-not-a-secret", algorithm="HS256")
    for bad, why in ((forged, "not valid"), (expired, "expired"), ("garbage", "not valid"),
                     ("oemr_default_abc_def", "API key is not valid")):
        with api.client(token=bad) as client:
            assert why in problem(client.get("/auth/me"), 401)["detail"], bad


def test_roles_are_checked_on_admin_routes(world_api: WorldApi) -> None:
    api = world_api.api
    for role in ("service", "finance", "viewer"):
        with api.client(role) as client:
            assert "may not" in problem(client.get("/admin/users"), 403)["detail"]
    with api.client("admin") as admin:
        assert admin.get("/admin/users").status_code == 200


def test_a_disabled_user_is_refused_at_once(world_api: WorldApi) -> None:
    api = world_api.api
    username, password = api.user("service")
    token = api.token(username, password)
    with api.client(token=token) as client:
        assert client.get("/auth/me").status_code == 200
        with api.client("admin") as admin:
            users = admin.get("/admin/users").json()
            user_id = next(u["id"] for u in users if u["username"] == username)
            changed = admin.patch(f"/admin/users/{user_id}", json={"disabled": True})
            assert changed.status_code == 200 and changed.json()["disabled"] is True
            trail = admin.get("/admin/audit", params={"entity": "api_user"}).json()["items"]
        assert "disabled" in problem(client.get("/auth/me"), 401)["detail"]
    change = next(e for e in trail if e["entity_id"] == str(user_id))
    assert change["before"]["disabled"] is False and change["after"]["disabled"] is True
    assert change["actor"].startswith("user:") and change["actor_role"] == "admin"


def test_api_keys_work_until_revoked_and_record_their_use(world_api: WorldApi) -> None:
    api = world_api.api
    with api.client("admin") as admin:
        created = admin.post("/admin/keys", json={"name": "crm-sync", "role": "viewer"})
        assert created.status_code == 201
        key = created.json()
        assert key["key"].startswith("oemr_default_") and key["last_used_at"] is None
        with api.client(token=key["key"]) as program:
            me = program.get("/auth/me").json()
            assert me == {"subject": "crm-sync", "role": "viewer", "tenant": "default",
                          "customer_id": None, "user_id": None, "key_id": key["id"]}
            listed = {k["id"]: k for k in admin.get("/admin/keys").json()}
            assert listed[key["id"]]["last_used_at"] is not None
            assert "key" not in listed[key["id"]]
            assert admin.delete(f"/admin/keys/{key['id']}").status_code == 200
            assert "revoked" in problem(program.get("/auth/me"), 401)["detail"]
        with api.client(token=key["key"][:-2] + "xx") as wrong:
            assert "not valid" in problem(wrong.get("/auth/me"), 401)["detail"]


@pytest.mark.parametrize(("body", "field"), [
    ({"username": "x y", "password": "long-enough-password", "role": "viewer"}, "username"),
    ({"username": "shorty", "password": "short", "role": "viewer"}, "password"),
    ({"username": "portal", "password": "long-enough-password", "role": "customer"},
     "customer_id"),
    ({"username": "who", "password": "long-enough-password", "role": "root"}, "role"),
])
def test_bad_requests_are_problems_naming_the_field(world_api: WorldApi, body: dict[str, Any],
                                                    field: str) -> None:
    with world_api.api.client("admin") as admin:
        found = problem(admin.post("/admin/users", json=body), 422)
    assert field in found["detail"]


def test_a_portal_user_must_belong_to_an_existing_customer(world_api: WorldApi) -> None:
    with world_api.api.client("admin") as admin:
        answer = admin.post("/admin/users", json={
            "username": "ghost", "password": "long-enough-password", "role": "customer",
            "customer_id": 2_000_000_000})
    assert "foreign key" in problem(answer, 409)["detail"]
