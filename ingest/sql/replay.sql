-- Dead-letter replay (ingest/replay.py): the store's own queries (store.sql) write what decodes.

-- name: since
SELECT now() - %(ago)s::interval

-- name: dead_letters
-- The next chunk of the selection, in arrival order (ids only grow), from after the last one.
SELECT id, topic, payload, payload_size, reason, last_received_at
FROM dead_letters
WHERE id > %(after)s
  AND (%(reason)s::text IS NULL OR strpos(lower(reason), lower(%(reason)s::text)) > 0)
  AND (%(since)s::timestamptz IS NULL OR last_received_at >= %(since)s::timestamptz)
ORDER BY id
LIMIT %(limit)s

-- name: sparkplug_devices
-- Sparkplug machines registered by a birth the ingester stored: the only ones DATA is replayed
-- for (its serial may have come from that birth).
SELECT spb_group, spb_edge_node, spb_device FROM machines WHERE protocol = 'sparkplug'

-- name: set_reasons
-- What today's decoders say of the dead letters that still do not decode.
UPDATE dead_letters d SET reason = x.reason
FROM unnest(%(ids)s::bigint[], %(reasons)s::text[]) AS x(id, reason)
WHERE d.id = x.id AND d.reason <> x.reason
