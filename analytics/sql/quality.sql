-- Data quality as the API reads it (analytics/quality.py): the same views and tables `ingest
-- quality` and `erp report` read. Lists are keyset pages: {where} and {order} come from
-- core.paging.keyset over a fixed set of columns, with its %(keyset_...)s parameters.

-- name: dead_letter_sources
-- Sources (a JSON machine, a Sparkplug edge node, a stray topic root) with dead letters received
-- since %(since)s, per the view dead_letter_sources.
SELECT * FROM (
    SELECT source, distinct_messages, times_received, first_received_at, last_received_at,
           latest_reason, latest_topic
    FROM dead_letter_sources
    WHERE last_received_at >= %(since)s
) AS s
WHERE {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: dead_letters
-- Dead letters one by one, with the start of their payload (base64, without line breaks) for
-- whoever fixes the publisher.
SELECT * FROM (
    SELECT id, topic, reason, times_received, first_received_at, last_received_at,
           payload_size,
           translate(encode(substring(payload FROM 1 FOR %(preview)s), 'base64'), E'\n', '')
               AS payload_start
    FROM dead_letters
    WHERE last_received_at >= %(since)s
      AND (%(topic_prefix)s::text IS NULL
           OR left(topic, length(%(topic_prefix)s::text)) = %(topic_prefix)s::text)
      AND (%(reason)s::text IS NULL OR strpos(lower(reason), lower(%(reason)s::text)) > 0)
) AS d
WHERE {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: sparkplug_gap_days
-- Sparkplug losses per edge node and UTC day, per the view sparkplug_gap_days; the key names
-- the node and the day.
SELECT * FROM (
    SELECT spb_group || '/' || spb_edge_node || '/' || to_char(day AT TIME ZONE 'UTC',
                                                               'YYYY-MM-DD') AS id,
           spb_group, spb_edge_node, (day AT TIME ZONE 'UTC')::date AS day, seq_gaps,
           seq_numbers_missing, data_without_birth, rebirths_requested
    FROM sparkplug_gap_days
    WHERE day >= date_trunc('day', %(since)s::timestamptz)
      AND (%(spb_group)s::text IS NULL OR spb_group = %(spb_group)s::text)
) AS g
WHERE {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: sync_runs
SELECT * FROM (
    SELECT id, source, entity, full_resync, status, started_at,
           finished_at,
           records_read, rows_upserted, rows_rejected, rows_deleted, error
    FROM sync_runs
    WHERE (%(source)s::text IS NULL OR source = %(source)s::text)
      AND (%(entity)s::text IS NULL OR entity = %(entity)s::text)
      AND (%(status)s::text IS NULL OR status = %(status)s::text)
) AS r
WHERE {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: sync_rejects
SELECT * FROM (
    SELECT id, run_id, source, entity, external_id, line_number, reason, record, rejected_at
    FROM sync_rejects
    WHERE (%(run_id)s::bigint IS NULL OR run_id = %(run_id)s::bigint)
      AND (%(source)s::text IS NULL OR source = %(source)s::text)
      AND (%(entity)s::text IS NULL OR entity = %(entity)s::text)
) AS r
WHERE {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: latest_sync_report
-- The newest stored report of `erp sync` (erp_connectors/quality.py writes it).
SELECT id, created_at, sources, full_resync, ok, report
FROM sync_reports
ORDER BY id DESC
LIMIT 1

-- name: machines_without_erp
-- Machines the ingester registered whose serial no live installed-base row of any ERP has: their
-- usage counts for no customer (the ERP report's check of the same name).
SELECT * FROM (
    SELECT m.id, m.tenant, m.serial, m.protocol, m.first_seen_at, m.online
    FROM machines m
    WHERE NOT EXISTS (SELECT 1 FROM installed_machines im WHERE im.serial = m.serial)
) AS m
WHERE {where}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: erp_machines_never_seen
-- Live installed base the ingester has never heard from (installed_machines without a machine):
-- not connected, or a serial typed differently in the ERP.
SELECT * FROM (
    SELECT im.installed_base_id AS id, ib.source, ib.external_id, im.serial, im.model,
           im.customer_id, c.name AS customer, im.site_id, im.commissioned_on
    FROM installed_machines im
    JOIN installed_base ib ON ib.id = im.installed_base_id
    JOIN customers c ON c.id = im.customer_id
    WHERE im.machine_id IS NULL
) AS n
WHERE {where}
ORDER BY {order}
LIMIT %(keyset_limit)s
