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

-- name: work_mem
-- A slice's counter samples are sorted per machine in memory (a two-month slice of a
-- 5,000-machine fleet sampled hourly is ~3 M rows); the default would spill them to disk.
SET LOCAL work_mem = '256MB'

-- name: refresh_machine_days
-- Recompute every machine-day of the slice [%(from_ts)s, %(to_ts)s) (UTC midnights). A row is
-- written only where its values changed, so refreshed_at tells which days a refresh really moved.
-- Every hypertable is compared with the slice's bounds themselves, not with values from a CTE:
-- constants known when planning are what let TimescaleDB exclude the chunks outside it.
WITH prev_counter AS MATERIALIZED (
    -- Each machine's last counter value before the slice: looked for in the week before it
    -- first (a constant range: the plan holds only its chunks), and over all earlier chunks
    -- only for a machine with nothing there (each such lookup opens every chunk's index).
    SELECT m.id AS machine_id, coalesce(near.value, far.value) AS value
    FROM machines m
    LEFT JOIN LATERAL (SELECT t.value FROM telemetry t
                       WHERE t.machine_id = m.id AND t.metric_id = 1
                         AND t.time >= %(near_ts)s::timestamptz
                         AND t.time < %(from_ts)s::timestamptz
                       ORDER BY t.time DESC LIMIT 1) near ON true
    LEFT JOIN LATERAL (SELECT t.value FROM telemetry t
                       WHERE near.value IS NULL
                         AND t.machine_id = m.id AND t.metric_id = 1
                         AND t.time < %(near_ts)s::timestamptz
                       ORDER BY t.time DESC LIMIT 1) far ON true
    WHERE coalesce(near.value, far.value) IS NOT NULL
),
counter_days AS (
    -- One pass, no sort: each machine-day's first, last, lowest and highest reading. For a
    -- counter that did not fall, the day's operating hours are its last reading less the last
    -- one before the day.
    SELECT machine_id, time_bucket('1 day', time) AS bucket, min(value) AS low,
           max(value) AS high, first(value, time) AS first_value,
           last(value, time) AS last_value, count(*) AS samples, min(time) AS first_time,
           max(time) AS last_seen
    FROM telemetry
    WHERE metric_id = 1 AND time >= %(from_ts)s::timestamptz AND time < %(to_ts)s::timestamptz
    GROUP BY 1, 2
),
judged AS (
    -- The reading the day continues from: the machine's last sample before it, in the slice's
    -- previous machine-day or, for the slice's first, before the slice (NULL: none ever, and
    -- the day's first sample counts nothing). The same reading either way, so where a slice
    -- starts changes no number. A day's counter fell (a reset) when its lowest reading is
    -- below that one (or below its first, on a machine's first day), or when it rose from
    -- lowest to highest by more than the hours between its first and last sample (an
    -- operating-hours counter cannot): such a day is summed sample by sample.
    SELECT c.*,
           (c.low < coalesce(c.prev_reading, c.first_value)
            OR c.high - c.low > extract(epoch FROM c.last_seen - c.first_time) / 3600.0 + 1e-6)
               AS reset
    FROM (SELECT d.*,
                 coalesce(lag(d.last_value) OVER (PARTITION BY d.machine_id ORDER BY d.bucket),
                          p.value) AS prev_reading
          FROM counter_days d
          LEFT JOIN prev_counter p USING (machine_id)) c
),
exact AS (
    -- Days whose counter fell: the sum of the counter's steps, sample by sample, as the
    -- definition says (a step down counts from zero), from the machine's last sample before
    -- the day.
    SELECT j.machine_id, j.bucket,
           sum(CASE WHEN s.prev IS NULL THEN 0
                    WHEN s.value >= s.prev THEN s.value - s.prev
                    ELSE s.value END) FILTER (WHERE s.time >= j.bucket) AS operating_hours
    FROM judged j
    CROSS JOIN LATERAL (
        SELECT u.time, u.value, lag(u.value) OVER (ORDER BY u.time) AS prev
        FROM (SELECT t.time, t.value FROM telemetry t
              WHERE t.machine_id = j.machine_id AND t.metric_id = 1
                AND t.time >= j.bucket AND t.time < j.bucket + interval '1 day'
              UNION ALL
              (SELECT t.time, t.value FROM telemetry t
               WHERE t.machine_id = j.machine_id AND t.metric_id = 1 AND t.time < j.bucket
               ORDER BY t.time DESC LIMIT 1)) u
    ) s
    WHERE j.reset
    GROUP BY 1, 2
),
hours AS (
    SELECT j.machine_id, j.bucket,
           coalesce(e.operating_hours,
                    j.last_value - coalesce(j.prev_reading, j.first_value)) AS operating_hours,
           j.samples, j.last_seen
    FROM judged j
    LEFT JOIN exact e ON e.machine_id = j.machine_id AND e.bucket = j.bucket
),
in_force AS MATERIALIZED (
    -- The state each machine was in when the slice opened (its last report before it), looked
    -- for the same way.
    SELECT m.id AS machine_id, coalesce(near.state, far.state) AS state
    FROM machines m
    LEFT JOIN LATERAL (SELECT s.state FROM machine_states s
                       WHERE s.machine_id = m.id AND s.time >= %(near_ts)s::timestamptz
                         AND s.time < %(from_ts)s::timestamptz
                       ORDER BY s.time DESC LIMIT 1) near ON true
    LEFT JOIN LATERAL (SELECT s.state FROM machine_states s
                       WHERE near.state IS NULL
                         AND s.machine_id = m.id AND s.time < %(near_ts)s::timestamptz
                       ORDER BY s.time DESC LIMIT 1) far ON true
    WHERE coalesce(near.state, far.state) IS NOT NULL
),
transitions AS (
    -- The state in force comes first: a report at the slice's very first instant follows it
    -- (and ends it at once) rather than being ended by it.
    SELECT s.machine_id, s.time, s.state,
           lead(s.time) OVER (PARTITION BY s.machine_id ORDER BY s.time, s.reported) AS next
    FROM (SELECT machine_id, time, state, true AS reported FROM machine_states
          WHERE time >= %(from_ts)s::timestamptz AND time < %(to_ts)s::timestamptz
          UNION ALL
          SELECT machine_id, %(from_ts)s::timestamptz, state, false FROM in_force) s
),
open_until AS (
    -- A running or fault state with no later report in the slice lasts to the slice's end if
    -- the machine was heard of after it, else until it was last heard of (its latest counter
    -- sample or state report): a machine that went quiet is not counted as running on.
    SELECT o.machine_id, o.time,
           least(%(to_ts)s::timestamptz,
                 greatest(o.time, heard.counter, heard.state)) AS until
    FROM transitions o
    CROSS JOIN LATERAL (
        SELECT (SELECT t.time FROM telemetry t
                WHERE t.machine_id = o.machine_id AND t.metric_id = 1
                ORDER BY t.time DESC LIMIT 1) AS counter,
               (SELECT s.time FROM machine_states s
                WHERE s.machine_id = o.machine_id
                ORDER BY s.time DESC LIMIT 1) AS state) heard
    WHERE o.next IS NULL AND o.state IN ('running', 'fault')
),
intervals AS (
    SELECT t.machine_id, t.time, t.state, coalesce(t.next, o.until) AS until
    FROM transitions t
    LEFT JOIN open_until o ON o.machine_id = t.machine_id AND o.time = t.time AND t.next IS NULL
    WHERE t.state IN ('running', 'fault')
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
    WHERE i.until > i.time
    GROUP BY 1, 2
),
state_seen AS (
    SELECT machine_id, time_bucket('1 day', time) AS bucket, max(time) AS last_seen
    FROM machine_states
    WHERE time >= %(from_ts)s::timestamptz AND time < %(to_ts)s::timestamptz
    GROUP BY 1, 2
),
events AS (
    SELECT e.machine_id, time_bucket('1 day', e.time) AS bucket,
           count(*) FILTER (WHERE e.kind = 'fault') AS faults,
           count(*) FILTER (WHERE e.kind = 'maintenance') AS services,
           max(e.time) AS last_seen
    FROM machine_events e
    WHERE e.time >= %(from_ts)s::timestamptz AND e.time < %(to_ts)s::timestamptz
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

-- name: data_span
-- The first and the last UTC day that can hold data from %(from_ts)s on, from the chunks'
-- time ranges (the catalog, not a scan: no index leads with time).
SELECT (time_bucket('1 day', greatest(min(range_start), %(from_ts)s::timestamptz))
            AT TIME ZONE 'UTC')::date,
       (time_bucket('1 day', max(range_end) - interval '1 microsecond') AT TIME ZONE 'UTC')::date
FROM timescaledb_information.chunks
WHERE hypertable_schema = current_schema()
  AND hypertable_name IN ('telemetry', 'machine_states', 'machine_events')
  AND range_end > %(from_ts)s::timestamptz

-- name: late_days
-- Days the ingester marked as written late (migration 015 states the protocol), split into
-- those a refresh may recompute and those whose following days' raw telemetry may be gone
-- (older than %(keep)s, the retention; NULL: none is dropped).
SELECT day, marked_xid,
       %(keep)s::interval IS NULL OR day >= (now() - %(keep)s::interval)::date AS usable
FROM rollup_late_days
ORDER BY day

-- name: handled_late_days
-- Last, just before commit: a mark made again since it was read has another marked_xid and
-- stays for the next refresh.
DELETE FROM rollup_late_days d
USING unnest(%(days)s::date[], %(xids)s::xid8[]) AS h(day, xid)
WHERE d.day = h.day AND d.marked_xid = h.xid

-- name: latest_seen
SELECT max(last_seen) FROM machine_days WHERE day >= %(from_day)s

-- name: set_watermark
INSERT INTO rollup_watermarks (rollup, through, refreshed_at)
VALUES ('machine_days', %(through)s, now())
ON CONFLICT (rollup) DO UPDATE SET
    through = greatest(rollup_watermarks.through, excluded.through),
    refreshed_at = excluded.refreshed_at
