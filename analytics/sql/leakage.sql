-- Leakage (analytics/leakage.py, docs/api-maintenance.md): after-sales revenue the installed
-- base implies and the books do not show. A contract covers a machine on a day when it is live
-- that day (not draft, cancelled or deleted; starts_on <= day <= ends_on, the rule of
-- definitions/active_customers.sql) and is either on that machine (scope 'machine') or on its
-- whole customer (scope 'customer').

-- name: machines
-- The installed base as it is now (not deleted), with its customer, site and region (customer:
-- the name again, under the sort's name, which a page's cursor reads).
WITH p AS (SELECT %(today)s::date AS t),
machine AS (
    SELECT ib.id AS installed_base_id, ib.serial, ib.model, ib.customer_id,
           c.name AS customer_name, c.name AS customer, ib.site_id, s.name AS site_name,
           coalesce(s.country, c.country) AS region, ib.commissioned_on, ib.warranty_end
    FROM installed_base ib
    JOIN customers c ON c.id = ib.customer_id
    LEFT JOIN sites s ON s.id = ib.site_id
    WHERE ib.deleted_at IS NULL
),
live_contract AS (
    SELECT sc.id, sc.customer_id, sc.scope, sc.installed_base_id, sc.starts_on, sc.ends_on
    FROM service_contracts sc
    WHERE sc.deleted_at IS NULL AND sc.status NOT IN ('draft', 'cancelled')
),

-- name: uncovered
-- Machines commissioned by today that no contract covers today.
listed AS (
    SELECT m.*, coalesce(m.warranty_end >= p.t, false) AS in_warranty,
           (SELECT max(lc.ends_on) FROM live_contract lc
            WHERE lc.ends_on < p.t
              AND (lc.installed_base_id = m.installed_base_id
                   OR (lc.scope = 'customer' AND lc.customer_id = m.customer_id)))
               AS last_covered_on
    FROM machine m, p
    WHERE (m.commissioned_on IS NULL OR m.commissioned_on <= p.t)
      AND NOT EXISTS (
          SELECT 1 FROM live_contract lc
          WHERE lc.starts_on <= p.t AND p.t <= lc.ends_on
            AND ((lc.scope = 'machine' AND lc.installed_base_id = m.installed_base_id)
                 OR (lc.scope = 'customer' AND lc.customer_id = m.customer_id)))
)
SELECT * FROM listed
WHERE (%(customer_id)s::integer IS NULL OR customer_id = %(customer_id)s::integer)
  AND (%(region)s::text IS NULL OR region = %(region)s::text)
  AND (%(model)s::text IS NULL OR model = %(model)s::text)
  AND {keyset}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: warranty_ending
-- Machines whose warranty ends from today to today + days and that no contract covers on the
-- day after the warranty ends (a contract signed to start then counts as cover).
listed AS (
    SELECT m.*, m.warranty_end - p.t AS days_left
    FROM machine m, p
    WHERE m.warranty_end >= p.t AND m.warranty_end <= p.t + %(days)s::integer
      AND NOT EXISTS (
          SELECT 1 FROM live_contract lc
          WHERE lc.starts_on <= m.warranty_end + 1 AND m.warranty_end + 1 <= lc.ends_on
            AND ((lc.scope = 'machine' AND lc.installed_base_id = m.installed_base_id)
                 OR (lc.scope = 'customer' AND lc.customer_id = m.customer_id)))
)
SELECT * FROM listed
WHERE (%(customer_id)s::integer IS NULL OR customer_id = %(customer_id)s::integer)
  AND (%(region)s::text IS NULL OR region = %(region)s::text)
  AND {keyset}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: parts_gap
-- Per customer over the window of %(days)s days up to and including today: parts expected from
-- the operating hours of its installed machines (machine_days) at each model's
-- parts_value_per_1000h (the ERP's, converted at today's rate), against the spare-parts lines
-- it was invoiced (not draft, cancelled or deleted; credit notes negative; each at its invoice
-- day's rate), in %(reporting)s. Customers buying less than expected, with the gap.
WITH p AS (SELECT %(today)s::date AS t, %(days)s::integer AS w, %(reporting)s::char(3) AS rc),
model_value AS (
    SELECT DISTINCT ON (model) model, parts_value_per_1000h, currency
    FROM machine_models
    WHERE deleted_at IS NULL AND parts_value_per_1000h IS NOT NULL
    ORDER BY model, synced_at DESC, id DESC
),
registered AS (
    SELECT DISTINCT ON (serial) serial, id AS machine_id FROM machines ORDER BY serial, id
),
machine_hours AS (
    SELECT ib.customer_id, ib.id AS installed_base_id, h.hours,
           to_reporting(mv.parts_value_per_1000h * h.hours / 1000, mv.currency, p.t, p.rc)
               AS expected
    FROM installed_base ib
    CROSS JOIN p
    JOIN registered r ON r.serial = ib.serial
    JOIN model_value mv ON mv.model = ib.model
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(d.operating_hours), 0)::numeric AS hours FROM machine_days d
        WHERE d.machine_id = r.machine_id AND d.day > p.t - p.w AND d.day <= p.t) h
    WHERE ib.deleted_at IS NULL
),
expected AS (
    SELECT customer_id, count(*) AS machines, sum(hours) AS hours, sum(expected) AS expected
    FROM machine_hours GROUP BY customer_id
),
bought AS (
    SELECT i.customer_id, sum(to_reporting(l.net_amount, i.currency, i.issued_on, p.rc)) AS bought
    FROM invoice_lines l
    JOIN invoices i ON i.id = l.invoice_id
    CROSS JOIN p
    WHERE l.kind = 'spare_parts' AND l.deleted_at IS NULL AND i.deleted_at IS NULL
      AND i.status NOT IN ('draft', 'cancelled')
      AND i.issued_on > p.t - p.w AND i.issued_on <= p.t
    GROUP BY i.customer_id
),
listed AS (
    SELECT e.customer_id, c.name AS customer_name, c.name AS customer, c.country AS region,
           e.machines,
           round(e.hours, 1) AS operating_hours,
           round(e.expected, 2) AS expected_parts,
           round(coalesce(b.bought, 0), 2) AS bought_parts,
           round(e.expected - coalesce(b.bought, 0), 2) AS gap,
           round(coalesce(b.bought, 0) / nullif(e.expected, 0), 4) AS capture,
           p.rc AS currency
    FROM expected e
    JOIN customers c ON c.id = e.customer_id
    LEFT JOIN bought b ON b.customer_id = e.customer_id
    CROSS JOIN p
    WHERE e.expected > coalesce(b.bought, 0)
)
SELECT * FROM listed
WHERE (%(customer_id)s::integer IS NULL OR customer_id = %(customer_id)s::integer)
  AND (%(region)s::text IS NULL OR region = %(region)s::text)
  AND {keyset}
ORDER BY {order}
LIMIT %(keyset_limit)s
