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
-- The scores of the latest scoring day on or before %(on)s: annual contract value x probability.
-- Only that day's: a customer not scored on it was no longer on the books (churned), and an
-- older score of it is no longer at risk.
SELECT s.customer_id, c.external_id, c.name, s.scored_on, s.probability, s.method,
       s.annual_value, s.currency, s.annual_value * s.probability::numeric AS revenue_at_risk
FROM churn_scores s
JOIN customers c ON c.id = s.customer_id
WHERE s.scored_on = (SELECT max(scored_on) FROM churn_scores WHERE scored_on <= %(on)s)
ORDER BY s.customer_id

-- name: revenue_at_risk_by_segment
-- Per month and segment: the scores of the month's last scoring day, summed (a customer not
-- scored that day had churned). %(dimension)s is a KPI cut (analytics.kpi.DIMENSIONS), with the
-- KPIs' segments and labels (definitions/period_segments.sql), as of the scoring day, what was
-- known when the score was made. A customer in several segments (two machine models) counts in each; one
-- in none (no machine, in the model cut) is 'none', so the segments still add up to every score.
-- Months from %(since)s to %(until)s.
WITH last_day AS (
    SELECT date_trunc('month', scored_on)::date AS month, max(scored_on) AS scored_on
    FROM churn_scores
    WHERE scored_on >= %(since)s AND scored_on <= %(until)s
    GROUP BY 1
),
scores AS (
    SELECT d.month, d.scored_on, s.customer_id, s.probability, s.annual_value, s.currency
    FROM last_day d
    JOIN churn_scores s ON s.scored_on = d.scored_on
),
seg AS (
    SELECT d.scored_on, ps.customer_id, ps.segment
    FROM last_day d
    CROSS JOIN LATERAL period_segments(%(dimension)s, d.scored_on, d.scored_on) ps
)
SELECT l.month,
       coalesce(g.segment, 'none') AS segment,
       l.currency,
       count(*) AS customers,
       sum(l.annual_value) AS annual_value,
       round(sum(l.annual_value * l.probability::numeric), 2) AS revenue_at_risk,
       avg(l.probability) AS mean_probability
FROM scores l
LEFT JOIN seg g ON g.scored_on = l.scored_on AND g.customer_id = l.customer_id
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3

-- name: customer_external_ids
SELECT id, external_id FROM customers

-- Trained models (migrations 014 and 018, analytics/churn_models.py). The newest is the one
-- trained on the latest data, then the last stored; %(trained_by)s (NULL: any) leaves out models
-- that read data after that day.

-- name: save_model
INSERT INTO churn_models (version, method, trained_until, horizon_days, churn_events,
                          training_rows, sklearn_version, format, model)
VALUES (%(version)s, %(method)s, %(trained_until)s, %(horizon_days)s, %(churn_events)s,
        %(training_rows)s, %(sklearn_version)s, %(format)s, %(model)s)
RETURNING id

-- name: prune_models
-- All but the newest %(keep)s.
DELETE FROM churn_models
WHERE id NOT IN (SELECT id FROM churn_models
                 ORDER BY trained_until DESC, id DESC
                 LIMIT %(keep)s)

-- name: latest_model
SELECT id, version, sklearn_version, format, model
FROM churn_models
WHERE %(trained_by)s::date IS NULL OR trained_until <= %(trained_by)s::date
ORDER BY trained_until DESC, id DESC
LIMIT 1

-- name: newest_trained_until
SELECT max(trained_until) FROM churn_models
