-- Reads of the stored customer values (analytics/customer_value.py; table customer_values,
-- docs/clv.md). The run read is the latest valuation day on or before %(on)s in the reporting
-- currency (one run values every customer with the same fitted models, as the value tiers read
-- it: analytics/sql/segments.sql).

-- name: values_rows
WITH run AS (
    SELECT max(valued_on) AS valued_on FROM customer_values
    WHERE valued_on <= %(on)s::date AND currency = %(reporting)s::char(3)
),
vals AS (
    SELECT cv.customer_id, c.external_id, c.name AS customer_name, cv.valued_on, cv.method,
           cv.p_alive, cv.expected_purchases_12m, cv.parts_clv, cv.contract_annual_value,
           cv.contract_expected_lifetime_years, cv.contract_derl_value, cv.total_clv,
           cv.currency
    FROM customer_values cv
    JOIN run ON cv.valued_on = run.valued_on
    JOIN customers c ON c.id = cv.customer_id
    WHERE cv.currency = %(reporting)s::char(3)
      AND (%(dimension)s::text IS NULL OR cv.customer_id IN (
               SELECT ps.customer_id FROM period_segments(%(dimension)s::text, run.valued_on,
                                                          run.valued_on) ps
               WHERE ps.segment = %(segment)s::text))
)

-- name: values_page
SELECT *
FROM (SELECT v.*, v.customer_id AS id FROM vals v) page
WHERE {keyset}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: values_by_segment
-- Per segment of a KPI cut (period_segments on the valuation day): a customer in several
-- segments counts in each, one in none is 'none'.
WITH run AS (
    SELECT max(valued_on) AS valued_on FROM customer_values
    WHERE valued_on <= %(on)s::date AND currency = %(reporting)s::char(3)
)
SELECT coalesce(g.segment, 'none') AS segment, run.valued_on, cv.currency,
       count(*) AS customers,
       sum(cv.total_clv) AS total_clv,
       round(avg(cv.total_clv), 2) AS mean_clv,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY cv.total_clv) AS median_clv,
       sum(cv.parts_clv) AS parts_clv,
       sum(cv.contract_derl_value) AS contract_value
FROM customer_values cv
JOIN run ON cv.valued_on = run.valued_on
LEFT JOIN period_segments(%(dimension)s::text, (SELECT valued_on FROM run),
                          (SELECT valued_on FROM run)) g ON g.customer_id = cv.customer_id
WHERE cv.currency = %(reporting)s::char(3)
GROUP BY 1, 2, 3
ORDER BY 1
