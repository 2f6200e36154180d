-- Analytics: the daily machine rollup that every usage KPI and churn feature reads instead of the
-- raw telemetry, the watermark its incremental refresh resumes from, and the churn-risk scores
-- kept with their date so a customer's risk history can be shown.

-- One row per machine and UTC day with data. Hours come from the operating_hours counter (metric
-- 1) as the sum of its increments (a reset counts from zero; an increment over a gap falls on the
-- day of the sample that closes it); running and fault hours from machine_states transitions.
CREATE TABLE machine_days (
    machine_id      integer          NOT NULL,
    day             date             NOT NULL,
    operating_hours double precision NOT NULL DEFAULT 0,
    running_hours   double precision NOT NULL DEFAULT 0,
    fault_hours     double precision NOT NULL DEFAULT 0,
    samples         integer          NOT NULL DEFAULT 0,   -- operating_hours samples
    faults          integer          NOT NULL DEFAULT 0,   -- machine_events kind 'fault'
    services        integer          NOT NULL DEFAULT 0,   -- machine_events kind 'maintenance'
    last_seen       timestamptz,                           -- latest sample, state or event
    refreshed_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (machine_id, day)
);
CREATE INDEX machine_days_day ON machine_days (day);

-- Where each rollup's last refresh got to: the latest data time it saw. The next refresh
-- recomputes from that day (less a lookback for late data) on.
CREATE TABLE rollup_watermarks (
    rollup       text        PRIMARY KEY,
    through      timestamptz NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now()
);

-- Churn risk per customer and scoring day (docs/churn-risk.md): the probability of churning
-- within horizon_days, the method that produced it ('model' or 'rules'), the reasons (top
-- factors with the customer's own values and their effect), and the annual contract value in
-- force (reporting currency) for revenue at risk = annual_value x probability.
CREATE TABLE churn_scores (
    customer_id   integer        NOT NULL REFERENCES customers,
    scored_on     date           NOT NULL,
    horizon_days  integer        NOT NULL CHECK (horizon_days > 0),
    probability   double precision NOT NULL CHECK (probability BETWEEN 0 AND 1),
    method        text           NOT NULL CHECK (method IN ('model', 'rules')),
    reasons       jsonb          NOT NULL,
    model_version text           NOT NULL,
    annual_value  numeric(14, 2),
    currency      char(3)        NOT NULL,
    created_at    timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, scored_on)
);
CREATE INDEX churn_scores_scored_on ON churn_scores (scored_on);
