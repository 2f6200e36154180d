-- Behavioural segments (docs/segments.md): per customer, day and kind, the segment it was
-- assigned to and the figures that put it there, kept with their day so that retention can be
-- followed per segment as it was on each period's start. Kinds:
--   value_tier  A / B / C from total_clv of customer_values (top 20%, next 30%, rest), 'unrated'
--   rfm         RFM groups from parts and field-service purchases ('champions', 'at risk', ...)
--   usage       usage profiles from machine_days ('heavy', 'steady', 'declining', 'idle', ...)
-- A rerun on the same day replaces that day's rows of the kinds it assigns.
CREATE TABLE segment_memberships (
    customer_id integer     NOT NULL REFERENCES customers,
    kind        text        NOT NULL CHECK (kind IN ('value_tier', 'rfm', 'usage')),
    assigned_on date        NOT NULL,
    segment     text        NOT NULL,
    inputs      jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, kind, assigned_on)
);
CREATE INDEX segment_memberships_kind_day ON segment_memberships (kind, assigned_on);

-- The behavioural segment of every customer for a kind, as of a day: its latest assignment on or
-- before that day, 'unassigned' when it has none (so that, like customer_segments of migration
-- 007, the segments of a kind partition the customers). assigned_on says how old it is. KPIs cut
-- by a behavioural kind call this with the period's first day: membership is what was known when
-- the period began, never what the period's own outcome made of the customer.
CREATE FUNCTION behavioural_segments(segment_kind text, on_day date)
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
