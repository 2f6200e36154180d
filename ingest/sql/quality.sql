-- name: dead_letter_sources
SELECT source, distinct_messages, times_received, last_received_at, latest_reason
FROM dead_letter_sources
WHERE last_received_at > now() - %(since)s::interval
ORDER BY times_received DESC, source
LIMIT %(limit)s

-- name: sparkplug_gap_days
SELECT spb_group, spb_edge_node, day, seq_gaps, seq_numbers_missing, data_without_birth,
       rebirths_requested
FROM sparkplug_gap_days
WHERE day > now() - %(since)s::interval
ORDER BY day DESC, seq_numbers_missing DESC
LIMIT %(limit)s
