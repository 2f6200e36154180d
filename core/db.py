"""The process's connection pool."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from core.settings import Settings


def make_pool(settings: Settings, *, min_size: int = 1, name: str = "oemr") -> AsyncConnectionPool:
    """Build the one pool of a process; the caller opens it at startup (``await pool.open()``)."""
    return AsyncConnectionPool(
        settings.database_url,
        min_size=min_size,
        max_size=max(min_size, settings.db_pool_max),
        open=False,
        check=AsyncConnectionPool.check_connection,
        name=name,
        kwargs={"application_name": name},
    )
