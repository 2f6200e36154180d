-- The renewals pipeline and its revenue at risk (analytics/renewals.py, docs/api-finance.md).
--
-- A contract is in the pipeline on %(on)s when it is in force that day (the churn features'
-- own rule: not deleted, not a draft, started, not ended) and its notice date (term end minus
-- the notice period) or its term end falls within %(within_days)s days. Its term and value are
-- the features' too: a renewal already recorded for a term ending on or after %(on)s means the
-- running term ends at that renewal's previous end, at its previous value. The churn
-- probability is the customer's score of the latest scoring day on or before %(on)s (the day
-- analytics.churn.revenue_at_risk reads), and revenue at risk = the term's value in the
-- reporting currency x that probability: the contract's share of the customer's revenue at
-- risk, which sums over its contracts in force to the customer's.

-- name: pipeline_rows
WITH p AS (
    SELECT %(on)s::date AS t, %(reporting)s::char(3) AS rc, %(within_days)s::integer AS n
),
scored AS (
    SELECT max(scored_on) AS day FROM churn_scores WHERE scored_on <= (SELECT t FROM p)
),
terms AS (
    SELECT sc.id, sc.contract_number, sc.customer_id, sc.scope, sc.installed_base_id, sc.tier,
           sc.auto_renew, sc.notice_period_days, sc.currency, sc.starts_on,
           coalesce(nxt.previous_ends_on, sc.ends_on) AS ends_on,
           coalesce(nxt.previous_value, sc.annual_value) AS annual_value,
           CASE WHEN nxt.decided_on <= p.t THEN nxt.outcome END AS decision
    FROM service_contracts sc
    CROSS JOIN p
    LEFT JOIN LATERAL (
        SELECT r.previous_ends_on, r.previous_value, r.outcome, r.decided_on
        FROM contract_renewals r
        WHERE r.contract_id = sc.id AND r.deleted_at IS NULL AND r.previous_ends_on >= p.t
        ORDER BY r.previous_ends_on LIMIT 1) nxt ON true
    WHERE sc.deleted_at IS NULL AND sc.status <> 'draft'
      AND sc.starts_on <= p.t AND sc.ends_on >= p.t
),
valued AS (
    SELECT tm.*, tm.ends_on - tm.notice_period_days AS notice_date, c.name AS customer_name,
           round(to_reporting(tm.annual_value, tm.currency, p.t, p.rc), 2) AS value_reporting,
           p.rc AS reporting_currency, s.probability AS churn_probability,
           s.reasons, s.scored_on
    FROM terms tm
    CROSS JOIN p
    JOIN customers c ON c.id = tm.customer_id
    LEFT JOIN churn_scores s
           ON s.customer_id = tm.customer_id AND s.scored_on = (SELECT day FROM scored)
),
pipe AS (
    SELECT v.*, round(v.value_reporting * v.churn_probability::numeric, 2) AS at_risk,
           v.notice_date - p.t AS days_to_notice, v.ends_on - p.t AS days_to_end
    FROM valued v
    CROSS JOIN p
    WHERE ((%(due)s IN ('notice', 'either') AND v.notice_date BETWEEN p.t AND p.t + p.n)
           OR (%(due)s IN ('end', 'either') AND v.ends_on BETWEEN p.t AND p.t + p.n))
      AND (%(auto_renew)s::boolean IS NULL OR v.auto_renew = %(auto_renew)s::boolean)
      AND (%(tier)s::text IS NULL OR v.tier = %(tier)s::text)
      AND (%(customer_id)s::integer IS NULL OR v.customer_id = %(customer_id)s::integer)
      AND (%(min_probability)s::float8 IS NULL
           OR v.churn_probability >= %(min_probability)s::float8)
      AND (%(dimension)s::text IS NULL OR v.customer_id IN (
               SELECT ps.customer_id FROM period_segments(%(dimension)s::text, p.t, p.t) ps
               WHERE ps.segment = %(segment)s::text))
)

-- name: pipeline_page
-- The sort keys are the names a caller sorts by, never NULL (core/paging.py): no rate or no
-- score sorts as -1.
SELECT *
FROM (SELECT pipe.*, pipe.id AS contract_id,
             coalesce(pipe.value_reporting, -1) AS value,
             coalesce(pipe.at_risk, -1) AS revenue_at_risk,
             coalesce(pipe.churn_probability, -1) AS probability
      FROM pipe) page
WHERE {keyset}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: pipeline_by_month
-- The pipeline's revenue at risk by the month of its notice date or its term end (%(due)s) and
-- by the segments of %(by_dimension)s on %(on)s (a customer in several segments counts in each,
-- one in none is 'none', as in analytics.churn.revenue_at_risk_by_segment).
SELECT date_trunc('month', CASE WHEN %(due)s = 'notice' THEN pipe.notice_date
                                ELSE pipe.ends_on END)::date AS month,
       coalesce(g.segment, 'none') AS segment,
       count(*) AS contracts,
       count(DISTINCT pipe.customer_id) AS customers,
       sum(pipe.value_reporting) AS value,
       sum(pipe.at_risk) AS revenue_at_risk,
       count(*) FILTER (WHERE pipe.churn_probability IS NULL) AS unscored
FROM pipe
LEFT JOIN period_segments(%(by_dimension)s::text, %(on)s::date, %(on)s::date) g
       ON g.customer_id = pipe.customer_id
GROUP BY 1, 2
ORDER BY 1, 2
