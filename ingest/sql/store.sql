-- name: all_machines
SELECT id, tenant, serial, protocol, spb_group, spb_edge_node, spb_device FROM machines

-- name: column_layout
-- The columns of the tables the binary COPY writes, for core/pgcopy.py to compare with its rows;
-- required: NOT NULL with nothing to fill it when a COPY leaves the column out.
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid = ANY (SELECT to_regclass(t) FROM unnest(%(tables)s::text[]) AS t)

-- name: state_labels
-- The labels of machine_states.state's enum (the states the ingester writes must be among them).
SELECT e.enumlabel
FROM pg_attribute a JOIN pg_enum e ON e.enumtypid = a.atttypid
WHERE a.attrelid = 'machine_states'::regclass AND a.attname = 'state'

-- name: all_metrics
SELECT id, name FROM metrics

-- name: register_machines
INSERT INTO machines (tenant, serial, protocol, spb_group, spb_edge_node, spb_device)
SELECT * FROM unnest(%(tenants)s::text[], %(serials)s::text[], %(protocols)s::text[],
                     %(groups)s::text[], %(nodes)s::text[], %(devices)s::text[])
ON CONFLICT DO NOTHING

-- name: find_json_machines
SELECT m.id, m.tenant, m.serial
FROM machines m
JOIN unnest(%(tenants)s::text[], %(serials)s::text[]) AS k(tenant, serial)
  ON m.tenant = k.tenant AND m.serial = k.serial AND m.protocol = 'json'

-- name: find_sparkplug_machines
SELECT m.id, m.spb_group, m.spb_edge_node, m.spb_device
FROM machines m
JOIN unnest(%(groups)s::text[], %(nodes)s::text[], %(devices)s::text[]) AS k(g, n, d)
  ON m.protocol = 'sparkplug' AND m.spb_group = k.g AND m.spb_edge_node = k.n
 AND m.spb_device = k.d

-- name: register_metrics
INSERT INTO metrics (name) SELECT unnest(%(names)s::text[]) ON CONFLICT DO NOTHING

-- name: find_metrics
SELECT id, name FROM metrics WHERE name = ANY(%(names)s::text[])

-- name: copy_telemetry
COPY telemetry (time, machine_id, metric_id, value) FROM STDIN (FORMAT BINARY)

-- name: copy_states
COPY machine_states (time, machine_id, state) FROM STDIN (FORMAT BINARY)

-- name: create_stages
CREATE TEMP TABLE IF NOT EXISTS telemetry_stage (LIKE telemetry) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS machine_states_stage (LIKE machine_states) ON COMMIT DELETE ROWS

-- name: copy_telemetry_stage
COPY telemetry_stage (time, machine_id, metric_id, value) FROM STDIN (FORMAT BINARY)

-- name: copy_states_stage
COPY machine_states_stage (time, machine_id, state) FROM STDIN (FORMAT BINARY)

-- name: merge_telemetry_stage
INSERT INTO telemetry SELECT * FROM telemetry_stage ON CONFLICT DO NOTHING

-- name: merge_states_stage
INSERT INTO machine_states SELECT * FROM machine_states_stage ON CONFLICT DO NOTHING

-- name: insert_events
INSERT INTO machine_events (time, machine_id, kind, code, event_key, payload)
SELECT t, m, k, c, e, p::jsonb
FROM unnest(%(times)s::timestamptz[], %(machines)s::int[], %(kinds)s::text[], %(codes)s::text[],
            %(keys)s::text[], %(payloads)s::text[]) AS x(t, m, k, c, e, p)
ON CONFLICT DO NOTHING

-- name: set_connectivity
UPDATE machines m
SET online = x.online, online_changed_at = x.t
FROM unnest(%(machines)s::int[], %(online)s::bool[], %(times)s::timestamptz[]) AS x(id, online, t)
WHERE m.id = x.id AND (m.online_changed_at IS NULL OR m.online_changed_at <= x.t)

-- name: insert_gaps
INSERT INTO sparkplug_gaps (spb_group, spb_edge_node, cause, expected_seq, received_seq, missing,
                            rebirth_requested)
SELECT * FROM unnest(%(groups)s::text[], %(nodes)s::text[], %(causes)s::text[],
                     %(expected)s::int[], %(received)s::int[], %(missing)s::int[],
                     %(rebirth)s::bool[])

-- name: insert_dead_letters
INSERT INTO dead_letters (topic, payload, payload_size, reason, digest, times_received)
SELECT * FROM unnest(%(topics)s::text[], %(payloads)s::bytea[], %(sizes)s::int[],
                     %(reasons)s::text[], %(digests)s::bytea[], %(counts)s::int[])
ON CONFLICT (digest) DO UPDATE
SET times_received = dead_letters.times_received + excluded.times_received,
    last_received_at = now()

-- name: settle_dead_letters
-- Dead letters whose messages a replay (ingest/replay.py) stores in this transaction.
DELETE FROM dead_letters WHERE id = ANY(%(ids)s::bigint[])

-- name: mark_late_days
-- UTC days of rows older than the ingester's late_after, for the rollup to recompute
-- (rollup_late_days, migration 015). Inserted in the order given (sorted days), so writers
-- marking the same days lock them in the same order.
INSERT INTO rollup_late_days AS d (day, earliest)
SELECT day, earliest FROM unnest(%(days)s::date[], %(earliest)s::timestamptz[]) AS x(day, earliest)
ORDER BY day
ON CONFLICT (day) DO UPDATE SET
    earliest = least(d.earliest, excluded.earliest),
    marked_at = excluded.marked_at,
    marked_xid = excluded.marked_xid
