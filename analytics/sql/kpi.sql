-- The KPIs of analytics/kpi.py; definitions in docs/kpis.md. Every query returns one row per
-- segment of the cut with the value(s) and every count it was computed from.
-- Parameters: start, last (first and last day of the period), before (the day before start),
-- prev_start (first day of the previous period), start_ts, end_ts, prev_start_ts (UTC instants),
-- window (active-customer window in days), dimension, segment (NULL: every segment), rep
-- (reporting currency), per_year (periods per year), silent_days.
-- Shared definitions are the functions of core/migrations/007_kpi_definitions.sql.

-- name: customer_base
WITH seg AS (
    SELECT customer_id, segment FROM customer_segments(%(dimension)s, %(last)s)
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
    SELECT customer_id, segment FROM customer_segments(%(dimension)s, %(last)s)
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
    SELECT customer_id, segment FROM customer_segments(%(dimension)s, %(last)s)
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
    SELECT customer_id, segment FROM customer_segments(%(dimension)s, %(last)s)
    WHERE %(segment)s::text IS NULL OR segment = %(segment)s::text
),
lines AS (
    SELECT i.id AS invoice_id, i.customer_id, i.issued_on, l.kind,
           to_reporting(l.net_amount, i.currency, i.issued_on, %(rep)s) AS amount
    FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id
    WHERE i.deleted_at IS NULL AND l.deleted_at IS NULL
      AND i.status NOT IN ('draft', 'cancelled')
      AND i.issued_on BETWEEN %(start)s AND %(last)s
),
per_customer AS (
    SELECT customer_id,
           count(DISTINCT issued_on) FILTER (
               WHERE kind IN ('spare_parts', 'field_service') AND amount > 0) AS purchase_days,
           count(DISTINCT kind) FILTER (WHERE kind <> 'other' AND amount > 0) AS kinds
    FROM lines GROUP BY customer_id
),
per_invoice AS (
    SELECT customer_id, invoice_id, sum(amount) AS amount
    FROM lines
    WHERE kind IN ('service_contract', 'field_service', 'spare_parts', 'retrofit')
    GROUP BY customer_id, invoice_id
    HAVING sum(amount) > 0
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
    SELECT seg.segment, count(*) AS transactions, sum(pi.amount) AS spend
    FROM seg JOIN per_invoice pi USING (customer_id)
    GROUP BY seg.segment
)
SELECT segment,
       coalesce(b.repeat_buyers, 0) AS repeat_buyers, coalesce(b.buyers, 0) AS buyers,
       b.repeat_buyers::numeric / nullif(b.buyers, 0) AS repeat_purchase_rate,
       coalesce(b.multi_kind_customers, 0) AS multi_kind_customers,
       coalesce(b.single_kind_customers, 0) AS single_kind_customers,
       b.multi_kind_customers::numeric / nullif(b.single_kind_customers, 0) AS upsell_ratio,
       coalesce(s.transactions, 0) AS transactions, coalesce(s.spend, 0) AS spend,
       s.spend / nullif(s.transactions, 0) AS spend_per_transaction
FROM buying b FULL JOIN spend s USING (segment)
ORDER BY segment;

-- name: nps
WITH seg AS (
    SELECT customer_id, segment FROM customer_segments(%(dimension)s, %(last)s)
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

-- name: silent_machines
-- Every machine of the installed base (deleted ones too: a deleted machine is a sold one) that
-- the ingester knows by serial, as of the period's end.
WITH seg AS (
    SELECT customer_id, segment FROM customer_segments(%(dimension)s, %(last)s)
    WHERE %(dimension)s <> 'model'
),
fleet AS (
    SELECT ib.id AS installed_base_id, ib.model, ib.customer_id, ib.deleted_at, m.id AS machine_id,
           m.online
    FROM installed_base ib
    JOIN LATERAL (SELECT id, online FROM machines WHERE serial = ib.serial ORDER BY id LIMIT 1) m
        ON true
    WHERE ib.commissioned_on IS NULL OR ib.commissioned_on <= %(last)s
),
seen AS (
    SELECT f.*, t.time AS last_seen,
           a.customer_id IS NOT NULL AS customer_active,
           EXISTS (SELECT 1 FROM service_contracts sc
                   WHERE sc.customer_id = f.customer_id AND sc.deleted_at IS NULL
                     AND sc.status NOT IN ('draft', 'cancelled') AND sc.starts_on <= %(last)s
                  ) AS had_contract,
           EXISTS (SELECT 1 FROM service_contracts sc
                   WHERE sc.customer_id = f.customer_id AND sc.deleted_at IS NULL
                     AND sc.status NOT IN ('draft', 'cancelled')
                     AND sc.starts_on <= %(last)s AND %(last)s <= sc.ends_on) AS live_contract
    FROM fleet f
    JOIN LATERAL (SELECT time FROM telemetry t WHERE t.machine_id = f.machine_id
                  AND t.time < %(end_ts)s ORDER BY t.time DESC LIMIT 1) t ON true
    LEFT JOIN active_customers(%(last)s, %(window)s) a ON a.customer_id = f.customer_id
),
classified AS (
    SELECT s.*,
           CASE WHEN %(dimension)s = 'model' THEN s.model ELSE seg.segment END AS segment,
           s.last_seen < %(end_ts)s - make_interval(days => %(silent_days)s) AS silent,
           CASE WHEN s.deleted_at IS NOT NULL THEN 'sold'
                WHEN s.online IS FALSE THEN 'offline'
                WHEN s.had_contract AND NOT s.live_contract THEN 'contract_lapsed'
                WHEN NOT s.customer_active THEN 'customer_inactive'
                ELSE 'unknown'
           END AS reason
    FROM seen s LEFT JOIN seg ON seg.customer_id = s.customer_id
)
SELECT segment,
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
GROUP BY segment
ORDER BY segment;

-- The machine-side queries are assembled from blocks (analytics/kpi.py): machine_fleet, then
-- one hours block (from raw telemetry, or from the daily rollup when it exists), then
-- machine_period, then one of the tails.

-- name: rollup_in_use
SELECT EXISTS (SELECT 1 FROM rollup_watermarks WHERE rollup = 'machine_days');

-- name: machine_fleet
WITH plan AS (
    SELECT DISTINCT ON (model) model, service_interval_hours, service_interval_days,
           parts_value_per_1000h, currency
    FROM machine_models WHERE deleted_at IS NULL
    ORDER BY model, synced_at DESC, id DESC
),
fleet AS (
    -- The installed base as it is now (a deleted machine was sold and is not ours to measure),
    -- commissioned by the period's end, joined by serial to what the ingester registered.
    SELECT ib.id AS installed_base_id, ib.serial, ib.model, ib.customer_id,
           m.id AS machine_id, ib.commissioned_on,
           greatest(%(start_ts)s, ib.commissioned_on::timestamp AT TIME ZONE 'UTC') AS from_ts,
           greatest(%(prev_start_ts)s, ib.commissioned_on::timestamp AT TIME ZONE 'UTC')
               AS prev_from_ts
    FROM installed_base ib
    JOIN LATERAL (SELECT id FROM machines WHERE serial = ib.serial ORDER BY id LIMIT 1) m ON true
    WHERE ib.deleted_at IS NULL
      AND (ib.commissioned_on IS NULL OR ib.commissioned_on <= %(last)s)
),

-- name: machine_hours_telemetry
-- Operating hours of a period from the operating_hours counter (metric 1): its last reading at
-- or before the period's end minus its last reading at or before the start (or, for a machine
-- first heard of inside the period, its first reading there). NULL: no reading by the end.
hours AS (
    SELECT f.installed_base_id,
           CASE WHEN c1.v IS NOT NULL
                THEN greatest(c1.v - coalesce(c0.v, f1.v), 0)::numeric END AS hours,
           CASE WHEN c0.v IS NOT NULL
                THEN greatest(c0.v - coalesce(cp.v, f0.v), 0)::numeric END AS prev_hours
    FROM fleet f
    LEFT JOIN LATERAL (SELECT value AS v FROM telemetry t WHERE t.machine_id = f.machine_id
                       AND t.metric_id = 1 AND t.time <= %(end_ts)s
                       ORDER BY t.time DESC LIMIT 1) c1 ON true
    LEFT JOIN LATERAL (SELECT value AS v FROM telemetry t WHERE t.machine_id = f.machine_id
                       AND t.metric_id = 1 AND t.time <= %(start_ts)s
                       ORDER BY t.time DESC LIMIT 1) c0 ON true
    LEFT JOIN LATERAL (SELECT value AS v FROM telemetry t WHERE t.machine_id = f.machine_id
                       AND t.metric_id = 1 AND t.time <= %(prev_start_ts)s
                       ORDER BY t.time DESC LIMIT 1) cp ON true
    LEFT JOIN LATERAL (SELECT value AS v FROM telemetry t WHERE t.machine_id = f.machine_id
                       AND t.metric_id = 1 AND t.time > %(start_ts)s AND t.time <= %(end_ts)s
                       ORDER BY t.time LIMIT 1) f1 ON true
    LEFT JOIN LATERAL (SELECT value AS v FROM telemetry t WHERE t.machine_id = f.machine_id
                       AND t.metric_id = 1 AND t.time > %(prev_start_ts)s
                       AND t.time <= %(start_ts)s
                       ORDER BY t.time LIMIT 1) f0 ON true
),

-- name: machine_hours_rollup
-- The same hours from the daily rollup (migration 006, analytics/rollups.py): the sum of the
-- days of the period. NULL: no counter sample by the period's end (or, for the previous
-- period, before this one's start).
hours AS (
    SELECT f.installed_base_id,
           CASE WHEN d.seen_by_end THEN coalesce(d.hours, 0)::numeric END AS hours,
           CASE WHEN d.seen_by_start THEN coalesce(d.prev_hours, 0)::numeric END AS prev_hours
    FROM fleet f
    LEFT JOIN LATERAL (
        SELECT sum(md.operating_hours) FILTER (
                   WHERE md.day BETWEEN %(start)s AND %(last)s) AS hours,
               sum(md.operating_hours) FILTER (
                   WHERE md.day BETWEEN %(prev_start)s AND %(before)s) AS prev_hours,
               bool_or(md.samples > 0) AS seen_by_end,
               bool_or(md.samples > 0 AND md.day < %(start)s) AS seen_by_start
        FROM machine_days md
        WHERE md.machine_id = f.machine_id AND md.day <= %(last)s
    ) d ON true
),

-- name: machine_period
machine AS (
    SELECT f.installed_base_id, f.serial, f.model, f.customer_id, f.machine_id,
           h.hours, h.prev_hours,
           greatest(extract(epoch FROM %(end_ts)s - f.from_ts) / 3600, 0) AS calendar_hours,
           greatest(extract(epoch FROM %(start_ts)s - f.prev_from_ts) / 3600, 0)
               AS prev_calendar_hours,
           p.service_interval_hours, p.service_interval_days,
           coalesce(ev.services, 0) AS services, coalesce(ev.faults, 0) AS faults,
           -- Services the period made due: by hours or by days, whichever asks for more.
           CASE WHEN h.hours IS NOT NULL THEN greatest(
               h.hours / p.service_interval_hours,
               greatest(extract(epoch FROM %(end_ts)s - f.from_ts) / 86400, 0)
                   / p.service_interval_days) END AS services_due,
           -- Overdue at the period's end: more hours or days since the last service (or since
           -- commissioning, counter from 0) than the plan allows.
           (h.hours IS NOT NULL AND (
               (lc.v - coalesce(ls.counter, 0)) > p.service_interval_hours
               OR %(end_ts)s - coalesce(ls.time, f.commissioned_on::timestamp AT TIME ZONE 'UTC')
                   > make_interval(days => p.service_interval_days))) AS overdue,
           CASE WHEN h.hours IS NOT NULL THEN to_reporting(
               p.parts_value_per_1000h * h.hours / 1000, p.currency, %(last)s, %(rep)s)
           END AS parts_implied,
           coalesce(pl.amount, 0) AS parts_bought
    FROM fleet f
    JOIN hours h USING (installed_base_id)
    LEFT JOIN plan p ON p.model = f.model
    LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE e.kind = 'maintenance') AS services,
               count(*) FILTER (WHERE e.kind = 'fault') AS faults
        FROM machine_events e
        WHERE e.machine_id = f.machine_id AND e.time >= %(start_ts)s AND e.time < %(end_ts)s
    ) ev ON true
    LEFT JOIN LATERAL (SELECT value AS v FROM telemetry t WHERE t.machine_id = f.machine_id
                       AND t.metric_id = 1 AND t.time <= %(end_ts)s
                       ORDER BY t.time DESC LIMIT 1) lc ON true
    LEFT JOIN LATERAL (
        SELECT e.time, (SELECT value FROM telemetry t WHERE t.machine_id = f.machine_id
                        AND t.metric_id = 1 AND t.time <= e.time
                        ORDER BY t.time DESC LIMIT 1) AS counter
        FROM machine_events e
        WHERE e.machine_id = f.machine_id AND e.kind = 'maintenance' AND e.time < %(end_ts)s
        ORDER BY e.time DESC LIMIT 1
    ) ls ON true
    LEFT JOIN LATERAL (
        SELECT sum(to_reporting(l.net_amount, i.currency, i.issued_on, %(rep)s)) AS amount
        FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
        WHERE l.installed_base_id = f.installed_base_id AND l.kind = 'spare_parts'
          AND l.deleted_at IS NULL AND i.deleted_at IS NULL
          AND i.status NOT IN ('draft', 'cancelled')
          AND i.issued_on BETWEEN %(start)s AND %(last)s
    ) pl ON true
)

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
    LEFT JOIN customer_segments(%(dimension)s, %(last)s) cs
        ON cs.customer_id = m.customer_id AND %(dimension)s <> 'model'
    WHERE m.hours IS NOT NULL
),
unattributed AS (
    -- Parts invoiced without naming a machine count for the customer's reporting machines.
    SELECT i.customer_id,
           sum(to_reporting(l.net_amount, i.currency, i.issued_on, %(rep)s)) AS amount
    FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
    WHERE l.installed_base_id IS NULL AND l.kind = 'spare_parts'
      AND l.deleted_at IS NULL AND i.deleted_at IS NULL
      AND i.status NOT IN ('draft', 'cancelled')
      AND i.issued_on BETWEEN %(start)s AND %(last)s
    GROUP BY i.customer_id
),
unattributed_seg AS (
    SELECT cs.segment, sum(u.amount) AS amount
    FROM unattributed u
    JOIN customer_segments(%(dimension)s, %(last)s) cs USING (customer_id)
    WHERE %(dimension)s <> 'model'
      AND EXISTS (SELECT 1 FROM machine m WHERE m.customer_id = u.customer_id
                  AND m.hours IS NOT NULL)
    GROUP BY cs.segment
),
agg AS (
    SELECT segment,
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
           sum(least(services, ceil(services_due))) AS services_on_plan,
           count(*) FILTER (WHERE overdue) AS machines_overdue,
           sum(faults) AS faults,
           sum(parts_bought) FILTER (WHERE parts_implied IS NOT NULL) AS parts_bought_attributed,
           sum(parts_implied) AS parts_implied
    FROM mseg
    WHERE %(segment)s::text IS NULL OR segment = %(segment)s::text
    GROUP BY segment
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
FROM agg a LEFT JOIN unattributed_seg u USING (segment)
ORDER BY a.segment;

-- name: engagement
, medians AS (
    -- The fleet's median hours per model in the period: the yardstick of a machine's usage.
    SELECT model, percentile_cont(0.5) WITHIN GROUP (ORDER BY hours) AS median_hours
    FROM machine WHERE hours IS NOT NULL GROUP BY model
),
usage AS (
    SELECT m.customer_id,
           sum(m.hours) / nullif(sum(md.median_hours)::numeric, 0) AS usage_ratio
    FROM machine m JOIN medians md USING (model)
    WHERE m.hours IS NOT NULL
    GROUP BY m.customer_id
),
active AS (SELECT customer_id FROM active_customers(%(last)s, %(window)s)),
interactions AS (
    -- Spare-parts and service orders: a field-service visit counts once, through its order.
    SELECT o.customer_id, count(*) AS n
    FROM orders o
    WHERE o.deleted_at IS NULL AND o.status NOT IN ('draft', 'cancelled')
      AND o.ordered_on BETWEEN %(start)s AND %(last)s
    GROUP BY o.customer_id
),
typical AS (
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY coalesce(i.n, 0))::numeric AS median_n
    FROM active a LEFT JOIN interactions i USING (customer_id)
),
surveyed AS (
    SELECT DISTINCT customer_id FROM survey_responses
    WHERE deleted_at IS NULL AND answered_at >= %(start_ts)s AND answered_at < %(end_ts)s
),
scores AS (
    SELECT a.customer_id,
           least(u.usage_ratio, 1) AS usage_score,
           CASE WHEN t.median_n > 0 THEN least(coalesce(i.n, 0) / t.median_n, 1)
                WHEN coalesce(i.n, 0) > 0 THEN 1 ELSE 0 END::numeric AS service_score,
           CASE WHEN s.customer_id IS NOT NULL THEN 1 ELSE 0 END::numeric AS survey_score
    FROM active a CROSS JOIN typical t
    LEFT JOIN usage u USING (customer_id)
    LEFT JOIN interactions i USING (customer_id)
    LEFT JOIN surveyed s USING (customer_id)
),
indexed AS (
    -- Weights 0.5 usage, 0.3 service, 0.2 survey; without machine data, usage's weight is
    -- left out and the other two are rescaled (0.3/0.5 and 0.2/0.5).
    SELECT customer_id, usage_score, service_score, survey_score,
           100 * (0.5 * coalesce(usage_score, 0) + 0.3 * service_score + 0.2 * survey_score)
               / CASE WHEN usage_score IS NULL THEN 0.5 ELSE 1 END AS engagement
    FROM scores
)
SELECT cs.segment,
       count(*) AS customers,
       count(x.usage_score) AS customers_with_usage,
       avg(x.usage_score) AS mean_usage_score,
       avg(x.service_score) AS mean_service_score,
       avg(x.survey_score) AS mean_survey_score,
       sum(x.engagement) AS engagement_sum,
       avg(x.engagement) AS engagement_index
FROM indexed x
JOIN customer_segments(%(dimension)s, %(last)s) cs USING (customer_id)
WHERE %(segment)s::text IS NULL OR cs.segment = %(segment)s::text
GROUP BY cs.segment
ORDER BY cs.segment;
