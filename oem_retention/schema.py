"""The platform's database schema: core's numbered migrations, then every domain's definitions.

The one way to build or upgrade a database (``db migrate``, ``up``, the tests' template, the
benchmarks). core's runner knows no domain, so the packages holding the domains' definition
files (functions and views, core/migrate.py) are named here, where the process is wired.
"""

from __future__ import annotations

from core import migrate as runner

# Any order: the runner orders the files by their `-- depends on:` lines.
DEFINITIONS = (
    "erp_connectors.sql.definitions",
    "ingest.sql.definitions",
    "analytics.sql.definitions",
    "api.sql.definitions",
)


def migrate(conninfo: str) -> runner.MigrationRun:
    """Apply pending migrations, then the definitions whose file or object changed."""
    return runner.migrate(conninfo, definitions=DEFINITIONS)
