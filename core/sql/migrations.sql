-- name: create_history
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: lock
SELECT pg_advisory_lock(%(key)s)

-- name: unlock
SELECT pg_advisory_unlock(%(key)s)

-- name: history
SELECT version, name, checksum FROM schema_migrations ORDER BY version

-- name: record
INSERT INTO schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)

-- name: definitions_history
SELECT name, checksum FROM schema_definitions

-- name: record_definition
INSERT INTO schema_definitions (name, source, checksum)
VALUES (%(name)s, %(source)s, %(checksum)s)
ON CONFLICT (name) DO UPDATE
SET source = EXCLUDED.source, checksum = EXCLUDED.checksum, applied_at = now()

-- name: definition_objects
-- What bears a definition's name in the schema its unqualified CREATE lands in: functions (one
-- per argument list) and views. oid tells an old function from a new overload.
SELECT 'function' AS kind, p.oid::bigint AS oid
FROM pg_proc p
WHERE p.pronamespace = current_schema()::regnamespace AND p.proname = %(name)s
  AND p.prokind = 'f'
UNION ALL
SELECT 'view', c.oid::bigint
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = %(name)s
  AND c.relkind = 'v'
