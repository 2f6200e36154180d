-- What the sync engine needs beyond 003: every synced table can mark a row deleted (kept, never
-- removed) and remembers when the source last changed it; the data-quality report of each sync.

ALTER TABLE machine_models
    ADD COLUMN source_updated_at timestamptz,
    ADD COLUMN deleted_at timestamptz;
-- Two sources may both describe a model (an ERP and a product-data file); each keeps its own row.
ALTER TABLE machine_models DROP CONSTRAINT machine_models_model_key;
ALTER TABLE machine_models ADD CONSTRAINT machine_models_source_model_key UNIQUE (source, model);

ALTER TABLE contract_renewals
    ADD COLUMN source_updated_at timestamptz,
    ADD COLUMN deleted_at timestamptz;
ALTER TABLE invoice_lines
    ADD COLUMN source_updated_at timestamptz,
    ADD COLUMN deleted_at timestamptz;
ALTER TABLE order_lines
    ADD COLUMN source_updated_at timestamptz,
    ADD COLUMN deleted_at timestamptz;
ALTER TABLE survey_responses
    ADD COLUMN source_updated_at timestamptz,
    ADD COLUMN deleted_at timestamptz;

-- A run records what it read and how many rows a complete read found gone.
ALTER TABLE sync_runs
    ADD COLUMN records_read integer NOT NULL DEFAULT 0,
    ADD COLUMN rows_deleted integer NOT NULL DEFAULT 0;

-- The data-quality report written after every `erp sync`: per source and entity what was read,
-- written, rejected and why (grouped), plus the cross-checks no single record shows (serials the
-- machines report that no ERP knows and the reverse, amounts in currencies without a rate).
CREATE TABLE sync_reports (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sources     text[]      NOT NULL,
    full_resync boolean     NOT NULL,
    ok          boolean     NOT NULL,
    report      jsonb       NOT NULL
);
CREATE INDEX sync_reports_created ON sync_reports (created_at DESC);
