-- Per Sparkplug edge node and day (`ingest quality`): detected gaps, sequence numbers lost,
-- data without a birth, rebirths asked for.
CREATE OR REPLACE VIEW sparkplug_gap_days WITH (security_invoker = true) AS
SELECT spb_group,
       spb_edge_node,
       date_trunc('day', detected_at)                   AS day,
       count(*) FILTER (WHERE cause = 'seq_gap')        AS seq_gaps,
       coalesce(sum(missing), 0)                        AS seq_numbers_missing,
       count(*) FILTER (WHERE cause = 'no_birth')       AS data_without_birth,
       count(*) FILTER (WHERE rebirth_requested)        AS rebirths_requested
FROM sparkplug_gaps
GROUP BY spb_group, spb_edge_node, date_trunc('day', detected_at);
