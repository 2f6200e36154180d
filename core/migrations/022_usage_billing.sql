-- Pay-per-use billing terms of service contracts (analytics/billing.py, docs/api-finance.md).
--
-- The ERPs the platform syncs do not say which contracts bill by use, so finance records it
-- here through the API: a rate per operating hour in a currency, the hours included in each
-- calendar month, and the day billing by use starts. Billable hours come from the machines'
-- own counters (machine_days), never from the ERP.
CREATE TABLE usage_billing (
    contract_id     integer       PRIMARY KEY REFERENCES service_contracts (id),
    rate_per_hour   numeric(14,4) NOT NULL CHECK (rate_per_hour >= 0),
    currency        char(3)       NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- Per calendar month, before any hour is billed.
    included_hours  numeric(10,2) NOT NULL DEFAULT 0 CHECK (included_hours >= 0),
    starts_on       date          NOT NULL,
    updated_at      timestamptz   NOT NULL DEFAULT now(),
    updated_by      text          NOT NULL
);

-- A customer's (portal) scope sees the terms of its own contracts only (through the contract's
-- own policy of migration 019); staff see all.
ALTER TABLE usage_billing ENABLE ROW LEVEL SECURITY;
CREATE POLICY customer_scope ON usage_billing
    USING (api_staff() OR contract_id IN (SELECT id FROM service_contracts));
-- Finance manages the terms through the API (routes admit finance and admin only).
GRANT INSERT, UPDATE, DELETE ON usage_billing TO oemr_api;
