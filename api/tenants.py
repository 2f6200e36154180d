"""One connection pool per tenant database, opened in the API's lifespan (docs/tenancy.md).

The API logs in to each tenant's database as ``api_database_user`` (migration 019's
``oemr_api``): neither owner nor superuser, so the row-level security policies apply to every
query it runs. Nothing of one tenant can reach another: their rows are in different databases,
and a request's connection comes from its principal's tenant's pool alone.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool

from core.settings import Settings

logger = logging.getLogger(__name__)


class TenantPools:
    """The pools of every configured tenant, by name."""

    def __init__(self, settings: Settings) -> None:
        login: dict[str, Any] = {"user": settings.api_database_user,
                                 "application_name": "oemr-api"}
        if settings.api_database_password is not None:
            login["password"] = settings.api_database_password.get_secret_value()
        self._pools = {
            tenant: AsyncConnectionPool(url, min_size=1, max_size=settings.api_pool_max,
                                        open=False, check=AsyncConnectionPool.check_connection,
                                        name=f"api-{tenant}", kwargs=login)
            for tenant, url in settings.tenant_urls().items()}

    @property
    def tenants(self) -> list[str]:
        """The tenant names, sorted."""
        return sorted(self._pools)

    def get(self, tenant: str) -> AsyncConnectionPool | None:
        """The pool of ``tenant``, None when there is no such tenant."""
        return self._pools.get(tenant)

    async def open(self) -> None:
        """Open every pool; the API starts even when a database is down (it answers 503)."""
        for tenant, pool in self._pools.items():
            await pool.open(wait=False)
            logger.info("pool for tenant %s opening", tenant)

    async def close(self) -> None:
        """Close every pool."""
        for pool in self._pools.values():
            await pool.close()
