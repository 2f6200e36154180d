"""The API's tests share one demo world: a small world ending today, its ERP data synced, its
history loaded, and analytics' daily run done for a week ago and for today (so a customer's risk
has a history and "what changed since last week" has an answer), served by one running API.

Read-only tests use ``world_api``; a test that writes makes its own users and rows and leaves
what other tests read alone (or takes a database of its own, ``database_url``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.rows import dict_row

from analytics.daily import run_daily
from demo.world import World
from tests.integration.api_server import ApiServer, running_api
from tests.integration.worlds import demo_world_database

REPORTING = "EUR"
T = TypeVar("T")


@dataclass(frozen=True)
class WorldApi:
    """The shared world: its database (as owner), its generated truth, its day and its API."""

    database_url: str
    world: World
    today: date
    api: ApiServer

    def analytics(self, call: Callable[[Any], Awaitable[T]]) -> T:
        """What analytics' own function answers, on the owner's connection."""
        async def run() -> T:
            async with await psycopg.AsyncConnection.connect(self.database_url) as conn:
                return await call(conn)
        return asyncio.run(run())

    def rows(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        """Rows of a query of the test's own, on the owner's connection."""
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            return conn.execute(query, params).fetchall()


def _today() -> date:
    return datetime.now(UTC).date()


async def _daily(url: str, today: date) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for day in (today - timedelta(days=7), today):
            await run_daily(conn, on=day, reporting_currency=REPORTING)


@pytest.fixture(scope="session")
def world_api(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorldApi]:
    """The demo world behind a running API, for the whole session."""
    today = _today()
    world = World.generate(5, today, customers=80, machines=300, years=3)
    with demo_world_database(template_db, world, tmp_path_factory.mktemp("api-world")) as url:
        asyncio.run(_daily(url, today))
        log = tmp_path_factory.mktemp("api-log") / "api.log"
        with running_api(url, log=log) as api:
            yield WorldApi(url, world, today, api)
