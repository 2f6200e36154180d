-- What `oem-retention up` shows, read every second or so on one held connection: cheap reads
-- only, never a scan of a big table.

-- name: table_rows
-- Rows of each table as PostgreSQL's statistics have them, not count(*): a count scans the table
-- (19 million telemetry rows in the demo world), this reads the catalog. A hypertable's rows are
-- in its chunks, its inheritance children; each relation counts its live tuples from the
-- cumulative statistics (they follow inserts within seconds), or reltuples from the last ANALYZE
-- when that is larger (the statistics start from zero after a crash or a reset). NULL: no such
-- table.
SELECT n.name,
       CASE WHEN to_regclass(n.name) IS NOT NULL THEN (
           SELECT coalesce(sum(greatest(pg_stat_get_live_tuples(c.oid), c.reltuples)), 0)::bigint
           FROM pg_class c
           WHERE c.oid = to_regclass(n.name)
              OR c.oid IN (SELECT inhrelid FROM pg_inherits
                           WHERE inhparent = to_regclass(n.name)))
       END
FROM unnest(%(tables)s::text[]) WITH ORDINALITY AS n(name, ord)
ORDER BY n.ord

-- name: latest_job_runs
-- The latest run of each named analytics job (NULLs: it never ran), by the (job, started_at)
-- index.
SELECT j.job, r.status, r.started_at, r.finished_at, r.detail
FROM unnest(%(jobs)s::text[]) WITH ORDINALITY AS j(job, ord)
LEFT JOIN LATERAL (
    SELECT status, started_at, finished_at, detail
    FROM analytics_job_runs
    WHERE job = j.job
    ORDER BY started_at DESC
    LIMIT 1
) r ON true
ORDER BY j.ord

-- name: latest_sync
-- The latest ERP sync's report: when, whether every entity synced, and which did not.
SELECT created_at, ok, sources,
       ARRAY(SELECT e->>'source' || '/' || (e->>'entity')
             FROM jsonb_array_elements(report->'entities') e
             WHERE e->>'status' <> 'succeeded')
FROM sync_reports
ORDER BY created_at DESC
LIMIT 1
