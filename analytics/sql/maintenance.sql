-- Maintenance planning (analytics/maintenance.py, docs/api-maintenance.md): due and overdue per
-- machine from the plan in force (definitions/service_plans.sql) and the services done
-- (definitions/services_done.sql), the work list, the plans and the records.
-- Parameters of the status blocks: %(today)s (date, UTC), %(usage_days)s (the window of the
-- usage rate), %(soon_days)s (due within this many days is 'due').

-- name: status
-- Filters of the fleet: %(machine_id)s, %(customer_id)s, %(site_id)s, %(region)s, %(model)s
-- (None: any). One row per machine the ingester knows and the installed base holds (not deleted): a serial
-- in the installed base twice (two ERPs) counts once, with its latest synced record.
WITH p AS (
    SELECT %(today)s::date AS t, %(usage_days)s::integer AS w, %(soon_days)s::integer AS soon
),
fleet AS (
    SELECT DISTINCT ON (m.id) m.id AS machine_id, ib.id AS installed_base_id, ib.serial,
           ib.model, ib.customer_id, c.name AS customer_name, ib.site_id, s.name AS site_name,
           coalesce(s.country, c.country) AS region, ib.commissioned_on
    FROM installed_base ib
    JOIN machines m ON m.serial = ib.serial
    JOIN customers c ON c.id = ib.customer_id
    LEFT JOIN sites s ON s.id = ib.site_id
    WHERE ib.deleted_at IS NULL
      -- The list's filters on what a machine is, here: the rest is computed for them alone.
      AND (%(machine_id)s::integer IS NULL OR m.id = %(machine_id)s::integer)
      AND (%(customer_id)s::integer IS NULL OR ib.customer_id = %(customer_id)s::integer)
      AND (%(site_id)s::integer IS NULL OR ib.site_id = %(site_id)s::integer)
      AND (%(region)s::text IS NULL OR coalesce(s.country, c.country) = %(region)s::text)
      AND (%(model)s::text IS NULL OR ib.model = %(model)s::text)
    ORDER BY m.id, ib.synced_at DESC, ib.id DESC
),
last_done AS (
    -- Grouped once for the fleet: the view's days cannot exclude event chunks per machine.
    SELECT sd.machine_id, max(sd.day) AS day, max(sd.last_at) AS at
    FROM services_done sd, p
    WHERE sd.day <= p.t AND sd.services > 0
    GROUP BY sd.machine_id
),
used AS (
    SELECT f.*, sp.interval_hours, sp.interval_days, sp.source AS plan_source,
           ld.at AS last_service_at, ld.day AS last_service_on, u.first_day,
           -- Since the last service; never serviced: since commissioning or the first day of
           -- data, whichever is later (hours before the data began are not known).
           coalesce(ld.day, greatest(u.first_day, f.commissioned_on)) AS base_day,
           u.hours_window, u.days_window
    FROM fleet f
    CROSS JOIN p
    LEFT JOIN service_plans sp ON sp.model = f.model
    LEFT JOIN last_done ld ON ld.machine_id = f.machine_id
    CROSS JOIN LATERAL (
        SELECT min(d.day) AS first_day,
               coalesce(sum(d.operating_hours) FILTER (WHERE d.day >= p.t - p.w
                                                         AND d.day < p.t), 0) AS hours_window,
               -- The window's days the machine was known for (a new machine: fewer).
               greatest(least(p.w, p.t - min(d.day)), 0) AS days_window
        FROM machine_days d
        WHERE d.machine_id = f.machine_id AND d.day <= p.t) u
),
since AS (
    SELECT u.*,
           (SELECT coalesce(sum(d.operating_hours), 0) FROM machine_days d
            WHERE d.machine_id = u.machine_id AND d.day > u.base_day
              AND d.day <= (SELECT t FROM p)) AS hours_since,
           (SELECT t FROM p) - u.base_day AS days_since,
           u.hours_window / nullif(u.days_window, 0) AS usage_per_day
    FROM used u
),
forecast AS (
    SELECT s.*,
           s.base_day + s.interval_days AS due_by_days_on,
           CASE WHEN s.interval_hours IS NULL THEN NULL
                WHEN s.hours_since < s.interval_hours
                    THEN CASE WHEN s.usage_per_day > 0
                              THEN p.t + ceil((s.interval_hours - s.hours_since)
                                              / s.usage_per_day)::integer END
                -- Already past the hours: the day the hours since the service reached them.
                ELSE (SELECT x.day FROM (
                          SELECT d.day, sum(d.operating_hours) OVER (ORDER BY d.day) AS cum
                          FROM machine_days d
                          WHERE d.machine_id = s.machine_id AND d.day > s.base_day
                            AND d.day <= p.t) x
                      WHERE x.cum >= s.interval_hours ORDER BY x.day LIMIT 1)
           END AS due_by_hours_on
    FROM since s, p
),
due AS (
    SELECT f.*,
           least(f.due_by_days_on, f.due_by_hours_on) AS due_on,
           CASE WHEN f.due_by_hours_on IS NULL AND f.due_by_days_on IS NULL THEN NULL
                WHEN f.due_by_days_on IS NULL OR f.due_by_hours_on <= f.due_by_days_on
                    THEN 'hours' ELSE 'days' END AS due_by,
           CASE WHEN f.interval_hours IS NOT NULL
                THEN greatest(f.hours_since - f.interval_hours, 0) END AS overdue_hours,
           CASE WHEN f.interval_hours IS NULL AND f.interval_days IS NULL THEN 'no_plan'
                WHEN f.hours_since > f.interval_hours OR p.t > f.due_by_days_on THEN 'overdue'
                WHEN least(f.due_by_days_on, f.due_by_hours_on) <= p.t + p.soon THEN 'due'
                ELSE 'ok' END AS status
    FROM forecast f, p
),
listed AS (
    SELECT d.*,
           CASE WHEN d.status = 'overdue' THEN coalesce(greatest(p.t - d.due_on, 0), 0) ELSE 0 END
               AS overdue_days,
           -- Sort keys, never NULL (core/paging.py): no forecast sorts last.
           coalesce(d.due_on, DATE '9999-12-31') AS due
    FROM due d, p
)

-- name: status_page
SELECT * FROM listed
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(due_before)s::date IS NULL OR due_on <= %(due_before)s::date)
  AND {keyset}
ORDER BY {order}
LIMIT %(keyset_limit)s

-- name: worklist
-- Machines due by the horizon, grouped by the week they are due (overdue ones in this week) and
-- by region, customer or site ({group_key}, {group_name}: a fixed expression of analytics).
SELECT date_trunc('week', greatest(l.due_on, %(today)s::date))::date AS week,
       {group_key} AS group_key, {group_name} AS group_name,
       count(*) AS machines,
       count(*) FILTER (WHERE l.status = 'overdue') AS overdue,
       jsonb_agg(jsonb_build_object(
           'machine_id', l.machine_id, 'serial', l.serial, 'model', l.model,
           'customer_id', l.customer_id, 'customer_name', l.customer_name,
           'site_id', l.site_id, 'site_name', l.site_name, 'region', l.region,
           'due_on', l.due_on, 'due_by', l.due_by, 'status', l.status,
           'overdue_days', l.overdue_days, 'overdue_hours', round(l.overdue_hours::numeric, 1))
           ORDER BY l.due_on, l.machine_id) AS items
FROM listed l
WHERE l.due_on <= %(horizon)s::date
GROUP BY 1, 2, 3
ORDER BY 1, 3, 2

-- name: plans
SELECT model, interval_hours, interval_days, work, parts_kit, source, updated_at, updated_by,
       erp_interval_hours, erp_interval_days
FROM service_plans
WHERE %(model)s::text IS NULL OR model = %(model)s::text
ORDER BY model

-- name: model_known
-- A model may get a plan when the ERP lists it or a machine of the installed base is one.
SELECT EXISTS (SELECT 1 FROM machine_models WHERE model = %(model)s AND deleted_at IS NULL)
    OR EXISTS (SELECT 1 FROM installed_base WHERE model = %(model)s AND deleted_at IS NULL)
    OR EXISTS (SELECT 1 FROM maintenance_plans WHERE model = %(model)s) AS known

-- name: put_plan
INSERT INTO maintenance_plans AS mp (model, interval_hours, interval_days, work, parts_kit,
                                     updated_at, updated_by)
VALUES (%(model)s, %(interval_hours)s, %(interval_days)s, %(work)s, %(parts_kit)s, now(),
        %(updated_by)s)
ON CONFLICT (model) DO UPDATE SET
    interval_hours = excluded.interval_hours, interval_days = excluded.interval_days,
    work = excluded.work, parts_kit = excluded.parts_kit, updated_at = excluded.updated_at,
    updated_by = excluded.updated_by

-- name: machine_visible
SELECT id FROM machines WHERE id = %(machine_id)s

-- name: add_record
INSERT INTO maintenance_records (machine_id, performed_at, work, parts, technician, recorded_by)
VALUES (%(machine_id)s, %(performed_at)s, %(work)s, %(parts)s, %(technician)s, %(recorded_by)s)
RETURNING id, machine_id, performed_at, work, parts, technician, recorded_by, created_at

-- name: records_page
SELECT r.id, r.machine_id, m.serial, r.performed_at, r.work, r.parts, r.technician,
       r.recorded_by, r.created_at
FROM maintenance_records r
JOIN machines m ON m.id = r.machine_id
WHERE (%(machine_id)s::integer IS NULL OR r.machine_id = %(machine_id)s::integer)
  AND (%(since)s::timestamptz IS NULL OR r.performed_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR r.performed_at < %(until)s::timestamptz)
  AND {keyset}
ORDER BY {order}
LIMIT %(keyset_limit)s
