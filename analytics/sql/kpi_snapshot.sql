-- KPI snapshots of analytics/kpi_snapshot.py (table kpi_snapshots, migration 016). A row whose
-- period_last is its taken_on is the period containing that day, to date; an earlier
-- period_last is a complete period.

-- name: delete_day
DELETE FROM kpi_snapshots WHERE taken_on = %(on)s;

-- name: copy_rows
COPY kpi_snapshots (taken_on, period_kind, period_start, period_last, dimension, segment, kpi,
                    value, numerator, denominator, unit, counts, currency)
FROM STDIN;

-- name: day_counts
-- Rows and segments stored per dimension on the day (segments over every period of it).
SELECT dimension, count(*) AS stored, count(DISTINCT segment) AS segments
FROM kpi_snapshots WHERE taken_on = %(on)s
GROUP BY dimension ORDER BY dimension;

-- name: history
-- One KPI of one segment over the days it was taken: current (true) the period containing each
-- day, to date; (false) the complete period before it. Served by kpi_snapshots_history.
SELECT taken_on, period_kind, period_start, period_last, dimension, segment, kpi, value,
       numerator, denominator, unit, counts, currency
FROM kpi_snapshots
WHERE kpi = %(kpi)s AND dimension = %(dimension)s AND segment = %(segment)s
  AND period_kind = %(period_kind)s
  AND taken_on >= coalesce(%(since)s::date, '-infinity')
  AND (period_last = taken_on) = %(current)s
ORDER BY taken_on;

-- name: latest
-- Every row of the latest day taken on or before %(on)s (any day if NULL), optionally of one
-- dimension and one period kind.
WITH day AS (
    SELECT max(taken_on) AS taken_on FROM kpi_snapshots
    WHERE taken_on <= coalesce(%(on)s::date, 'infinity')
)
SELECT s.taken_on, s.period_kind, s.period_start, s.period_last, s.dimension, s.segment, s.kpi,
       s.value, s.numerator, s.denominator, s.unit, s.counts, s.currency
FROM kpi_snapshots s JOIN day USING (taken_on)
WHERE s.dimension = coalesce(%(dimension)s::text, s.dimension)
  AND s.period_kind = coalesce(%(period_kind)s::text, s.period_kind)
ORDER BY s.period_kind, s.period_start, s.period_last, s.dimension, s.kpi, s.segment;
