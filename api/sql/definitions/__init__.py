"""Repeatable SQL definitions of the API's access: who may see a customer's rows.

``api_customer_visible`` and ``api_staff`` are what the row-level security policies of migration
019 ask; the files here supersede the CREATE FUNCTION of the same name in that migration: they
are the ones to read and to change (how they are applied: core/migrate.py).
"""
