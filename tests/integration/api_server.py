"""The API as users get it: `oem-retention api serve` in a process of its own, on loopback,
against a test database, and an httpx client that logs in as a user of a given role."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from psycopg import sql

from api.security import hash_password
from core.sql import queries
from tests.integration.conftest import ROOT, _free_port, _server_url, kill_tree


class ApiServer:
    """A running API and the users made for its tests."""

    def __init__(self, url: str, database_url: str, env: dict[str, str]) -> None:
        self.url = url
        self.database_url = database_url
        self.env = env

    def user(self, role: str, *, customer_id: int | None = None, username: str | None = None,
             database_url: str | None = None) -> tuple[str, str]:
        """Make a user of ``role`` (straight into the database); its username and password."""
        username = username or f"{role}-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(16)
        with psycopg.connect(database_url or self.database_url) as conn:
            conn.execute(queries("api", "sql/access.sql")["add_user"], {
                "username": username, "password_hash": hash_password(password), "role": role,
                "customer_id": customer_id})
        return username, password

    def token(self, username: str, password: str, *, tenant: str | None = None) -> str:
        """A bearer token of that user."""
        body: dict[str, Any] = {"username": username, "password": password}
        if tenant:
            body["tenant"] = tenant
        answer = httpx.post(f"{self.url}/api/v1/auth/token", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def client(self, role: str | None = None, *, customer_id: int | None = None,
               token: str | None = None) -> httpx.Client:
        """A client logged in as a new user of ``role`` (or with ``token``; none: anonymous)."""
        headers = {}
        if role is not None:
            token = self.token(*self.user(role, customer_id=customer_id))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=30)


@contextmanager
def running_api(database_url: str, *, log: Path, workers: int = 1,
                **settings: str) -> Iterator[ApiServer]:
    """`oem-retention api serve` on a free port against ``database_url`` until the block ends.

    ``settings`` are more OEMR_ variables (OEMR_ left out, upper-cased).
    """
    port = _free_port()
    env = {**os.environ, "OEMR_DATABASE_URL": database_url, "OEMR_API_PORT": str(port),
           "OEMR_API_WORKERS": str(workers), "PYTHONPATH": str(ROOT),
           **{f"OEMR_{k.upper()}": v for k, v in settings.items()}}
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "oem_retention", "api", "serve"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the API exited: {log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/api/v1/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the API did not start: {log.read_text()[-3000:]}"
            time.sleep(0.1)
        yield ApiServer(url, database_url, env)
    finally:
        kill_tree(proc)


@contextmanager
def fresh_database(template_db: str) -> Iterator[str]:
    """A database of its own cloned from the migrated template, for a module; dropped after."""
    name = f"oemr_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    try:
        yield _server_url(name)
    finally:
        with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    """The problem+json body of an answer that must have ``status``."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.headers
    body: dict[str, Any] = orjson.loads(answer.content)
    assert body["status"] == status and body["title"], body
    return body
