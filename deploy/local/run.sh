#!/usr/bin/env bash
# Sets up and runs the platform on this machine with its demo world: provisions TimescaleDB and
# Mosquitto, installs oem-retention into .venv, migrates, generates the demo world (a machine
# builder with 300 customers, 1,500 machines, 3 years; docs/demo-world.md) once, bulk-loads its
# telemetry history, serves its business data from a fake Odoo (demo/erp/odoo.py, the ERP a
# real machine builder would run), syncs it through the Odoo connector, and runs every process
# (`oem-retention up`: ingester, the world's machines publishing live over MQTT, the scheduled
# ERP sync). Ctrl-C stops it all.
#
#   bash deploy/local/run.sh [--size small|standard|large] [options of `oem-retention up`]
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
state="${OEMR_STATE_DIR:-/var/lib/oem-retention}"
world="$state/world-$size"
py=.venv/bin/python
cli=.venv/bin/oem-retention

# The world's history reaches 3 years back: keep raw telemetry that long in the demo (the
# default, 90 days, is sized for a fleet reporting every 10 s).
export OEMR_TELEMETRY_RETENTION="${OEMR_TELEMETRY_RETENTION:-4 years}"

"$cli" db migrate
if [[ ! -f "$world/truth.json" ]]; then
    echo "[demo] generating the $size world into $world"
    rm -rf "$world.tmp"
    "$py" -m demo.world generate --seed 7 --size "$size" --out "$world.tmp"
    mv "$world.tmp" "$world"
fi
"$py" -m demo.world load-history --world "$world"

# The fake Odoo serves the world's business data over Odoo's JSON-RPC API, as a real one would.
odoo_port="${OEMR_DEMO_ODOO_PORT:-18069}"
"$py" -m demo.erp.odoo --world "$world" --port "$odoo_port" --db demo --login sync@demo \
    --api-key demo-key --ids-out "$world/odoo_ids.json" > "$state/fake-odoo.log" 2>&1 &
odoo_pid=$!
trap 'kill "$odoo_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    if "$py" - "$odoo_port" <<'EOF' 2>/dev/null; then break; fi
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
EOF
    if ! kill -0 "$odoo_pid" 2>/dev/null; then
        echo "[demo] the fake Odoo did not start:" >&2
        cat "$state/fake-odoo.log" >&2
        exit 1
    fi
    sleep 0.2
done
export OEMR_ERP_ODOO_URL="http://127.0.0.1:$odoo_port" OEMR_ERP_ODOO_DB=demo
export OEMR_ERP_ODOO_LOGIN=sync@demo OEMR_ERP_ODOO_API_KEY=demo-key

"$cli" erp rates "$world/exchange_rates.csv"
"$cli" erp sync --source odoo || echo "[demo] the first ERP sync reported problems (above)"
"$cli" up --fleet "$world/machines.json" --interval 10 "$@"
