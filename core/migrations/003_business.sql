-- The business side, as the ERP knows it: customers and where they are, the installed base,
-- service contracts and their renewals, invoices, spare-parts and service orders, survey answers.
-- Every synced row keeps the system it came from and its id there (source, external_id), so a
-- number on a dashboard can be traced back to the ERP record. Money is numeric with its currency;
-- exchange_rates converts to the reporting currency. Deleted or cancelled records are kept and
-- marked (deleted_at, status), never removed: history is what retention is measured on.

-- Customers and the attributes segments are cut by.
CREATE TABLE customers (
    id                integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            text        NOT NULL,
    external_id       text        NOT NULL,
    name              text        NOT NULL,
    industry          text,
    country           char(2),                 -- ISO 3166-1 alpha-2
    size_class        text CHECK (size_class IN ('small', 'medium', 'large', 'enterprise')),
    key_account       boolean     NOT NULL DEFAULT false,
    customer_since    date,
    source_updated_at timestamptz,             -- write_date / lastModifiedDateTime / LastChangeDateTime
    synced_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    UNIQUE (source, external_id)
);

CREATE TABLE sites (
    id                integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            text        NOT NULL,
    external_id       text        NOT NULL,
    customer_id       integer     NOT NULL REFERENCES customers,
    name              text        NOT NULL,
    country           char(2),
    city              text,
    source_updated_at timestamptz,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    UNIQUE (source, external_id)
);
CREATE INDEX sites_customer ON sites (customer_id);

CREATE TABLE contacts (
    id                integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            text        NOT NULL,
    external_id       text        NOT NULL,
    customer_id       integer     NOT NULL REFERENCES customers,
    site_id           integer     REFERENCES sites,
    name              text        NOT NULL,
    role              text,
    email             text,
    phone             text,
    source_updated_at timestamptz,
    synced_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    UNIQUE (source, external_id)
);
CREATE INDEX contacts_customer ON contacts (customer_id);

-- What a machine model needs, from the OEM's product data: the service plan (due every N
-- operating hours or every N days, whichever comes first) and the OEM spare-parts spend that
-- normal wear implies per 1,000 operating hours. Maintenance adherence and parts capture are
-- measured against these.
CREATE TABLE machine_models (
    id                        integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source                    text           NOT NULL,
    external_id               text           NOT NULL,
    model                     text           NOT NULL UNIQUE,
    service_interval_hours    integer        CHECK (service_interval_hours > 0),
    service_interval_days     integer        CHECK (service_interval_days > 0),
    parts_value_per_1000h     numeric(14, 2) CHECK (parts_value_per_1000h >= 0),
    currency                  char(3),
    synced_at                 timestamptz    NOT NULL DEFAULT now(),
    UNIQUE (source, external_id),
    CHECK (parts_value_per_1000h IS NULL OR currency IS NOT NULL)
);

-- The installed base: machines sold, by serial. Joined to what the ingester registered through
-- the serial (view installed_machines), not a foreign key: the ERP and the machines are synced
-- independently and either may know a serial first.
CREATE TABLE installed_base (
    id                 integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source             text        NOT NULL,
    external_id        text        NOT NULL,
    serial             text        NOT NULL,
    model              text        NOT NULL,
    customer_id        integer     NOT NULL REFERENCES customers,
    site_id            integer     REFERENCES sites,
    commissioned_on    date,
    warranty_end       date,
    source_updated_at  timestamptz,
    synced_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz,
    UNIQUE (source, external_id)
);
CREATE INDEX installed_base_serial ON installed_base (serial);
CREATE INDEX installed_base_customer ON installed_base (customer_id);

CREATE VIEW installed_machines AS
SELECT ib.id AS installed_base_id, ib.serial, ib.model, ib.customer_id, ib.site_id,
       ib.commissioned_on, ib.warranty_end, m.id AS machine_id, m.online, m.first_seen_at
FROM installed_base ib
LEFT JOIN machines m ON m.serial = ib.serial
WHERE ib.deleted_at IS NULL;

-- Service contracts: on one machine or the whole customer. Renewal history is its own table.
CREATE TABLE service_contracts (
    id                 integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source             text          NOT NULL,
    external_id        text          NOT NULL,
    customer_id        integer       NOT NULL REFERENCES customers,
    installed_base_id  integer       REFERENCES installed_base,
    scope              text          NOT NULL CHECK (scope IN ('machine', 'customer')),
    contract_number    text,
    tier               text,
    starts_on          date          NOT NULL,
    ends_on            date          NOT NULL,
    notice_period_days integer       NOT NULL DEFAULT 90 CHECK (notice_period_days >= 0),
    auto_renew         boolean       NOT NULL DEFAULT false,
    annual_value       numeric(14, 2) NOT NULL CHECK (annual_value >= 0),
    currency           char(3)       NOT NULL,
    status             text          NOT NULL
                       CHECK (status IN ('draft', 'active', 'expired', 'cancelled', 'terminated')),
    source_updated_at  timestamptz,
    synced_at          timestamptz   NOT NULL DEFAULT now(),
    deleted_at         timestamptz,
    UNIQUE (source, external_id),
    CHECK (ends_on >= starts_on),
    CHECK (scope = 'customer' OR installed_base_id IS NOT NULL)
);
CREATE INDEX service_contracts_customer ON service_contracts (customer_id);
CREATE INDEX service_contracts_ends ON service_contracts (ends_on);

CREATE TABLE contract_renewals (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source         text           NOT NULL,
    external_id    text           NOT NULL,
    contract_id    integer        NOT NULL REFERENCES service_contracts,
    decided_on     date           NOT NULL,
    outcome        text           NOT NULL
                   CHECK (outcome IN ('renewed', 'upgraded', 'downgraded', 'lapsed', 'cancelled')),
    previous_ends_on date         NOT NULL,
    new_ends_on    date,
    previous_value numeric(14, 2),
    new_value      numeric(14, 2),
    synced_at      timestamptz    NOT NULL DEFAULT now(),
    UNIQUE (source, external_id),
    CHECK (outcome IN ('lapsed', 'cancelled') OR new_ends_on > previous_ends_on)
);
CREATE INDEX contract_renewals_contract ON contract_renewals (contract_id, decided_on);

-- Invoices and their lines. A line's kind is what retention analytics split revenue by.
CREATE TABLE invoices (
    id                integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            text           NOT NULL,
    external_id       text           NOT NULL,
    customer_id       integer        NOT NULL REFERENCES customers,
    number            text,
    issued_on         date           NOT NULL,
    due_on            date,
    paid_on           date,
    currency          char(3)        NOT NULL,
    net_amount        numeric(14, 2) NOT NULL,
    status            text           NOT NULL
                      CHECK (status IN ('draft', 'open', 'paid', 'cancelled', 'credited')),
    source_updated_at timestamptz,
    synced_at         timestamptz    NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    UNIQUE (source, external_id)
);
CREATE INDEX invoices_customer_issued ON invoices (customer_id, issued_on);

CREATE TABLE invoice_lines (
    id                integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            text           NOT NULL,
    external_id       text           NOT NULL,
    invoice_id        integer        NOT NULL REFERENCES invoices ON DELETE CASCADE,
    kind              text           NOT NULL CHECK (kind IN ('service_contract', 'field_service',
                                     'spare_parts', 'retrofit', 'new_machine', 'other')),
    product_code      text,
    description       text,
    quantity          numeric(14, 3) NOT NULL DEFAULT 1,
    unit_price        numeric(14, 4),
    net_amount        numeric(14, 2) NOT NULL,
    installed_base_id integer        REFERENCES installed_base,
    contract_id       integer        REFERENCES service_contracts,
    synced_at         timestamptz    NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id);

-- Spare-parts and service orders (what was ordered, before or without an invoice).
CREATE TABLE orders (
    id                integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            text           NOT NULL,
    external_id       text           NOT NULL,
    customer_id       integer        NOT NULL REFERENCES customers,
    kind              text           NOT NULL CHECK (kind IN ('spare_parts', 'service')),
    number            text,
    ordered_on        date           NOT NULL,
    status            text           NOT NULL
                      CHECK (status IN ('draft', 'confirmed', 'delivered', 'cancelled')),
    currency          char(3)        NOT NULL,
    net_amount        numeric(14, 2) NOT NULL,
    source_updated_at timestamptz,
    synced_at         timestamptz    NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    UNIQUE (source, external_id)
);
CREATE INDEX orders_customer_ordered ON orders (customer_id, ordered_on);

CREATE TABLE order_lines (
    id                integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            text           NOT NULL,
    external_id       text           NOT NULL,
    order_id          integer        NOT NULL REFERENCES orders ON DELETE CASCADE,
    part_number       text,
    description       text,
    quantity          numeric(14, 3) NOT NULL CHECK (quantity > 0),
    unit_price        numeric(14, 4),
    net_amount        numeric(14, 2) NOT NULL,
    installed_base_id integer        REFERENCES installed_base,
    synced_at         timestamptz    NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
CREATE INDEX order_lines_order ON order_lines (order_id);

-- Survey answers (NPS: "how likely are you to recommend us", 0-10).
CREATE TABLE survey_responses (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text        NOT NULL,
    external_id text        NOT NULL,
    customer_id integer     NOT NULL REFERENCES customers,
    contact_id  integer     REFERENCES contacts,
    answered_at timestamptz NOT NULL,
    score       smallint    NOT NULL CHECK (score BETWEEN 0 AND 10),
    comment     text,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
CREATE INDEX survey_responses_customer ON survey_responses (customer_id, answered_at);

-- Exchange rates into the reporting currency: amount x rate = reporting amount. The rate of a day
-- is the latest one on or before it.
CREATE TABLE exchange_rates (
    currency   char(3)        NOT NULL,
    valid_from date           NOT NULL,
    rate       numeric(18, 8) NOT NULL CHECK (rate > 0),
    PRIMARY KEY (currency, valid_from)
);

CREATE FUNCTION to_reporting(amount numeric, from_currency char(3), on_day date,
                             reporting char(3))
RETURNS numeric
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN from_currency = reporting THEN amount
                ELSE amount * (SELECT rate FROM exchange_rates
                               WHERE currency = from_currency AND valid_from <= on_day
                               ORDER BY valid_from DESC LIMIT 1)
           END
$$;

-- Sync bookkeeping: a cursor per source and entity (resume after a crash), one row per run, and
-- every rejected record with its reason (the data-quality report).
CREATE TABLE sync_cursors (
    source     text        NOT NULL,
    entity     text        NOT NULL,
    cursor     text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, entity)
);

CREATE TABLE sync_runs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source        text        NOT NULL,
    entity        text        NOT NULL,
    full_resync   boolean     NOT NULL DEFAULT false,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    status        text        NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'succeeded', 'failed')),
    rows_upserted integer     NOT NULL DEFAULT 0,
    rows_rejected integer     NOT NULL DEFAULT 0,
    error         text
);
CREATE INDEX sync_runs_source_entity ON sync_runs (source, entity, started_at DESC);

CREATE TABLE sync_rejects (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      bigint      NOT NULL REFERENCES sync_runs ON DELETE CASCADE,
    source      text        NOT NULL,
    entity      text        NOT NULL,
    external_id text,
    line_number integer,    -- for file imports
    reason      text        NOT NULL,
    record      jsonb       NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_rejects_run ON sync_rejects (run_id);
