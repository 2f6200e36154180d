-- Receivables per customer: open and overdue invoices and days sales outstanding
-- (analytics/receivables.py, docs/api-finance.md). Amounts are invoices' net amounts (the ERPs'
-- sync carries no tax), converted to the reporting currency at the issue day.
--
-- Open: status 'open' as the ERP has it now (a partial payment is not known: an open invoice
-- counts in full). Overdue: open and its due day before %(on)s; days overdue = %(on)s - due day.
-- DSO = open receivables / revenue invoiced in the 90 days up to %(on)s x 90, where revenue is
-- every invoice issued in those days (all kinds, credit notes negative) that is not a draft,
-- cancelled or deleted. NULL without revenue in those days.

-- name: per_customer_rows
WITH p AS (SELECT %(on)s::date AS t, %(reporting)s::char(3) AS rc),
open_invoices AS (
    SELECT i.customer_id,
           count(*) AS open_invoices,
           sum(to_reporting(i.net_amount, i.currency, i.issued_on, p.rc)) AS open_amount,
           count(*) FILTER (WHERE i.due_on < p.t) AS overdue_invoices,
           coalesce(sum(to_reporting(i.net_amount, i.currency, i.issued_on, p.rc))
                        FILTER (WHERE i.due_on < p.t), 0) AS overdue_amount,
           max(p.t - i.due_on) FILTER (WHERE i.due_on < p.t) AS oldest_overdue_days
    FROM invoices i, p
    WHERE i.deleted_at IS NULL AND i.status = 'open' AND i.issued_on <= p.t
    GROUP BY i.customer_id
),
revenue AS (
    SELECT i.customer_id,
           sum(to_reporting(i.net_amount, i.currency, i.issued_on, p.rc)) AS revenue_90d
    FROM invoices i, p
    WHERE i.deleted_at IS NULL AND i.status NOT IN ('draft', 'cancelled')
      AND i.issued_on > p.t - 90 AND i.issued_on <= p.t
    GROUP BY i.customer_id
),
per_customer AS (
    SELECT c.id AS customer_id, c.name AS customer_name, p.rc AS reporting_currency,
           coalesce(o.open_invoices, 0) AS open_invoices,
           round(coalesce(o.open_amount, 0), 2) AS open_amount,
           coalesce(o.overdue_invoices, 0) AS overdue_invoices,
           round(coalesce(o.overdue_amount, 0), 2) AS overdue_amount,
           o.oldest_overdue_days,
           round(coalesce(r.revenue_90d, 0), 2) AS revenue_90d,
           round(coalesce(o.open_amount, 0) / nullif(r.revenue_90d, 0) * 90, 1) AS dso_days
    FROM customers c
    CROSS JOIN p
    LEFT JOIN open_invoices o ON o.customer_id = c.id
    LEFT JOIN revenue r ON r.customer_id = c.id
    WHERE (o.customer_id IS NOT NULL OR r.customer_id IS NOT NULL)
      AND (NOT %(overdue_only)s::boolean OR coalesce(o.overdue_invoices, 0) > 0)
      AND (%(customer_id)s::integer IS NULL OR c.id = %(customer_id)s::integer)
)

-- name: per_customer_page
SELECT *
FROM (SELECT pc.*, pc.customer_id AS id,
             coalesce(pc.oldest_overdue_days, -1) AS days_overdue,
             coalesce(pc.dso_days, -1) AS dso
      FROM per_customer pc) page
WHERE {keyset}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: customer_visible
SELECT id FROM customers WHERE id = %(customer_id)s

-- name: open_invoices
-- A customer's open invoices, the oldest due first.
SELECT i.id, i.number, i.issued_on, i.due_on, i.net_amount, i.currency,
       round(to_reporting(i.net_amount, i.currency, i.issued_on, %(reporting)s::char(3)), 2)
           AS amount_reporting,
       CASE WHEN i.due_on < %(on)s::date THEN %(on)s::date - i.due_on ELSE 0 END
           AS days_overdue
FROM invoices i
WHERE i.customer_id = %(customer_id)s AND i.deleted_at IS NULL AND i.status = 'open'
  AND i.issued_on <= %(on)s::date
ORDER BY i.due_on NULLS LAST, i.id
