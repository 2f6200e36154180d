"""Repeatable SQL definitions of the ERP side: reporting currency, installed machines.

Amounts in the reporting currency (``to_reporting``, on the rates erp_connectors/rates.py
loads) and the installed base joined to the registered machines (``installed_machines``).

The files here supersede the CREATE FUNCTION or VIEW of the same name in a landed migration:
they are the ones to read and to change (how they are applied: core/migrate.py).
"""
