"""Two tenants, a database each, behind one API: users, keys, tokens and rows of one never reach
the other (docs/tenancy.md).

Each tenant's database is cloned from the migrated template and gets its own ERP rows through the
files connector (a customer and machines that never reported, so the quality route
``erp-machines-never-seen`` lists them) and its own users, one of the same name in both. The API
also trusts an identity provider the test makes, whose tokens name their tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from tests.integration.api.erp_files import customer, machine, sync_erp
from tests.integration.api_server import ApiServer, fresh_database, problem, running_api
from tests.integration.identity_provider import IdentityProvider, identity_provider

TENANTS = ("acme", "beta")


@dataclass(frozen=True)
class Tenants:
    """The API, each tenant's database, and the identity provider it trusts."""

    api: ApiServer
    urls: dict[str, str]
    idp: IdentityProvider

    def login(self, username: str, password: str, tenant: str | None) -> httpx.Response:
        """POST /auth/token."""
        body = {"username": username, "password": password}
        if tenant is not None:
            body["tenant"] = tenant
        return httpx.post(f"{self.api.url}/api/v1/auth/token", json=body, timeout=10)

    def client(self, role: str, tenant: str) -> httpx.Client:
        """A client logged in as a new user of ``role`` in ``tenant``."""
        user = self.api.user(role, database_url=self.urls[tenant])
        return self.api.client(token=self.api.token(*user, tenant=tenant))


@pytest.fixture(scope="module")
def tenants(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    """Two tenant databases with their own ERP rows, served by one API."""
    work: Path = tmp_path_factory.mktemp("tenants")
    with identity_provider() as idp, fresh_database(template_db) as acme, \
            fresh_database(template_db) as beta:
        urls = {"acme": acme, "beta": beta}
        for tenant, url in urls.items():
            results = sync_erp(url, work / tenant, customers=[
                customer("C-1", f"{tenant.title()} Customer One"),
                customer("C-2", f"{tenant.title()} Customer Two")],
                installed=[machine(f"IB-{n}", f"{tenant.upper()}-SN-{n}", f"C-{1 + n % 2}")
                           for n in range(1, 4 if tenant == "acme" else 3)])
            assert all(r.error is None and r.rows_rejected == 0 for r in results), results
        with running_api(acme, log=work / "api.log",
                         tenant_databases=orjson.dumps(urls).decode(),
                         **{**idp.settings(), "oidc_role_claim": "realm_access.roles"}) as api:
            yield Tenants(api, urls, idp)


def _serials(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT ib.serial FROM installed_base ib WHERE ib.deleted_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM machines m WHERE m.serial = ib.serial)"
            " ORDER BY ib.serial").fetchall()]


def _listed(client: httpx.Client) -> list[str]:
    answer = client.get("/quality/erp-machines-never-seen", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    return [m["serial"] for m in answer.json()["items"]]


def test_each_tenants_users_read_their_own_database(tenants: Tenants) -> None:
    expected = {t: _serials(url) for t, url in tenants.urls.items()}
    assert expected == {"acme": ["ACME-SN-1", "ACME-SN-2", "ACME-SN-3"],
                        "beta": ["BETA-SN-1", "BETA-SN-2"]}
    for tenant in TENANTS:
        with tenants.client("service", tenant) as client:
            assert client.get("/auth/me").json()["tenant"] == tenant
            assert _listed(client) == expected[tenant]


def test_login_names_the_tenant(tenants: Tenants) -> None:
    # The same username in both, with different passwords and roles.
    acme = tenants.api.user("admin", username="ops", database_url=tenants.urls["acme"])
    beta = tenants.api.user("viewer", username="ops", database_url=tenants.urls["beta"])
    assert "name yours" in problem(tenants.login(*acme, None), 401)["detail"]
    assert "no tenant 'gamma'" in problem(tenants.login(*acme, "gamma"), 401)["detail"]
    assert "wrong username or password" in problem(tenants.login(*acme, "beta"), 401)["detail"]
    for tenant, (username, password), role in (("acme", acme, "admin"), ("beta", beta, "viewer")):
        answer = tenants.login(username, password, tenant)
        assert answer.status_code == 200, answer.text
        assert (answer.json()["tenant"], answer.json()["role"]) == (tenant, role)


def test_an_api_key_belongs_to_its_tenant(tenants: Tenants) -> None:
    with tenants.client("admin", "acme") as admin:
        created = admin.post("/admin/keys", json={"name": "crm", "role": "service"})
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    assert key.startswith("oemr_acme_")
    with tenants.api.client(token=key) as program:
        assert program.get("/auth/me").json()["tenant"] == "acme"
        assert _listed(program) == _serials(tenants.urls["acme"])
    for other, why in (("beta", "API key is not valid"), ("gamma", "no tenant 'gamma'")):
        with tenants.api.client(token=key.replace("oemr_acme_", f"oemr_{other}_")) as program:
            assert why in problem(program.get("/auth/me"), 401)["detail"], other
    # The key is in acme's database alone.
    for tenant, count in (("acme", 1), ("beta", 0)):
        with psycopg.connect(tenants.urls[tenant]) as conn:
            assert conn.execute("SELECT count(*) FROM api_keys WHERE name = 'crm'"
                                ).fetchone() == (count,)


def test_a_write_lands_in_its_tenant_only(tenants: Tenants) -> None:
    with tenants.client("admin", "beta") as admin:
        made = admin.post("/admin/users", json={"username": "beta-only", "role": "viewer",
                                                "password": "a-long-enough-password"})
    assert made.status_code == 201, made.text
    for tenant, count in (("acme", 0), ("beta", 1)):
        with psycopg.connect(tenants.urls[tenant]) as conn:
            assert conn.execute("SELECT count(*) FROM api_users WHERE username = 'beta-only'"
                                ).fetchone() == (count,)
            assert conn.execute("SELECT count(*) FROM audit_log WHERE entity = 'api_user'"
                                " AND after->>'username' = 'beta-only'").fetchone() == (count,)


def test_a_token_of_one_tenant_does_not_open_the_other(tenants: Tenants) -> None:
    username, password = tenants.api.user("service", database_url=tenants.urls["acme"])
    token = tenants.api.token(username, password, tenant="acme")
    with tenants.api.client(token=token) as client:
        user_id = client.get("/auth/me").json()["user_id"]
        # Ids are per database: beta has a user of that id too, an admin.
        with psycopg.connect(tenants.urls["beta"]) as conn:
            while conn.execute("SELECT coalesce(max(id), 0) FROM api_users").fetchone()[0] \
                    < user_id:
                tenants.api.user("admin", database_url=tenants.urls["beta"])
        me = client.get("/auth/me").json()
        assert (me["subject"], me["role"], me["tenant"]) == (username, "service", "acme")
        assert _listed(client) == _serials(tenants.urls["acme"])
        assert client.get("/admin/users").status_code == 403


def test_the_identity_providers_tokens_name_their_tenant(tenants: Tenants) -> None:
    roles = {"realm_access": {"roles": ["service"]}, "roles": None}
    for tenant in TENANTS:
        with tenants.api.client(token=tenants.idp.token(tenant=tenant, **roles)) as client:
            assert client.get("/auth/me").json()["tenant"] == tenant
            assert _listed(client) == _serials(tenants.urls[tenant])
    for claims, why in (({}, "names no tenant"), ({"tenant": "gamma"}, "no tenant 'gamma'")):
        with tenants.api.client(token=tenants.idp.token(**roles, **claims)) as client:
            assert why in problem(client.get("/auth/me"), 401)["detail"], claims
