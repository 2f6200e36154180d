-- Maintenance planning (docs/api-maintenance.md): a plan per machine model, and the services
-- recorded through the API.
--
-- Plans and the ERP's intervals: machine_models carries the ERP's service_interval_hours/days.
-- A model's plan in force is its row here when it has one, else the ERP's intervals (the
-- definition service_plans, analytics/sql/definitions/). This migration seeds a row for every
-- model the ERP gave an interval, so the plans start as the ERP had them and are edited through
-- the API from then on: once a model has a row, a later change of its interval in the ERP is no
-- longer read (the plans route shows the ERP's values next to the plan's, so a difference is
-- seen). A model the ERP adds later follows the ERP until a plan is put for it.
CREATE TABLE maintenance_plans (
    model          text        PRIMARY KEY,
    -- Due after this many operating hours or this many days since the last service, whichever
    -- comes first; one of them may be left out.
    interval_hours integer     CHECK (interval_hours > 0),
    interval_days  integer     CHECK (interval_days > 0),
    work           text        NOT NULL DEFAULT '' CHECK (length(work) <= 4000),
    -- [{"part_number": "...", "description": "...", "quantity": 2}, ...]
    parts_kit      jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(parts_kit) = 'array'),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     text        NOT NULL,
    CHECK (interval_hours IS NOT NULL OR interval_days IS NOT NULL)
);

INSERT INTO maintenance_plans (model, interval_hours, interval_days, updated_by)
SELECT DISTINCT ON (model) model, service_interval_hours, service_interval_days,
       'erp (seeded by migration 021)'
FROM machine_models
WHERE deleted_at IS NULL
  AND (service_interval_hours IS NOT NULL OR service_interval_days IS NOT NULL)
ORDER BY model, synced_at DESC, id DESC;

-- A service done, as a technician reports it through the API. The machine's own maintenance
-- events (machine_events kind 'maintenance') report services too; the definition services_done
-- unites both, a visit reported by both on the same machine and UTC day counting once.
-- Idempotent writes are api/idempotency.py's (the Idempotency-Key of the request).
CREATE TABLE maintenance_records (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    machine_id   integer     NOT NULL REFERENCES machines (id),
    performed_at timestamptz NOT NULL,
    work         text        NOT NULL CHECK (length(work) BETWEEN 1 AND 4000),
    parts        jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(parts) = 'array'),
    technician   text        NOT NULL CHECK (length(technician) BETWEEN 1 AND 200),
    recorded_by  text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX maintenance_records_machine ON maintenance_records (machine_id, performed_at DESC);

-- A record belongs to a customer through its machine (pattern of migration 019). Plans hold no
-- customer's rows: everyone may read them (a portal user's due dates are computed from them),
-- staff alone may write them.
ALTER TABLE maintenance_records ENABLE ROW LEVEL SECURITY;
CREATE POLICY customer_scope ON maintenance_records
    USING (api_staff() OR machine_id IN (SELECT id FROM machines));
ALTER TABLE maintenance_plans ENABLE ROW LEVEL SECURITY;
CREATE POLICY readable ON maintenance_plans FOR SELECT USING (true);
CREATE POLICY staff_writes ON maintenance_plans USING (api_staff()) WITH CHECK (api_staff());

GRANT INSERT, UPDATE ON maintenance_plans TO oemr_api;
GRANT INSERT ON maintenance_records TO oemr_api;
