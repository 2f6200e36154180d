-- Data quality of what machines send, for people who fix publishers (`ingest quality`): one row
-- per source (JSON: tenant + serial; Sparkplug: group + edge node; anything else: the topic's
-- first level), with how many messages failed and the latest reason.
CREATE OR REPLACE VIEW dead_letter_sources WITH (security_invoker = true) AS
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
