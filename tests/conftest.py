"""Shared test fixtures: the real TimescaleDB and Mosquitto that deploy/local/provision.sh runs.

The services' addresses come from the environment (``OEMR_DATABASE_URL``, ``OEMR_MQTT_HOST``,
``OEMR_MQTT_PORT``), as the test command exports them from the provisioning's env file.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE_ENV = Path(os.environ.get("OEMR_STATE_DIR", "/var/lib/oem-retention")) / "env"


def _load_state_env() -> None:
    if not STATE_ENV.exists():
        return
    for line in STATE_ENV.read_text().splitlines():
        key, _, value = line.partition("=")
        if key and key not in os.environ:
            os.environ[key] = value


_load_state_env()
