-- The data-quality report's cross-checks: what no single record shows. Each returns a sample
-- (at most %(sample)s rows) and, in every row, the total count.

-- name: machines_without_erp
-- Machines the ingester registered whose serial no live installed-base row of any ERP has: their
-- usage counts for no customer.
SELECT m.tenant, m.serial, m.first_seen_at, count(*) OVER () AS total
FROM machines m
WHERE NOT EXISTS (SELECT 1 FROM installed_base ib
                  WHERE ib.serial = m.serial AND ib.deleted_at IS NULL)
ORDER BY m.first_seen_at DESC, m.serial
LIMIT %(sample)s

-- name: erp_machines_never_seen
-- Live installed base the ingester has never heard from: not connected, or a serial typed
-- differently in the ERP.
SELECT ib.source, ib.external_id, ib.serial, count(*) OVER () AS total
FROM installed_base ib
WHERE ib.deleted_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM machines m WHERE m.serial = ib.serial)
ORDER BY ib.source, ib.serial
LIMIT %(sample)s

-- name: currencies_without_rate
-- Currencies money is held in that cannot be converted to the reporting currency on the day the
-- money is dated (no rate on or before it).
WITH money AS (
    SELECT currency, issued_on AS day FROM invoices WHERE deleted_at IS NULL
    UNION ALL SELECT currency, ordered_on FROM orders WHERE deleted_at IS NULL
    UNION ALL SELECT currency, starts_on FROM service_contracts WHERE deleted_at IS NULL
)
SELECT m.currency, count(*) AS records, min(m.day) AS first_day, count(*) OVER () AS total
FROM money m
WHERE m.currency <> %(reporting)s
  AND NOT EXISTS (SELECT 1 FROM exchange_rates r
                  WHERE r.currency = m.currency AND r.valid_from <= m.day)
GROUP BY m.currency
ORDER BY records DESC
LIMIT %(sample)s

-- name: invoices_not_matching_lines
-- Invoices whose live lines do not add up to the header's net amount (a line missed by a sync, or
-- a header without lines).
SELECT i.source, i.external_id, i.net_amount, coalesce(sum(l.net_amount), 0) AS lines_total,
       count(*) OVER () AS total
FROM invoices i
LEFT JOIN invoice_lines l ON l.invoice_id = i.id AND l.deleted_at IS NULL
WHERE i.deleted_at IS NULL AND i.status <> 'cancelled'
GROUP BY i.id
HAVING i.net_amount IS DISTINCT FROM coalesce(sum(l.net_amount), 0)
ORDER BY i.source, i.external_id
LIMIT %(sample)s

-- name: models_without_service_plan
-- Installed models with no machine_models row: maintenance adherence and parts capture cannot be
-- measured for their machines.
SELECT ib.model, count(*) AS machines, count(*) OVER () AS total
FROM installed_base ib
WHERE ib.deleted_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM machine_models mm
                  WHERE mm.model = ib.model AND mm.deleted_at IS NULL)
GROUP BY ib.model
ORDER BY machines DESC
LIMIT %(sample)s

-- name: records_waiting_for_parent
-- Records rejected because a parent they name has not arrived; tried again on every run.
SELECT source, entity, external_id, reason, first_rejected_at, count(*) OVER () AS total
FROM sync_pending
ORDER BY first_rejected_at, source, entity, external_id
LIMIT %(sample)s

-- name: run_rejects
-- The rejects of the given runs, per run (a run is one source and entity), with a sample.
SELECT run_id, count(*) AS rejected,
       (array_agg(jsonb_build_object('external_id', external_id, 'line_number', line_number,
                                     'reason', reason) ORDER BY id))[1:%(sample)s] AS examples
FROM sync_rejects
WHERE run_id = ANY(%(run_ids)s::bigint[])
GROUP BY run_id

-- name: insert_report
INSERT INTO sync_reports (sources, full_resync, ok, report)
VALUES (%(sources)s, %(full)s, %(ok)s, %(report)s::jsonb)
RETURNING id, created_at

-- name: latest_report
SELECT id, created_at, sources, full_resync, ok, report
FROM sync_reports
ORDER BY id DESC
LIMIT 1
