"""core.db: the process pool, against the real server."""

from __future__ import annotations

from core.db import make_pool
from core.settings import Settings


async def test_pool_opens_checks_and_serves_connections(database_url: str) -> None:
    pool = make_pool(Settings(database_url=database_url, db_pool_max=3), name="oemr-test")
    await pool.open(wait=True)
    try:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT current_setting('application_name'),"
                                     " (SELECT extname FROM pg_extension"
                                     "  WHERE extname = 'timescaledb')")
            assert await cur.fetchone() == ("oemr-test", "timescaledb")
        assert pool.get_stats()["pool_max"] == 3
    finally:
        await pool.close()
