-- CLV inputs at a cut-off day %(on)s, in the reporting currency %(rep)s (docs/clv.md, "Applied to
-- our tables"). Only what was issued or started on or before the cut-off counts.

-- name: parts_history
-- Per customer: the parts and field-service purchase record in BG/NBD form (weeks).
-- A purchase day: a day with an invoice (not draft, not cancelled, not deleted) carrying lines of
-- kind spare_parts or field_service (not deleted) whose net sum that day, in the reporting
-- currency at the issue day, is positive. Credit notes are negative lines: on a day with
-- purchases they net against that day; a credit-only day is no purchase, and nets against the
-- customer's latest purchase day before it (the purchase it most likely refunds). A purchase day
-- netted to zero or below is no purchase any more. Credits before any purchase are kept aside
-- (unmatched_credit). Lines in a currency without a rate on their day cannot be converted: they
-- are counted (unconverted_lines), never silently taken as zero.
WITH line AS (
    SELECT i.customer_id, i.issued_on AS day,
           to_reporting(l.net_amount, i.currency, i.issued_on, %(rep)s) AS amount
    FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id
    WHERE i.deleted_at IS NULL AND l.deleted_at IS NULL
      AND i.status NOT IN ('draft', 'cancelled')
      AND l.kind IN ('spare_parts', 'field_service')
      AND i.issued_on <= %(on)s
),
unconverted AS (
    SELECT customer_id, count(*) AS lines FROM line WHERE amount IS NULL GROUP BY customer_id
),
day_net AS (
    SELECT customer_id, day, sum(amount) AS amount
    FROM line WHERE amount IS NOT NULL
    GROUP BY customer_id, day
),
credit AS (
    SELECT c.customer_id, c.day, c.amount,
           (SELECT max(p.day) FROM day_net p
            WHERE p.customer_id = c.customer_id AND p.day < c.day AND p.amount > 0) AS refunds
    FROM day_net c
    WHERE c.amount <= 0
),
purchase AS (
    SELECT p.customer_id, p.day,
           p.amount + coalesce((SELECT sum(c.amount) FROM credit c
                                WHERE c.customer_id = p.customer_id AND c.refunds = p.day),
                               0) AS amount
    FROM day_net p
    WHERE p.amount > 0
),
bought AS (
    SELECT customer_id, day, amount,
           min(day) OVER (PARTITION BY customer_id) AS first_day
    FROM purchase WHERE amount > 0
),
record AS (
    SELECT customer_id,
           min(day) AS first_day,
           max(day) AS last_day,
           count(*) - 1 AS frequency,
           sum(amount) AS spend,
           sum(amount) FILTER (WHERE day > first_day) AS repeat_spend
    FROM bought
    GROUP BY customer_id
)
SELECT r.customer_id, r.first_day, r.last_day,
       r.frequency::integer AS frequency,
       (r.last_day - r.first_day) / 7.0 AS recency_weeks,
       (%(on)s::date - r.first_day) / 7.0 AS t_weeks,
       r.spend,
       r.repeat_spend / nullif(r.frequency, 0) AS monetary_value,
       coalesce((SELECT sum(c.amount) FROM credit c
                 WHERE c.customer_id = r.customer_id AND c.refunds IS NULL), 0)
           AS unmatched_credit,
       coalesce(u.lines, 0)::integer AS unconverted_lines
FROM record r
LEFT JOIN unconverted u USING (customer_id)
UNION ALL
-- Customers whose every line lacks a rate still show up, so the run can say so.
SELECT u.customer_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, u.lines::integer
FROM unconverted u
WHERE NOT EXISTS (SELECT 1 FROM record r WHERE r.customer_id = u.customer_id)
ORDER BY customer_id

-- name: contract_relationships
-- Per customer: its contract relationship, counted by customer, not by contract row. A live
-- contract is one not draft, not cancelled, not deleted (as active_customers, definitions/),
-- started on or before the cut-off; its end is taken no later than the cut-off (what comes after
-- is not known then). The customer's live contracts form chains (definitions/contract_chains.sql:
-- a contract starting within %(grace)s days after the latest end continues one). The
-- relationship of the sBG cohorts is the first chain; the
-- relationship valued is the chain live at the cut-off (ending on it, since ends are capped).
-- Renewals so far = whole years from the start of the chain live at the cut-off (anniversaries
-- passed), the sBG's period count. contract_renewals adds the recorded renewal decisions
-- (renewed, upgraded, downgraded; not deleted; decided by the cut-off) on any of the customer's
-- contracts, for the record only: a chain of Odoo orders and one long contract with yearly
-- renewal rows both count one relationship.
WITH chains AS (
    SELECT customer_id, chain, started_on, ended_on, contracts
    FROM contract_chains(%(on)s::date, %(grace)s::integer)
),
current_value AS (
    SELECT customer_id,
           sum(to_reporting(annual_value, currency, %(on)s::date, %(rep)s)) AS annual_value,
           count(*) FILTER (WHERE to_reporting(annual_value, currency, %(on)s::date, %(rep)s)
                            IS NULL) AS unconverted
    FROM service_contracts
    WHERE deleted_at IS NULL AND status NOT IN ('draft', 'cancelled')
      AND starts_on <= %(on)s AND ends_on >= %(on)s
    GROUP BY customer_id
),
decisions AS (
    SELECT sc.customer_id, count(*) AS renewals
    FROM contract_renewals r JOIN service_contracts sc ON sc.id = r.contract_id
    WHERE r.deleted_at IS NULL AND sc.deleted_at IS NULL
      AND r.outcome IN ('renewed', 'upgraded', 'downgraded') AND r.decided_on <= %(on)s
    GROUP BY sc.customer_id
)
SELECT f.customer_id,
       f.started_on AS first_started_on,
       f.ended_on AS first_ended_on,
       (SELECT max(chain) FROM chains c WHERE c.customer_id = f.customer_id)::integer AS chains,
       cur.started_on AS current_started_on,
       cur.contracts::integer AS current_contracts,
       extract(year FROM age(%(on)s::date, cur.started_on))::integer AS renewals,
       (cur.started_on + make_interval(
            years => extract(year FROM age(%(on)s::date, cur.started_on))::integer + 1))::date
           AS next_anniversary,
       v.annual_value,
       coalesce(v.unconverted, 0)::integer AS unconverted_contracts,
       coalesce(d.renewals, 0)::integer AS renewal_decisions
FROM chains f
LEFT JOIN chains cur ON cur.customer_id = f.customer_id AND cur.ended_on >= %(on)s
LEFT JOIN current_value v ON v.customer_id = f.customer_id
LEFT JOIN decisions d ON d.customer_id = f.customer_id
WHERE f.chain = 1
ORDER BY f.customer_id

-- name: renewal_cohorts
-- Survivors of each renewal cohort: customers whose first contract relationship (the first
-- chain, as in contract_relationships) started in year Y, counted at anniversary k = 0, 1, ...
-- of their own start as long as the relationship reached that day. Anniversary k is reported
-- only while it has passed by the cut-off for every member (31 December of Y plus k years on or
-- before it), so every count is complete; a cohort with no anniversary passed yet carries no
-- information about renewals and is left out.
WITH first_chain AS (
    SELECT customer_id, started_on, ended_on
    FROM contract_chains(%(on)s::date, %(grace)s::integer)
    WHERE chain = 1
),
cohort AS (
    SELECT extract(year FROM started_on)::integer AS cohort, started_on, ended_on
    FROM first_chain
),
periods AS (
    SELECT c.cohort, k
    FROM (SELECT DISTINCT cohort FROM cohort) c,
         generate_series(0, extract(year FROM %(on)s::date)::integer - c.cohort) AS k
    WHERE make_date(c.cohort, 12, 31) + make_interval(years => k) <= %(on)s
)
SELECT p.cohort, p.k AS period,
       count(*) FILTER (WHERE c.ended_on >= c.started_on + make_interval(years => p.k))::integer
           AS survivors
FROM periods p JOIN cohort c ON c.cohort = p.cohort
WHERE p.cohort IN (SELECT cohort FROM periods WHERE k >= 1)
GROUP BY p.cohort, p.k
ORDER BY p.cohort, p.k

-- name: delete_values_on
-- A rerun replaces the day's values, also of customers no longer valued.
DELETE FROM customer_values WHERE valued_on = %(on)s

-- name: store_value
INSERT INTO customer_values (
    customer_id, valued_on, method, p_alive, expected_purchases_12m,
    expected_spend_per_purchase, parts_clv, contract_annual_value, contract_renewals,
    contract_expected_lifetime_years, contract_derl_value, total_clv, currency, discount_rate,
    horizon_months, inputs, parameters)
VALUES (%(customer_id)s, %(valued_on)s, %(method)s, %(p_alive)s, %(expected_purchases_12m)s,
        %(expected_spend_per_purchase)s, %(parts_clv)s, %(contract_annual_value)s,
        %(contract_renewals)s, %(contract_expected_lifetime_years)s, %(contract_derl_value)s,
        %(total_clv)s, %(currency)s, %(discount_rate)s, %(horizon_months)s, %(inputs)s,
        %(parameters)s)
ON CONFLICT (customer_id, valued_on) DO UPDATE SET
    method = EXCLUDED.method, p_alive = EXCLUDED.p_alive,
    expected_purchases_12m = EXCLUDED.expected_purchases_12m,
    expected_spend_per_purchase = EXCLUDED.expected_spend_per_purchase,
    parts_clv = EXCLUDED.parts_clv, contract_annual_value = EXCLUDED.contract_annual_value,
    contract_renewals = EXCLUDED.contract_renewals,
    contract_expected_lifetime_years = EXCLUDED.contract_expected_lifetime_years,
    contract_derl_value = EXCLUDED.contract_derl_value, total_clv = EXCLUDED.total_clv,
    currency = EXCLUDED.currency, discount_rate = EXCLUDED.discount_rate,
    horizon_months = EXCLUDED.horizon_months, inputs = EXCLUDED.inputs,
    parameters = EXCLUDED.parameters, created_at = now()

-- name: values_on
SELECT cv.customer_id, c.external_id, cv.method, cv.p_alive, cv.expected_purchases_12m,
       cv.expected_spend_per_purchase, cv.parts_clv, cv.contract_annual_value,
       cv.contract_renewals, cv.contract_expected_lifetime_years, cv.contract_derl_value,
       cv.total_clv, cv.currency, cv.inputs
FROM customer_values cv JOIN customers c ON c.id = cv.customer_id
WHERE cv.valued_on = %(on)s
ORDER BY cv.customer_id
