-- Installed-base health: the fleet list and summary (from fleet_status, which fleet_health()
-- fills), one machine's detail, usage, charts, state timeline and events (analytics/fleet.py,
-- docs/api-fleet.md). A "machine" here is an installed-base row (installed_base.id): the ERP's
-- record of a machine at a customer; its telemetry is found by serial (machines.id).

-- name: no_jit
-- Plans over many hypertable chunks look expensive enough for JIT, whose compiling then costs
-- more than the query (as in rollups.sql).
SET LOCAL jit = off

-- name: work_mem
-- A slice's samples are grouped per machine, metric and hour in memory.
SET LOCAL work_mem = '256MB'

-- name: lock_fleet_status
SELECT pg_advisory_xact_lock(hashtext('oemr:rollup:fleet_status'))

-- name: refresh_fleet_status
-- Every live installed-base row as fleet_health() rates it at %(as_of)s; a row is rewritten only
-- where something changed besides as_of, and rows of machines no longer live are removed.
WITH fresh AS (
    SELECT h.*, coalesce(h.last_seen, '1970-01-01 00:00:00+00'::timestamptz) AS last_seen_key,
           coalesce(h.utilisation, -1) AS utilisation_key,
           coalesce(h.utilisation_trend, -2) AS trend_key
    FROM fleet_health(%(as_of)s::timestamptz) h
),
gone AS (
    DELETE FROM fleet_status fs
    WHERE NOT EXISTS (SELECT FROM fresh f WHERE f.installed_base_id = fs.installed_base_id)
    RETURNING 1
),
written AS (
    INSERT INTO fleet_status AS fs (
        installed_base_id, machine_id, serial, model, customer_id, customer_name, site_id,
        site_name, country, commissioned_on, warranty_end, state, state_reported_at, last_seen,
        connectivity, operating_hours_30d, utilisation, utilisation_prev, utilisation_trend,
        faults_30d, coverage, contract_id, contract_ends_on, health_band, health_reason, as_of,
        last_seen_key, utilisation_key, trend_key)
    SELECT installed_base_id, machine_id, serial, model, customer_id, customer_name, site_id,
           site_name, country, commissioned_on, warranty_end, state, state_reported_at,
           last_seen, connectivity, operating_hours_30d, utilisation, utilisation_prev,
           utilisation_trend, faults_30d, coverage, contract_id, contract_ends_on, health_band,
           health_reason, %(as_of)s::timestamptz, last_seen_key, utilisation_key, trend_key
    FROM fresh
    ON CONFLICT (installed_base_id) DO UPDATE SET
        machine_id = excluded.machine_id, serial = excluded.serial, model = excluded.model,
        customer_id = excluded.customer_id, customer_name = excluded.customer_name,
        site_id = excluded.site_id, site_name = excluded.site_name, country = excluded.country,
        commissioned_on = excluded.commissioned_on, warranty_end = excluded.warranty_end,
        state = excluded.state, state_reported_at = excluded.state_reported_at,
        last_seen = excluded.last_seen, connectivity = excluded.connectivity,
        operating_hours_30d = excluded.operating_hours_30d,
        utilisation = excluded.utilisation, utilisation_prev = excluded.utilisation_prev,
        utilisation_trend = excluded.utilisation_trend, faults_30d = excluded.faults_30d,
        coverage = excluded.coverage, contract_id = excluded.contract_id,
        contract_ends_on = excluded.contract_ends_on, health_band = excluded.health_band,
        health_reason = excluded.health_reason, as_of = excluded.as_of,
        last_seen_key = excluded.last_seen_key, utilisation_key = excluded.utilisation_key,
        trend_key = excluded.trend_key
    RETURNING 1
)
SELECT (SELECT count(*) FROM written) AS written, (SELECT count(*) FROM gone) AS removed

-- name: status_as_of
SELECT max(as_of) AS as_of FROM fleet_status

-- name: list_machines
-- The WHERE and ORDER BY are filled in by analytics/fleet.py: the filter blocks below (fixed
-- text) and core.paging.keyset over a whitelisted sort column.
SELECT fs.installed_base_id, fs.machine_id, fs.serial, fs.model, fs.customer_id,
       fs.customer_name, fs.site_id, fs.site_name, fs.country, fs.commissioned_on,
       fs.warranty_end, fs.state, fs.state_reported_at, fs.last_seen, fs.connectivity,
       fs.operating_hours_30d, fs.utilisation, fs.utilisation_prev, fs.utilisation_trend,
       fs.faults_30d, fs.coverage, fs.contract_id, fs.contract_ends_on, fs.health_band,
       fs.health_reason, fs.as_of, {sort_key} AS sort_key
FROM fleet_status fs
WHERE {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: filter_customer
fs.customer_id = ANY(%(customer)s::integer[])
-- name: filter_portal_customer
-- A portal user's own company, said again beside row-level security: the policy's function is
-- no index condition, this is (the customer's index instead of a scan of the whole fleet).
fs.customer_id = %(portal_customer)s
-- name: filter_model
fs.model = ANY(%(model)s::text[])
-- name: filter_site
fs.site_id = ANY(%(site)s::integer[])
-- name: filter_country
fs.country = ANY(%(country)s::char(2)[])
-- name: filter_state
fs.state = ANY(%(state)s::machine_state[])
-- name: filter_band
fs.health_band = ANY(%(band)s::text[])
-- name: filter_coverage
fs.coverage = ANY(%(coverage)s::text[])
-- name: filter_connectivity
fs.connectivity = ANY(%(connectivity)s::text[])
-- name: filter_serial_prefix
-- LIKE with the prefix's own wildcards escaped (analytics/fleet.py), so the text_pattern_ops
-- index serves it.
fs.serial LIKE %(serial_prefix)s
-- name: filter_search
-- A substring of the serial or the customer's name, case-insensitive (no index: a filter on the
-- rows the sort's index scan visits).
(fs.serial ILIKE %(search)s OR fs.customer_name ILIKE %(search)s)

-- name: summary
-- Counts for a dashboard: per health band, per coverage, per connectivity, in one scan.
SELECT CASE WHEN GROUPING(health_band) = 0 THEN 'health_band'
            WHEN GROUPING(coverage) = 0 THEN 'coverage' ELSE 'connectivity' END AS dimension,
       coalesce(health_band, coverage, connectivity) AS value, count(*) AS machines
FROM fleet_status fs
WHERE {where}
GROUP BY GROUPING SETS ((health_band), (coverage), (connectivity))

-- name: machine
-- One machine's identity, customer, site, contract and warranty, and its rated status.
SELECT fs.*, c.country AS customer_country, s.city AS site_city,
       sc.contract_number, sc.tier AS contract_tier, sc.scope AS contract_scope,
       sc.starts_on AS contract_starts_on, sc.annual_value AS contract_annual_value,
       sc.currency AS contract_currency, sc.status AS contract_status,
       sc.auto_renew AS contract_auto_renew, sc.notice_period_days AS contract_notice_days,
       m.online AS sparkplug_online, m.protocol, m.first_seen_at
FROM fleet_status fs
JOIN customers c ON c.id = fs.customer_id
LEFT JOIN sites s ON s.id = fs.site_id
LEFT JOIN service_contracts sc ON sc.id = fs.contract_id
LEFT JOIN machines m ON m.id = fs.machine_id
WHERE fs.installed_base_id = %(id)s

-- name: telemetry_machine
-- The telemetry id of a visible, live installed-base row (NULL: it never reported).
SELECT fs.machine_id FROM fleet_status fs WHERE fs.installed_base_id = %(id)s

-- name: usage
-- Operating, running and fault hours and utilisation by UTC day or ISO week (Monday) from
-- machine_days; calendar hours are the period's days within [from, to) from the commissioning
-- day on, so utilisation is hours / calendar hours like the fleet's.
WITH cal AS (
    SELECT d::date AS day FROM generate_series(%(from_day)s::date, %(to_day)s::date - 1,
                                               interval '1 day') d
    WHERE %(commissioned_on)s::date IS NULL OR d::date >= %(commissioned_on)s::date
),
days AS (
    SELECT cal.day, coalesce(md.operating_hours, 0) AS operating_hours,
           coalesce(md.running_hours, 0) AS running_hours,
           coalesce(md.fault_hours, 0) AS fault_hours, coalesce(md.faults, 0) AS faults,
           coalesce(md.services, 0) AS services
    FROM cal
    LEFT JOIN machine_days md ON md.machine_id = %(machine_id)s AND md.day = cal.day
)
SELECT CASE WHEN %(by)s = 'week' THEN date_trunc('week', day)::date ELSE day END AS period,
       sum(operating_hours) AS operating_hours, sum(running_hours) AS running_hours,
       sum(fault_hours) AS fault_hours, sum(faults)::integer AS faults,
       sum(services)::integer AS services, 24.0 * count(*) AS calendar_hours,
       sum(operating_hours) / (24.0 * count(*)) AS utilisation
FROM days
GROUP BY 1
ORDER BY 1

-- name: metric_by_name
SELECT id, name, unit, kind FROM metrics WHERE name = %(name)s

-- name: metric_from_hours
-- Buckets of %(width)s (whole hours) from %(origin)s (the range's start, down to the hour) over
-- the hourly rollup: each bucket's average weighs its hours by their samples, so it equals
-- the raw samples' average. The hours from %(fresh_from)s on (the rollup's last hour, which it
-- may have taken in part, and those after it) are read from the raw samples: at most the
-- rollup's 15 minutes and an hour of them, so the chart is as current as the samples.
WITH hours AS (
    SELECT hour, avg, min, max, samples FROM metric_hours
    WHERE machine_id = %(machine_id)s AND metric_id = %(metric_id)s
      AND hour >= %(origin)s::timestamptz AND hour < %(to_ts)s::timestamptz
      AND hour < %(fresh_from)s::timestamptz
    UNION ALL
    SELECT time_bucket('1 hour', time), avg(value), min(value), max(value), count(*)
    FROM telemetry
    WHERE machine_id = %(machine_id)s AND metric_id = %(metric_id)s
      AND time >= %(fresh_from)s::timestamptz AND time >= %(origin)s::timestamptz
      AND time < %(to_ts)s::timestamptz
    GROUP BY 1
)
SELECT time_bucket(%(width)s::interval, hour, %(origin)s::timestamptz) AS bucket,
       sum(avg * samples) / sum(samples) AS avg, min(min) AS min, max(max) AS max,
       sum(samples)::bigint AS samples
FROM hours
GROUP BY 1
ORDER BY 1

-- name: metric_from_raw
-- Buckets of %(width)s from %(from_ts)s over the raw samples (short ranges only).
SELECT time_bucket(%(width)s::interval, time, %(from_ts)s::timestamptz) AS bucket,
       avg(value) AS avg, min(value) AS min, max(value) AS max, count(*) AS samples
FROM telemetry
WHERE machine_id = %(machine_id)s AND metric_id = %(metric_id)s
  AND time >= %(from_ts)s::timestamptz AND time < %(to_ts)s::timestamptz
GROUP BY 1
ORDER BY 1

-- name: metric_hours_through
SELECT through FROM rollup_watermarks WHERE rollup = 'metric_hours'

-- name: states
-- The state timeline over [from, to): the state in force at from (its last report in the 30
-- days before) and every report in the range, consecutive reports of the same state merged into
-- one interval; the last one runs to min(to, the machine's last report in the range or now).
-- At most %(limit)s intervals (one more is fetched to tell the caller there were more).
WITH reports AS (
    (SELECT %(from_ts)s::timestamptz AS time, s.state FROM machine_states s
     WHERE s.machine_id = %(machine_id)s AND s.time < %(from_ts)s::timestamptz
       AND s.time >= %(from_ts)s::timestamptz - interval '30 days'
     ORDER BY s.time DESC LIMIT 1)
    UNION ALL
    SELECT s.time, s.state FROM machine_states s
    WHERE s.machine_id = %(machine_id)s AND s.time >= %(from_ts)s::timestamptz
      AND s.time < %(to_ts)s::timestamptz
),
marked AS (
    SELECT time, state,
           CASE WHEN state IS DISTINCT FROM lag(state) OVER (ORDER BY time) THEN 1 ELSE 0 END
               AS starts
    FROM reports
),
runs AS (
    SELECT time, state, sum(starts) OVER (ORDER BY time) AS run FROM marked
),
merged AS (
    SELECT run, min(state::text)::machine_state AS state, min(time) AS started_at,
           count(*) AS reports
    FROM runs GROUP BY run
)
SELECT state, started_at,
       coalesce(lead(started_at) OVER (ORDER BY started_at),
                least(%(to_ts)s::timestamptz, now())) AS ended_at, reports
FROM merged
ORDER BY started_at
LIMIT %(limit)s

-- name: events
-- A machine's events, newest first, of the kinds asked (all when NULL), before %(before)s.
SELECT e.time, e.kind, e.code, e.payload
FROM machine_events e
WHERE e.machine_id = %(machine_id)s
  AND (%(kinds)s::text[] IS NULL OR e.kind = ANY(%(kinds)s::text[]))
  AND e.time < %(before)s::timestamptz AND e.time >= %(after)s::timestamptz
ORDER BY e.time DESC
LIMIT %(limit)s

-- name: lock_metric_hours
SELECT pg_advisory_xact_lock(hashtext('oemr:rollup:metric_hours'))

-- name: refresh_metric_hours
-- Recompute every machine-metric-hour of [%(from_ts)s, %(to_ts)s) from the raw samples; a row
-- is written only where it changed. Hours whose raw samples were dropped by retention are kept.
-- Not the operating-hours counter (metric 1): machine_days holds its hours per day, and it is
-- most of the samples (about 85%% of the demo world's): the first refresh of the test world
-- took 25 s with it, 7.8 s without.
INSERT INTO metric_hours AS mh (machine_id, metric_id, hour, avg, min, max, samples)
SELECT machine_id, metric_id, time_bucket('1 hour', time), avg(value), min(value), max(value),
       count(*)
FROM telemetry
WHERE time >= %(from_ts)s::timestamptz AND time < %(to_ts)s::timestamptz AND metric_id <> 1
GROUP BY 1, 2, 3
ON CONFLICT (machine_id, metric_id, hour) DO UPDATE SET
    avg = excluded.avg, min = excluded.min, max = excluded.max, samples = excluded.samples
WHERE (mh.avg, mh.min, mh.max, mh.samples)
      IS DISTINCT FROM (excluded.avg, excluded.min, excluded.max, excluded.samples)

-- name: telemetry_span
-- The first and last UTC day that can hold telemetry from %(from_ts)s on (the chunk catalogue).
SELECT (time_bucket('1 day', greatest(min(range_start), %(from_ts)s::timestamptz))
            AT TIME ZONE 'UTC')::date AS first_day,
       (time_bucket('1 day', max(range_end) - interval '1 microsecond')
            AT TIME ZONE 'UTC')::date AS last_day
FROM timescaledb_information.chunks
WHERE hypertable_schema = current_schema() AND hypertable_name = 'telemetry'
  AND range_end > %(from_ts)s::timestamptz

-- name: metric_hours_latest
SELECT max(hour) + interval '1 hour' AS through FROM metric_hours
WHERE hour >= %(from_ts)s::timestamptz

-- name: set_metric_hours_watermark
INSERT INTO rollup_watermarks (rollup, through, refreshed_at)
VALUES ('metric_hours', %(through)s, now())
ON CONFLICT (rollup) DO UPDATE SET
    through = greatest(rollup_watermarks.through, excluded.through),
    refreshed_at = excluded.refreshed_at
