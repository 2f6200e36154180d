-- Behavioural segments of analytics/segments.py; definitions in docs/segments.md.
-- Parameters: on (the assignment day: only what happened on or before it counts), rep (the
-- reporting currency). Every assignment query ends in a CTE `assigned` with one row per customer
-- (customer_id, segment, inputs: the figures behind it); every customer of the table gets one,
-- deleted ones too (ERPs archive churned customers), and one that had done nothing by the day
-- gets 'unrated' / 'no purchases' / 'no telemetry'. customer_since is not trusted to exclude
-- anyone: an ERP's "customer since" can be later than the customer's first contract.
--
-- Ranks and ties, everywhere: a customer's share *below* is the share of the ranked customers
-- with a strictly worse figure (rank() - 1 over n). Ties share the lower group, so "top 20 percent" never
-- holds more than 20 percent of the customers, and a crowd of equal figures (zero spend, say) sits at
-- the bottom rather than being lifted by the few below it.

-- name: delete_day
DELETE FROM segment_memberships WHERE assigned_on = %(on)s AND kind = %(kind)s;

-- name: store
INSERT INTO segment_memberships (customer_id, kind, assigned_on, segment, inputs)
SELECT customer_id, %(kind)s, %(on)s, segment, inputs FROM assigned;

-- name: value_tiers
-- The CLV run used is the latest valuation day on or before the assignment day in the reporting
-- currency (one run values every customer with the same fitted models: values of different days
-- are not ranked together). A: at least 80 percent of the rated customers have a strictly lower
-- total_clv (the top 20 percent); B: at least 50 percent (the next 30 percent); C: the rest. Without a value in that
-- run: 'unrated'.
WITH run AS (
    SELECT max(valued_on) AS valued_on FROM customer_values
    WHERE valued_on <= %(on)s AND currency = %(rep)s
),
rated AS (
    SELECT v.customer_id, v.valued_on, v.total_clv,
           count(*) OVER () AS n,
           rank() OVER (ORDER BY v.total_clv) - 1 AS below
    FROM customer_values v JOIN run USING (valued_on)
    WHERE v.currency = %(rep)s
),
assigned AS (
    SELECT c.id AS customer_id,
           CASE WHEN r.customer_id IS NULL THEN 'unrated'
                WHEN r.below >= 0.8 * r.n THEN 'A'
                WHEN r.below >= 0.5 * r.n THEN 'B'
                ELSE 'C' END AS segment,
           CASE WHEN r.customer_id IS NULL
                THEN jsonb_build_object('valued_on', (SELECT valued_on FROM run))
                ELSE jsonb_build_object('valued_on', r.valued_on, 'total_clv', r.total_clv,
                                        'currency', %(rep)s::text, 'customers_rated', r.n,
                                        'customers_below', r.below,
                                        'share_below', round(r.below::numeric / r.n, 4))
           END AS inputs
    FROM customers c
    LEFT JOIN rated r ON r.customer_id = c.id
)

-- name: rfm
-- Purchases: invoices (not draft, cancelled, deleted) with spare_parts or field_service lines
-- (not deleted) issued on or before the day, in the reporting currency at the issue day. A
-- purchase day is a day whose such lines net positive (credit notes are negative lines).
-- R = days from the last purchase day to the assignment day; F = purchase days in the 365 days up
-- to it; M = the net of those lines in those 365 days. Scores 1-5 over the customers with a
-- purchase in the 365 days: 1 + floor(5 x share strictly worse) (R: more days is worse). Lines
-- without a rate convert to NULL and drop out (counted in inputs, as the KPIs do).
WITH line AS (
    SELECT i.customer_id, i.issued_on AS day,
           to_reporting(l.net_amount, i.currency, i.issued_on, %(rep)s) AS amount
    FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id
    WHERE i.deleted_at IS NULL AND l.deleted_at IS NULL
      AND i.status NOT IN ('draft', 'cancelled')
      AND l.kind IN ('spare_parts', 'field_service')
      AND i.issued_on <= %(on)s
),
day_net AS (
    SELECT customer_id, day, sum(amount) AS amount,
           count(*) FILTER (WHERE amount IS NULL) AS unconverted
    FROM line GROUP BY customer_id, day
),
buyer AS (
    SELECT customer_id,
           min(day) FILTER (WHERE amount > 0) AS first_day,
           max(day) FILTER (WHERE amount > 0) AS last_day,
           count(*) FILTER (WHERE amount > 0 AND day > %(on)s::date - 365) AS frequency,
           coalesce(sum(amount) FILTER (WHERE day > %(on)s::date - 365), 0) AS monetary,
           sum(unconverted) AS unconverted_lines
    FROM day_net GROUP BY customer_id
),
ranked AS (
    SELECT customer_id, first_day, last_day, frequency, monetary, unconverted_lines,
           %(on)s::date - last_day AS recency_days,
           count(*) OVER () AS n,
           rank() OVER (ORDER BY %(on)s::date - last_day DESC) - 1 AS r_below,
           rank() OVER (ORDER BY frequency) - 1 AS f_below,
           rank() OVER (ORDER BY monetary) - 1 AS m_below
    FROM buyer
    WHERE frequency > 0
),
scored AS (
    SELECT b.customer_id, b.first_day, b.last_day, b.frequency, b.monetary,
           b.unconverted_lines, %(on)s::date - b.last_day AS recency_days,
           1 + 5 * r.r_below / r.n AS r, 1 + 5 * r.f_below / r.n AS f,
           1 + 5 * r.m_below / r.n AS m, r.n
    FROM buyer b
    LEFT JOIN ranked r USING (customer_id)
    WHERE b.first_day IS NOT NULL OR b.unconverted_lines > 0
),
assigned AS (
    SELECT c.id AS customer_id,
           CASE WHEN s.first_day IS NULL THEN 'no purchases'
                WHEN s.frequency = 0 THEN 'lost'
                WHEN s.first_day > %(on)s::date - 90 THEN 'new'
                WHEN s.r >= 4 AND s.f >= 4 AND s.m >= 4 THEN 'champions'
                WHEN s.r >= 3 AND s.f >= 3 THEN 'loyal'
                WHEN s.r <= 2 AND (s.f >= 3 OR s.m >= 3) THEN 'at risk'
                WHEN s.r >= 3 THEN 'promising'
                ELSE 'hibernating' END AS segment,
           jsonb_strip_nulls(jsonb_build_object(
               'first_purchase', s.first_day, 'last_purchase', s.last_day,
               'recency_days', s.recency_days, 'frequency', s.frequency,
               'monetary', s.monetary, 'currency', %(rep)s::text,
               'r', s.r, 'f', s.f, 'm', s.m, 'customers_scored', s.n,
               'unconverted_lines', nullif(s.unconverted_lines, 0))) AS inputs
    FROM customers c
    LEFT JOIN scored s ON s.customer_id = c.id
)

-- name: usage_profiles
-- Machines: the customer's installed base on the day (commissioned by then, not deleted by then)
-- joined by serial to the ingester's machines, that reported (a machine_days row) on or before
-- it. Recent = the 90 days up to the day, before = the 90 days before those. A model's fleet
-- median: the median recent hours of its machines with a machine_days row in the recent window.
-- ratio = the customer's recent hours / the sum of its machines' model medians, over the machines
-- whose model has a positive median; trend = recent / before hours - 1 over all its machines.
-- Profiles, first match: no telemetry (no machine reported), idle (no recent hours, or ratio
-- below 0.1), declining (trend -0.25 or lower), heavy (ratio 1.25 or higher), steady.
WITH fleet AS (
    SELECT ib.customer_id, ib.model, m.id AS machine_id
    FROM installed_base ib
    JOIN machines m ON m.serial = ib.serial
    WHERE (ib.deleted_at IS NULL OR ib.deleted_at::date > %(on)s)
      AND (ib.commissioned_on IS NULL OR ib.commissioned_on <= %(on)s)
      AND EXISTS (SELECT 1 FROM machine_days d WHERE d.machine_id = m.id AND d.day <= %(on)s)
),
machine_use AS (
    SELECT f.customer_id, f.model, f.machine_id,
           coalesce(sum(d.operating_hours) FILTER (WHERE d.day > %(on)s::date - 90), 0)
               AS recent,
           coalesce(sum(d.operating_hours) FILTER (WHERE d.day <= %(on)s::date - 90), 0)
               AS before,
           count(d.day) FILTER (WHERE d.day > %(on)s::date - 90) AS recent_days
    FROM fleet f
    LEFT JOIN machine_days d ON d.machine_id = f.machine_id
                            AND d.day > %(on)s::date - 180 AND d.day <= %(on)s
    GROUP BY f.customer_id, f.model, f.machine_id
),
model_median AS (
    SELECT model, percentile_cont(0.5) WITHIN GROUP (ORDER BY recent) AS median
    FROM machine_use WHERE recent_days > 0
    GROUP BY model
),
customer_use AS (
    SELECT u.customer_id, count(*) AS machines,
           sum(u.recent) AS recent_hours, sum(u.before) AS before_hours,
           count(*) FILTER (WHERE mm.median > 0) AS machines_compared,
           sum(u.recent) FILTER (WHERE mm.median > 0) AS compared_hours,
           sum(mm.median) FILTER (WHERE mm.median > 0) AS median_hours
    FROM machine_use u
    LEFT JOIN model_median mm USING (model)
    GROUP BY u.customer_id
),
figures AS (
    SELECT *, compared_hours / nullif(median_hours, 0) AS ratio,
           recent_hours / nullif(before_hours, 0) - 1 AS trend
    FROM customer_use
),
assigned AS (
    SELECT c.id AS customer_id,
           CASE WHEN f.customer_id IS NULL THEN 'no telemetry'
                WHEN f.recent_hours = 0 OR f.ratio < 0.1 THEN 'idle'
                WHEN f.trend <= -0.25 THEN 'declining'
                WHEN f.ratio >= 1.25 THEN 'heavy'
                ELSE 'steady' END AS segment,
           CASE WHEN f.customer_id IS NULL THEN '{}'::jsonb
                ELSE jsonb_strip_nulls(jsonb_build_object(
                    'machines', f.machines, 'machines_compared', f.machines_compared,
                    'recent_hours', round(f.recent_hours::numeric, 2),
                    'before_hours', round(f.before_hours::numeric, 2),
                    'hours_per_machine_week',
                        round((f.recent_hours / f.machines / (90 / 7.0))::numeric, 2),
                    'median_per_machine_week',
                        round((f.median_hours / nullif(f.machines_compared, 0)
                               / (90 / 7.0))::numeric, 2),
                    'ratio', round(f.ratio::numeric, 4), 'trend', round(f.trend::numeric, 4)))
           END AS inputs
    FROM customers c
    LEFT JOIN figures f ON f.customer_id = c.id
)

-- name: run_counts
SELECT kind, segment, count(*)::integer AS customers
FROM segment_memberships
WHERE assigned_on = %(on)s
GROUP BY kind, segment
ORDER BY kind, segment;

-- name: segment_retention
-- Per period (first and last days in the arrays starts, lasts) and segment of the kind as of the
-- period's first day (definitions/behavioural_segments.sql): customers active at the start (on the
-- day before the first day) and those of them still active on the last day, with the KPIs'
-- active-customer definition (definitions/active_customers.sql).
WITH p AS (
    SELECT * FROM unnest(%(starts)s::date[], %(lasts)s::date[]) AS p (start, last_day)
)
SELECT p.start, m.segment,
       count(*)::integer AS customers_start,
       count(e.customer_id)::integer AS customers_retained
FROM p
CROSS JOIN LATERAL behavioural_segments(%(kind)s, p.start) m
JOIN LATERAL active_customers(p.start - 1, %(window)s) s ON s.customer_id = m.customer_id
LEFT JOIN LATERAL active_customers(p.last_day, %(window)s) e ON e.customer_id = m.customer_id
GROUP BY p.start, m.segment
ORDER BY p.start, m.segment;
