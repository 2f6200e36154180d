"""Writes that are safe to send twice.

An ``Idempotency-Key`` header makes the second request with the same key get the first one's
answer, and nothing is done twice.

The key is kept per caller with a hash of the request; the same key with a different request is
refused (422), as the IETF draft "The Idempotency-Key HTTP Header Field" has it. Requests with
one key are serialised by a transaction-scoped advisory lock, so two sent at once cannot both act.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from api.deps import Session, sql
from api.errors import Problem


async def once(session: Session, key: str | None, *, route: str, request_body: Any,
               act: Callable[[], Awaitable[tuple[int, Any]]]) -> tuple[int, Any]:
    """``act()`` the first time ``key`` is seen for this caller; its stored answer after that.

    Without a key the write is just done. The answer is ``(status, JSON-able body)``.
    """
    if key is None:
        return await act()
    if not 1 <= len(key) <= 200:
        raise Problem(400, "Bad Idempotency-Key", "the key must be 1 to 200 characters",
                      kind="bad-idempotency-key")
    actor = session.principal.actor
    digest = hashlib.sha256(route.encode() + b"\n" +
                            orjson.dumps(request_body, default=str,
                                         option=orjson.OPT_SORT_KEYS)).digest()
    params = {"actor": actor, "key": key}
    await session.conn.execute(sql()["idempotency_lock"], params)
    cur = await session.conn.execute(sql()["idempotency_find"], params)
    seen = await cur.fetchone()
    if seen is not None:
        if seen["route"] != route or bytes(seen["request_hash"]) != digest:
            raise Problem(422, "Idempotency-Key reused",
                          "this key was used for a different request: use a new key",
                          kind="idempotency-key-reused")
        return int(seen["status"]), seen["response"]
    status, body = await act()
    await session.conn.execute(sql()["idempotency_store"], {
        **params, "route": route, "request_hash": digest, "status": status,
        "response": Jsonb(orjson.loads(orjson.dumps(body, default=str)))})
    return status, body
