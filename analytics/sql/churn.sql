-- Churn-risk scores: stored with their day, and revenue at risk read from them
-- (analytics/churn.py, docs/churn-risk.md).

-- name: store_score
INSERT INTO churn_scores (customer_id, scored_on, horizon_days, probability, method, reasons,
                          model_version, annual_value, currency)
VALUES (%(customer_id)s, %(scored_on)s, %(horizon_days)s, %(probability)s, %(method)s,
        %(reasons)s, %(model_version)s, %(annual_value)s, %(currency)s)
ON CONFLICT (customer_id, scored_on) DO UPDATE SET
    horizon_days = excluded.horizon_days, probability = excluded.probability,
    method = excluded.method, reasons = excluded.reasons,
    model_version = excluded.model_version, annual_value = excluded.annual_value,
    currency = excluded.currency, created_at = now()

-- name: revenue_at_risk
-- Per customer, its latest score on or before %(on)s: annual contract value x probability.
SELECT DISTINCT ON (s.customer_id)
       s.customer_id, c.external_id, c.name, s.scored_on, s.probability, s.method,
       s.annual_value, s.currency, s.annual_value * s.probability::numeric AS revenue_at_risk
FROM churn_scores s
JOIN customers c ON c.id = s.customer_id
WHERE s.scored_on <= %(on)s
ORDER BY s.customer_id, s.scored_on DESC

-- name: revenue_at_risk_by_segment
-- Per month and segment: each customer's last score in the month, summed. %(segment)s is one of
-- all, industry, country, size_class, key_account; months from %(since)s to %(until)s.
WITH last_in_month AS (
    SELECT DISTINCT ON (s.customer_id, date_trunc('month', s.scored_on))
           date_trunc('month', s.scored_on)::date AS month, s.customer_id, s.probability,
           s.annual_value, s.currency
    FROM churn_scores s
    WHERE s.scored_on >= %(since)s AND s.scored_on <= %(until)s
    ORDER BY s.customer_id, date_trunc('month', s.scored_on), s.scored_on DESC
)
SELECT l.month,
       CASE %(segment)s WHEN 'all' THEN 'all'
                        WHEN 'industry' THEN coalesce(c.industry, 'unknown')
                        WHEN 'country' THEN coalesce(c.country::text, 'unknown')
                        WHEN 'size_class' THEN coalesce(c.size_class, 'unknown')
                        WHEN 'key_account' THEN CASE WHEN c.key_account THEN 'key account'
                                                     ELSE 'other' END
       END AS segment,
       l.currency,
       count(*) AS customers,
       sum(l.annual_value) AS annual_value,
       sum(l.annual_value * l.probability::numeric) AS revenue_at_risk,
       avg(l.probability) AS mean_probability
FROM last_in_month l
JOIN customers c ON c.id = l.customer_id
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3

-- name: customer_external_ids
SELECT id, external_id FROM customers
