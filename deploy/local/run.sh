#!/usr/bin/env bash
# Sets up and runs the platform on this machine with its demo world: provisions TimescaleDB and
# Mosquitto, installs oem-retention into .venv, then `oem-retention demo up`: migrates,
# generates the demo world (a machine builder with 300 customers, 1,500 machines, 3 years;
# docs/demo-world.md) once, bulk-loads its telemetry history once, serves its business data from
# a fake Odoo (demo/erp/odoo.py, the ERP a real machine builder would run), syncs it through the
# Odoo connector, and runs every process (`oem-retention up`: ingester, the world's machines
# publishing live over MQTT, the scheduled ERP sync, the analytics). Ctrl-C stops it all.
#
#   bash deploy/local/run.sh [--size small|standard|large] [options of `oem-retention demo up`]
#
# --size large (1,000 customers, 5,000 machines) is the benchmarks' world; the world is kept in
# $OEMR_STATE_DIR/world-<size> and loaded once.
set -euo pipefail
cd "$(dirname "$0")/../.."
size=standard
if [[ "${1:-}" == "--size" ]]; then
    size="$2"
    shift 2
fi
case "$size" in small|standard|large) ;; *) echo "--size: small, standard or large" >&2; exit 2;; esac

bash deploy/local/provision.sh
bash deploy/local/install.sh
set -a
# shellcheck disable=SC1091
. "${OEMR_STATE_DIR:-/var/lib/oem-retention}/env"
set +a
exec .venv/bin/oem-retention demo up --size "$size" "$@"
