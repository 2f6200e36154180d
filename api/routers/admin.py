"""The admin's own: users, API keys and the audit trail of every write."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from psycopg.rows import dict_row

from api.audit import audit
from api.deps import Session, requires, sql
from api.errors import NotFound
from api.models.access import (
    ApiKey,
    AuditEntry,
    CreatedApiKey,
    NewApiKey,
    NewUser,
    User,
    UserChange,
)
from api.paging import Page, decode_cursor, encode_cursor
from api.security import hash_password, new_api_key

router = APIRouter(prefix="/admin", tags=["admin"])
Admin = Annotated[Session, requires("admin")]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/users", response_model=list[User], summary="Users")
async def users(session: Admin) -> list[User]:
    """Every user of the tenant (never a password hash)."""
    cur = await session.conn.execute(sql()["list_users"])
    return [User(**r) for r in await cur.fetchall()]


@router.post("/users", response_model=User, status_code=status.HTTP_201_CREATED,
             summary="Create or reset a user")
async def add_user(session: Admin, user: NewUser) -> User:
    """Create a user; an existing username gets the new password and role, and is enabled."""
    # Argon2 takes ~200 ms of CPU: off the event loop, so other requests go on meanwhile.
    password_hash = await asyncio.to_thread(hash_password, user.password)
    # An existing username is reset (password, role): the trail keeps what it was.
    before_cur = await session.conn.execute(sql()["user_by_username"],
                                            {"username": user.username})
    before = await before_cur.fetchone()
    cur = await session.conn.execute(sql()["add_user"], {
        "username": user.username, "password_hash": password_hash,
        "role": user.role, "customer_id": user.customer_id})
    row = await cur.fetchone()
    assert row is not None
    created = User(**row)
    await audit(session, action="user.put", entity="api_user", entity_id=created.id,
                before=User(**before).model_dump() if before else None,
                after=created.model_dump())
    return created


@router.patch("/users/{user_id}", response_model=User, summary="Change a user")
async def change_user(session: Admin, user_id: Id,
                      change: UserChange) -> User:
    """Change a user's role, company, password, or disable it (its tokens stop working at once)."""
    before_cur = await session.conn.execute(sql()["user_by_id"], {"id": user_id})
    before = await before_cur.fetchone()
    if before is None:
        raise NotFound("user", user_id)
    password_hash = (await asyncio.to_thread(hash_password, change.password)
                     if change.password else None)
    cur = await session.conn.execute(sql()["update_user"], {
        "id": user_id, "role": change.role, "customer_id": change.customer_id,
        "disabled": change.disabled,
        "password_hash": password_hash})
    row = await cur.fetchone()
    assert row is not None
    after = User(**row)
    await audit(session, action="user.patch", entity="api_user", entity_id=user_id,
                before=dict(before), after=after.model_dump())
    return after


@router.get("/keys", response_model=list[ApiKey], summary="API keys")
async def keys(session: Admin) -> list[ApiKey]:
    """Every API key, revoked ones too, with when each was last used."""
    cur = await session.conn.execute(sql()["list_keys"])
    return [ApiKey(**r) for r in await cur.fetchall()]


@router.post("/keys", response_model=CreatedApiKey, status_code=status.HTTP_201_CREATED,
             summary="Create an API key")
async def add_key(session: Admin, key: NewApiKey) -> CreatedApiKey:
    """Create a key for a program; its secret is in this answer only."""
    made = new_api_key(session.principal.tenant)
    cur = await session.conn.execute(sql()["add_key"], {
        "prefix": made.prefix, "secret_hash": made.secret_hash, "name": key.name,
        "role": key.role, "customer_id": key.customer_id,
        "created_by": session.principal.user_id})
    row = await cur.fetchone()
    assert row is not None
    created = ApiKey(**row)
    await audit(session, action="key.create", entity="api_key", entity_id=created.id,
                after=created.model_dump())
    return CreatedApiKey(**created.model_dump(), key=made.token)


@router.delete("/keys/{key_id}", response_model=ApiKey, summary="Revoke an API key")
async def revoke_key(session: Admin, key_id: Id) -> ApiKey:
    """Revoke a key: it is refused from the next request on."""
    before_cur = await session.conn.execute(sql()["key_by_id"], {"id": key_id})
    before = await before_cur.fetchone()
    if before is None:
        raise NotFound("API key", key_id)
    cur = await session.conn.execute(sql()["revoke_key"], {"id": key_id})
    row = await cur.fetchone()
    assert row is not None
    revoked = ApiKey(**row)
    await audit(session, action="key.revoke", entity="api_key", entity_id=key_id,
                before=ApiKey(**before).model_dump(), after=revoked.model_dump())
    return revoked


@router.get("/audit", response_model=Page[AuditEntry], summary="Audit trail")
async def audit_trail(session: Admin,
                      entity: Annotated[str | None, Query(max_length=100)] = None,
                      actor: Annotated[str | None, Query(max_length=200)] = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                      cursor: str | None = None) -> Page[AuditEntry]:
    """Writes through the API, newest first, by entity or actor."""
    after = decode_cursor(cursor, "-id")[1] if cursor else None
    async with session.conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql()["audit_page"], {"entity": entity, "actor": actor,
                                                "after_id": after, "limit": limit + 1})
        rows = await cur.fetchall()
    items = [AuditEntry(**r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page[AuditEntry](items=items, limit=limit,
                            next_cursor=encode_cursor("-id", items[-1].id, items[-1].id)
                            if more and items else None)
