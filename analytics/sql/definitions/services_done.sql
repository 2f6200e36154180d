-- Services done per machine and UTC day (docs/api-maintenance.md, docs/kpis.md "maintenance
-- adherence"): the machine's own maintenance events (machine_events kind 'maintenance', what the
-- control or the JSON contract reports) and the services recorded through the API
-- (maintenance_records). Both report the same visits: a day's services are the larger of the two
-- counts, so a visit reported by both on the same machine and UTC day counts once, and two visits
-- on one day reported by one side only still count twice. last_at is the day's latest report.
-- Maintenance adherence, the churn features and the due dates of the maintenance plans all read
-- services here (machine_days.services, the rollup's, counts the events alone).
-- security_invoker: the API's role reads it under its own row-level security.
CREATE OR REPLACE VIEW services_done WITH (security_invoker = true) AS
SELECT machine_id, day, max(services)::integer AS services, max(last_at) AS last_at,
       sum(services) FILTER (WHERE source = 'event')::integer AS events,
       sum(services) FILTER (WHERE source = 'record')::integer AS records
FROM (
    SELECT e.machine_id, (e.time AT TIME ZONE 'UTC')::date AS day, count(*) AS services,
           max(e.time) AS last_at, 'event' AS source
    FROM machine_events e
    WHERE e.kind = 'maintenance'
    GROUP BY 1, 2
    UNION ALL
    SELECT r.machine_id, (r.performed_at AT TIME ZONE 'UTC')::date, count(*), max(r.performed_at),
           'record'
    FROM maintenance_records r
    GROUP BY 1, 2
) reported
GROUP BY machine_id, day;
