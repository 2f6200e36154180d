-- The service plan in force per machine model (docs/api-maintenance.md): the model's plan edited
-- through the API (maintenance_plans, migration 021) when it has one, else the ERP's intervals
-- (machine_models, the row synced last when sources disagree). Due after interval_hours
-- operating hours or interval_days days since the last service, whichever comes first; a model
-- with neither has no plan. parts_value_per_1000h and its currency are always the ERP's. The
-- ERP's own intervals are kept alongside, so a plan that has drifted from them can be seen.
CREATE OR REPLACE VIEW service_plans WITH (security_invoker = true) AS
WITH erp AS (
    SELECT DISTINCT ON (model) model, service_interval_hours, service_interval_days,
           parts_value_per_1000h, currency
    FROM machine_models WHERE deleted_at IS NULL
    ORDER BY model, synced_at DESC, id DESC
)
SELECT coalesce(p.model, e.model) AS model,
       CASE WHEN p.model IS NOT NULL THEN p.interval_hours ELSE e.service_interval_hours END
           AS interval_hours,
       CASE WHEN p.model IS NOT NULL THEN p.interval_days ELSE e.service_interval_days END
           AS interval_days,
       coalesce(p.work, '') AS work,
       coalesce(p.parts_kit, '[]'::jsonb) AS parts_kit,
       CASE WHEN p.model IS NOT NULL THEN 'plan' ELSE 'erp' END AS source,
       p.updated_at, p.updated_by,
       e.service_interval_hours AS erp_interval_hours,
       e.service_interval_days AS erp_interval_days,
       e.parts_value_per_1000h, e.currency
FROM maintenance_plans p
FULL JOIN erp e ON e.model = p.model;
