-- Installed-base health (docs/api-fleet.md): an hourly rollup of every metric for charts over any
-- range, a per-machine status table the fleet list pages through, and an index for a machine's
-- recent events.

-- One row per machine, metric and UTC hour with samples: what a chart of any range is drawn from
-- (time_bucket over these hours), so a year costs 8,760 rows per metric, not millions of samples.
-- avg is kept with its count, so coarser buckets weigh each hour by its samples and their
-- average equals the raw samples' average.
CREATE TABLE metric_hours (
    machine_id integer          NOT NULL,
    metric_id  integer          NOT NULL,
    hour       timestamptz      NOT NULL,
    avg        double precision NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    samples    integer          NOT NULL CHECK (samples > 0),
    PRIMARY KEY (machine_id, metric_id, hour)
);
ALTER TABLE metric_hours ENABLE ROW LEVEL SECURITY;
CREATE POLICY customer_scope ON metric_hours
    USING (api_staff() OR machine_id IN (SELECT id FROM machines));

-- The fleet list's rows: fleet_health() (analytics/sql/definitions/fleet_health.sql, the one
-- definition of utilisation, trend, coverage and the health band) for every live installed-base
-- row as of the last refresh, written by analytics.fleet.refresh_fleet_status after each rollup
-- refresh. The list and the summary page through this table by index: at 100,000 machines a
-- page costs an index range scan, where computing the band on read would aggregate 60 days of
-- machine_days for every machine on every page. Sort keys are NOT NULL (keyset paging needs
-- them so): a missing value sorts as the *_key column says.
CREATE TABLE fleet_status (
    installed_base_id   integer     PRIMARY KEY REFERENCES installed_base ON DELETE CASCADE,
    machine_id          integer,
    serial              text        NOT NULL,
    model               text        NOT NULL,
    customer_id         integer     NOT NULL REFERENCES customers,
    customer_name       text        NOT NULL,
    site_id             integer,
    site_name           text,
    country             char(2),
    commissioned_on     date,
    warranty_end        date,
    state               machine_state,
    state_reported_at   timestamptz,
    last_seen           timestamptz,
    connectivity        text        NOT NULL
                        CHECK (connectivity IN ('reporting', 'quiet', 'silent', 'never_reported')),
    operating_hours_30d double precision,
    utilisation         double precision,
    utilisation_prev    double precision,
    utilisation_trend   double precision,
    faults_30d          integer,
    coverage            text        NOT NULL CHECK (coverage IN ('covered', 'warranty', 'uncovered')),
    contract_id         integer,
    contract_ends_on    date,
    health_band         text        NOT NULL
                        CHECK (health_band IN ('healthy', 'watch', 'at_risk', 'silent')),
    health_reason       text        NOT NULL,
    as_of               timestamptz NOT NULL,
    -- Sort keys: never NULL (core/paging.py).
    last_seen_key       timestamptz NOT NULL,
    utilisation_key     double precision NOT NULL,
    trend_key           double precision NOT NULL
);
-- One index per sort, each ending in the unique id: a page under any sort is an index range scan
-- (filters on top of it are checked on the rows the scan visits).
CREATE INDEX fleet_status_serial ON fleet_status (serial, installed_base_id);
CREATE INDEX fleet_status_last_seen ON fleet_status (last_seen_key, installed_base_id);
CREATE INDEX fleet_status_utilisation ON fleet_status (utilisation_key, installed_base_id);
CREATE INDEX fleet_status_trend ON fleet_status (trend_key, installed_base_id);
CREATE INDEX fleet_status_customer_name ON fleet_status (customer_name, installed_base_id);
-- Serial prefixes (LIKE 'ABC%') whatever the collation.
CREATE INDEX fleet_status_serial_prefix ON fleet_status (serial text_pattern_ops);
-- A customer's machines (the portal's whole list, and the customer filter).
CREATE INDEX fleet_status_customer ON fleet_status (customer_id, serial, installed_base_id);
ALTER TABLE fleet_status ENABLE ROW LEVEL SECURITY;
CREATE POLICY customer_scope ON fleet_status USING (api_customer_visible(customer_id));

-- A machine's recent events, newest first (the existing index leads with the event key).
CREATE INDEX machine_events_machine_time ON machine_events (machine_id, time DESC);
