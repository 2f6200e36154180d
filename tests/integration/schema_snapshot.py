"""The catalogue that a fresh ``oem-retention db migrate`` builds, as text, and its snapshot.

test_migrations.py builds an empty database with the numbered migrations and the definitions
(``oem_retention.schema.migrate``; storage policies are settings, not schema, and left out),
reads its catalogue back (tables with their columns' types, defaults, nullability and identity;
constraints; indexes; triggers; hypertables and their dimensions; views with their columns;
functions with their signatures and a digest of their bodies) and compares it with
``schema_snapshot.txt`` line by line. After an intended change to the schema (a new migration, a
changed definition), regenerate the file and commit it with the change::

    set -a && . /var/lib/oem-retention/env && set +a
    python -m tests.integration.schema_snapshot --write

Without ``--write`` it prints the differences and exits 1 if there are any.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from core.settings import Settings
from core.sql import queries
from oem_retention import schema

SNAPSHOT = Path(__file__).with_name("schema_snapshot.txt")
REGENERATE = "python -m tests.integration.schema_snapshot --write"
HEADER = f"""\
# What `oem-retention db migrate` builds on an empty database (the numbered migrations, then the
# definitions), read back from the catalogue by tests/integration/schema_snapshot.py.
# Regenerate after an intended change, and commit it with the change: {REGENERATE}
"""


def server_url(dbname: str) -> str:
    """The provisioned server (OEMR_DATABASE_URL), database ``dbname``."""
    base = os.environ.get("OEMR_DATABASE_URL", Settings().database_url)
    return psycopg.conninfo.make_conninfo(base, dbname=dbname)


@contextlib.contextmanager
def built_database() -> Iterator[str]:
    """An empty database of its own, migrated; dropped afterwards."""
    name = f"oemr_schema_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = server_url(name)
        schema.migrate(url)
        yield url
    finally:
        with psycopg.connect(server_url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def describe(conn: psycopg.Connection[Any]) -> str:
    """The catalogue of the connection's current schema, one fact per line, in a fixed order."""
    q = queries("tests.integration", "schema_snapshot.sql")

    def rows(name: str) -> list[tuple[Any, ...]]:
        return conn.execute(q[name]).fetchall()

    per_relation: dict[str, list[str]] = defaultdict(list)
    for table, column, *attributes in rows("columns"):
        per_relation[table].append(f"column {table}.{column} {_column(tuple(attributes))}")
    for table, name, definition in rows("constraints"):
        per_relation[table].append(f"constraint {table}.{name} {definition}")
    for table, name, definition in rows("indexes"):
        per_relation[table].append(f"index {table}.{name} {definition}")
    for table, name, definition in rows("triggers"):
        per_relation[table].append(f"trigger {table}.{name} {definition}")
    for table, number, column, type_, kind, interval, integer, partitions in rows("dimensions"):
        size = (f"interval {interval}" if interval is not None
                else f"integer interval {integer}" if integer is not None
                else f"{partitions} partitions")
        per_relation[table].append(f"hypertable {table} dimension {number}: {column} ({type_}),"
                                   f" {kind.lower()} partitioning, {size}")
    for view, digest in rows("views"):
        per_relation[view].append(f"view {view} query sha256 {digest}")

    blocks = [HEADER.rstrip("\n")]
    blocks.append("\n".join(f"enum {name} ({labels})" for name, labels in rows("enums")))
    blocks.extend("\n".join([f"{kind} {name}", *per_relation[name]])
                  for name, kind in rows("relations"))
    blocks.append("\n".join(_function(row) for row in rows("functions")))
    return "\n\n".join(blocks) + "\n"


def _column(attributes: tuple[Any, ...]) -> str:
    type_, not_null, default, identity, generated, start, step = attributes
    parts = [type_]
    if not_null:
        parts.append("NOT NULL")
    if identity:
        always = "ALWAYS" if identity == "a" else "BY DEFAULT"
        parts.append(f"GENERATED {always} AS IDENTITY (START {start} INCREMENT {step})")
    elif generated:
        parts.append(f"GENERATED ALWAYS AS ({default}) STORED")
    elif default is not None:
        parts.append(f"DEFAULT {default}")
    return " ".join(parts)


def _function(row: tuple[Any, ...]) -> str:
    (name, arguments, result, kind, language, volatility, strict, security_definer, parallel,
     body) = row
    returns = f" RETURNS {result}" if result else ""
    flags = "".join([" STRICT" if strict else "", " SECURITY DEFINER" if security_definer else ""])
    return (f"{kind} {name}({arguments}){returns} LANGUAGE {language} {volatility}{flags}"
            f" PARALLEL {parallel} body sha256 {body}")


def checked_in() -> str:
    """The snapshot file's text (empty before the first --write)."""
    return SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else ""


def differences(expected: str, actual: str) -> str:
    """A unified diff from the snapshot to the database; empty when they agree."""
    return "".join(difflib.unified_diff(
        expected.splitlines(keepends=True), actual.splitlines(keepends=True),
        fromfile=f"{SNAPSHOT.name} (checked in)", tofile="built by db migrate"))


def main(argv: list[str] | None = None) -> int:
    """Compare the schema a fresh build gives with the snapshot, or (--write) rewrite it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {SNAPSHOT}")
    args = parser.parse_args(argv)
    with built_database() as url, psycopg.connect(url) as conn:
        actual = describe(conn)
    if args.write:
        SNAPSHOT.write_text(actual, encoding="utf-8")
        print(f"wrote {SNAPSHOT}")
        return 0
    diff = differences(checked_in(), actual)
    print(diff or "the schema matches the snapshot", end="" if diff else "\n")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
