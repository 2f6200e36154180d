#!/usr/bin/env bash
# Sets up and runs the platform on this machine: provisions TimescaleDB and Mosquitto, installs
# oem-retention into .venv, migrates, and runs every process (`oem-retention up`) with a simulated
# fleet publishing to it, showing live counts of what is stored. Ctrl-C stops it all.
# Extra arguments go to `oem-retention up` (e.g. --simulate-machines 500).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/provision.sh
bash deploy/local/install.sh
set -a
# shellcheck disable=SC1091
. "${OEMR_STATE_DIR:-/var/lib/oem-retention}/env"
set +a
exec .venv/bin/oem-retention up "$@"
