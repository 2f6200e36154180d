-- name: register_machines
-- As the ingester registers a JSON machine on its first message, seen first when history begins.
INSERT INTO machines (tenant, serial, protocol, first_seen_at)
SELECT t, s, 'json', f
FROM unnest(%(tenants)s::text[], %(serials)s::text[], %(first_seen)s::timestamptz[]) AS x(t, s, f)
ON CONFLICT DO NOTHING

-- name: find_machines
SELECT id, serial FROM machines WHERE tenant = %(tenant)s AND serial = ANY(%(serials)s::text[])

-- name: register_metrics
-- As the ingester does (ingest/sql/store.sql): a name, no unit, a gauge; operating_hours is id 1.
INSERT INTO metrics (name) SELECT unnest(%(names)s::text[]) ON CONFLICT DO NOTHING

-- name: find_metrics
SELECT id, name FROM metrics WHERE name = ANY(%(names)s::text[])

-- name: history_rows
-- Whether history is already there: any operating-hours sample of these machines before the end.
SELECT EXISTS (SELECT FROM telemetry
               WHERE machine_id = ANY(%(machines)s::int[]) AND metric_id = 1
                 AND time < %(before)s)

-- name: chunk_interval
SELECT time_interval FROM timescaledb_information.dimensions
WHERE hypertable_name = %(table)s AND dimension_type = 'Time'

-- name: set_chunk_interval
SELECT set_chunk_time_interval(%(table)s::regclass, %(interval)s::interval)

-- name: copy_telemetry
COPY telemetry (time, machine_id, metric_id, value) FROM STDIN (FORMAT BINARY)

-- name: copy_states
COPY machine_states (time, machine_id, state) FROM STDIN (FORMAT BINARY)

-- name: copy_events
COPY machine_events (time, machine_id, kind, code, event_key, payload, received_at)
FROM STDIN (FORMAT BINARY)

-- name: analyze
ANALYZE telemetry, machine_states, machine_events
