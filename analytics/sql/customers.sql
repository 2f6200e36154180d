-- Customers: the list, the 360 read of one customer and its paged parts (analytics/customers.py).
-- Every query reads "as of" %(on)s (a day): nothing dated after it counts. Money that is summed
-- over currencies is in the reporting currency %(rep)s (to_reporting at the row's own day);
-- money of one document stays in its own currency. A live contract is what the KPIs call one
-- (definitions/active_customers.sql): not draft, cancelled or deleted, starts_on <= day <= ends_on.
-- The list queries end in {where} and {order} (core.paging.keyset, the sort's whitelisted
-- column) and %(keyset_limit)s.

-- name: customer_list
WITH score_day AS (
    SELECT max(scored_on) AS d FROM churn_scores WHERE scored_on <= %(on)s
),
scores AS (
    -- Only the latest scoring day's: a customer not scored then is off the books (churned).
    SELECT s.customer_id, s.probability, s.method
    FROM churn_scores s JOIN score_day ON s.scored_on = score_day.d
),
value_day AS (
    SELECT max(valued_on) AS d FROM customer_values
    WHERE valued_on <= %(on)s AND currency = %(rep)s
),
vals AS (
    SELECT v.customer_id, v.total_clv, v.method
    FROM customer_values v JOIN value_day ON v.valued_on = value_day.d
    WHERE v.currency = %(rep)s
),
revenue AS (
    SELECT customer_id, revenue
    FROM after_sales_revenue(%(on)s::date - 364, %(on)s::date, %(rep)s)
),
live AS (
    SELECT customer_id, sum(to_reporting(annual_value, currency, %(on)s::date, %(rep)s)) AS acv,
           count(*) AS contracts
    FROM service_contracts
    WHERE deleted_at IS NULL AND status NOT IN ('draft', 'cancelled')
      AND starts_on <= %(on)s AND ends_on >= %(on)s
    GROUP BY customer_id
),
unpaid AS (
    SELECT customer_id, count(*) AS open_invoices,
           count(*) FILTER (WHERE due_on < %(on)s) AS overdue_invoices
    FROM invoices
    WHERE deleted_at IS NULL AND status = 'open' AND issued_on <= %(on)s
    GROUP BY customer_id
),
segs AS (
    SELECT customer_id,
           max(segment) FILTER (WHERE kind = 'value_tier') AS value_tier,
           max(segment) FILTER (WHERE kind = 'rfm') AS rfm,
           max(segment) FILTER (WHERE kind = 'usage') AS usage
    FROM (SELECT 'value_tier' AS kind, * FROM behavioural_segments('value_tier', %(on)s)
          UNION ALL SELECT 'rfm', * FROM behavioural_segments('rfm', %(on)s)
          UNION ALL SELECT 'usage', * FROM behavioural_segments('usage', %(on)s)) b
    GROUP BY customer_id
),
listed AS (
    SELECT c.id, c.external_id, c.name, c.country, c.industry, c.size_class, c.key_account,
           c.customer_since, c.deleted_at IS NOT NULL AS archived,
           s.probability, s.method AS risk_method,
           -- Bands of analytics.customers.risk_band (its thresholds are the parameters).
           CASE WHEN s.probability >= %(high_risk)s THEN 'high'
                WHEN s.probability >= %(medium_risk)s THEN 'medium'
                WHEN s.probability IS NOT NULL THEN 'low' END AS risk_band,
           v.total_clv, v.method AS clv_method,
           coalesce(r.revenue, 0) AS revenue_12m,
           coalesce(l.acv, 0) AS annual_contract_value,
           coalesce(l.contracts, 0) AS live_contracts,
           coalesce(u.open_invoices, 0) AS open_invoices,
           coalesce(u.overdue_invoices, 0) AS overdue_invoices,
           g.value_tier, g.rfm, g.usage,
           -- The sortable columns, never NULL (keyset pages compare them): a customer without a
           -- score or a value sorts below every scored or valued one.
           coalesce(s.probability, -1) AS churn_probability,
           coalesce(v.total_clv, -1) AS clv
    FROM customers c
    LEFT JOIN scores s ON s.customer_id = c.id
    LEFT JOIN vals v ON v.customer_id = c.id
    LEFT JOIN revenue r ON r.customer_id = c.id
    LEFT JOIN live l ON l.customer_id = c.id
    LEFT JOIN unpaid u ON u.customer_id = c.id
    LEFT JOIN segs g ON g.customer_id = c.id
    WHERE (%(archived)s OR c.deleted_at IS NULL)
      AND (%(country)s::text IS NULL OR c.country = %(country)s::text)
      AND (%(industry)s::text IS NULL OR c.industry = %(industry)s::text)
      AND (%(size_class)s::text IS NULL OR c.size_class = %(size_class)s::text)
      AND (%(key_account)s::boolean IS NULL OR c.key_account = %(key_account)s::boolean)
      AND (%(q)s::text IS NULL OR strpos(lower(c.name), lower(%(q)s::text)) > 0)
      AND (%(segment_dimension)s::text IS NULL OR EXISTS (
              SELECT 1 FROM period_segments(%(segment_dimension)s::text, %(on)s, %(on)s) ps
              WHERE ps.customer_id = c.id AND ps.segment = %(segment_value)s::text))
)
SELECT * FROM listed
WHERE (%(min_probability)s::float8 IS NULL OR probability >= %(min_probability)s::float8)
  AND (%(risk_band)s::text IS NULL OR risk_band = %(risk_band)s::text)
  AND (%(has_overdue)s::boolean IS NULL OR (overdue_invoices > 0) = %(has_overdue)s::boolean)
  AND {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: profile
SELECT c.id, c.external_id, c.source, c.name, c.industry, c.country, c.size_class, c.key_account,
       c.customer_since, c.deleted_at,
       (SELECT count(*) FROM sites s WHERE s.customer_id = c.id AND s.deleted_at IS NULL) AS sites,
       (SELECT count(*) FROM contacts k WHERE k.customer_id = c.id AND k.deleted_at IS NULL)
           AS contacts,
       EXISTS (SELECT 1 FROM active_customers(%(on)s, 365) a WHERE a.customer_id = c.id)
           AS active
FROM customers c
WHERE c.id = %(customer_id)s

-- name: machines
-- The customer's installed base (sold machines, deleted from it, left out), joined by serial to
-- the ingester's machine, with when it was last heard of (the rollup's latest sample) and
-- whether that is more than %(silent_days)s days before the day's end (NULL: never heard of).
SELECT ib.id AS installed_base_id, ib.serial, ib.model, ib.commissioned_on, ib.warranty_end,
       m.id AS machine_id, m.online, h.last_seen,
       h.last_seen < (%(on)s::date + 1)::timestamptz - make_interval(days => %(silent_days)s)
           AS silent
FROM installed_base ib
LEFT JOIN machines m ON m.serial = ib.serial
LEFT JOIN LATERAL (SELECT max(d.last_seen) AS last_seen FROM machine_days d
                   WHERE d.machine_id = m.id) h ON true
WHERE ib.customer_id = %(customer_id)s AND ib.deleted_at IS NULL
ORDER BY ib.serial, ib.id

-- name: invoice_totals
-- Open invoices (status open, not deleted, issued by the day) per currency; overdue: due before it.
SELECT currency, count(*) AS open_invoices, sum(net_amount) AS open_amount,
       count(*) FILTER (WHERE due_on < %(on)s) AS overdue_invoices,
       coalesce(sum(net_amount) FILTER (WHERE due_on < %(on)s), 0) AS overdue_amount,
       min(due_on) FILTER (WHERE due_on < %(on)s) AS oldest_due_on
FROM invoices
WHERE customer_id = %(customer_id)s AND deleted_at IS NULL AND status = 'open'
  AND issued_on <= %(on)s
GROUP BY currency
ORDER BY currency

-- name: order_totals
-- Orders placed in the 365 days up to the day (not draft, cancelled or deleted), per currency.
SELECT currency, count(*) AS orders, sum(net_amount) AS amount, max(ordered_on) AS last_ordered_on
FROM orders
WHERE customer_id = %(customer_id)s AND deleted_at IS NULL
  AND status NOT IN ('draft', 'cancelled')
  AND ordered_on > %(on)s::date - 365 AND ordered_on <= %(on)s
GROUP BY currency
ORDER BY currency

-- name: figures
-- The customer's own figures over the 365 days up to the day, with the KPIs' definitions
-- (docs/kpis.md): after-sales revenue (after_sales_revenue) against the 365 days before; purchase
-- days (an invoice, not draft/cancelled/deleted, with a positive spare_parts or field_service
-- line, as invoiced); NPS of its answers (one per contact, its latest; an answer without a
-- contact alone; deleted ones not).
WITH recent AS (
    SELECT revenue FROM after_sales_revenue(%(on)s::date - 364, %(on)s::date, %(rep)s)
    WHERE customer_id = %(customer_id)s
),
earlier AS (
    SELECT revenue FROM after_sales_revenue(%(on)s::date - 729, %(on)s::date - 365, %(rep)s)
    WHERE customer_id = %(customer_id)s
),
purchase_days AS (
    SELECT count(DISTINCT i.issued_on) AS days
    FROM invoices i
    WHERE i.customer_id = %(customer_id)s AND i.deleted_at IS NULL
      AND i.status NOT IN ('draft', 'cancelled')
      AND i.issued_on > %(on)s::date - 365 AND i.issued_on <= %(on)s
      AND EXISTS (SELECT 1 FROM invoice_lines l
                  WHERE l.invoice_id = i.id AND l.deleted_at IS NULL
                    AND l.kind IN ('spare_parts', 'field_service') AND l.net_amount > 0)
),
answers AS (
    SELECT DISTINCT ON (coalesce(contact_id::text, 'answer ' || id)) score
    FROM survey_responses
    WHERE customer_id = %(customer_id)s AND deleted_at IS NULL
      AND answered_at >= (%(on)s::date - 364)::timestamptz
      AND answered_at < (%(on)s::date + 1)::timestamptz
    ORDER BY coalesce(contact_id::text, 'answer ' || id), answered_at DESC, id DESC
)
SELECT (SELECT coalesce(sum(revenue), 0) FROM recent) AS revenue_12m,
       (SELECT coalesce(sum(revenue), 0) FROM earlier) AS revenue_prev_12m,
       (SELECT days FROM purchase_days) AS purchase_days_12m,
       count(*) AS nps_responses,
       count(*) FILTER (WHERE score >= 9) AS promoters,
       count(*) FILTER (WHERE score BETWEEN 7 AND 8) AS passives,
       count(*) FILTER (WHERE score <= 6) AS detractors
FROM answers

-- name: value
-- The latest valuation on or before the day, in the reporting currency.
SELECT valued_on, method, total_clv, parts_clv, contract_derl_value, contract_annual_value,
       contract_renewals, contract_expected_lifetime_years, p_alive, expected_purchases_12m,
       expected_spend_per_purchase, currency, discount_rate, horizon_months, inputs
FROM customer_values
WHERE customer_id = %(customer_id)s AND valued_on <= %(on)s AND currency = %(rep)s
ORDER BY valued_on DESC
LIMIT 1

-- name: risk
-- The latest score on or before the day, and the latest one at least a week before it.
SELECT s.scored_on, s.probability, s.method, s.model_version, s.horizon_days, s.reasons,
       s.annual_value, s.currency,
       round(s.annual_value * s.probability::numeric, 2) AS revenue_at_risk,
       w.scored_on AS week_before_on, w.probability AS week_before_probability
FROM churn_scores s
LEFT JOIN LATERAL (SELECT p.scored_on, p.probability FROM churn_scores p
                   WHERE p.customer_id = s.customer_id AND p.scored_on <= s.scored_on - 7
                   ORDER BY p.scored_on DESC LIMIT 1) w ON true
WHERE s.customer_id = %(customer_id)s AND s.scored_on <= %(on)s
ORDER BY s.scored_on DESC
LIMIT 1

-- name: segments
-- The latest assignment of each behavioural kind on or before the day, and the contract tier.
SELECT kind AS dimension, segment, assigned_on, inputs
FROM (SELECT DISTINCT ON (kind) kind, segment, assigned_on, inputs
      FROM segment_memberships
      WHERE customer_id = %(customer_id)s AND assigned_on <= %(on)s
      ORDER BY kind, assigned_on DESC) m
UNION ALL
SELECT 'tier', segment, NULL, NULL FROM customer_segments('tier', %(on)s)
WHERE customer_id = %(customer_id)s
ORDER BY dimension

-- name: changes
-- What changed in the 7 days up to the day (after %(on)s - 7, up to %(on)s): one row per item,
-- newest first. Risk and segment changes are internal (the caller leaves them out for a portal
-- user: %(internal)s).
WITH w AS (SELECT %(on)s::date - 7 AS since, %(on)s::date AS until)
SELECT * FROM (
    SELECT 'risk' AS kind, s.scored_on AS day,
           format('churn risk %%s%%%% on %%s, %%s%%%% on %%s (%%s points)',
                  round(s.probability::numeric * 100), s.scored_on,
                  round(p.probability::numeric * 100), p.scored_on,
                  to_char(round((s.probability - p.probability)::numeric * 100), 'FMSG990'))
               AS text,
           'customer' AS entity, s.customer_id::text AS entity_id
    FROM churn_scores s, w,
         LATERAL (SELECT q.scored_on, q.probability FROM churn_scores q
                  WHERE q.customer_id = s.customer_id AND q.scored_on <= s.scored_on - 7
                  ORDER BY q.scored_on DESC LIMIT 1) p
    WHERE %(internal)s AND s.customer_id = %(customer_id)s
      AND s.scored_on = (SELECT max(scored_on) FROM churn_scores
                         WHERE customer_id = %(customer_id)s AND scored_on <= w.until)
      AND s.scored_on > w.since
    UNION ALL
    SELECT 'segment', m.assigned_on,
           format('%%s: %%s, was %%s on %%s', m.kind, m.segment, b.segment, b.assigned_on),
           'customer', m.customer_id::text
    FROM segment_memberships m, w,
         LATERAL (SELECT o.segment, o.assigned_on FROM segment_memberships o
                  WHERE o.customer_id = m.customer_id AND o.kind = m.kind
                    AND o.assigned_on <= w.since
                  ORDER BY o.assigned_on DESC LIMIT 1) b
    WHERE %(internal)s AND m.customer_id = %(customer_id)s
      AND m.assigned_on = (SELECT max(assigned_on) FROM segment_memberships x
                           WHERE x.customer_id = m.customer_id AND x.kind = m.kind
                             AND x.assigned_on <= w.until)
      AND m.assigned_on > w.since AND m.segment <> b.segment
    UNION ALL
    SELECT 'invoice_issued', i.issued_on,
           format('invoice %%s issued: %%s %%s, due %%s', coalesce(i.number, i.external_id),
                  i.net_amount, i.currency, coalesce(i.due_on::text, '-')),
           'invoice', i.id::text
    FROM invoices i, w
    WHERE i.customer_id = %(customer_id)s AND i.deleted_at IS NULL AND i.status <> 'draft'
      AND i.issued_on > w.since AND i.issued_on <= w.until
    UNION ALL
    -- Fell due in the week and still open on the day.
    SELECT 'invoice_overdue', i.due_on + 1,
           format('invoice %%s overdue: %%s %%s, due %%s', coalesce(i.number, i.external_id),
                  i.net_amount, i.currency, i.due_on),
           'invoice', i.id::text
    FROM invoices i, w
    WHERE i.customer_id = %(customer_id)s AND i.deleted_at IS NULL AND i.status = 'open'
      AND i.due_on >= w.since AND i.due_on < w.until
    UNION ALL
    SELECT 'invoice_paid', i.paid_on,
           format('invoice %%s paid: %%s %%s', coalesce(i.number, i.external_id), i.net_amount,
                  i.currency),
           'invoice', i.id::text
    FROM invoices i, w
    WHERE i.customer_id = %(customer_id)s AND i.deleted_at IS NULL
      AND i.paid_on > w.since AND i.paid_on <= w.until
    UNION ALL
    SELECT 'order', o.ordered_on,
           format('%%s order %%s (%%s): %%s %%s', replace(o.kind, '_', ' '),
                  coalesce(o.number, o.external_id), o.status, o.net_amount, o.currency),
           'order', o.id::text
    FROM orders o, w
    WHERE o.customer_id = %(customer_id)s AND o.deleted_at IS NULL AND o.status <> 'draft'
      AND o.ordered_on > w.since AND o.ordered_on <= w.until
    UNION ALL
    SELECT 'nps_answer', r.answered_at::date,
           format('survey answer %%s of 10%%s', r.score,
                  coalesce(': "' || nullif(r.comment, '') || '"', '')),
           'survey_response', r.id::text
    FROM survey_responses r, w
    WHERE %(internal)s AND r.customer_id = %(customer_id)s AND r.deleted_at IS NULL
      AND r.answered_at >= (w.since + 1)::timestamptz AND r.answered_at < (w.until + 1)::timestamptz
    UNION ALL
    SELECT 'contract_decision', d.decided_on,
           format('contract %%s: %%s (term ending %%s)',
                  coalesce(c.contract_number, c.external_id), d.outcome, d.previous_ends_on),
           'contract', c.id::text
    FROM contract_renewals d JOIN service_contracts c ON c.id = d.contract_id, w
    WHERE c.customer_id = %(customer_id)s AND d.deleted_at IS NULL AND c.deleted_at IS NULL
      AND d.decided_on > w.since AND d.decided_on <= w.until
    UNION ALL
    SELECT 'contract_started', c.starts_on,
           format('contract %%s started: %%s %%s a year', coalesce(c.contract_number, c.external_id),
                  c.annual_value, c.currency),
           'contract', c.id::text
    FROM service_contracts c, w
    WHERE c.customer_id = %(customer_id)s AND c.deleted_at IS NULL AND c.status <> 'draft'
      AND c.starts_on > w.since AND c.starts_on <= w.until
    UNION ALL
    -- Its last day was in the week (ends_on + 1 is the first day without it).
    SELECT 'contract_ended', c.ends_on + 1,
           format('contract %%s ended on %%s (%%s)', coalesce(c.contract_number, c.external_id),
                  c.ends_on, c.status),
           'contract', c.id::text
    FROM service_contracts c, w
    WHERE c.customer_id = %(customer_id)s AND c.deleted_at IS NULL
      AND c.status NOT IN ('draft', 'cancelled')
      AND c.ends_on >= w.since AND c.ends_on < w.until
    UNION ALL
    -- Went silent in the week: last heard of more than %(silent_days)s days before the day's end,
    -- but not yet a week earlier.
    SELECT 'machine_silent', (h.last_seen + make_interval(days => %(silent_days)s))::date,
           format('machine %%s (%%s) silent since %%s', ib.serial, ib.model,
                  to_char(h.last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"')),
           'machine', ib.serial
    FROM installed_base ib
    JOIN machines m ON m.serial = ib.serial
    CROSS JOIN w
    CROSS JOIN LATERAL (SELECT max(d.last_seen) AS last_seen FROM machine_days d
                        WHERE d.machine_id = m.id) h
    WHERE ib.customer_id = %(customer_id)s AND ib.deleted_at IS NULL
      AND h.last_seen < (w.until + 1)::timestamptz - make_interval(days => %(silent_days)s)
      AND h.last_seen >= (w.since + 1)::timestamptz - make_interval(days => %(silent_days)s)
) items
ORDER BY day DESC, kind, entity_id

-- name: risk_history
SELECT scored_on, probability, method, model_version, horizon_days, reasons, annual_value,
       currency, round(annual_value * probability::numeric, 2) AS revenue_at_risk
FROM churn_scores
WHERE customer_id = %(customer_id)s AND {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: invoices
SELECT id, number, external_id, issued_on, due_on, paid_on, status, currency, net_amount,
       status = 'open' AND coalesce(due_on < %(on)s, false) AS overdue,
       CASE WHEN status = 'open' AND due_on < %(on)s THEN %(on)s::date - due_on END AS days_overdue
FROM invoices
WHERE customer_id = %(customer_id)s AND deleted_at IS NULL
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(overdue)s::boolean IS NULL
       OR (status = 'open' AND coalesce(due_on < %(on)s, false)) = %(overdue)s::boolean)
  AND {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: orders
SELECT id, number, external_id, kind, ordered_on, status, currency, net_amount,
       (SELECT count(*) FROM order_lines l WHERE l.order_id = o.id AND l.deleted_at IS NULL)
           AS lines
FROM orders o
WHERE customer_id = %(customer_id)s AND deleted_at IS NULL
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: contracts
-- Every contract of the customer (not deleted) with its renewal decisions, oldest first.
SELECT c.id, c.contract_number, c.external_id, c.scope, c.installed_base_id, c.tier,
       c.starts_on, c.ends_on, c.notice_period_days, c.ends_on - c.notice_period_days AS notice_by,
       c.auto_renew, c.annual_value, c.currency, c.status,
       c.status NOT IN ('draft', 'cancelled') AND c.starts_on <= %(on)s AND c.ends_on >= %(on)s
           AS live,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                     'decided_on', r.decided_on, 'outcome', r.outcome,
                     'previous_ends_on', r.previous_ends_on, 'new_ends_on', r.new_ends_on,
                     'previous_value', r.previous_value, 'new_value', r.new_value)
                     ORDER BY r.decided_on, r.id)
                 FROM contract_renewals r
                 WHERE r.contract_id = c.id AND r.deleted_at IS NULL), '[]'::jsonb) AS renewals
FROM service_contracts c
WHERE c.customer_id = %(customer_id)s AND c.deleted_at IS NULL
  AND (%(live)s::boolean IS NULL
       OR (c.status NOT IN ('draft', 'cancelled') AND c.starts_on <= %(on)s
           AND c.ends_on >= %(on)s) = %(live)s::boolean)
  AND {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: nps
WITH answers AS (
    SELECT r.id, r.answered_at, r.score,
           CASE WHEN r.score >= 9 THEN 'promoter' WHEN r.score >= 7 THEN 'passive'
                ELSE 'detractor' END AS category,
           r.comment, r.contact_id, k.name AS contact_name, k.role AS contact_role
    FROM survey_responses r
    LEFT JOIN contacts k ON k.id = r.contact_id
    WHERE r.customer_id = %(customer_id)s AND r.deleted_at IS NULL
)
SELECT * FROM answers
WHERE (%(category)s::text IS NULL OR category = %(category)s::text)
  AND {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: exists
SELECT EXISTS (SELECT 1 FROM customers WHERE id = %(customer_id)s) AS found

-- name: risk_days
-- The customer's churn probability per scoring day, the latest %(history_days)s on or before the
-- day, oldest first.
SELECT day, probability FROM (
    SELECT scored_on AS day, probability FROM churn_scores
    WHERE customer_id = %(customer_id)s AND scored_on <= %(on)s
    ORDER BY scored_on DESC LIMIT %(history_days)s) r
ORDER BY day

-- name: value_days
-- Its total CLV per valuation day in the reporting currency, the same way.
SELECT day, total_clv FROM (
    SELECT valued_on AS day, total_clv FROM customer_values
    WHERE customer_id = %(customer_id)s AND valued_on <= %(on)s AND currency = %(rep)s
    ORDER BY valued_on DESC LIMIT %(history_days)s) v
ORDER BY day
