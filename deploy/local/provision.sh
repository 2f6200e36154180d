#!/usr/bin/env bash
# Idempotent provisioning of what oem-retention needs on one Debian 12 machine:
#   * TimescaleDB: Debian 13's postgresql-17-timescaledb in a debootstrap chroot (Debian 12 does
#     not package it), on its own port and data directory under the state folder; skipped when
#     OEMR_DATABASE_URL names an existing server.
#   * Mosquitto: Debian's broker binary (installed when absent), run as our own instance with a
#     configuration that does not drop queued QoS 1 messages (the Debian default keeps 1,000);
#     skipped when OEMR_MQTT_HOST (and OEMR_MQTT_PORT) name an existing broker.
# A second run on a provisioned machine only checks and (re)starts what is down: seconds.
# Writes $OEMR_STATE_DIR/env with the URLs the platform and the tests read.
set -euo pipefail

STATE_DIR=${OEMR_STATE_DIR:-/var/lib/oem-retention}
TSDB_PORT=${OEMR_TSDB_PORT:-55432}
MQTT_PORT=${OEMR_MQTT_PORT:-18830}
DEBIAN_MIRROR=${OEMR_DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT="$STATE_DIR/timescaledb-root"
PG_CONF="$ROOT/etc/postgresql/17/main"

log() { printf '[provision] %s\n' "$*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || { log "must run as root (it installs Debian packages and uses chroot)"; exit 1; }; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

provision_timescaledb() {
  if [ -d "$ROOT" ] && { [ ! -x "$ROOT/usr/lib/postgresql/17/bin/postgres" ] || [ ! -f "$ROOT/usr/lib/postgresql/17/lib/timescaledb.so" ]; }; then
    # The chroot holds the database's data directory: never delete it to start over.
    log "$ROOT exists but lacks PostgreSQL 17 or TimescaleDB; repair it by hand (or move it away to rebuild)"
    exit 1
  fi
  if [ ! -d "$ROOT" ]; then
    apt_install debootstrap
    # Build beside the final place and move it in, so an interrupted run starts over cleanly.
    local tmp="$STATE_DIR/timescaledb-root.partial"
    umount_chroot "$tmp"
    rm -rf "$tmp"
    mkdir -p "$STATE_DIR"
    log "debootstrap Debian 13 (trixie) with postgresql-17-timescaledb into $ROOT (about a minute)"
    debootstrap --variant=minbase --include=postgresql-17,postgresql-17-timescaledb \
      trixie "$tmp" "$DEBIAN_MIRROR" >"$STATE_DIR/debootstrap.log" 2>&1 \
      || { log "debootstrap failed, see $STATE_DIR/debootstrap.log"; tail -5 "$STATE_DIR/debootstrap.log" >&2; exit 1; }
    mv "$tmp" "$ROOT"
  fi
  mount_chroot "$ROOT"
  configure_cluster
  if ! chroot "$ROOT" pg_lsclusters -h 2>/dev/null | grep -q ' online'; then
    log "starting TimescaleDB on 127.0.0.1:$TSDB_PORT"
    chroot "$ROOT" pg_ctlcluster 17 main start
  fi
  for _ in $(seq 1 50); do port_open "$TSDB_PORT" && break; sleep 0.2; done
  port_open "$TSDB_PORT" || { log "TimescaleDB did not come up on port $TSDB_PORT"; exit 1; }
  if ! chroot "$ROOT" su postgres -c "psql -h 127.0.0.1 -p $TSDB_PORT -tAc \"SELECT 1 FROM pg_database WHERE datname='oemr'\"" | grep -q 1; then
    chroot "$ROOT" su postgres -c "psql -h 127.0.0.1 -p $TSDB_PORT -qc 'CREATE DATABASE oemr'"
  fi
  DATABASE_URL="postgresql://postgres@127.0.0.1:$TSDB_PORT/oemr"
}

mount_chroot() {
  local dir=$1
  mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
  mkdir -p "$dir/dev/shm"
  mountpoint -q "$dir/dev/shm" || mount -t tmpfs -o mode=1777 tmpfs "$dir/dev/shm"
}

umount_chroot() {
  local dir=$1
  [ -d "$dir" ] || return 0
  mountpoint -q "$dir/dev/shm" && umount "$dir/dev/shm"
  mountpoint -q "$dir/proc" && umount "$dir/proc"
  return 0
}

configure_cluster() {
  # Settings for a write-heavy time-series server on a small machine. synchronous_commit stays on:
  # the ingester acknowledges MQTT messages after commit, so a commit must be durable. JIT off:
  # plans over many hypertable chunks cost enough to trigger it, and compiling took longer than
  # running (the incremental rollup refresh: 15 s with JIT, 2.5 s without).
  local conf="$PG_CONF/conf.d/oem-retention.conf"
  local want
  want=$(cat <<CONF
port = $TSDB_PORT
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
shared_buffers = 1GB
work_mem = 32MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_compression = on
max_connections = 200
max_locks_per_transaction = 256
jit = off
CONF
)
  mkdir -p "$PG_CONF/conf.d"
  if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
    printf '%s\n' "$want" >"$conf"
    # The packaged postgresql.conf sets port itself; ours in conf.d comes later and wins.
    grep -q "^include_dir = 'conf.d'" "$PG_CONF/postgresql.conf" || echo "include_dir = 'conf.d'" >>"$PG_CONF/postgresql.conf"
    RESTART=1
  fi
  if ! head -1 "$PG_CONF/pg_hba.conf" | grep -q 'oem-retention'; then
    # Loopback only: this server listens on 127.0.0.1 and is meant for one machine.
    { echo "host all all 127.0.0.1/32 trust # oem-retention: local provisioning"; cat "$PG_CONF/pg_hba.conf"; } >"$PG_CONF/pg_hba.conf.new"
    mv "$PG_CONF/pg_hba.conf.new" "$PG_CONF/pg_hba.conf"
    RESTART=1
  fi
  if [ "${RESTART:-0}" = 1 ] && chroot "$ROOT" pg_lsclusters -h 2>/dev/null | grep -q ' online'; then
    chroot "$ROOT" pg_ctlcluster 17 main restart
  fi
}

provision_mosquitto() {
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
  local dir="$STATE_DIR/mosquitto"
  mkdir -p "$dir/data"
  cp "$(dirname "$0")/mosquitto.conf" "$dir/mosquitto.conf.template"
  sed -e "s|@PORT@|$MQTT_PORT|g" -e "s|@DATA@|$dir/data/|g" -e "s|@PID@|$dir/mosquitto.pid|g" \
      -e "s|@LOG@|$dir/mosquitto.log|g" "$dir/mosquitto.conf.template" >"$dir/mosquitto.conf.new"
  local changed=0
  cmp -s "$dir/mosquitto.conf.new" "$dir/mosquitto.conf" || { mv "$dir/mosquitto.conf.new" "$dir/mosquitto.conf"; changed=1; }
  rm -f "$dir/mosquitto.conf.new"
  chown -R mosquitto: "$dir" 2>/dev/null || true
  if [ "$changed" = 1 ] && [ -f "$dir/mosquitto.pid" ] && kill -0 "$(cat "$dir/mosquitto.pid")" 2>/dev/null; then
    log "mosquitto configuration changed: restarting"
    local pid
    pid=$(cat "$dir/mosquitto.pid")
    kill "$pid"
    # It saves its store on the way out, which takes a while when much is queued.
    for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if ! port_open "$MQTT_PORT"; then
    log "starting Mosquitto on 127.0.0.1:$MQTT_PORT"
    "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -d -c "$dir/mosquitto.conf"
    for _ in $(seq 1 50); do port_open "$MQTT_PORT" && break; sleep 0.1; done
  fi
  port_open "$MQTT_PORT" || { log "Mosquitto did not come up on port $MQTT_PORT, see $dir/mosquitto.log"; exit 1; }
}

stop_all() {
  local dir="$STATE_DIR/mosquitto"
  [ -f "$dir/mosquitto.pid" ] && kill "$(cat "$dir/mosquitto.pid")" 2>/dev/null || true
  if [ -d "$ROOT" ]; then
    chroot "$ROOT" pg_ctlcluster 17 main stop 2>/dev/null || true
    umount_chroot "$ROOT"
  fi
}

main() {
  need_root
  if [ "${1:-}" = stop ]; then stop_all; exit 0; fi
  mkdir -p "$STATE_DIR"
  if [ -n "${OEMR_DATABASE_URL:-}" ]; then
    log "using the existing database server given by OEMR_DATABASE_URL"
    DATABASE_URL=$OEMR_DATABASE_URL
  else
    provision_timescaledb
  fi
  MQTT_HOST=127.0.0.1
  if [ -n "${OEMR_MQTT_HOST:-}" ]; then
    # A broker of the site's own: it must keep what it accepted (see deploy/local/mosquitto.conf).
    log "using the existing MQTT broker given by OEMR_MQTT_HOST ($OEMR_MQTT_HOST:$MQTT_PORT)"
    MQTT_HOST=$OEMR_MQTT_HOST
  else
    provision_mosquitto
  fi
  cat >"$STATE_DIR/env" <<ENV
OEMR_DATABASE_URL=$DATABASE_URL
OEMR_MQTT_HOST=$MQTT_HOST
OEMR_MQTT_PORT=$MQTT_PORT
OEMR_STATE_DIR=$STATE_DIR
OEMR_TSDB_ROOT=$ROOT
ENV
  log "ready: database $DATABASE_URL, MQTT $MQTT_HOST:$MQTT_PORT (written to $STATE_DIR/env)"
}

main "$@"
