-- Queries of the ingest benchmark (tests/bench/ingest.py); the ingester's own are in
-- ingest/sql/store.sql and are reused for registration and COPY.

-- name: committed_messages
-- One machine_states row per message ("state": "running"), written in the batch's transaction.
SELECT count(*) FROM machine_states

-- name: last_messages_committed
-- Each publisher's last message; a single ingester commits in broker order, so when these are
-- stored, all are.
SELECT count(*)
FROM unnest(%(serials)s::text[], %(times)s::timestamptz[]) AS k(serial, time)
JOIN machines m ON m.tenant = %(tenant)s AND m.serial = k.serial AND m.protocol = 'json'
JOIN machine_states s ON s.machine_id = m.id AND s.time = k.time

-- name: totals
SELECT (SELECT count(*) FROM telemetry), (SELECT count(*) FROM machine_states),
       (SELECT count(*) FROM dead_letters)

-- name: ingester_backend
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'oemr-ingest'
ORDER BY backend_start DESC LIMIT 1
