-- Daily machine rollups, refreshed incrementally from a watermark (analytics/rollups.py).
-- Days are UTC days: time_bucket('1 day') buckets timestamptz at UTC midnight, and every day
-- value is turned into a date AT TIME ZONE 'UTC', whatever the session's time zone.

-- name: lock
-- One refresh at a time: two would compute the same days and race on the watermark.
SELECT pg_advisory_xact_lock(hashtext('oemr:rollup:machine_days'))

-- name: no_jit
-- Plans over many hypertable chunks look expensive enough for JIT, whose compiling then costs
-- more than the query (measured: incremental refresh 15 s with, 2.5 s without).
SET LOCAL jit = off

-- name: watermark
SELECT through FROM rollup_watermarks WHERE rollup = 'machine_days'

-- name: custom_plans
-- The window start is a parameter: only a plan made for its value lets TimescaleDB leave out
-- the chunks before it. psycopg prepares a statement run often, and a generic plan would
-- scan every chunk again.
SET LOCAL plan_cache_mode = force_custom_plan

-- name: refresh_machine_days
-- Recompute every machine-day from %(from_ts)s (a UTC midnight) on. A row is written only where
-- its values changed, so refreshed_at tells which days a refresh really moved.
-- Every hypertable is compared with %(from_ts)s itself, not with a value from a CTE: a constant
-- known when planning is what lets TimescaleDB exclude the chunks before the window.
WITH prev_counter AS MATERIALIZED (
    -- Each machine's last counter value before the window, one index lookup per machine (on
    -- the first run there is nothing before the window and no chunk to look in).
    SELECT m.id AS machine_id, p.time, p.value
    FROM machines m
    CROSS JOIN LATERAL (SELECT t.time, t.value FROM telemetry t
                        WHERE t.machine_id = m.id AND t.metric_id = 1
                          AND t.time < %(from_ts)s::timestamptz
                        ORDER BY t.time DESC LIMIT 1) p
),
counter_steps AS (
    -- The first sample of a machine in the window continues from its last one before it, put
    -- in front of the window's samples and dropped after the step (a union, not a join of every
    -- sample with its machine's row).
    SELECT machine_id, time, value, before,
           lag(value) OVER (PARTITION BY machine_id ORDER BY time) AS prev
    FROM (SELECT t.machine_id, t.time, t.value, false AS before
          FROM telemetry t
          WHERE t.metric_id = 1 AND t.time >= %(from_ts)s::timestamptz
          UNION ALL
          SELECT machine_id, time, value, true FROM prev_counter) c
),
hours AS (
    -- A counter that went down was reset: it counts from zero again. A machine's very first
    -- sample has nothing to count from.
    SELECT machine_id, time_bucket('1 day', time) AS bucket,
           sum(CASE WHEN prev IS NULL THEN 0
                    WHEN value >= prev THEN value - prev
                    ELSE value END) AS operating_hours,
           count(*) AS samples, max(time) AS last_seen
    FROM counter_steps WHERE NOT before GROUP BY 1, 2
),
states AS (
    SELECT s.machine_id, s.time, s.state,
           lead(s.time) OVER (PARTITION BY s.machine_id ORDER BY s.time) AS until
    FROM machine_states s
    WHERE s.time >= %(from_ts)s::timestamptz
),
state_in_force AS (
    -- The state a machine was in when the window opened, up to its first transition in it.
    SELECT f.machine_id, %(from_ts)s::timestamptz AS time,
           (SELECT p.state FROM machine_states p
            WHERE p.machine_id = f.machine_id AND p.time < %(from_ts)s::timestamptz
            ORDER BY p.time DESC LIMIT 1) AS state,
           f.first AS until
    FROM (SELECT machine_id, min(time) AS first FROM states GROUP BY 1) f
),
intervals AS (
    -- The latest transition has no end yet: it counts from the refresh that sees the next one.
    SELECT machine_id, time, state, until FROM states
    WHERE state IN ('running', 'fault') AND until > time
    UNION ALL
    SELECT machine_id, time, state, until FROM state_in_force
    WHERE state IN ('running', 'fault') AND until > time
),
state_hours AS (
    -- An interval over midnight is split between its days.
    SELECT i.machine_id, d.bucket,
           sum(extract(epoch FROM least(i.until, d.bucket + interval '24 hours')
                                  - greatest(i.time, d.bucket)) / 3600.0)
               FILTER (WHERE i.state = 'running') AS running_hours,
           sum(extract(epoch FROM least(i.until, d.bucket + interval '24 hours')
                                  - greatest(i.time, d.bucket)) / 3600.0)
               FILTER (WHERE i.state = 'fault') AS fault_hours
    FROM intervals i
    CROSS JOIN LATERAL generate_series(time_bucket('1 day', i.time),
                                       i.until - interval '1 microsecond',
                                       interval '24 hours') AS d(bucket)
    GROUP BY 1, 2
),
state_seen AS (
    SELECT machine_id, time_bucket('1 day', time) AS bucket, max(time) AS last_seen
    FROM states GROUP BY 1, 2
),
events AS (
    SELECT e.machine_id, time_bucket('1 day', e.time) AS bucket,
           count(*) FILTER (WHERE e.kind = 'fault') AS faults,
           count(*) FILTER (WHERE e.kind = 'maintenance') AS services,
           max(e.time) AS last_seen
    FROM machine_events e
    WHERE e.time >= %(from_ts)s::timestamptz
    GROUP BY 1, 2
),
parts AS (
    SELECT machine_id, bucket, operating_hours, 0::float8 AS running_hours,
           0::float8 AS fault_hours, samples, 0::bigint AS faults, 0::bigint AS services,
           last_seen
    FROM hours
    UNION ALL
    SELECT machine_id, bucket, 0, coalesce(running_hours, 0), coalesce(fault_hours, 0), 0, 0, 0,
           NULL
    FROM state_hours
    UNION ALL
    SELECT machine_id, bucket, 0, 0, 0, 0, 0, 0, last_seen FROM state_seen
    UNION ALL
    SELECT machine_id, bucket, 0, 0, 0, 0, faults, services, last_seen FROM events
)
INSERT INTO machine_days AS md (machine_id, day, operating_hours, running_hours, fault_hours,
                                samples, faults, services, last_seen, refreshed_at)
SELECT machine_id, (bucket AT TIME ZONE 'UTC')::date, sum(operating_hours), sum(running_hours),
       sum(fault_hours), sum(samples), sum(faults), sum(services), max(last_seen), now()
FROM parts
GROUP BY machine_id, bucket
ON CONFLICT (machine_id, day) DO UPDATE SET
    operating_hours = excluded.operating_hours, running_hours = excluded.running_hours,
    fault_hours = excluded.fault_hours, samples = excluded.samples, faults = excluded.faults,
    services = excluded.services, last_seen = excluded.last_seen,
    refreshed_at = excluded.refreshed_at
WHERE (md.operating_hours, md.running_hours, md.fault_hours, md.samples, md.faults, md.services,
       md.last_seen)
      IS DISTINCT FROM (excluded.operating_hours, excluded.running_hours, excluded.fault_hours,
                        excluded.samples, excluded.faults, excluded.services, excluded.last_seen)

-- name: latest_seen
SELECT max(last_seen) FROM machine_days WHERE day >= %(from_day)s

-- name: set_watermark
INSERT INTO rollup_watermarks (rollup, through, refreshed_at)
VALUES ('machine_days', %(through)s, now())
ON CONFLICT (rollup) DO UPDATE SET
    through = greatest(rollup_watermarks.through, excluded.through),
    refreshed_at = excluded.refreshed_at
