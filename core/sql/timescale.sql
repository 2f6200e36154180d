-- name: server
SELECT current_setting('server_version_num')::int AS server_version,
       (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS timescaledb_version,
       current_setting('timescaledb.license', true) AS license

-- name: set_chunk_interval
SELECT set_chunk_time_interval('telemetry', %(interval)s::interval)

-- name: enable_compression
ALTER TABLE telemetry SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'machine_id',
    timescaledb.compress_orderby = 'metric_id, time DESC'
)

-- name: add_compression_policy
SELECT add_compression_policy('telemetry', %(after)s::interval, if_not_exists => true)

-- name: add_retention_policy
SELECT add_retention_policy('telemetry', %(keep)s::interval, if_not_exists => true)

-- name: drop_old_chunks
-- Raw telemetry goes once it is past retention AND rolled up into machine_days (a day before the
-- rollup's watermark, so late data still in its lookback stays): usage history lives on in the
-- rollup. No watermark yet (analytics never ran): nothing is dropped.
SELECT CASE WHEN w.through IS NULL THEN 0
            ELSE (SELECT count(*) FROM drop_chunks('telemetry', older_than => LEAST(
                      now() - %(keep)s::interval, w.through - interval '1 day')))
       END
FROM (SELECT (SELECT through FROM rollup_watermarks WHERE rollup = 'machine_days') AS through) w
