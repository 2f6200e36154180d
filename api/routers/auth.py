"""Logging in: a user's password for a bearer token; who am I."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Request

from api.deps import Session, pool_of, requires, scoped, settings_of, sql
from api.errors import Unauthorized
from api.models.access import Login, Me, Token
from api.security import STAFF, Principal, issue_token, verify_password

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token", response_model=Token, summary="Log in with a password",
             responses={401: {"description": "Wrong username or password, a disabled user, "
                                             "or a tenant this API does not serve"}})
async def token(request: Request, login: Login) -> Token:
    """Exchange a username and password for a bearer token (``Authorization: Bearer ...``)."""
    settings = settings_of(request)
    tenants: list[str] = request.app.state.pools.tenants
    tenant = login.tenant or (tenants[0] if len(tenants) == 1 else None)
    if tenant is None:
        raise Unauthorized("this API serves several tenants: name yours in 'tenant'")
    async with scoped(pool_of(request, tenant), None) as conn:
        cur = await conn.execute(sql()["user_for_login"], {"username": login.username})
        user = await cur.fetchone()
        # Argon2 takes ~200 ms of CPU: off the event loop, so other requests go on meanwhile.
        ok, rehash = await asyncio.to_thread(
            verify_password, user["password_hash"] if user else None, login.password)
        if user is None or not ok or user["disabled"]:
            raise Unauthorized("wrong username or password, or the user is disabled")
        if rehash is not None:
            await conn.execute(sql()["rehash_password"], {"id": user["id"],
                                                          "password_hash": rehash})
    principal = Principal(subject=user["username"], role=user["role"], tenant=tenant,
                          customer_id=user["customer_id"], user_id=user["id"])
    return Token(access_token=issue_token(settings, principal),
                 expires_in=settings.api_token_minutes * 60, role=principal.role,
                 tenant=tenant, customer_id=principal.customer_id)


@router.get("/me", response_model=Me, summary="The caller")
async def me(session: Annotated[Session, requires(*STAFF, "customer")]) -> Me:
    """Who the credentials stand for: role, tenant and, for portal users, their customer."""
    p = session.principal
    return Me(subject=p.subject, role=p.role, tenant=p.tenant, customer_id=p.customer_id,
              user_id=p.user_id, key_id=p.key_id)



