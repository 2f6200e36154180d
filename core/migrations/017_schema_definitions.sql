-- The repeatable definitions (functions and views, one file each in a domain's
-- sql/definitions/, core/migrate.py) as last applied: the runner re-applies a file whose
-- checksum differs from the one recorded here, or whose object is missing from the database.
-- One row per definition, replaced on every application (applied_at: the latest), like
-- Flyway's repeatable migrations but keyed by the object the file defines.
CREATE TABLE schema_definitions (
    name       text        PRIMARY KEY,    -- the function or view, and its file's name
    source     text        NOT NULL,       -- package/file it was applied from
    checksum   text        NOT NULL,       -- SHA-256 of the file's text
    applied_at timestamptz NOT NULL DEFAULT now()
);
