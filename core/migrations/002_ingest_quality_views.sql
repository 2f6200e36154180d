-- Data quality of what machines send, for people who fix publishers: where dead letters come
-- from and why, and how much Sparkplug traffic each edge node lost.

-- One row per source (JSON: tenant + serial; Sparkplug: group + edge node; anything else: the
-- topic's first level), with how many messages failed and the latest reason.
CREATE VIEW dead_letter_sources AS
SELECT source,
       count(*)                                                AS distinct_messages,
       sum(times_received)                                     AS times_received,
       min(first_received_at)                                  AS first_received_at,
       max(last_received_at)                                   AS last_received_at,
       (array_agg(reason ORDER BY last_received_at DESC))[1]   AS latest_reason,
       (array_agg(topic ORDER BY last_received_at DESC))[1]    AS latest_topic
FROM (
    SELECT d.*,
           CASE
               WHEN split_part(topic, '/', 1) = 'oem' AND split_part(topic, '/', 3) = 'machines'
                   THEN 'oem/' || split_part(topic, '/', 2) || '/' || split_part(topic, '/', 4)
               WHEN split_part(topic, '/', 1) = 'spBv1.0'
                   THEN 'spBv1.0/' || split_part(topic, '/', 2) || '/' || split_part(topic, '/', 4)
               ELSE split_part(topic, '/', 1)
           END AS source
    FROM dead_letters d
) AS letters
GROUP BY source;

-- Per edge node and day: detected gaps, sequence numbers lost, rebirths asked for.
CREATE VIEW sparkplug_gap_days AS
SELECT spb_group,
       spb_edge_node,
       date_trunc('day', detected_at)                   AS day,
       count(*) FILTER (WHERE cause = 'seq_gap')        AS seq_gaps,
       coalesce(sum(missing), 0)                        AS seq_numbers_missing,
       count(*) FILTER (WHERE cause = 'no_birth')       AS data_without_birth,
       count(*) FILTER (WHERE rebirth_requested)        AS rebirths_requested
FROM sparkplug_gaps
GROUP BY spb_group, spb_edge_node, date_trunc('day', detected_at);
