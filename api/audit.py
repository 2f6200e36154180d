"""The audit trail: every write through the API, who made it, and the row before and after."""

from __future__ import annotations

from typing import Any

import orjson
from psycopg.types.json import Jsonb

from api.deps import Session, sql


def _json(value: Any) -> Jsonb | None:
    if value is None:
        return None
    # Through orjson and back: dates, decimals and enums become what a JSON reader expects.
    return Jsonb(orjson.loads(orjson.dumps(value, default=str)))


async def audit(session: Session, *, action: str, entity: str, entity_id: object,
                before: Any = None, after: Any = None) -> None:
    """Record a write in the same transaction as the write itself."""
    await session.conn.execute(sql()["audit"], {
        "actor": session.principal.actor, "actor_role": session.principal.role,
        "action": action, "entity": entity,
        "entity_id": None if entity_id is None else str(entity_id),
        "before": _json(before), "after": _json(after),
        "request_id": session.request_id or None})
