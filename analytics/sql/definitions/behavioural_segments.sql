-- The behavioural segment of every customer for a kind (docs/segments.md), as of a day: its
-- latest assignment in segment_memberships on or before that day, 'unassigned' when it has none
-- (so that, like customer_segments, the segments of a kind partition the customers). assigned_on
-- says how old it is. KPIs cut by a behavioural kind call this with the period's first day:
-- membership is what was known when the period began, never what the period's own outcome made
-- of the customer.
CREATE OR REPLACE FUNCTION behavioural_segments(segment_kind text, on_day date)
RETURNS TABLE (customer_id integer, segment text, assigned_on date)
LANGUAGE sql STABLE
AS $$
    SELECT c.id, coalesce(m.segment, 'unassigned'), m.assigned_on
    FROM customers c
    LEFT JOIN LATERAL (SELECT s.segment, s.assigned_on FROM segment_memberships s
                       WHERE s.customer_id = c.id AND s.kind = segment_kind
                         AND s.assigned_on <= on_day
                       ORDER BY s.assigned_on DESC
                       LIMIT 1) m ON true
$$;
