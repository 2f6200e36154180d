-- Invoicing that leaks nothing (analytics/billing.py, docs/api-finance.md): work done on machines
-- that the ERP never invoiced, and pay-per-use contracts' billable operating hours.

-- name: unbilled_rows
-- Work: the machines' own events of kind maintenance (a service visit: billed as field_service
-- lines) and part_replaced (billed as spare_parts lines), on a machine of the installed base,
-- from %(since)s on and older than %(older_than_days)s days on %(on)s (its UTC day before
-- %(on)s - %(older_than_days)s). It is billed when an invoice line of that kind on that
-- installed machine was issued within %(window_days)s days of the work's day, either side, on
-- an invoice that is neither cancelled nor deleted (a draft counts: its billing is under way).
-- Its value, in the reporting currency: the median billed visit (an invoice's lines of that
-- kind on one machine, summed) of the machine's model in the 365 days up to %(on)s, else of all
-- models (value_basis says which; NULL when nothing was billed at all). Coverage: the service
-- contract of the machine's customer live that day on the machine (machine scope) or on the
-- customer (customer scope), the machine's own first, then the most valuable: work under a
-- contract may be included in it.
WITH p AS (
    SELECT %(on)s::date AS t, %(reporting)s::char(3) AS rc,
           %(older_than_days)s::integer AS n, %(window_days)s::integer AS w,
           %(since)s::date AS since
),
work AS (
    SELECT e.machine_id || ':' || e.event_key || ':' || extract(epoch FROM e.time)::bigint AS id,
           e.time AS occurred_at, (e.time AT TIME ZONE 'UTC')::date AS day,
           e.kind, e.code, ib.id AS installed_base_id, ib.serial, ib.model, ib.customer_id,
           CASE e.kind WHEN 'maintenance' THEN 'field_service' ELSE 'spare_parts' END
               AS line_kind
    FROM machine_events e
    JOIN machines m ON m.id = e.machine_id
    JOIN installed_base ib ON ib.serial = m.serial AND ib.deleted_at IS NULL
    CROSS JOIN p
    WHERE e.kind IN ('maintenance', 'part_replaced')
      AND e.time >= (p.since::timestamp AT TIME ZONE 'UTC')
      AND e.time < ((p.t - p.n)::timestamp AT TIME ZONE 'UTC')
),
unbilled AS (
    SELECT wk.*
    FROM work wk
    CROSS JOIN p
    WHERE NOT EXISTS (
        SELECT FROM invoice_lines l
        JOIN invoices i ON i.id = l.invoice_id
        WHERE l.installed_base_id = wk.installed_base_id AND l.kind = wk.line_kind
          AND l.deleted_at IS NULL AND i.deleted_at IS NULL AND i.status <> 'cancelled'
          AND i.issued_on BETWEEN wk.day - p.w AND wk.day + p.w)
),
billed AS (
    -- Converted once per visit (one invoice: one currency, one day, one rate).
    SELECT ib.model, l.kind,
           to_reporting(sum(l.net_amount), i.currency, i.issued_on, p.rc) AS amount
    FROM invoice_lines l
    JOIN invoices i ON i.id = l.invoice_id
    JOIN installed_base ib ON ib.id = l.installed_base_id
    CROSS JOIN p
    WHERE l.kind IN ('field_service', 'spare_parts') AND l.deleted_at IS NULL
      AND i.deleted_at IS NULL AND i.status NOT IN ('draft', 'cancelled')
      AND i.issued_on > p.t - 365 AND i.issued_on <= p.t
    GROUP BY ib.model, l.kind, i.id, l.installed_base_id, p.rc
),
by_model AS (
    SELECT model, kind, percentile_disc(0.5) WITHIN GROUP (ORDER BY amount) AS median
    FROM billed GROUP BY model, kind
),
by_kind AS (
    SELECT kind, percentile_disc(0.5) WITHIN GROUP (ORDER BY amount) AS median
    FROM billed GROUP BY kind
),
cover AS (
    -- A machine-scope contract belongs to the machine's customer too: one hash join on the
    -- customer, then the machine's own contract first.
    SELECT DISTINCT ON (u.id) u.id, sc.id AS contract_id, sc.tier
    FROM unbilled u
    JOIN service_contracts sc
      ON sc.customer_id = u.customer_id
     AND (sc.scope = 'customer' OR sc.installed_base_id = u.installed_base_id)
     AND sc.starts_on <= u.day AND sc.ends_on >= u.day
    WHERE sc.deleted_at IS NULL AND sc.status NOT IN ('draft', 'cancelled')
    ORDER BY u.id, sc.scope = 'machine' DESC, sc.annual_value DESC, sc.id
),
rows AS (
    SELECT u.*, c.name AS customer_name, p.rc AS reporting_currency,
           round(coalesce(bm.median, bk.median), 2) AS estimated_value,
           CASE WHEN bm.median IS NOT NULL THEN 'model'
                WHEN bk.median IS NOT NULL THEN 'all models' END AS value_basis,
           p.t - u.day AS age_days,
           cover.contract_id, cover.tier AS contract_tier
    FROM unbilled u
    CROSS JOIN p
    JOIN customers c ON c.id = u.customer_id
    LEFT JOIN by_model bm ON bm.model = u.model AND bm.kind = u.line_kind
    LEFT JOIN by_kind bk ON bk.kind = u.line_kind
    LEFT JOIN cover ON cover.id = u.id
    WHERE (%(customer_id)s::integer IS NULL OR u.customer_id = %(customer_id)s::integer)
      AND (%(kind)s::text IS NULL OR u.kind = %(kind)s::text)
),
filtered AS (
    SELECT * FROM rows
    WHERE %(coverage)s = 'all'
       OR (%(coverage)s = 'covered' AND contract_id IS NOT NULL)
       OR (%(coverage)s = 'uncovered' AND contract_id IS NULL)
)

-- name: unbilled_page
SELECT *
FROM (SELECT f.*, coalesce(f.estimated_value, -1) AS value FROM filtered f) page
WHERE {keyset}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: unbilled_total
SELECT count(*) AS items, sum(estimated_value) AS estimated_value,
       count(*) FILTER (WHERE estimated_value IS NULL) AS unvalued
FROM filtered

-- name: usage_terms
-- Pay-per-use terms (migration 022) with their contract; %(contract_id)s NULL: all.
SELECT ub.contract_id, sc.contract_number, sc.customer_id, c.name AS customer_name,
       sc.scope, sc.installed_base_id, ub.rate_per_hour, ub.currency, ub.included_hours,
       ub.starts_on, sc.starts_on AS contract_starts_on, sc.ends_on AS contract_ends_on,
       ub.updated_at, ub.updated_by
FROM usage_billing ub
JOIN service_contracts sc ON sc.id = ub.contract_id
JOIN customers c ON c.id = sc.customer_id
WHERE %(contract_id)s::integer IS NULL OR ub.contract_id = %(contract_id)s::integer
ORDER BY ub.contract_id

-- name: contract_visible
SELECT id FROM service_contracts WHERE id = %(contract_id)s AND deleted_at IS NULL

-- name: put_usage_terms
INSERT INTO usage_billing (contract_id, rate_per_hour, currency, included_hours, starts_on,
                           updated_by)
VALUES (%(contract_id)s, %(rate_per_hour)s, %(currency)s, %(included_hours)s, %(starts_on)s,
        %(updated_by)s)
ON CONFLICT (contract_id) DO UPDATE SET
    rate_per_hour = excluded.rate_per_hour, currency = excluded.currency,
    included_hours = excluded.included_hours, starts_on = excluded.starts_on,
    updated_at = now(), updated_by = excluded.updated_by
RETURNING (xmax = 0) AS created

-- name: delete_usage_terms
DELETE FROM usage_billing WHERE contract_id = %(contract_id)s RETURNING contract_id

-- name: billable_rows
-- Per pay-per-use contract and calendar month from %(first_month)s to %(last_month)s: the
-- operating hours of the machines the contract covers (machine scope: its machine; customer
-- scope: every machine of the customer's installed base), from machine_days, on the month's
-- days from the terms' start and within the contract's term; billable hours = those hours
-- (rounded to 0.01 h) minus the hours included per month (never below 0; a month's allowance
-- is not pro-rated), amount = billable hours x rate, in the terms' currency. A month wholly
-- before the terms' start or outside the contract's term has no row.
WITH months AS (
    SELECT m::date AS month, (m + interval '1 month' - interval '1 day')::date AS month_end
    FROM generate_series(%(first_month)s::date, %(last_month)s::date, interval '1 month') m
),
terms AS (
    SELECT ub.*, sc.contract_number, sc.customer_id, sc.scope, sc.installed_base_id,
           greatest(ub.starts_on, sc.starts_on) AS billed_from, sc.ends_on AS billed_to
    FROM usage_billing ub
    JOIN service_contracts sc ON sc.id = ub.contract_id
    WHERE sc.deleted_at IS NULL
),
covered AS (
    SELECT DISTINCT tm.contract_id, m.id AS machine_id
    FROM terms tm
    JOIN installed_base ib
      ON ib.deleted_at IS NULL
     AND ((tm.scope = 'machine' AND ib.id = tm.installed_base_id)
          OR (tm.scope = 'customer' AND ib.customer_id = tm.customer_id))
    JOIN machines m ON m.serial = ib.serial
),
hours AS (
    SELECT tm.contract_id, mo.month,
           greatest(mo.month, tm.billed_from) AS from_day,
           least(mo.month_end, tm.billed_to) AS to_day,
           (SELECT count(*) FROM covered cv WHERE cv.contract_id = tm.contract_id) AS machines,
           round(coalesce((
               SELECT sum(md.operating_hours) FROM machine_days md
               JOIN covered cv ON cv.machine_id = md.machine_id
               WHERE cv.contract_id = tm.contract_id
                 AND md.day BETWEEN greatest(mo.month, tm.billed_from)
                                AND least(mo.month_end, tm.billed_to)), 0)::numeric, 2)
               AS operating_hours
    FROM terms tm
    CROSS JOIN months mo
    WHERE tm.billed_from <= mo.month_end AND tm.billed_to >= mo.month
),
billable AS (
    SELECT lpad(h.contract_id::text, 10, '0') || ':' || to_char(h.month, 'YYYY-MM') AS id,
           h.contract_id, tm.contract_number, tm.customer_id, c.external_id AS customer_external_id,
           c.name AS customer_name, h.month, h.from_day, h.to_day, h.machines,
           h.operating_hours, tm.included_hours,
           greatest(h.operating_hours - tm.included_hours, 0) AS billable_hours,
           tm.rate_per_hour,
           round(greatest(h.operating_hours - tm.included_hours, 0) * tm.rate_per_hour, 2)
               AS amount,
           tm.currency
    FROM hours h
    JOIN terms tm ON tm.contract_id = h.contract_id
    JOIN customers c ON c.id = tm.customer_id
    WHERE %(customer_id)s::integer IS NULL OR tm.customer_id = %(customer_id)s::integer
)

-- name: billable_page
SELECT *
FROM (SELECT b.*, b.id AS contract,
             to_char(b.month, 'YYYY-MM') || ':' || lpad(b.contract_id::text, 10, '0') AS period
      FROM billable b) page
WHERE {keyset}
ORDER BY {order}
LIMIT %(keyset_limit)s
