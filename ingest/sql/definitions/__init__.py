"""Repeatable SQL definitions of ingest: the quality views behind ``ingest quality``.

One file per function or view, named after it, holding its ONE current definition as
``CREATE OR REPLACE FUNCTION|VIEW name`` (a ``-- depends on: a, b`` line names the other
definitions it uses). ``oem-retention db migrate`` applies a file after the numbered migrations
whenever its checksum changes, in dependency order, and drops and recreates what CREATE OR
REPLACE cannot change (core/migrate.py; docs/kpis.md, "Changing a definition").

Some of these objects were first created by numbered migrations (core/migrations/NNN_*.sql). A
landed migration is never edited (its checksum is checked), so the old CREATE FUNCTION or VIEW
stays in it: the file here supersedes it, and is the one to read and to change.
"""
