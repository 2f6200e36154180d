-- Queries of the analytics benchmark (tests/bench/analytics.py); the analytics' own are in
-- analytics/sql/ and are run through the analytics functions.

-- name: scan_telemetry
-- The baseline: one sequential scan of the whole telemetry table.
SELECT count(*), sum(value) FROM telemetry

-- name: no_parallel_workers
SET max_parallel_workers_per_gather = 0

-- name: reset_parallel_workers
RESET max_parallel_workers_per_gather

-- name: parallel_workers
SELECT current_setting('max_parallel_workers_per_gather')::int

-- name: table_sizes
SELECT (SELECT count(*) FROM telemetry), (SELECT count(*) FROM machine_states),
       (SELECT count(*) FROM machine_events), (SELECT count(*) FROM machines),
       (SELECT count(*) FROM customers),
       pg_size_pretty(hypertable_size('telemetry'))

-- name: machine_days_rows
SELECT count(*) FROM machine_days

-- name: latest_counters
-- Each machine's latest operating-hours sample (the counter a new hour continues from).
SELECT m.id, last.time, last.value
FROM machines m
CROSS JOIN LATERAL (SELECT t.time, t.value FROM telemetry t
                    WHERE t.machine_id = m.id AND t.metric_id = 1
                    ORDER BY t.time DESC LIMIT 1) last

-- name: metric_ids
SELECT id, name FROM metrics WHERE name = ANY(%(names)s::text[])

-- name: copy_telemetry
COPY telemetry (time, machine_id, metric_id, value) FROM STDIN (FORMAT BINARY)

-- name: vacuum_analyze
-- After the bulk load, as autovacuum would leave the tables: statistics and visibility maps.
VACUUM ANALYZE

-- name: jit_off
SET jit = off

-- name: reset_jit
RESET jit
