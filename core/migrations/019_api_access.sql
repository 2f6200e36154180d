-- The API's users, keys, audit trail and idempotent writes, and the role it logs in as
-- (docs/api.md, docs/tenancy.md).
--
-- A tenant is a database of its own; inside one, the API's role sees rows through row-level
-- security: staff (admin, service, finance, viewer) see every customer's rows, a customer's own
-- users (the portal) only their company's. The scope is set per transaction with
-- set_config('app.scope', ..., true) and set_config('app.customer_id', ..., true); left unset,
-- nothing is visible. RLS is enabled, not forced: the owner (ingester, ERP sync, analytics jobs)
-- is not subject to it, and oemr_api is neither owner nor superuser.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'oemr_api') THEN
        -- LOGIN without a password: the site's pg_hba and ALTER ROLE .. PASSWORD decide who may
        -- log in as it (local provisioning trusts loopback).
        CREATE ROLE oemr_api LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END
$$;

CREATE TABLE api_users (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text        NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9._@-]{1,100}$'),
    -- argon2id, as argon2-cffi writes it; NULL for users who only log in through the OEM's
    -- identity provider.
    password_hash text,
    role          text        NOT NULL
                  CHECK (role IN ('admin', 'service', 'finance', 'viewer', 'customer')),
    -- A portal user belongs to one customer; staff to none.
    customer_id   integer REFERENCES customers (id),
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'customer') = (customer_id IS NOT NULL))
);

-- Keys for programs: shown once, stored as a SHA-256 of the secret part (a random 256-bit secret
-- needs no slow hash), found by their public prefix.
CREATE TABLE api_keys (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix       text        NOT NULL UNIQUE,
    secret_hash  bytea       NOT NULL,
    name         text        NOT NULL,
    role         text        NOT NULL
                 CHECK (role IN ('admin', 'service', 'finance', 'viewer', 'customer')),
    customer_id  integer REFERENCES customers (id),
    created_by   integer REFERENCES api_users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CHECK ((role = 'customer') = (customer_id IS NOT NULL))
);

-- Every write through the API: who, what, when, the row before and after.
CREATE TABLE audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,
    actor_role text        NOT NULL,
    action     text        NOT NULL,
    entity     text        NOT NULL,
    entity_id  text,
    before     jsonb,
    after      jsonb,
    request_id text
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, at DESC);
CREATE INDEX audit_log_at ON audit_log (at DESC);

-- A write sent twice with the same Idempotency-Key gets the first answer again.
CREATE TABLE idempotency_keys (
    actor        text        NOT NULL,
    key          text        NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    route        text        NOT NULL,
    request_hash bytea       NOT NULL,
    status       integer     NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);

-- Whether the transaction's scope lets it see a customer's rows (fail closed: no scope, no rows).
CREATE OR REPLACE FUNCTION api_customer_visible(customer integer) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE current_setting('app.scope', true)
               WHEN 'staff' THEN true
               WHEN 'customer' THEN customer = nullif(current_setting('app.customer_id', true), '')::integer
               ELSE false
           END
$$;

CREATE OR REPLACE FUNCTION api_staff() RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT current_setting('app.scope', true) = 'staff' $$;

DO $$
DECLARE
    t text;
BEGIN
    -- Tables that carry a customer_id.
    FOREACH t IN ARRAY ARRAY['sites', 'contacts', 'installed_base', 'service_contracts',
                             'invoices', 'orders', 'survey_responses', 'churn_scores',
                             'customer_values', 'segment_memberships']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY customer_scope ON %I USING (api_customer_visible(customer_id))', t);
    END LOOP;
    -- Tables that belong to a customer through their parent (which has its own policy).
    ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
    CREATE POLICY customer_scope ON customers USING (api_customer_visible(id));
    ALTER TABLE contract_renewals ENABLE ROW LEVEL SECURITY;
    CREATE POLICY customer_scope ON contract_renewals
        USING (api_staff() OR contract_id IN (SELECT id FROM service_contracts));
    ALTER TABLE invoice_lines ENABLE ROW LEVEL SECURITY;
    CREATE POLICY customer_scope ON invoice_lines
        USING (api_staff() OR invoice_id IN (SELECT id FROM invoices));
    ALTER TABLE order_lines ENABLE ROW LEVEL SECURITY;
    CREATE POLICY customer_scope ON order_lines
        USING (api_staff() OR order_id IN (SELECT id FROM orders));
    -- Machines belong to a customer through the installed base's serial.
    ALTER TABLE machines ENABLE ROW LEVEL SECURITY;
    CREATE POLICY customer_scope ON machines
        USING (api_staff() OR serial IN (SELECT serial FROM installed_base));
    FOREACH t IN ARRAY ARRAY['telemetry', 'machine_states', 'machine_events', 'machine_days']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY customer_scope ON %I USING (api_staff() OR machine_id IN (SELECT id FROM machines))', t);
    END LOOP;
    -- Platform-wide tables: staff only.
    FOREACH t IN ARRAY ARRAY['dead_letters', 'sparkplug_gaps', 'kpi_snapshots', 'sync_runs',
                             'sync_reports', 'sync_rejects', 'sync_pending', 'sync_cursors',
                             'analytics_job_runs', 'churn_models', 'audit_log']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY staff_only ON %I USING (api_staff())', t);
    END LOOP;
END
$$;

GRANT USAGE ON SCHEMA public TO oemr_api;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO oemr_api;
GRANT INSERT, UPDATE ON api_users, api_keys, idempotency_keys TO oemr_api;
GRANT INSERT ON audit_log TO oemr_api;
-- What later migrations create is readable by the API too; each of them says what it may write,
-- and tests/integration/api/test_access.py fails on a readable table with customer rows and no
-- policy.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO oemr_api;
