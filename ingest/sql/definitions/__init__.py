"""Repeatable SQL definitions of ingest: the quality views behind ``ingest quality``.

The files here supersede the CREATE FUNCTION or VIEW of the same name in a landed migration:
they are the ones to read and to change (how they are applied: core/migrate.py).
"""
