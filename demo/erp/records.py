"""A world directory's business records as the fake ERPs' loaders read them, and their ids.

The loaders take the canonical CSV files ``demo/world/files.py`` writes (one per entity, header =
the model's fields, see erp_connectors/models.py) and put them into a fake ERP as that vendor
keeps them: the connector's mapping run backwards. Each loader records which external id each
world record gets once our connector has read it from the fake, so the world's truth.json can
be read against what was stored (``write_ids``).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson

from erp_connectors.files import FILE_NAMES

# The files contract's entities, parents first: a loader resolves a record's parents by the ids
# it gave them.
ENTITIES = tuple(FILE_NAMES)

Records = dict[str, list[dict[str, str]]]


def read_records(directory: Path) -> Records:
    """The canonical CSV files of a world directory (those present), empty cells left out.

    Raises ``FileNotFoundError`` when the directory holds none of them.
    """
    world: Records = {}
    for entity in ENTITIES:
        path = directory / FILE_NAMES[entity]
        if path.exists():
            with path.open(newline="", encoding="utf-8-sig") as f:
                world[entity] = [{k: v for k, v in row.items() if v not in (None, "")}
                                 for row in csv.DictReader(f)]
    if not world:
        raise FileNotFoundError(f"{directory} holds no world files (customers.csv, ...):"
                                " generate one with `oem-retention demo generate`")
    return world


def flag(value: str | None) -> bool:
    """A files-contract flag (true/yes/1) as a bool; absent is false."""
    return str(value).strip().lower() in ("true", "yes", "1")


def amount(value: str | None, default: str = "0") -> Decimal:
    """A files-contract number, exact."""
    return Decimal(value if value not in (None, "") else default)


def moment(value: str | None) -> datetime | None:
    """A files-contract time (ISO 8601, ``Z`` or an offset; none is UTC) as an aware datetime."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def write_ids(path: Path, ids: Mapping[tuple[str, str], str]) -> None:
    """Write ``{entity: {world id: external id as stored}}`` as JSON."""
    by_entity: dict[str, dict[str, str]] = {}
    for (entity, world_id), external_id in ids.items():
        by_entity.setdefault(entity, {})[world_id] = external_id
    path.write_bytes(orjson.dumps(by_entity, option=orjson.OPT_SORT_KEYS))
