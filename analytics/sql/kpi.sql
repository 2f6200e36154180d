-- The KPIs of analytics/kpi.py; definitions in docs/kpis.md. Every query returns one row per
-- segment of the cut with the value(s) and every count it was computed from.
-- Parameters: start, last (first and last day of the period), before (the day before start),
-- prev_start (first day of the previous period), start_ts, end_ts, prev_start_ts (UTC instants),
-- window (active-customer window in days), dimension, segment (NULL: every segment), rep
-- (reporting currency), per_year (periods per year), silent_days.
-- Shared definitions are the functions of analytics/sql/definitions/, one file each.
-- A customer's segment: period_segments (definitions/period_segments.sql): attributes as of the period's last day,
-- behavioural kinds (value_tier, rfm, usage) as of its first. The business queries
-- run once per period (start, last); the machine-side ones take each period's own days.

-- name: customer_base
WITH seg AS (
    SELECT customer_id, segment FROM period_segments(%(dimension)s, %(start)s, %(last)s)
    WHERE %(segment)s::text IS NULL OR segment = %(segment)s::text
),
base AS (
    SELECT seg.segment,
           s.customer_id IS NOT NULL AS at_start,
           e.customer_id IS NOT NULL AS at_end,
           coalesce(r.revenue, 0) AS revenue
    FROM seg
    LEFT JOIN active_customers(%(before)s, %(window)s) s USING (customer_id)
    LEFT JOIN active_customers(%(last)s, %(window)s) e USING (customer_id)
    LEFT JOIN after_sales_revenue(%(start)s, %(last)s, %(rep)s) r USING (customer_id)
),
counts AS (
    SELECT segment,
           count(*) FILTER (WHERE at_start) AS customers_start,
           count(*) FILTER (WHERE at_end) AS customers_end,
           count(*) FILTER (WHERE at_end AND NOT at_start) AS customers_new,
           count(*) FILTER (WHERE at_end AND at_start) AS customers_retained,
           count(*) FILTER (WHERE at_start OR at_end) AS customers_served,
           coalesce(sum(revenue) FILTER (WHERE at_start OR at_end), 0) AS revenue
    FROM base GROUP BY segment
),
rates AS (
    SELECT *,
           (customers_end - customers_new)::numeric / nullif(customers_start, 0) AS retention,
           revenue / nullif(customers_served, 0) AS revenue_per_customer
    FROM counts
)
SELECT *,
       1 - retention AS churn,
       1 - power(retention, %(per_year)s::numeric) AS annual_churn,
       1 / nullif(1 - power(retention, %(per_year)s::numeric), 0) AS lifetime_years,
       revenue_per_customer * %(per_year)s AS annual_revenue_per_customer,
       revenue_per_customer * %(per_year)s
           / nullif(1 - power(retention, %(per_year)s::numeric), 0) AS clv
FROM rates
ORDER BY segment;

-- name: renewals
WITH seg AS (
    SELECT customer_id, segment FROM period_segments(%(dimension)s, %(start)s, %(last)s)
    WHERE %(segment)s::text IS NULL OR segment = %(segment)s::text
)
SELECT seg.segment,
       count(*) FILTER (WHERE r.outcome IN ('renewed', 'upgraded', 'downgraded')) AS renewed,
       count(*) FILTER (WHERE r.outcome IN ('lapsed', 'cancelled')) AS not_renewed,
       count(*) AS decisions,
       count(*) FILTER (WHERE r.outcome IN ('renewed', 'upgraded', 'downgraded'))::numeric
           / count(*) AS renewal_rate
FROM contract_renewals r
JOIN service_contracts sc ON sc.id = r.contract_id
JOIN seg ON seg.customer_id = sc.customer_id
WHERE r.deleted_at IS NULL AND sc.deleted_at IS NULL
  AND r.decided_on BETWEEN %(start)s AND %(last)s
GROUP BY seg.segment
ORDER BY seg.segment;

-- name: revenue_retention
WITH seg AS (
    SELECT customer_id, segment FROM period_segments(%(dimension)s, %(start)s, %(last)s)
    WHERE %(segment)s::text IS NULL OR segment = %(segment)s::text
),
cohort AS (
    SELECT seg.segment, coalesce(p.revenue, 0) AS revenue_before,
           coalesce(c.revenue, 0) AS revenue_now
    FROM seg
    JOIN active_customers(%(before)s, %(window)s) s USING (customer_id)
    LEFT JOIN after_sales_revenue(%(prev_start)s, %(before)s, %(rep)s) p USING (customer_id)
    LEFT JOIN after_sales_revenue(%(start)s, %(last)s, %(rep)s) c USING (customer_id)
)
SELECT segment,
       count(*) AS customers_start,
       sum(revenue_before) AS revenue_before,
       sum(least(revenue_now, revenue_before)) AS revenue_kept,
       sum(revenue_now) AS revenue_now,
       sum(least(revenue_now, revenue_before)) / nullif(sum(revenue_before), 0) AS grr,
       sum(revenue_now) / nullif(sum(revenue_before), 0) AS nrr
FROM cohort
GROUP BY segment
ORDER BY segment;

-- name: purchases
WITH seg AS (
    SELECT customer_id, segment FROM period_segments(%(dimension)s, %(start)s, %(last)s)
    WHERE %(segment)s::text IS NULL OR segment = %(segment)s::text
),
lines AS (
    SELECT i.id AS invoice_id, i.customer_id, i.issued_on, l.kind,
           -- Counting tests the sign as invoiced (a currency without a rate must not drop a
           -- buyer); only sums use the converted amount (NULL without a rate).
           l.net_amount AS invoiced,
           to_reporting(l.net_amount, i.currency, i.issued_on, %(rep)s) AS amount
    FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id
    WHERE i.deleted_at IS NULL AND l.deleted_at IS NULL
      AND i.status NOT IN ('draft', 'cancelled')
      AND i.issued_on BETWEEN %(start)s AND %(last)s
),
per_customer AS (
    SELECT customer_id,
           count(DISTINCT issued_on) FILTER (
               WHERE kind IN ('spare_parts', 'field_service') AND invoiced > 0) AS purchase_days,
           count(DISTINCT kind) FILTER (WHERE kind <> 'other' AND invoiced > 0) AS kinds
    FROM lines GROUP BY customer_id
),
per_invoice AS (
    -- An invoice has one currency: the sign of its lines' sum as invoiced decides whether it is
    -- a transaction; amount is NULL when a line could not be converted.
    SELECT customer_id, invoice_id,
           CASE WHEN bool_and(amount IS NOT NULL) THEN sum(amount) END AS amount
    FROM lines
    WHERE kind IN ('service_contract', 'field_service', 'spare_parts', 'retrofit')
    GROUP BY customer_id, invoice_id
    HAVING sum(invoiced) > 0
),
buying AS (
    SELECT seg.segment,
           count(*) FILTER (WHERE pc.purchase_days >= 2) AS repeat_buyers,
           count(*) FILTER (WHERE pc.purchase_days >= 1) AS buyers,
           count(*) FILTER (WHERE pc.kinds >= 2) AS multi_kind_customers,
           count(*) FILTER (WHERE pc.kinds = 1) AS single_kind_customers
    FROM seg JOIN per_customer pc USING (customer_id)
    GROUP BY seg.segment
),
spend AS (
    -- Spend per transaction over the transactions known in the reporting currency.
    SELECT seg.segment, count(pi.amount) AS transactions,
           count(*) - count(pi.amount) AS transactions_unconverted, sum(pi.amount) AS spend
    FROM seg JOIN per_invoice pi USING (customer_id)
    GROUP BY seg.segment
)
SELECT segment,
       coalesce(b.repeat_buyers, 0) AS repeat_buyers, coalesce(b.buyers, 0) AS buyers,
       b.repeat_buyers::numeric / nullif(b.buyers, 0) AS repeat_purchase_rate,
       coalesce(b.multi_kind_customers, 0) AS multi_kind_customers,
       coalesce(b.single_kind_customers, 0) AS single_kind_customers,
       b.multi_kind_customers::numeric / nullif(b.single_kind_customers, 0) AS upsell_ratio,
       coalesce(s.transactions, 0) AS transactions,
       coalesce(s.transactions_unconverted, 0) AS transactions_unconverted,
       coalesce(s.spend, 0) AS spend,
       s.spend / nullif(s.transactions, 0) AS spend_per_transaction
FROM buying b FULL JOIN spend s USING (segment)
ORDER BY segment;

-- name: nps
WITH seg AS (
    SELECT customer_id, segment FROM period_segments(%(dimension)s, %(start)s, %(last)s)
    WHERE %(segment)s::text IS NULL OR segment = %(segment)s::text
),
latest AS (
    -- One voice per contact: its latest answer in the period. An answer without a contact is
    -- its own voice.
    SELECT DISTINCT ON (r.customer_id, coalesce(r.contact_id::text, 'answer ' || r.id))
           r.customer_id, r.score
    FROM survey_responses r
    WHERE r.deleted_at IS NULL AND r.answered_at >= %(start_ts)s AND r.answered_at < %(end_ts)s
    ORDER BY r.customer_id, coalesce(r.contact_id::text, 'answer ' || r.id),
             r.answered_at DESC, r.id DESC
)
SELECT seg.segment,
       count(*) AS responses,
       count(DISTINCT l.customer_id) AS customers,
       count(*) FILTER (WHERE l.score >= 9) AS promoters,
       count(*) FILTER (WHERE l.score BETWEEN 7 AND 8) AS passives,
       count(*) FILTER (WHERE l.score <= 6) AS detractors,
       100 * (count(*) FILTER (WHERE l.score >= 9) - count(*) FILTER (WHERE l.score <= 6))::numeric
           / count(*) AS nps
FROM latest l JOIN seg USING (customer_id)
GROUP BY seg.segment
ORDER BY seg.segment;

-- The machine-side queries run once for all the periods asked for (parameters starts, stops,
-- prev_starts: arrays of first days, days after the last, first days of the previous periods;
-- a period is known by its 1-based position n). They are assembled from blocks (analytics/
-- kpi.py): periods, machine_segs (for the tails that read segments), machine_fleet, a
-- fleet_services block (every machine's, or one customer's looked up per machine: machine_kpis'
-- customer_id, NULL for the KPIs), one source block (the daily rollup where its watermark
-- covers the periods, raw telemetry before its refresh has run), machine_period, then one tail;
-- silent machines: periods, machine_segs, machine_fleet, a heard block, silent_machines.

-- name: rollup_watermark
SELECT through FROM rollup_watermarks WHERE rollup = 'machine_days';

-- name: data_after
-- Whether the ingester stored anything after the rollup's watermark and before a period's end
-- (then the rollup does not cover the period). Chunk exclusion keeps this to a few chunks.
SELECT EXISTS (SELECT 1 FROM telemetry WHERE time > %(through)s AND time < %(until)s)
    OR EXISTS (SELECT 1 FROM machine_states WHERE time > %(through)s AND time < %(until)s)
    OR EXISTS (SELECT 1 FROM machine_events WHERE time > %(through)s AND time < %(until)s);

-- name: periods
WITH periods AS (
    SELECT p.n::integer AS n, p.start, p.stop - 1 AS last, p.start - 1 AS before, p.prev_start,
           p.start::timestamp AT TIME ZONE 'UTC' AS start_ts,
           p.stop::timestamp AT TIME ZONE 'UTC' AS end_ts,
           p.prev_start::timestamp AT TIME ZONE 'UTC' AS prev_start_ts
    FROM unnest(%(starts)s::date[], %(stops)s::date[], %(prev_starts)s::date[])
         WITH ORDINALITY AS p(start, stop, prev_start, n)
),

-- name: machine_segs
segs AS (
    -- Every customer's segment(s) in each period (definitions/period_segments.sql).
    SELECT p.n, ps.customer_id, ps.segment
    FROM periods p CROSS JOIN LATERAL period_segments(%(dimension)s, p.start, p.last) ps
),

-- name: machine_fleet
plan AS (
    -- The plan in force per model (definitions/service_plans.sql: the API's plan, else the
    -- ERP's intervals) and the ERP's parts value.
    SELECT model, interval_hours AS service_interval_hours, interval_days AS service_interval_days,
           parts_value_per_1000h, currency
    FROM service_plans
),
registered AS (
    -- The ingester's machine of each serial (the first registered, if a serial came twice).
    SELECT DISTINCT ON (serial) serial, id AS machine_id, online FROM machines ORDER BY serial, id
),
fleet AS (
    -- The installed base as it is now (a deleted machine was sold and is not ours to measure),
    -- commissioned by the period's end, joined by serial to what the ingester registered.
    SELECT p.*, ib.id AS installed_base_id, ib.serial, ib.model, ib.customer_id, r.machine_id,
           ib.commissioned_on,
           greatest(p.start_ts, ib.commissioned_on::timestamp AT TIME ZONE 'UTC') AS from_ts,
           greatest(p.prev_start_ts, ib.commissioned_on::timestamp AT TIME ZONE 'UTC')
               AS prev_from_ts
    FROM installed_base ib
    JOIN registered r USING (serial)
    JOIN periods p ON ib.commissioned_on IS NULL OR ib.commissioned_on <= p.last
    WHERE ib.deleted_at IS NULL
      -- One customer's machines (machine_kpis' customer_id; NULL: every customer's): chosen
      -- here, so that every per-machine block after this one reads only theirs.
      AND (%(customer_id)s::integer IS NULL OR ib.customer_id = %(customer_id)s::integer)
),
chosen AS MATERIALIZED (
    -- The ingester's machines of the fleet, once each (the per-machine reads are driven by it).
    SELECT DISTINCT machine_id FROM fleet
),

-- name: fleet_services_all
-- After machine_fleet: the services (definitions/services_done.sql) the hours blocks read, of
-- every machine, joined set-wise (its days cannot exclude event chunks: looked up per machine,
-- each lookup would visit every chunk). Inlined where it is read, as services_done was.
fleet_services AS NOT MATERIALIZED (
    SELECT machine_id, day, services, last_at FROM services_done
),

-- name: fleet_services_one
-- Instead of fleet_services_all for one customer's machines (machine_kpis' customer_id): looked up
-- per machine, so the events of the few are read through their index and not all aggregated.
fleet_services AS MATERIALIZED (
    SELECT sd.machine_id, sd.day, sd.services, sd.last_at
    FROM chosen c
    -- OFFSET 0 keeps the subquery whole: pulled up, it became a join with every machine's
    -- services, aggregated before the join; kept, the machine is pushed into the view.
    CROSS JOIN LATERAL (SELECT machine_id, day, services, last_at FROM services_done
                        WHERE machine_id = c.machine_id OFFSET 0) sd
),

-- name: machine_hours_telemetry
-- Before the rollup's first refresh. Operating hours of a period from the operating_hours
-- counter (metric 1): its last reading at or before the period's end minus its last reading at
-- or before the start (or, for a machine first heard of inside the period, its first reading
-- there). NULL: no reading by the end. Faults from the events, services from services_done
-- (definitions/services_done.sql: the events and the API's records); overdue from the counter at
-- the last service (fleet_services: after a fleet_services block).
done AS (
    SELECT f.n, f.installed_base_id,
           sum(sd.services) FILTER (WHERE sd.day >= f.start AND sd.day <= f.last) AS services,
           max(sd.last_at) AS last_at
    FROM fleet f
    JOIN fleet_services sd ON sd.machine_id = f.machine_id AND sd.last_at < f.end_ts
    GROUP BY f.n, f.installed_base_id
),
hours AS (
    SELECT f.n, f.installed_base_id,
           CASE WHEN c1.v IS NOT NULL
                THEN greatest(c1.v - coalesce(c0.v, f1.v), 0)::numeric END AS hours,
           CASE WHEN c0.v IS NOT NULL
                THEN greatest(c0.v - coalesce(cp.v, f0.v), 0)::numeric END AS prev_hours,
           coalesce(dn.services, 0) AS services, coalesce(ev.faults, 0) AS faults,
           (c1.v IS NOT NULL AND (
               (c1.v - coalesce(ls.counter, 0)) > p.service_interval_hours
               OR f.end_ts - coalesce(ls.time, f.commissioned_on::timestamp AT TIME ZONE 'UTC')
                   > make_interval(days => p.service_interval_days))) AS overdue
    FROM fleet f
    LEFT JOIN plan p ON p.model = f.model
    LEFT JOIN LATERAL (SELECT value AS v FROM telemetry t WHERE t.machine_id = f.machine_id
                       AND t.metric_id = 1 AND t.time <= f.end_ts
                       ORDER BY t.time DESC LIMIT 1) c1 ON true
    LEFT JOIN LATERAL (SELECT value AS v FROM telemetry t WHERE t.machine_id = f.machine_id
                       AND t.metric_id = 1 AND t.time <= f.start_ts
                       ORDER BY t.time DESC LIMIT 1) c0 ON true
    LEFT JOIN LATERAL (SELECT value AS v FROM telemetry t WHERE t.machine_id = f.machine_id
                       AND t.metric_id = 1 AND t.time <= f.prev_start_ts
                       ORDER BY t.time DESC LIMIT 1) cp ON true
    LEFT JOIN LATERAL (SELECT value AS v FROM telemetry t WHERE t.machine_id = f.machine_id
                       AND t.metric_id = 1 AND t.time > f.start_ts AND t.time <= f.end_ts
                       ORDER BY t.time LIMIT 1) f1 ON true
    LEFT JOIN LATERAL (SELECT value AS v FROM telemetry t WHERE t.machine_id = f.machine_id
                       AND t.metric_id = 1 AND t.time > f.prev_start_ts
                       AND t.time <= f.start_ts
                       ORDER BY t.time LIMIT 1) f0 ON true
    LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE e.kind = 'fault') AS faults
        FROM machine_events e
        WHERE e.machine_id = f.machine_id AND e.time >= f.start_ts AND e.time < f.end_ts
    ) ev ON true
    LEFT JOIN done dn ON dn.n = f.n AND dn.installed_base_id = f.installed_base_id
    LEFT JOIN LATERAL (
        SELECT dn.last_at AS time, (SELECT value FROM telemetry t
                                    WHERE t.machine_id = f.machine_id AND t.metric_id = 1
                                      AND t.time <= dn.last_at
                                    ORDER BY t.time DESC LIMIT 1) AS counter
        WHERE dn.last_at IS NOT NULL
    ) ls ON true
),

-- name: rollup_first_sample
-- Each machine's first day with a counter sample in the rollup (both rollup sources read it).
first_sample AS MATERIALIZED (
    SELECT r.machine_id, s.day
    FROM registered r
    CROSS JOIN LATERAL (SELECT md.day FROM machine_days md
                        WHERE md.machine_id = r.machine_id AND md.samples > 0
                        ORDER BY md.day LIMIT 1) s
    -- Every registered machine (silent_machines reads those the fleet has not) unless one
    -- customer's are asked for.
    WHERE %(customer_id)s::integer IS NULL OR r.machine_id IN (SELECT machine_id FROM chosen)
),

-- name: machine_hours_rollup
-- From the daily rollup (migration 006, analytics/rollups.py), read once for all periods: hours
-- and faults are sums of the days of the period (hours also of the previous period); services
-- are services_done's (definitions/services_done.sql: the events and the API's records, which
-- the rollup does not see), through fleet_services.
-- NULL hours: no counter sample by the period's end (or, for the previous period, before this
-- one's start). Overdue: hours since the day of the last service (or since the data began).
spans AS (
    -- The stretches of days the periods sum: each period and the one before it, each stretch
    -- once (consecutive months share theirs: twelve months read thirteen, not twenty-four).
    SELECT DISTINCT s.first_day, s.last_day
    FROM periods p
    CROSS JOIN LATERAL (VALUES (p.start, p.last), (p.prev_start, p.before)) s(first_day, last_day)
),
span_services AS MATERIALIZED (
    SELECT sd.machine_id, s.first_day, s.last_day, sum(sd.services) AS services
    FROM fleet_services sd
    JOIN spans s ON sd.day >= s.first_day AND sd.day <= s.last_day
    GROUP BY 1, 2, 3
),
span_sums AS MATERIALIZED (
    -- Per machine and stretch, summed over the machine's own index range: joining every day to
    -- the (overlapping) periods and grouping 2.4 M joined rows took most of the query's time.
    -- ORDER BY md.day: hours are floats, added day by day as before, so every sum is the same
    -- to the last bit.
    -- The fleet's machines only: the hours block reads no other.
    SELECT r.machine_id, s.first_day, s.last_day, d.hours, coalesce(sv.services, 0) AS services,
           d.faults
    FROM chosen r
    CROSS JOIN spans s
    CROSS JOIN LATERAL (
        SELECT sum(md.operating_hours ORDER BY md.day) AS hours, sum(md.faults) AS faults
        FROM machine_days md
        WHERE md.machine_id = r.machine_id
          AND md.day >= s.first_day AND md.day <= s.last_day) d
    LEFT JOIN span_services sv
        ON sv.machine_id = r.machine_id AND sv.first_day = s.first_day
       AND sv.last_day = s.last_day
    WHERE d.hours IS NOT NULL
),
last_service AS MATERIALIZED (
    SELECT f.n, f.machine_id, max(sd.last_at) AS time
    FROM fleet f
    JOIN fleet_services sd ON sd.machine_id = f.machine_id AND sd.last_at < f.end_ts
    GROUP BY f.n, f.machine_id
),
hours AS (
    SELECT f.n, f.installed_base_id,
           CASE WHEN fs.day <= f.last THEN coalesce(d.hours, 0)::numeric END AS hours,
           CASE WHEN fs.day < f.start THEN coalesce(dp.hours, 0)::numeric END AS prev_hours,
           coalesce(d.services, 0) AS services, coalesce(d.faults, 0) AS faults,
           -- The days' test first: the hours since the service are summed only for machines
           -- serviced (or commissioned) within the interval, so over at most that many days.
           (fs.day <= f.last AND (
               f.end_ts - coalesce(ls.time, f.commissioned_on::timestamp AT TIME ZONE 'UTC')
                   > make_interval(days => p.service_interval_days)
               OR (SELECT sum(md.operating_hours) FROM machine_days md
                   WHERE md.machine_id = f.machine_id AND md.day <= f.last
                     AND md.day > coalesce((ls.time AT TIME ZONE 'UTC')::date, '-infinity'))
                   > p.service_interval_hours)) AS overdue
    FROM fleet f
    LEFT JOIN plan p ON p.model = f.model
    LEFT JOIN first_sample fs ON fs.machine_id = f.machine_id
    LEFT JOIN span_sums d
        ON d.machine_id = f.machine_id AND d.first_day = f.start AND d.last_day = f.last
    LEFT JOIN span_sums dp
        ON dp.machine_id = f.machine_id AND dp.first_day = f.prev_start AND dp.last_day = f.before
    LEFT JOIN last_service ls ON ls.n = f.n AND ls.machine_id = f.machine_id
),

-- name: machine_period
parts_named AS (
    SELECT p.n, l.installed_base_id,
           sum(to_reporting(l.net_amount, i.currency, i.issued_on, %(rep)s)) AS amount
    FROM invoice_lines l
    JOIN invoices i ON i.id = l.invoice_id
    JOIN periods p ON i.issued_on BETWEEN p.start AND p.last
    WHERE l.installed_base_id IN (SELECT installed_base_id FROM fleet) AND l.kind = 'spare_parts'
      AND l.deleted_at IS NULL AND i.deleted_at IS NULL
      AND i.status NOT IN ('draft', 'cancelled')
    GROUP BY p.n, l.installed_base_id
),
machine AS (
    SELECT f.n, f.installed_base_id, f.serial, f.model, f.customer_id, f.machine_id,
           h.hours, h.prev_hours,
           greatest(extract(epoch FROM f.end_ts - f.from_ts) / 3600, 0) AS calendar_hours,
           greatest(extract(epoch FROM f.start_ts - f.prev_from_ts) / 3600, 0)
               AS prev_calendar_hours,
           p.service_interval_hours, p.service_interval_days,
           h.services, h.faults,
           -- Services the period made due: by hours or by days, whichever asks for more.
           CASE WHEN h.hours IS NOT NULL THEN greatest(
               h.hours / p.service_interval_hours,
               greatest(extract(epoch FROM f.end_ts - f.from_ts) / 86400, 0)
                   / p.service_interval_days) END AS services_due,
           h.overdue,
           CASE WHEN h.hours IS NOT NULL THEN to_reporting(
               p.parts_value_per_1000h * h.hours / 1000, p.currency, f.last, %(rep)s)
           END AS parts_implied,
           coalesce(pn.amount, 0) AS parts_bought
    FROM fleet f
    JOIN hours h ON h.n = f.n AND h.installed_base_id = f.installed_base_id
    LEFT JOIN plan p ON p.model = f.model
    LEFT JOIN parts_named pn ON pn.n = f.n AND pn.installed_base_id = f.installed_base_id
)

-- name: no_jit
SET LOCAL jit = off

-- name: create_kpi_machines
-- Followed by periods .. machine_period and machine_cache_fill (kpi.shared_machine_rows).
CREATE TEMPORARY TABLE kpi_machines ON COMMIT DROP AS

-- name: drop_kpi_machines
DROP TABLE pg_temp.kpi_machines

-- name: machine_cache_fill
-- After periods .. machine_period: the machine rows of the periods, for every cut at once
-- (kpi.shared_machine_rows keeps them in a temporary table for the rest of its transaction).
SELECT * FROM machine

-- name: machine_cached
-- Instead of machine_fleet .. machine_period: the rows kept by kpi.shared_machine_rows for the
-- same periods (their n is the same).
machine AS (SELECT * FROM pg_temp.kpi_machines)

-- name: machine_rows
SELECT installed_base_id, serial, model, customer_id, hours, prev_hours, calendar_hours,
       hours / nullif(calendar_hours, 0) AS utilisation,
       prev_hours / nullif(prev_calendar_hours, 0) AS prev_utilisation,
       services, services_due, overdue, faults,
       1000 * faults / nullif(hours, 0) AS fault_rate,
       parts_bought, parts_implied,
       parts_bought / nullif(parts_implied, 0) AS parts_capture
FROM machine
WHERE %(customer_id)s::integer IS NULL OR customer_id = %(customer_id)s::integer
ORDER BY customer_id, serial;

-- name: machine_segments
, mseg AS (
    SELECT m.*, CASE WHEN %(dimension)s = 'model' THEN m.model ELSE cs.segment END AS segment
    FROM machine m
    LEFT JOIN segs cs
        ON cs.n = m.n AND cs.customer_id = m.customer_id AND %(dimension)s <> 'model'
    WHERE m.hours IS NOT NULL
),
unattributed AS (
    -- Parts invoiced without naming a machine count for the customer's reporting machines.
    SELECT p.n, i.customer_id,
           sum(to_reporting(l.net_amount, i.currency, i.issued_on, %(rep)s)) AS amount
    FROM invoice_lines l
    JOIN invoices i ON i.id = l.invoice_id
    JOIN periods p ON i.issued_on BETWEEN p.start AND p.last
    WHERE l.installed_base_id IS NULL AND l.kind = 'spare_parts'
      AND l.deleted_at IS NULL AND i.deleted_at IS NULL
      AND i.status NOT IN ('draft', 'cancelled')
    GROUP BY p.n, i.customer_id
),
unattributed_seg AS (
    SELECT u.n, cs.segment, sum(u.amount) AS amount
    FROM unattributed u
    JOIN segs cs ON cs.n = u.n AND cs.customer_id = u.customer_id
    WHERE %(dimension)s <> 'model'
      AND EXISTS (SELECT 1 FROM machine m WHERE m.n = u.n AND m.customer_id = u.customer_id
                  AND m.hours IS NOT NULL)
    GROUP BY u.n, cs.segment
),
agg AS (
    SELECT n, segment,
           count(*) AS machines_reporting,
           count(DISTINCT customer_id) AS customers,
           sum(hours) AS operating_hours,
           sum(calendar_hours) AS calendar_hours,
           count(*) FILTER (WHERE prev_hours IS NOT NULL) AS machines_both_periods,
           coalesce(sum(hours) FILTER (WHERE prev_hours IS NOT NULL), 0) AS hours_both,
           sum(calendar_hours) FILTER (WHERE prev_hours IS NOT NULL) AS calendar_hours_both,
           sum(prev_hours) AS prev_hours_both,
           sum(prev_calendar_hours) FILTER (WHERE prev_hours IS NOT NULL)
               AS prev_calendar_hours_both,
           count(*) FILTER (WHERE services_due IS NOT NULL) AS machines_with_plan,
           sum(services) FILTER (WHERE services_due IS NOT NULL) AS services_done,
           sum(services_due) AS services_due,
           -- A service counts up to the whole services due (rounded up): a month that made
           -- 0.3 of a service due and had the service is on plan, not 0.3 of it.
           -- Only machines with a plan: least() skips a NULL due, so a machine without one
           -- would add all its services to the numerator and nothing to the denominator.
           sum(least(services, ceil(services_due))) FILTER (WHERE services_due IS NOT NULL)
               AS services_on_plan,
           count(*) FILTER (WHERE overdue) AS machines_overdue,
           sum(faults) AS faults,
           sum(parts_bought) FILTER (WHERE parts_implied IS NOT NULL) AS parts_bought_attributed,
           sum(parts_implied) AS parts_implied
    FROM mseg
    WHERE %(segment)s::text IS NULL OR segment = %(segment)s::text
    GROUP BY n, segment
)
SELECT a.*,
       a.operating_hours / nullif(a.calendar_hours, 0) AS utilisation,
       (a.hours_both / nullif(a.calendar_hours_both, 0))
           / nullif(a.prev_hours_both / nullif(a.prev_calendar_hours_both, 0), 0) - 1
           AS utilisation_trend,
       least(a.services_on_plan / nullif(a.services_due, 0), 1) AS maintenance_adherence,
       1000 * a.faults / nullif(a.operating_hours, 0) AS fault_rate,
       coalesce(a.parts_bought_attributed, 0) + coalesce(u.amount, 0) AS parts_bought,
       (coalesce(a.parts_bought_attributed, 0) + coalesce(u.amount, 0))
           / nullif(a.parts_implied, 0) AS parts_capture
FROM agg a LEFT JOIN unattributed_seg u ON u.n = a.n AND u.segment = a.segment
ORDER BY a.n, a.segment;

-- name: engagement
, reporting AS MATERIALIZED (
    -- The reporting machines' hours, machine's only reference here: so machine is inlined and
    -- what engagement does not read (overdue, with its sums since the last service; parts) is
    -- never computed. Read twice below, machine itself would be computed whole.
    SELECT n, installed_base_id, customer_id, model, hours FROM machine WHERE hours IS NOT NULL
),
medians AS (
    -- The fleet's median hours per model in the period: the yardstick of a machine's usage.
    SELECT n, model, percentile_cont(0.5) WITHIN GROUP (ORDER BY hours) AS median_hours
    FROM reporting GROUP BY n, model
),
usage AS (
    -- The medians are floats: summed in a fixed order (without one, their sum, and so the
    -- ratio, changed in the 17th digit whenever the plan fed the machines in another order).
    SELECT m.n, m.customer_id,
           sum(m.hours)
               / nullif(sum(md.median_hours ORDER BY m.installed_base_id)::numeric, 0)
               AS usage_ratio
    FROM reporting m JOIN medians md ON md.n = m.n AND md.model = m.model
    GROUP BY m.n, m.customer_id
),
active AS (
    SELECT p.n, a.customer_id
    FROM periods p CROSS JOIN LATERAL active_customers(p.last, %(window)s) a
),
interactions AS (
    -- Spare-parts and service orders: a field-service visit counts once, through its order.
    SELECT p.n, o.customer_id, count(*) AS orders
    FROM orders o JOIN periods p ON o.ordered_on BETWEEN p.start AND p.last
    WHERE o.deleted_at IS NULL AND o.status NOT IN ('draft', 'cancelled')
    GROUP BY p.n, o.customer_id
),
typical AS (
    SELECT a.n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY coalesce(i.orders, 0))::numeric
               AS median_n
    FROM active a LEFT JOIN interactions i ON i.n = a.n AND i.customer_id = a.customer_id
    GROUP BY a.n
),
surveyed AS (
    SELECT DISTINCT p.n, r.customer_id
    FROM survey_responses r
    JOIN periods p ON r.answered_at >= p.start_ts AND r.answered_at < p.end_ts
    WHERE r.deleted_at IS NULL
),
scores AS (
    SELECT a.n, a.customer_id,
           least(u.usage_ratio, 1) AS usage_score,
           CASE WHEN t.median_n > 0 THEN least(coalesce(i.orders, 0) / t.median_n, 1)
                WHEN coalesce(i.orders, 0) > 0 THEN 1 ELSE 0 END::numeric AS service_score,
           CASE WHEN s.customer_id IS NOT NULL THEN 1 ELSE 0 END::numeric AS survey_score
    FROM active a
    JOIN typical t ON t.n = a.n
    LEFT JOIN usage u ON u.n = a.n AND u.customer_id = a.customer_id
    LEFT JOIN interactions i ON i.n = a.n AND i.customer_id = a.customer_id
    LEFT JOIN surveyed s ON s.n = a.n AND s.customer_id = a.customer_id
),
indexed AS (
    -- Weights 0.5 usage, 0.3 service, 0.2 survey; without machine data, usage's weight is
    -- left out and the other two are rescaled (0.3/0.5 and 0.2/0.5).
    SELECT n, customer_id, usage_score, service_score, survey_score,
           100 * (0.5 * coalesce(usage_score, 0) + 0.3 * service_score + 0.2 * survey_score)
               / CASE WHEN usage_score IS NULL THEN 0.5 ELSE 1 END AS engagement
    FROM scores
)
SELECT x.n, cs.segment,
       count(*) AS customers,
       count(x.usage_score) AS customers_with_usage,
       avg(x.usage_score) AS mean_usage_score,
       avg(x.service_score) AS mean_service_score,
       avg(x.survey_score) AS mean_survey_score,
       sum(x.engagement) AS engagement_sum,
       avg(x.engagement) AS engagement_index
FROM indexed x
JOIN segs cs ON cs.n = x.n AND cs.customer_id = x.customer_id
WHERE %(segment)s::text IS NULL OR cs.segment = %(segment)s::text
GROUP BY x.n, cs.segment
ORDER BY x.n, cs.segment;

-- name: machine_owners
ever AS (
    -- Every machine of the installed base (deleted ones too: a deleted machine is a sold one)
    -- that the ingester knows by serial, as of each period's end, once: a resold machine has
    -- several rows of one serial (the old owners' deleted, the new one's live). The live row
    -- names its customer, else the latest deleted one (the last owner we knew).
    SELECT DISTINCT ON (p.n, r.machine_id)
           p.*, ib.id AS installed_base_id, ib.model, ib.customer_id, ib.deleted_at,
           r.machine_id, r.online
    FROM installed_base ib
    JOIN registered r USING (serial)
    JOIN periods p ON ib.commissioned_on IS NULL OR ib.commissioned_on <= p.last
    ORDER BY p.n, r.machine_id, ib.deleted_at DESC NULLS FIRST, ib.id DESC
),

-- name: heard_telemetry
-- Before the rollup's first refresh: the machine's last telemetry (any metric) before the end.
heard AS MATERIALIZED (
    SELECT e.*, t.time IS NOT NULL AS reported,
           t.time >= e.end_ts - make_interval(days => %(silent_days)s) AS recent
    FROM ever e
    LEFT JOIN LATERAL (SELECT time FROM telemetry t WHERE t.machine_id = e.machine_id
                       AND t.time < e.end_ts ORDER BY t.time DESC LIMIT 1) t ON true
),

-- name: heard_rollup
-- From the rollup: a counter sample on a day of the window (the window is whole UTC days: the
-- period ends at midnight) or, only for machines without one, any telemetry in it.
heard AS MATERIALIZED (
    -- OR evaluates left to right and stops at the first true: telemetry is read only for
    -- machines the rollup has no counter sample of.
    SELECT e.*,
           (coalesce(fs.day <= e.last, false)
            OR EXISTS (SELECT 1 FROM telemetry t
                       WHERE t.machine_id = e.machine_id AND t.time < e.end_ts)) AS reported,
           (EXISTS (SELECT 1 FROM machine_days md
                    WHERE md.machine_id = e.machine_id AND md.samples > 0
                      AND md.day > e.last - %(silent_days)s AND md.day <= e.last)
            OR EXISTS (SELECT 1 FROM telemetry t
                       WHERE t.machine_id = e.machine_id AND t.time < e.end_ts
                         AND t.time >= e.end_ts - make_interval(days => %(silent_days)s)))
               AS recent
    FROM ever e LEFT JOIN first_sample fs ON fs.machine_id = e.machine_id
),

-- name: silent_machines
active AS (
    SELECT p.n, a.customer_id
    FROM periods p CROSS JOIN LATERAL active_customers(p.last, %(window)s) a
),
classified AS (
    SELECT h.n, NOT h.recent AS silent,
           CASE WHEN %(dimension)s = 'model' THEN h.model ELSE cs.segment END AS segment,
           -- What is known, worked out for silent machines only.
           CASE WHEN h.recent THEN NULL
                -- Sold by the period's end: a sale after it was not yet known then.
                WHEN h.deleted_at < h.end_ts THEN 'sold'
                WHEN h.online IS FALSE THEN 'offline'
                WHEN EXISTS (SELECT 1 FROM service_contracts sc
                             WHERE sc.customer_id = h.customer_id AND sc.deleted_at IS NULL
                               AND sc.status NOT IN ('draft', 'cancelled')
                               AND sc.starts_on <= h.last)
                     AND NOT EXISTS (SELECT 1 FROM service_contracts sc
                                     WHERE sc.customer_id = h.customer_id
                                       AND sc.deleted_at IS NULL
                                       AND sc.status NOT IN ('draft', 'cancelled')
                                       AND sc.starts_on <= h.last AND h.last <= sc.ends_on)
                    THEN 'contract_lapsed'
                WHEN a.customer_id IS NULL THEN 'customer_inactive'
                ELSE 'unknown'
           END AS reason
    FROM heard h
    LEFT JOIN segs cs
        ON cs.n = h.n AND cs.customer_id = h.customer_id AND %(dimension)s <> 'model'
    LEFT JOIN active a ON a.n = h.n AND a.customer_id = h.customer_id
    WHERE h.reported
)
SELECT n, segment,
       count(*) AS machines_reporting_ever,
       count(*) FILTER (WHERE silent) AS silent,
       count(*) FILTER (WHERE silent AND reason = 'sold') AS silent_sold,
       count(*) FILTER (WHERE silent AND reason = 'offline') AS silent_offline,
       count(*) FILTER (WHERE silent AND reason = 'contract_lapsed') AS silent_contract_lapsed,
       count(*) FILTER (WHERE silent AND reason = 'customer_inactive') AS silent_customer_inactive,
       count(*) FILTER (WHERE silent AND reason = 'unknown') AS silent_unknown,
       count(*) FILTER (WHERE silent)::numeric / count(*) AS silent_share
FROM classified
WHERE %(segment)s::text IS NULL OR segment = %(segment)s::text
GROUP BY n, segment
ORDER BY n, segment;
