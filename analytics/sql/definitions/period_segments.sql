-- The segment(s) of every customer for a KPI period, one definition for every query that cuts
-- by segment: attribute dimensions (customer_segments) as of the period's last day, behavioural
-- kinds (behavioural_segments) as of its first, what was known when the period began (a
-- customer churning in the period would otherwise count as 'lost'/'idle' in its own period).
-- One branch is always empty: customer_segments knows no behavioural kind, and the second
-- branch is filtered out for any other dimension.
-- depends on: customer_segments, behavioural_segments
CREATE OR REPLACE FUNCTION period_segments(dimension text, first_day date, last_day date)
RETURNS TABLE (customer_id integer, segment text)
LANGUAGE sql STABLE
AS $$
    SELECT customer_id, segment FROM customer_segments(dimension, last_day)
    UNION ALL
    SELECT customer_id, segment FROM behavioural_segments(dimension, first_day)
    WHERE dimension IN ('value_tier', 'rfm', 'usage')
$$;
