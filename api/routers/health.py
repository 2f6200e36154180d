"""Liveness and readiness, for load balancers and Kubernetes probes (no credentials)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from api.deps import scoped
from api.errors import Problem
from api.tenants import TenantPools

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The process answers; ``tenants`` are the databases it serves."""

    status: str
    tenants: list[str]


@router.get("/health", response_model=Health, summary="Liveness")
async def health(request: Request) -> Health:
    """The process is up (touches no database)."""
    pools: TenantPools = request.app.state.pools
    return Health(status="ok", tenants=pools.tenants)


@router.get("/health/ready", response_model=Health, summary="Readiness",
            responses={503: {"description": "a tenant's database cannot be reached"}})
async def ready(request: Request) -> Health:
    """Every tenant's database answers a query."""
    pools: TenantPools = request.app.state.pools
    for tenant in pools.tenants:
        pool = pools.get(tenant)
        assert pool is not None
        try:
            async with scoped(pool, None) as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:
            raise Problem(503, "Not ready", f"tenant {tenant}: database unavailable",
                          kind="unavailable") from exc
    return Health(status="ready", tenants=pools.tenants)
