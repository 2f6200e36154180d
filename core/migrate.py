"""Numbered SQL migrations, the domains' repeatable definitions, and their runner.

Numbered migrations (``core/migrations/NNN_what.sql``) hold tables, indexes and data changes.
Each runs in its own transaction and is recorded with the SHA-256 of its text. A landed migration
is never edited: if the text on disk no longer matches what was applied, the runner refuses to go
on and says which file changed.

Definitions are the functions and views that say what a number means (who is an active
customer): one file per object in a domain's ``sql/definitions`` package, named after it and
holding its one current text as ``CREATE OR REPLACE FUNCTION|VIEW name``. They work like
Flyway's repeatable migrations: applied after the numbered migrations, and again whenever the
file's checksum differs from the one recorded in ``schema_definitions`` (migration 017). Two
differences. Flyway orders repeatables by name; here the order comes from each file's
``-- depends on: a, b`` line, resolved topologically (ties by name), and a file that uses another
definition without declaring it is refused. And a definition whose object is missing is applied
again, so a numbered migration that must alter a table under a view can simply drop the view.
All definitions of a run apply in one transaction.

CREATE OR REPLACE keeps the object, with its grants and the views that use it. What it cannot
change (a function's return type, argument names or defaults; a view's columns; an argument
list, where it would create a second function beside the old one) is dropped and recreated:
the object and, by the headers, everything that depends on it, dependants dropped first and all
created again in dependency order, in the same transaction. An object outside the definitions
that depends on one (a view made by hand) makes the drop fail, and the run with it.

This module knows no domain: the caller names the definition packages (``oem_retention.schema``).
"""

from __future__ import annotations

import graphlib
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import errors, sql

from core.errors import MigrationError
from core.sql import queries

logger = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{3})_(\w+)\.sql$")
_DEFINITION_FILE = re.compile(r"^([a-z_][a-z0-9_]*)\.sql$")
_CREATE = re.compile(r"\bCREATE\s+OR\s+REPLACE\s+(FUNCTION|VIEW)\s+(?:\w+\.)?(\w+)", re.IGNORECASE)
_DEPENDS = re.compile(r"^--\s*depends on:(.*)$", re.MULTILINE | re.IGNORECASE)
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
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


@dataclass(frozen=True, slots=True)
class Definition:
    """One repeatable definition file: a function or view and its current text."""

    name: str
    kind: str  # 'function' or 'view'
    source: str  # where the file is, e.g. analytics/sql/definitions/active_customers.sql
    sql: str
    depends_on: tuple[str, ...]

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text, as recorded when it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class DefinitionChange:
    """What a run did to one definition, and why when it was more than its own change."""

    definition: Definition
    action: str  # applied (first time) | replaced | recreated (was missing) | dropped and recreated
    because: str | None = None

    def __str__(self) -> str:
        why = f" ({self.because})" if self.because else ""
        return f"{self.action} {self.definition.source}{why}"


@dataclass(frozen=True, slots=True)
class MigrationRun:
    """The numbered migrations applied by a run, then what it did to the definitions."""

    migrations: tuple[Migration, ...]
    definitions: tuple[DefinitionChange, ...]

    def report(self) -> list[str]:
        """One line per change, for people."""
        return ([f"applied {m.version:03d}_{m.name}" for m in self.migrations]
                + [str(change) for change in self.definitions])


class _CannotReplaceError(Exception):
    """CREATE OR REPLACE cannot turn the object into its new definition."""


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


def parse_definition(source: str, text: str) -> Definition:
    """Read one definition file (``source`` is its path, ending in ``<name>.sql``)."""
    filename = source.rsplit("/", 1)[-1]
    match = _DEFINITION_FILE.match(filename)
    if not match:
        msg = f"{source}: a definition file is named <function or view name>.sql, in lower case"
        raise MigrationError(msg)
    name = match[1]
    creates = _CREATE.findall(_COMMENT.sub("", text))
    if len(creates) != 1 or creates[0][1].lower() != name:
        found = ", ".join(f"{kind} {obj}" for kind, obj in creates) or "none"
        msg = (f"{source} must create exactly one object, named after the file, with"
               f" CREATE OR REPLACE FUNCTION {name} or CREATE OR REPLACE VIEW {name}"
               f" (found: {found})")
        raise MigrationError(msg)
    depends = [n for line in _DEPENDS.findall(text) for n in re.split(r"[\s,]+", line) if n]
    return Definition(name, creates[0][0].lower(), source, text, tuple(depends))


def ordered(definitions: Iterable[Definition]) -> list[Definition]:
    """The definitions in the order they apply: each after those it depends on, ties by name.

    Refuses two files of one name, a dependency that is no definition, a cycle, and a file that
    uses another definition without naming it in its ``-- depends on:`` line.
    """
    by_name: dict[str, Definition] = {}
    for definition in definitions:
        other = by_name.setdefault(definition.name, definition)
        if other is not definition:
            msg = f"{other.source} and {definition.source} both define {definition.name}"
            raise MigrationError(msg)
    for definition in by_name.values():
        _check_dependencies(definition, by_name)
    sorter = graphlib.TopologicalSorter({d.name: d.depends_on for d in by_name.values()})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        msg = f"definitions depend on each other in a cycle: {' -> '.join(exc.args[1])}"
        raise MigrationError(msg) from exc
    order: list[Definition] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order.extend(by_name[name] for name in ready)
        sorter.done(*ready)
    return order


def _check_dependencies(definition: Definition, by_name: dict[str, Definition]) -> None:
    unknown = [n for n in definition.depends_on if n not in by_name]
    if unknown:
        msg = (f"{definition.source} depends on {', '.join(unknown)}, which no definition file"
               " defines (a table or an object of a numbered migration needs no declaring)")
        raise MigrationError(msg)
    code = _COMMENT.sub("", definition.sql)
    undeclared = sorted(
        name for name in by_name
        if name != definition.name and name not in definition.depends_on
        and re.search(rf"\b{re.escape(name)}\b", code, re.IGNORECASE))
    if undeclared:
        msg = (f"{definition.source} uses {', '.join(undeclared)} but does not say so: add"
               f" '-- depends on: {', '.join(undeclared)}' to its header")
        raise MigrationError(msg)


def load_definitions(packages: Sequence[str]) -> list[Definition]:
    """Every ``*.sql`` file of the given packages, in the order they apply."""
    found: list[Definition] = []
    for package in packages:
        folder = package.replace(".", "/")
        for entry in resources.files(package).iterdir():
            if entry.name.endswith(".sql"):
                found.append(parse_definition(f"{folder}/{entry.name}",
                                              entry.read_text(encoding="utf-8")))
    return ordered(found)


def migrate(conninfo: str, *, definitions: Sequence[str]) -> MigrationRun:
    """Apply missing migrations, then the changed or missing definitions; say what was done.

    ``definitions`` names the packages holding definition files (``analytics.sql.definitions``).
    Every file is read and checked before anything is applied.
    """
    shipped_definitions = load_definitions(definitions)
    q = queries("core", "sql/migrations.sql")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(q["lock"], {"key": _LOCK_KEY})
        try:
            applied = _apply_migrations(conn, q)
            changes = _apply_definitions(conn, shipped_definitions, q)
        finally:
            conn.execute(q["unlock"], {"key": _LOCK_KEY})
    return MigrationRun(tuple(applied), tuple(changes))


def _apply_migrations(conn: psycopg.Connection[Any], q: dict[str, str]) -> list[Migration]:
    conn.execute(q["create_history"])
    recorded = {row[0]: (row[1], row[2]) for row in conn.execute(q["history"]).fetchall()}
    shipped = available()
    _check_history(recorded, shipped)
    applied_now: list[Migration] = []
    for migration in shipped:
        if migration.version in recorded:
            continue
        logger.info("applying migration %03d_%s", migration.version, migration.name)
        try:
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(q["record"], {"version": migration.version, "name": migration.name,
                                           "checksum": migration.checksum})
        except psycopg.Error as exc:
            msg = f"migration {migration.version:03d}_{migration.name} failed: {exc}"
            raise MigrationError(msg) from exc
        applied_now.append(migration)
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


def _apply_definitions(conn: psycopg.Connection[Any], definitions: list[Definition],
                       q: dict[str, str]) -> list[DefinitionChange]:
    recorded = dict(conn.execute(q["definitions_history"]).fetchall())
    gone = sorted(set(recorded) - {d.name for d in definitions})
    if gone:
        msg = (f"the database has definition(s) {', '.join(gone)}, which this code does not ship:"
               " it was migrated by a newer version of oem-retention, or a definition file was"
               " removed without a numbered migration that drops its object and its row in"
               " schema_definitions")
        raise MigrationError(msg)
    dependants = _dependants(definitions)
    dropped: dict[str, str] = {}  # name -> why it was dropped in this run
    changes: list[DefinitionChange] = []
    with conn.transaction():
        for definition in definitions:
            try:
                change = _apply_definition(conn, definition, recorded.get(definition.name),
                                           dropped=dropped, dependants=dependants, q=q)
            except psycopg.Error as exc:
                msg = f"definition {definition.source} failed: {exc}"
                raise MigrationError(msg) from exc
            if change is not None:
                logger.info("definition %s", change)
                conn.execute(q["record_definition"], {"name": definition.name,
                                                      "source": definition.source,
                                                      "checksum": definition.checksum})
                changes.append(change)
    return changes


def _apply_definition(conn: psycopg.Connection[Any], definition: Definition,
                      recorded_checksum: str | None, *, dropped: dict[str, str],
                      dependants: dict[str, list[Definition]],
                      q: dict[str, str]) -> DefinitionChange | None:
    if definition.name in dropped:
        _execute(conn, definition)
        return DefinitionChange(definition, "dropped and recreated", dropped[definition.name])
    before = _objects(conn, definition.name, q)
    present = any(kind == definition.kind for kind, _ in before)
    if recorded_checksum == definition.checksum and present:
        return None
    if recorded_checksum is None:
        action = "applied"
    else:
        action = "replaced" if present else "recreated (was missing)"
    try:
        _replace(conn, definition, before, q)
    except _CannotReplaceError as exc:
        doomed = [definition, *dependants[definition.name]]
        for other in reversed(doomed):
            _drop(conn, other, q)
        for other in doomed[1:]:
            dropped[other.name] = f"it depends on {definition.name}"
        _execute(conn, definition)
        return DefinitionChange(definition, "dropped and recreated", str(exc))
    return DefinitionChange(definition, action)


def _dependants(definitions: list[Definition]) -> dict[str, list[Definition]]:
    """Per definition, everything that depends on it directly or not, in apply order."""
    direct: dict[str, set[str]] = {d.name: set() for d in definitions}
    for definition in definitions:
        for name in definition.depends_on:
            direct[name].add(definition.name)
    result: dict[str, list[Definition]] = {}
    for definition in definitions:
        reached: set[str] = set()
        todo = list(direct[definition.name])
        while todo:
            name = todo.pop()
            if name not in reached:
                reached.add(name)
                todo.extend(direct[name])
        result[definition.name] = [d for d in definitions if d.name in reached]
    return result


def _objects(conn: psycopg.Connection[Any], name: str,
             q: dict[str, str]) -> list[tuple[str, int]]:
    return [(kind, oid) for kind, oid in
            conn.execute(q["definition_objects"], {"name": name}).fetchall()]


def _execute(conn: psycopg.Connection[Any], definition: Definition) -> None:
    # Bytes: the file is run as it is, with no parameter placeholders read into it.
    conn.execute(definition.sql.encode())


def _replace(conn: psycopg.Connection[Any], definition: Definition,
             before: list[tuple[str, int]], q: dict[str, str]) -> None:
    """CREATE OR REPLACE in a savepoint; _CannotReplaceError (savepoint undone) where it can't.

    ``before``: the objects of the definition's name as they are now (``_objects``).
    """
    other_kinds = {kind for kind, _ in before} - {definition.kind}
    if other_kinds:
        msg = f"it was a {other_kinds.pop()}, it is now a {definition.kind}"
        raise _CannotReplaceError(msg)
    try:
        with conn.transaction():
            _execute(conn, definition)
            new = set(_objects(conn, definition.name, q)) - set(before)
            if before and new:
                # CREATE OR REPLACE FUNCTION with other argument types adds an overload and
                # leaves the old function, which callers would still reach.
                msg = "its argument types changed"
                raise _CannotReplaceError(msg)
    except (errors.InvalidFunctionDefinition, errors.InvalidTableDefinition,
            errors.WrongObjectType) as exc:
        # 42P13 cannot change return type / argument names / defaults; 42P16 cannot change a
        # view's columns; 42809 cannot change routine kind. A genuine error of the same class
        # (a body that does not match its return type) fails again on the fresh CREATE.
        raise _CannotReplaceError(exc.diag.message_primary or str(exc)) from exc


def _drop(conn: psycopg.Connection[Any], definition: Definition, q: dict[str, str]) -> None:
    for kind in sorted({kind for kind, _ in _objects(conn, definition.name, q)}):
        statement = "DROP VIEW {}" if kind == "view" else "DROP FUNCTION {}"
        try:
            conn.execute(sql.SQL(statement).format(sql.Identifier(definition.name)))
        except errors.DependentObjectsStillExist as exc:
            msg = (f"{definition.source} must be dropped and recreated, but"
                   f" {exc.diag.message_detail}: make that a definition (with"
                   f" '-- depends on: {definition.name}') or drop it in a numbered migration")
            raise MigrationError(msg) from exc
        except errors.AmbiguousFunction as exc:
            msg = (f"{definition.source} must be dropped and recreated, but several functions"
                   f" are named {definition.name}: a definition owns its name; drop the other"
                   " overloads in a numbered migration")
            raise MigrationError(msg) from exc
