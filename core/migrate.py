"""Numbered SQL migrations (``core/migrations/NNN_what.sql``) and their runner.

Each migration runs in its own transaction and is recorded with the SHA-256 of its text. A landed
migration is never edited: if the text on disk no longer matches what was applied, the runner
refuses to go on and says which file changed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from core.errors import MigrationError
from core.sql import queries

logger = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{3})_(\w+)\.sql$")
# One runner at a time per database: a second one waits, then finds nothing left to do.
_LOCK_KEY = 0x6F656D72_0001


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text, as recorded when it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """The migrations shipped in ``core/migrations``, in version order."""
    found: list[Migration] = []
    for entry in resources.files("core.migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        msg = f"two migration files share a number: {versions}"
        raise MigrationError(msg)
    return found


def migrate(conninfo: str) -> list[Migration]:
    """Apply what is missing; return the migrations applied now."""
    q = queries("core", "sql/migrations.sql")
    applied_now: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(q["lock"], {"key": _LOCK_KEY})
        try:
            conn.execute(q["create_history"])
            recorded = {
                row[0]: (row[1], row[2]) for row in conn.execute(q["history"]).fetchall()
            }
            shipped = available()
            _check_history(recorded, shipped)
            for migration in shipped:
                if migration.version in recorded:
                    continue
                logger.info("applying migration %03d_%s", migration.version, migration.name)
                try:
                    with conn.transaction():
                        conn.execute(migration.sql.encode())
                        conn.execute(
                            q["record"],
                            {
                                "version": migration.version,
                                "name": migration.name,
                                "checksum": migration.checksum,
                            },
                        )
                except psycopg.Error as exc:
                    msg = f"migration {migration.version:03d}_{migration.name} failed: {exc}"
                    raise MigrationError(msg) from exc
                applied_now.append(migration)
        finally:
            conn.execute(q["unlock"], {"key": _LOCK_KEY})
    return applied_now


def _check_history(recorded: dict[int, tuple[str, str]], shipped: list[Migration]) -> None:
    by_version = {m.version: m for m in shipped}
    latest = max(recorded, default=0)
    behind = [m for m in shipped if m.version < latest and m.version not in recorded]
    if behind:
        msg = (
            f"migration {behind[0].version:03d}_{behind[0].name} is numbered below"
            f" {latest:03d}, which is already applied: it would run out of order."
            " Give it the next free number."
        )
        raise MigrationError(msg)
    for version, (name, checksum) in sorted(recorded.items()):
        migration = by_version.get(version)
        if migration is None:
            msg = (
                f"the database has migration {version:03d}_{name}, which this code does not ship:"
                " it was migrated by a newer version of oem-retention"
            )
            raise MigrationError(msg)
        if migration.checksum != checksum:
            msg = (
                f"migration {version:03d}_{name} was changed after it was applied"
                f" (recorded sha256 {checksum[:12]}, file has {migration.checksum[:12]})."
                " Landed migrations are never edited: revert the file and add a new migration."
            )
            raise MigrationError(msg)
