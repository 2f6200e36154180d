#!/usr/bin/env bash
# Sets up and runs the tests on this machine: provisions the real TimescaleDB and Mosquitto the
# tests talk to, installs oem-retention with its dev tools, checks lint and types, runs pytest.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The tests need servers they may stop and restart (the database outage test runs a second
# cluster in the TimescaleDB chroot): always the provisioned ones, never a site's own.
env -u OEMR_DATABASE_URL -u OEMR_MQTT_HOST bash deploy/local/provision.sh
bash deploy/local/install.sh --dev
set -a
# shellcheck disable=SC1091
. "${OEMR_STATE_DIR:-/var/lib/oem-retention}/env"
set +a
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
