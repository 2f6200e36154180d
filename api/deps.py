"""What a route gets: the caller and a connection of the caller's tenant.

The caller is authenticated, and its connection is in one transaction whose row-level security
scope is the caller's (staff, or one customer).

A route names the roles it admits: ``session: Annotated[Session, requires("service")]``; admin
is admitted everywhere, and the roles' reach is described in api/security.py. The transaction
commits when the route returns, before the answer is sent: a client that reads right after a
write sees it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api.errors import Forbidden, Problem, Unauthorized
from api.security import (
    CredentialsError,
    IdentityProviderUnavailableError,
    OidcVerifier,
    Principal,
    Role,
    key_matches,
    read_token,
    split_api_key,
    token_issuer,
)
from api.tenants import TenantPools
from core.errors import DatabaseUnavailableError
from core.settings import Settings
from core.sql import queries

logger = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[dict[str, Any]]

bearer = HTTPBearer(auto_error=False, description="A token of POST /api/v1/auth/token, an API "
                    "key (oemr_...), or a token of the configured identity provider.")


def sql() -> dict[str, str]:
    """The access queries."""
    return queries("api", "sql/access.sql")


@dataclass(frozen=True)
class Session:
    """A request's caller and its connection (inside its transaction)."""

    principal: Principal
    conn: Conn
    request_id: str


def settings_of(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def pool_of(request: Request, tenant: str) -> AsyncConnectionPool:
    """The pool of a tenant; a 401 when the credentials name a tenant this API does not serve."""
    pools: TenantPools = request.app.state.pools
    pool = pools.get(tenant)
    if pool is None:
        raise Unauthorized(f"no tenant {tenant!r} here")
    return pool


@asynccontextmanager
async def scoped(pool: AsyncConnectionPool,
                 principal: Principal | None) -> AsyncIterator[Conn]:
    """A connection of ``pool`` in a transaction scoped to ``principal`` (for streamed exports).

    None: no scope, so the transaction sees no customer's rows (the policies fail closed; the
    scope is transaction-local, so nothing is left of an earlier request's); the credentials
    tables have no row-level security.
    """
    try:
        async with pool.connection() as raw, raw.transaction():
            raw.row_factory = dict_row  # type: ignore[assignment]
            conn: Conn = raw  # type: ignore[assignment]
            if principal is not None:
                await _set_scope(conn, principal)
            yield conn
    except (PoolTimeout, psycopg.OperationalError) as exc:
        raise DatabaseUnavailableError(str(exc)) from exc


async def _set_scope(conn: Conn, principal: Principal) -> None:
    customer = principal.role == "customer"
    await conn.execute(sql()["set_scope"], {
        "scope": "customer" if customer else "staff",
        "customer_id": str(principal.customer_id) if customer else ""})


async def _authenticate(request: Request, conn: Conn, credentials: str) -> Principal:
    """The principal behind ``credentials``, checked against the tenant's database."""
    settings = settings_of(request)
    key = split_api_key(credentials)
    if key is not None:
        _tenant, prefix, secret = key
        cur = await conn.execute(sql()["key_by_prefix"], {"prefix": prefix})
        row = await cur.fetchone()
        if row is None or not key_matches(bytes(row["secret_hash"]), secret):
            raise Unauthorized("the API key is not valid")
        if row["revoked_at"] is not None:
            raise Unauthorized("the API key was revoked")
        await conn.execute(sql()["touch_key"], {"id": row["id"]})
        return Principal(subject=row["name"], role=row["role"], tenant=_tenant,
                         customer_id=row["customer_id"], key_id=row["id"])
    claims = read_token(settings, credentials)
    cur = await conn.execute(sql()["user_by_id"], {"id": int(claims["sub"])})
    user = await cur.fetchone()
    if user is None or user["disabled"]:
        raise Unauthorized("the user is disabled or no longer exists")
    # The role and company as they are now, not as they were when the token was issued.
    return Principal(subject=user["username"], role=user["role"], tenant=claims["tenant"],
                     customer_id=user["customer_id"], user_id=user["id"])


async def _tenant_of(request: Request, credentials: str) -> tuple[str, Principal | None]:
    """The tenant named by ``credentials`` and, for the identity provider's tokens, the caller."""
    settings = settings_of(request)
    key = split_api_key(credentials)
    if key is not None:
        return key[0], None
    verifier: OidcVerifier | None = request.app.state.oidc
    if verifier is not None and token_issuer(credentials) == verifier.issuer:
        # In a thread: the provider's keys may be fetched over HTTP, which would stop the loop.
        try:
            principal = await asyncio.to_thread(verifier.principal, credentials,
                                                tenants=request.app.state.pools.tenants)
        except IdentityProviderUnavailableError as exc:
            logger.warning("identity provider's keys unavailable: %s", exc)
            raise Problem(503, "Service unavailable", "the identity provider's keys cannot be "
                          "fetched; retry", kind="unavailable",
                          headers={"Retry-After": "30"}) from None
        return principal.tenant, principal
    return str(read_token(settings, credentials)["tenant"]), None


def session_for(*roles: Role) -> Callable[..., AsyncIterator[Session]]:
    """A dependency admitting the given roles (and admin) with a scoped connection."""
    admitted = {"admin", *roles}

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> AsyncIterator[Session]:
        if credentials is None:
            raise Unauthorized("send a bearer token or an API key in the Authorization header")
        token = credentials.credentials
        try:
            tenant, known = await _tenant_of(request, token)
        except CredentialsError as exc:
            raise Unauthorized(str(exc)) from None
        pool = pool_of(request, tenant)
        request_id = request.headers.get("x-request-id", "")
        async with scoped(pool, known) as conn:
            try:
                principal = known or await _authenticate(request, conn, token)
            except CredentialsError as exc:
                raise Unauthorized(str(exc)) from None
            if principal.role not in admitted:
                raise Forbidden(f"role {principal.role!r} may not do this "
                                f"(admitted: {', '.join(sorted(admitted))})")
            if known is None:
                await _set_scope(conn, principal)
            request.state.principal = principal
            yield Session(principal, conn, request_id)

    return dependency


def requires(*roles: Role) -> Any:
    """``Depends`` on a session admitting ``roles`` (and admin), ended before the answer is sent."""
    return Depends(session_for(*roles), scope="function")

