-- Installed-base health (docs/api-fleet.md): for every live installed-base row (not deleted),
-- as of a moment, its utilisation and trend, contract coverage and health band with the reason
-- for it. The fleet list, its summary and a machine's detail all read this one definition
-- (through the fleet_status table it fills, analytics/fleet.py). LANGUAGE sql, STABLE, one
-- statement: the planner inlines it into the calling query.
--
-- Days are UTC days; "today" is as_of's UTC day, which is never counted (it is not over).
-- - utilisation: operating hours (machine_days) of the 30 days before today / calendar hours of
--   those days from the commissioning day on (24 h a day). NULL for a machine that never
--   reported (no telemetry machine for its serial) or with no calendar hours in the window.
-- - utilisation_prev: the same over the 30 days before those; utilisation_trend = utilisation /
--   utilisation_prev - 1 (NULL when utilisation_prev is 0 or NULL).
-- - last_seen: the latest sample, state report or event the rollup has seen. as_of is meant
--   to be the refresh's now: a machine whose clock runs ahead shows its own latest time.
--   connectivity: reporting (last seen within 4 days of as_of: a machine off over a long weekend
--   still is), quiet (within 14 days), silent (longer,
--   the silent_machines KPI's 14 days, or a registered machine the rollup has no data of),
--   never_reported (no telemetry machine has its serial).
-- - state: the latest reported state within the 30 days up to as_of (NULL: none).
-- - coverage: covered when a service contract is live today (not draft, cancelled or deleted,
--   starts_on <= today <= ends_on, as active_customers counts it) that is the machine's
--   customer's and either of customer scope or on this installed-base row (the one ending last
--   is named); else warranty when warranty_end >= today; else uncovered.
-- - health band, the first that applies, with its reason:
--   silent   never reported, or no data for more than 14 days;
--   at_risk  utilisation down 50% or more on the previous 30 days, or 3+ faults in 30 days;
--   watch    no data for more than 4 days, utilisation down 20% or more, or uncovered;
--   healthy  none of these.
CREATE OR REPLACE FUNCTION fleet_health(as_of timestamptz)
RETURNS TABLE (installed_base_id integer, machine_id integer, serial text, model text,
               customer_id integer, customer_name text, site_id integer, site_name text,
               country char(2), commissioned_on date, warranty_end date, state machine_state,
               state_reported_at timestamptz, last_seen timestamptz, connectivity text,
               operating_hours_30d double precision, utilisation double precision,
               utilisation_prev double precision, utilisation_trend double precision,
               faults_30d integer, coverage text, contract_id integer, contract_ends_on date,
               health_band text, health_reason text)
LANGUAGE sql STABLE
AS $$
    WITH base AS (
        SELECT ib.id, m.id AS machine_id, ib.serial, ib.model, ib.customer_id,
               c.name AS customer_name, ib.site_id, s.name AS site_name,
               coalesce(s.country, c.country) AS country, ib.commissioned_on, ib.warranty_end,
               (as_of AT TIME ZONE 'UTC')::date AS today
        FROM installed_base ib
        JOIN customers c ON c.id = ib.customer_id
        LEFT JOIN sites s ON s.id = ib.site_id
        LEFT JOIN machines m ON m.serial = ib.serial
        WHERE ib.deleted_at IS NULL
    ),
    usage AS (
        -- One pass over the 60 days before today (and the days since, for last seen).
        SELECT md.machine_id,
               sum(md.operating_hours) FILTER (
                   WHERE md.day >= (as_of AT TIME ZONE 'UTC')::date - 30
                     AND md.day < (as_of AT TIME ZONE 'UTC')::date) AS hours,
               sum(md.operating_hours) FILTER (
                   WHERE md.day < (as_of AT TIME ZONE 'UTC')::date - 30) AS prev_hours,
               sum(md.faults) FILTER (
                   WHERE md.day >= (as_of AT TIME ZONE 'UTC')::date - 30
                     AND md.day < (as_of AT TIME ZONE 'UTC')::date) AS faults,
               max(md.last_seen) AS last_seen
        FROM machine_days md
        WHERE md.day >= (as_of AT TIME ZONE 'UTC')::date - 60
        GROUP BY md.machine_id
    ),
    live AS (
        SELECT sc.id, sc.customer_id, sc.installed_base_id, sc.scope, sc.ends_on
        FROM service_contracts sc
        WHERE sc.deleted_at IS NULL AND sc.status NOT IN ('draft', 'cancelled')
          AND sc.starts_on <= (as_of AT TIME ZONE 'UTC')::date
          AND (as_of AT TIME ZONE 'UTC')::date <= sc.ends_on
    ),
    -- The live contracts, the latest ending per customer (customer scope) and per installed-base
    -- row (machine scope, of the row's own customer): two small tables to look up in.
    customer_cover AS (
        SELECT DISTINCT ON (l.customer_id) l.customer_id, l.id, l.ends_on FROM live l
        WHERE l.scope = 'customer'
        ORDER BY l.customer_id, l.ends_on DESC, l.id
    ),
    machine_cover AS (
        SELECT DISTINCT ON (l.installed_base_id) l.installed_base_id, l.id, l.ends_on
        FROM live l
        JOIN installed_base ib ON ib.id = l.installed_base_id AND ib.customer_id = l.customer_id
        WHERE l.scope = 'machine'
        ORDER BY l.installed_base_id, l.ends_on DESC, l.id
    ),
    measured AS (
        SELECT b.*, coalesce(u.last_seen, seen.last_seen) AS last_seen, st.state,
               st.time AS state_reported_at,
               -- The live contract ending last (ties: the lower id).
               CASE WHEN mc.id IS NOT NULL AND (cc.id IS NULL OR mc.ends_on > cc.ends_on
                                                OR (mc.ends_on = cc.ends_on AND mc.id < cc.id))
                    THEN mc.id ELSE cc.id END AS contract_id,
               greatest(mc.ends_on, cc.ends_on) AS contract_ends_on,
               CASE WHEN b.machine_id IS NULL THEN NULL
                    ELSE coalesce(u.hours, 0) END AS hours,
               coalesce(u.faults, 0)::integer AS faults,
               24.0 * greatest(0, b.today - greatest(b.today - 30,
                                                     coalesce(b.commissioned_on, b.today - 30)))
                   AS calendar_hours,
               24.0 * greatest(0, (b.today - 30) - greatest(b.today - 60,
                                                            coalesce(b.commissioned_on,
                                                                     b.today - 60)))
                   AS prev_calendar_hours,
               coalesce(u.prev_hours, 0) AS prev_hours
        FROM base b
        LEFT JOIN usage u ON u.machine_id = b.machine_id
        LEFT JOIN LATERAL (
            -- Only for a machine not heard of in the 60 days: its latest day before them.
            SELECT md.last_seen FROM machine_days md
            WHERE u.last_seen IS NULL
              AND md.machine_id = b.machine_id AND md.last_seen IS NOT NULL
            ORDER BY md.day DESC LIMIT 1) seen ON true
        LEFT JOIN LATERAL (
            SELECT ms.state, ms.time FROM machine_states ms
            WHERE ms.machine_id = b.machine_id
              AND ms.time > as_of - interval '30 days' AND ms.time <= as_of
            ORDER BY ms.time DESC LIMIT 1) st ON true
        LEFT JOIN customer_cover cc ON cc.customer_id = b.customer_id
        LEFT JOIN machine_cover mc ON mc.installed_base_id = b.id
    ),
    rated AS (
        SELECT m.*,
               CASE WHEN m.machine_id IS NULL THEN 'never_reported'
                    WHEN m.last_seen IS NULL THEN 'silent'
                    WHEN m.last_seen >= as_of - interval '4 days' THEN 'reporting'
                    WHEN m.last_seen >= as_of - interval '14 days' THEN 'quiet'
                    ELSE 'silent' END AS connectivity,
               CASE WHEN m.hours IS NULL OR m.calendar_hours = 0 THEN NULL
                    ELSE m.hours / m.calendar_hours END AS utilisation,
               CASE WHEN m.hours IS NULL OR m.prev_calendar_hours = 0 THEN NULL
                    ELSE m.prev_hours / m.prev_calendar_hours END AS utilisation_prev,
               CASE WHEN m.contract_id IS NOT NULL THEN 'covered'
                    WHEN m.warranty_end >= m.today THEN 'warranty'
                    ELSE 'uncovered' END AS coverage,
               extract(epoch FROM as_of - m.last_seen) / 86400.0 AS days_quiet
        FROM measured m
    ),
    trended AS (
        SELECT r.*,
               CASE WHEN r.utilisation_prev > 0 THEN r.utilisation / r.utilisation_prev - 1
               END AS trend,
               to_char(100 * r.utilisation, 'FM990.0') || '%' AS util_text,
               'utilisation down '
                   || round(-100 * (r.utilisation / nullif(r.utilisation_prev, 0) - 1))
                   || '% on the previous 30 days ('
                   || to_char(100 * r.utilisation_prev, 'FM990.0') || '% -> '
                   || to_char(100 * r.utilisation, 'FM990.0') || '%)' AS trend_text
        FROM rated r
    )
    SELECT t.id, t.machine_id, t.serial, t.model, t.customer_id, t.customer_name, t.site_id,
           t.site_name, t.country, t.commissioned_on, t.warranty_end, t.state,
           t.state_reported_at, t.last_seen, t.connectivity, t.hours, t.utilisation,
           t.utilisation_prev, t.trend, t.faults, t.coverage, t.contract_id, t.contract_ends_on,
           CASE WHEN t.connectivity IN ('never_reported', 'silent') THEN 'silent'
                WHEN t.trend <= -0.5 OR t.faults >= 3 THEN 'at_risk'
                WHEN t.connectivity = 'quiet' OR t.trend <= -0.2 OR t.coverage = 'uncovered'
                    THEN 'watch'
                ELSE 'healthy' END,
           CASE WHEN t.connectivity = 'never_reported' THEN 'never reported'
                WHEN t.connectivity = 'silent' AND t.last_seen IS NULL
                    THEN 'no data in the usage rollup'
                WHEN t.connectivity = 'silent'
                    THEN 'no data for ' || floor(t.days_quiet) || ' days (last seen '
                         || to_char(t.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD') || ')'
                WHEN t.trend <= -0.5 THEN t.trend_text
                WHEN t.faults >= 3 THEN t.faults || ' faults in 30 days'
                WHEN t.connectivity = 'quiet'
                    THEN 'no data for ' || floor(t.days_quiet) || ' days (last seen '
                         || to_char(t.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD') || ')'
                WHEN t.trend <= -0.2 THEN t.trend_text
                WHEN t.coverage = 'uncovered' THEN 'no live service contract and out of warranty'
                ELSE 'reporting, utilisation ' || coalesce(t.util_text, 'unknown')
                     || ' over 30 days, ' || t.coverage END
    FROM trended t
$$;
