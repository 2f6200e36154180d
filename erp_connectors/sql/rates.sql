-- Exchange rates into the reporting currency, loaded from a file (erp_connectors/rates.py). A load
-- is recorded as a sync run of entity 'exchange_rates', so its rejects are in the same report as
-- every other file's.

-- name: start_run
INSERT INTO sync_runs (source, entity, full_resync)
VALUES (%(source)s, 'exchange_rates', true)
RETURNING id

-- name: upsert_exchange_rates
-- A rate is written only when it differs: loading the same file twice writes nothing.
INSERT INTO exchange_rates AS t (currency, valid_from, rate)
SELECT r.currency, r.valid_from, r.rate
FROM unnest(%(currency)s::text[], %(valid_from)s::date[], %(rate)s::numeric[])
     AS r(currency, valid_from, rate)
ON CONFLICT (currency, valid_from) DO UPDATE SET rate = EXCLUDED.rate
WHERE t.rate IS DISTINCT FROM EXCLUDED.rate

-- name: insert_rejects
INSERT INTO sync_rejects (run_id, source, entity, external_id, line_number, reason, record)
SELECT %(run_id)s::bigint, %(source)s::text, 'exchange_rates', NULL, r.line_number, r.reason,
       r.record::jsonb
FROM unnest(%(line_number)s::integer[], %(reason)s::text[], %(record)s::text[])
     AS r(line_number, reason, record)

-- name: finish_run
UPDATE sync_runs
SET status = 'succeeded', finished_at = now(), rows_upserted = %(upserted)s,
    rows_rejected = %(rejected)s
WHERE id = %(run_id)s
