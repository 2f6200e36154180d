-- Segments as the API shows them (analytics/segment_kpis.py): customers per segment of every
-- cut, and the trend of each KPI per segment from the daily snapshots (kpi_snapshots).

-- name: segment_counts
-- Per dimension and segment on the day: customers of the table (archived ones too, as the KPIs
-- count them) and those active on the day (active_customers). Segments are the KPIs'
-- (period_segments: attributes as now, behavioural kinds as the latest assignment on or before
-- the day, 'unassigned' without one).
SELECT d.dimension, s.segment, count(*) AS customers, count(a.customer_id) AS active
FROM unnest(%(dimensions)s::text[]) AS d (dimension)
CROSS JOIN LATERAL period_segments(d.dimension, %(on)s, %(on)s) s
LEFT JOIN active_customers(%(on)s, %(window)s) a ON a.customer_id = s.customer_id
GROUP BY d.dimension, s.segment
ORDER BY array_position(%(dimensions)s::text[], d.dimension), s.segment

-- name: complete_periods
-- Each complete period of the cut as the latest snapshot on or before %(on)s (any day if NULL)
-- took it (a later taking has the later data), with its place in the sequence of periods
-- (%(months)s months each) for the trend, and the slope of value per period over them.
WITH taken AS (
    SELECT DISTINCT ON (segment, kpi, period_start)
           segment, kpi, period_start, period_last, value, numerator, denominator, taken_on
    FROM kpi_snapshots
    WHERE dimension = %(dimension)s AND period_kind = %(period_kind)s
      AND (%(kpi)s::text IS NULL OR kpi = %(kpi)s::text)
      AND period_last < taken_on
      AND taken_on <= coalesce(%(on)s::date, 'infinity')
    ORDER BY segment, kpi, period_start, taken_on DESC
)
SELECT segment, kpi, period_start, period_last, value, numerator, denominator, taken_on,
       regr_slope(value::float8,
                  ((extract(year FROM period_start) * 12 + extract(month FROM period_start) - 1)
                   / %(months)s)::float8) OVER (PARTITION BY segment, kpi) AS slope
FROM taken
ORDER BY segment, kpi, period_start
