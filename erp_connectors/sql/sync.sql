-- The sync engine's statements. Records arrive as one array per column and are written with
-- unnest, a page at a time. An upsert touches a row only when a synced value differs, so a
-- second sync of the same data writes nothing (same xmin, same synced_at) and its row count is
-- the number of rows that really changed.

-- name: lock_entity
-- One sync per source and entity at a time; a session lock, so it is released if we die.
SELECT pg_try_advisory_lock(%(lock_class)s::integer,
                            hashtext(%(source)s::text || '/' || %(entity)s::text))

-- name: unlock_entity
SELECT pg_advisory_unlock(%(lock_class)s::integer,
                          hashtext(%(source)s::text || '/' || %(entity)s::text))

-- name: abandon_runs
-- Called under the entity's lock: a run still 'running' is one whose process died.
UPDATE sync_runs
SET status = 'failed', finished_at = now(),
    error = 'interrupted: the process ended before the run finished (found by run '
            || %(run_id)s::text || ')'
WHERE source = %(source)s AND entity = %(entity)s AND status = 'running' AND id <> %(run_id)s

-- name: start_run
INSERT INTO sync_runs (source, entity, full_resync)
VALUES (%(source)s, %(entity)s, %(full)s)
RETURNING id

-- name: count_page
UPDATE sync_runs
SET rows_upserted = rows_upserted + %(upserted)s, rows_rejected = rows_rejected + %(rejected)s
WHERE id = %(run_id)s

-- name: finish_run
UPDATE sync_runs
SET status = %(status)s, finished_at = now(), error = %(error)s
WHERE id = %(run_id)s

-- name: read_cursor
SELECT cursor FROM sync_cursors WHERE source = %(source)s AND entity = %(entity)s

-- name: write_cursor
INSERT INTO sync_cursors (source, entity, cursor)
VALUES (%(source)s, %(entity)s, %(cursor)s)
ON CONFLICT (source, entity) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()

-- name: insert_rejects
INSERT INTO sync_rejects (run_id, source, entity, external_id, line_number, reason, record)
SELECT %(run_id)s::bigint, %(source)s::text, %(entity)s::text,
       r.external_id, r.line_number, r.reason, r.record::jsonb
FROM unnest(%(external_id)s::text[], %(line_number)s::integer[], %(reason)s::text[],
            %(record)s::text[]) AS r(external_id, line_number, reason, record)

-- name: customer_ids
SELECT external_id, id FROM customers
WHERE source = %(source)s AND external_id = ANY(%(external_ids)s::text[])

-- name: site_ids
SELECT s.external_id, s.id, c.external_id
FROM sites s
JOIN customers c ON c.id = s.customer_id
WHERE s.source = %(source)s AND s.external_id = ANY(%(external_ids)s::text[])

-- name: upsert_customers
INSERT INTO customers AS t (source, external_id, name, industry, country, size_class,
                            key_account, customer_since, source_updated_at)
SELECT %(source)s::text, r.*
FROM unnest(%(external_id)s::text[], %(name)s::text[], %(industry)s::text[],
            %(country)s::text[], %(size_class)s::text[], %(key_account)s::boolean[],
            %(customer_since)s::date[], %(source_updated_at)s::timestamptz[]) AS r
ON CONFLICT (source, external_id) DO UPDATE
SET name = EXCLUDED.name, industry = EXCLUDED.industry, country = EXCLUDED.country,
    size_class = EXCLUDED.size_class, key_account = EXCLUDED.key_account,
    customer_since = EXCLUDED.customer_since, source_updated_at = EXCLUDED.source_updated_at,
    synced_at = now()
WHERE (t.name, t.industry, t.country, t.size_class, t.key_account, t.customer_since,
       t.source_updated_at)
      IS DISTINCT FROM
      (EXCLUDED.name, EXCLUDED.industry, EXCLUDED.country, EXCLUDED.size_class,
       EXCLUDED.key_account, EXCLUDED.customer_since, EXCLUDED.source_updated_at)

-- name: upsert_sites
INSERT INTO sites AS t (source, external_id, customer_id, name, country, city,
                        source_updated_at)
SELECT %(source)s::text, r.*
FROM unnest(%(external_id)s::text[], %(customer_id)s::integer[], %(name)s::text[],
            %(country)s::text[], %(city)s::text[], %(source_updated_at)s::timestamptz[]) AS r
ON CONFLICT (source, external_id) DO UPDATE
SET customer_id = EXCLUDED.customer_id, name = EXCLUDED.name, country = EXCLUDED.country,
    city = EXCLUDED.city, source_updated_at = EXCLUDED.source_updated_at, synced_at = now()
WHERE (t.customer_id, t.name, t.country, t.city, t.source_updated_at)
      IS DISTINCT FROM
      (EXCLUDED.customer_id, EXCLUDED.name, EXCLUDED.country, EXCLUDED.city,
       EXCLUDED.source_updated_at)

-- name: upsert_installed_base
INSERT INTO installed_base AS t (source, external_id, serial, model, customer_id, site_id,
                                 commissioned_on, warranty_end, source_updated_at)
SELECT %(source)s::text, r.*
FROM unnest(%(external_id)s::text[], %(serial)s::text[], %(model)s::text[],
            %(customer_id)s::integer[], %(site_id)s::integer[], %(commissioned_on)s::date[],
            %(warranty_end)s::date[], %(source_updated_at)s::timestamptz[]) AS r
ON CONFLICT (source, external_id) DO UPDATE
SET serial = EXCLUDED.serial, model = EXCLUDED.model, customer_id = EXCLUDED.customer_id,
    site_id = EXCLUDED.site_id, commissioned_on = EXCLUDED.commissioned_on,
    warranty_end = EXCLUDED.warranty_end, source_updated_at = EXCLUDED.source_updated_at,
    synced_at = now()
WHERE (t.serial, t.model, t.customer_id, t.site_id, t.commissioned_on, t.warranty_end,
       t.source_updated_at)
      IS DISTINCT FROM
      (EXCLUDED.serial, EXCLUDED.model, EXCLUDED.customer_id, EXCLUDED.site_id,
       EXCLUDED.commissioned_on, EXCLUDED.warranty_end, EXCLUDED.source_updated_at)
