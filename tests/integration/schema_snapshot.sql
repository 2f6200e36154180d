-- The catalogue of the current schema, for tests/integration/schema_snapshot.py. Objects that
-- belong to an extension (TimescaleDB puts its API functions in public) are left out; names
-- sort in the C collation, so the order is the same on every server.

-- name: enums
SELECT t.typname, string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
WHERE t.typnamespace = current_schema()::regnamespace
GROUP BY t.typname
ORDER BY t.typname COLLATE "C"

-- name: relations
SELECT c.relname, CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                                 ELSE 'table' END
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY c.relname COLLATE "C"

-- name: columns
-- Identity columns with their sequence's start and step (metrics start at 100: 1-99 are
-- reserved); the sequence itself is not listed apart.
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
       s.seqstart, s.seqincrement
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
LEFT JOIN pg_depend sd ON sd.refclassid = 'pg_class'::regclass AND sd.refobjid = c.oid
                      AND sd.refobjsubid = a.attnum AND sd.classid = 'pg_class'::regclass
                      AND sd.deptype = 'i'
                      AND a.attidentity <> ''
LEFT JOIN pg_sequence s ON s.seqrelid = sd.objid
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
ORDER BY c.relname COLLATE "C", a.attnum

-- name: constraints
-- Not-null constraints are the columns' nullability (PostgreSQL 18 lists them here too).
SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE c.relnamespace = current_schema()::regnamespace AND k.contype <> 'n'
ORDER BY c.relname COLLATE "C", k.conname COLLATE "C"

-- name: indexes
SELECT tablename, indexname, indexdef
FROM pg_indexes
WHERE schemaname = current_schema()
ORDER BY tablename COLLATE "C", indexname COLLATE "C"

-- name: triggers
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal
ORDER BY c.relname COLLATE "C", t.tgname COLLATE "C"

-- name: dimensions
SELECT hypertable_name, dimension_number, column_name, column_type::text, dimension_type,
       time_interval::text, integer_interval, num_partitions
FROM timescaledb_information.dimensions
WHERE hypertable_schema = current_schema()
ORDER BY hypertable_name COLLATE "C", dimension_number

-- name: views
-- The server's own rendering of the query, as a digest: its columns are listed apart.
SELECT c.relname,
       left(encode(sha256(convert_to(pg_get_viewdef(c.oid, true), 'UTF8')), 'hex'), 16)
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('v', 'm')
ORDER BY c.relname COLLATE "C"

-- name: functions
SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
       CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate'
                      WHEN 'w' THEN 'window' ELSE 'function' END,
       l.lanname,
       CASE p.provolatile WHEN 'i' THEN 'IMMUTABLE' WHEN 's' THEN 'STABLE' ELSE 'VOLATILE' END,
       p.proisstrict, p.prosecdef,
       CASE p.proparallel WHEN 's' THEN 'SAFE' WHEN 'r' THEN 'RESTRICTED' ELSE 'UNSAFE' END,
       left(encode(sha256(convert_to(p.prosrc, 'UTF8')), 'hex'), 16)
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = current_schema()::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
ORDER BY p.proname COLLATE "C", pg_get_function_identity_arguments(p.oid) COLLATE "C"
