-- Churn features per customer at a cut-off day T (analytics/features.py, docs/churn-risk.md).
-- Only what was known on T is read: rows dated after T are left out, an invoice paid after T
-- is open on T, and a contract's term, value and tier on T come from its renewal history
-- (a renewal's changes take effect on the new term, the day after previous_ends_on), and a
-- customer or machine deleted (archived) after T was there on T.
-- Parameters: %(t)s (date), %(reporting)s (currency code).

-- name: features_at
WITH p AS (
    SELECT %(t)s::date AS t, %(reporting)s::char(3) AS rc
),
in_force AS (
    -- Contracts in force on T.
    SELECT sc.id, sc.customer_id, sc.auto_renew, sc.notice_period_days, sc.currency, sc.tier,
           sc.ends_on, sc.annual_value
    FROM service_contracts sc, p
    WHERE sc.deleted_at IS NULL AND sc.status <> 'draft'
      AND sc.starts_on <= p.t AND sc.ends_on >= p.t
),
terms AS (
    SELECT c.id, c.customer_id, c.auto_renew, c.notice_period_days,
           coalesce(nxt.previous_ends_on, c.ends_on) AS term_end,
           to_reporting(coalesce(nxt.previous_value, c.annual_value), c.currency, p.t, p.rc)
               AS value_rc,
           -- The tier today, stepped back over the tier changes that took effect after T.
           CASE lower(c.tier) WHEN 'basic' THEN 1 WHEN 'standard' THEN 1 WHEN 'plus' THEN 2
                              WHEN 'premium' THEN 3 ELSE 2 END
               - coalesce(later.ups, 0) + coalesce(later.downs, 0) AS tier_rank,
           coalesce(notice.lapsing, false) AS lapse_notified
    FROM in_force c
    CROSS JOIN p
    LEFT JOIN LATERAL (
        SELECT r.previous_ends_on, r.previous_value FROM contract_renewals r
        WHERE r.contract_id = c.id AND r.deleted_at IS NULL AND r.previous_ends_on >= p.t
        ORDER BY r.previous_ends_on LIMIT 1) nxt ON true
    LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE r.outcome = 'upgraded') AS ups,
               count(*) FILTER (WHERE r.outcome = 'downgraded') AS downs
        FROM contract_renewals r
        WHERE r.contract_id = c.id AND r.deleted_at IS NULL AND r.previous_ends_on >= p.t) later
        ON true
    LEFT JOIN LATERAL (
        -- Notice of non-renewal given by T for the term running on T.
        SELECT true AS lapsing FROM contract_renewals r
        WHERE r.contract_id = c.id AND r.deleted_at IS NULL
          AND r.outcome IN ('lapsed', 'cancelled')
          AND r.decided_on <= p.t AND r.previous_ends_on >= p.t
        LIMIT 1) notice ON true
),
contract AS (
    SELECT customer_id,
           count(*) AS contracts,
           avg(auto_renew::int) AS auto_renew,
           min(term_end) - (SELECT t FROM p) AS days_to_term_end,
           min(notice_period_days) AS notice_days,
           min(term_end - notice_period_days) - (SELECT t FROM p) AS days_to_notice,
           max(tier_rank) AS tier_rank,
           sum(value_rc) AS annual_value,
           coalesce(sum(value_rc) FILTER (WHERE lapse_notified) / nullif(sum(value_rc), 0),
                    avg(lapse_notified::int)) AS lapse_notified
    FROM terms GROUP BY customer_id
),
renewal_moves AS (
    SELECT sc.customer_id,
           count(*) FILTER (WHERE r.outcome = 'downgraded') AS downgrades_365
    FROM contract_renewals r
    JOIN service_contracts sc ON sc.id = r.contract_id, p
    WHERE r.deleted_at IS NULL AND r.decided_on > p.t - 365 AND r.decided_on <= p.t
    GROUP BY sc.customer_id
),
invoiced AS (
    SELECT i.customer_id,
           sum(to_reporting(i.net_amount, i.currency, i.issued_on, p.rc))
               FILTER (WHERE i.issued_on > p.t - 365) AS revenue_365,
           max(i.issued_on) AS last_invoice
    FROM invoices i, p
    WHERE i.deleted_at IS NULL AND i.status NOT IN ('draft', 'cancelled') AND i.issued_on <= p.t
    GROUP BY i.customer_id
),
population AS (
    -- Customers on T: a contract in force, or, for one that never had a contract by T, an
    -- invoice within the last 365 days (the same definition as churn in churn_dates).
    SELECT c.id AS customer_id, c.external_id, c.customer_since, c.size_class, c.key_account
    FROM customers c, p
    -- A deletion after T does not count on T: ERPs archive churned customers (the Odoo
    -- connector marks them deleted), and dropping them would train on the survivors.
    WHERE (c.deleted_at IS NULL OR c.deleted_at::date > p.t)
      AND (EXISTS (SELECT 1 FROM contract k WHERE k.customer_id = c.id)
           OR (NOT EXISTS (SELECT 1 FROM service_contracts sc
                           WHERE sc.customer_id = c.id AND sc.deleted_at IS NULL
                             AND sc.status <> 'draft' AND sc.starts_on <= p.t)
               AND EXISTS (SELECT 1 FROM invoiced v WHERE v.customer_id = c.id
                           AND v.last_invoice > p.t - 365)))
),
fleet AS (
    -- The installed base on T: installed_base itself, not the installed_machines view, which
    -- drops the rows deleted by today (a machine archived with its churned customer was there
    -- on T). Joined by serial to the ingester's machine, as the view does.
    SELECT ib.customer_id, ib.id AS installed_base_id, m.id AS machine_id, ib.commissioned_on,
           sp.interval_hours AS service_interval_hours,
           sp.interval_days AS service_interval_days,
           to_reporting(mm.parts_value_per_1000h, mm.currency, p.t, p.rc) AS parts_per_1000h
    FROM installed_base ib
    CROSS JOIN p
    LEFT JOIN machines m ON m.serial = ib.serial
    LEFT JOIN LATERAL (SELECT * FROM machine_models mo
                       WHERE mo.model = ib.model AND mo.deleted_at IS NULL
                       ORDER BY mo.id LIMIT 1) mm ON true
    -- The plan in force (definitions/service_plans.sql: the API's plan, else the ERP's).
    LEFT JOIN service_plans sp ON sp.model = ib.model
    WHERE ib.customer_id IN (SELECT customer_id FROM population)
      AND (ib.deleted_at IS NULL OR ib.deleted_at::date > p.t)
      AND (ib.commissioned_on IS NULL OR ib.commissioned_on <= p.t)
),
service_days AS (
    -- Services from services_done (definitions/services_done.sql: the machines' events and the
    -- API's records), grouped once for the fleet: its days cannot exclude event chunks.
    SELECT sd.machine_id,
           coalesce(sum(sd.services) FILTER (WHERE sd.day > p.t - 180), 0) AS s180,
           coalesce(sum(sd.services) FILTER (WHERE sd.day > p.t - 545
                                               AND sd.day <= p.t - 180), 0) AS s_prev365,
           max(sd.day) AS last_service
    FROM services_done sd, p
    WHERE sd.day > p.t - 730 AND sd.day <= p.t AND sd.services > 0
    GROUP BY sd.machine_id
),
machine_use AS (
    -- Each machine's days summed in a lateral subquery over its own index range, not by joining
    -- the fleet to machine_days and grouping the joined rows: that grouped by the fleet's
    -- columns, whose parts_per_1000h (to_reporting, a SQL function the planner cannot inline)
    -- was then computed once per machine-day (2 M calls, most of the query's time). ORDER BY
    -- d.day: the sums of float hours add up day by day, in the order they always did.
    SELECT f.customer_id, f.installed_base_id, f.machine_id, f.service_interval_hours,
           f.service_interval_days, f.parts_per_1000h, f.commissioned_on, u.*,
           coalesce(sv.s180, 0) AS s180, coalesce(sv.s_prev365, 0) AS s_prev365,
           sv.last_service
    FROM fleet f
    CROSS JOIN p
    LEFT JOIN service_days sv ON sv.machine_id = f.machine_id
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(d.operating_hours ORDER BY d.day)
                            FILTER (WHERE d.day > p.t - 30), 0) AS h30,
               coalesce(sum(d.operating_hours ORDER BY d.day)
                            FILTER (WHERE d.day > p.t - 90), 0) AS h90,
               coalesce(sum(d.operating_hours ORDER BY d.day)
                            FILTER (WHERE d.day > p.t - 180 AND d.day <= p.t - 90), 0) AS h_prev90,
               coalesce(sum(d.operating_hours ORDER BY d.day)
                            FILTER (WHERE d.day > p.t - 120 AND d.day <= p.t - 30), 0) AS h_prev30,
               coalesce(sum(d.operating_hours ORDER BY d.day)
                            FILTER (WHERE d.day > p.t - 455 AND d.day <= p.t - 365), 0) AS h_ly90,
               coalesce(sum(d.operating_hours ORDER BY d.day)
                            FILTER (WHERE d.day > p.t - 180), 0) AS h180,
               coalesce(sum(d.operating_hours ORDER BY d.day)
                            FILTER (WHERE d.day > p.t - 545 AND d.day <= p.t - 180), 0)
                   AS h_prev365,
               coalesce(sum(d.faults) FILTER (WHERE d.day > p.t - 90), 0) AS f90,
               coalesce(sum(d.faults) FILTER (WHERE d.day > p.t - 455
                                                 AND d.day <= p.t - 90), 0) AS f_prev365,
               min(d.day) AS first_day,
               -- Data before the window's start counts as covered only from its first day.
               count(*) FILTER (WHERE d.day > p.t - 545 AND d.day <= p.t - 180) > 0 AS has_prev
        FROM machine_days d
        WHERE d.machine_id = f.machine_id AND d.day > p.t - 730 AND d.day <= p.t) u
),
machine_due AS (
    SELECT u.*,
           -- Services due in a period: whichever of the hour and day intervals comes first.
           greatest(u.h180 / nullif(u.service_interval_hours, 0),
                    180.0 / nullif(u.service_interval_days, 0)) AS due180,
           greatest(u.h_prev365 / nullif(u.service_interval_hours, 0),
                    365.0 / nullif(u.service_interval_days, 0)) AS due_prev365,
           since.hours AS hours_since_service,
           p.t - coalesce(u.last_service, greatest(u.first_day, u.commissioned_on))
               AS days_since_service
    FROM machine_use u
    CROSS JOIN p
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(d.operating_hours), 0) AS hours FROM machine_days d
        WHERE d.machine_id = u.machine_id
          AND d.day > coalesce(u.last_service, u.first_day) AND d.day <= p.t) since
),
machines AS (
    SELECT customer_id,
           count(*) AS machines,
           sum(h90) AS h90, sum(h_prev90) AS h_prev90, sum(h_ly90) AS h_ly90,
           sum(h30) AS h30, sum(h_prev30) AS h_prev30, sum(h180) AS h180,
           -- Only machines with a service plan: services of one without would count as
           -- done with nothing due and push adherence up.
           sum(s180) FILTER (WHERE due180 IS NOT NULL) AS s180, sum(due180) AS due180,
           sum(s_prev365) FILTER (WHERE has_prev AND due_prev365 IS NOT NULL) AS s_prev365,
           sum(due_prev365) FILTER (WHERE has_prev) AS due_prev365,
           sum(floor(greatest(hours_since_service / nullif(service_interval_hours, 0),
                              days_since_service::float8 / nullif(service_interval_days, 0))))
               AS services_overdue,
           sum(f90) AS f90, sum(f_prev365) FILTER (WHERE has_prev) AS f_prev365,
           sum(h180 / 1000.0 * parts_per_1000h) AS parts_expected_180,
           sum(h_prev365 / 1000.0 * parts_per_1000h) FILTER (WHERE has_prev)
               AS parts_expected_prev
    FROM machine_due GROUP BY customer_id
),
parts AS (
    SELECT o.customer_id,
           sum(to_reporting(o.net_amount, o.currency, o.ordered_on, p.rc))
               FILTER (WHERE o.ordered_on > p.t - 180) AS parts_180,
           sum(to_reporting(o.net_amount, o.currency, o.ordered_on, p.rc))
               FILTER (WHERE o.ordered_on <= p.t - 180) AS parts_prev
    FROM orders o, p
    WHERE o.deleted_at IS NULL AND o.kind = 'spare_parts' AND o.status <> 'cancelled'
      AND o.status <> 'draft' AND o.ordered_on > p.t - 545 AND o.ordered_on <= p.t
    GROUP BY o.customer_id
),
payments AS (
    SELECT i.customer_id,
           avg(greatest(0, least(coalesce(i.paid_on, p.t), p.t) - i.due_on))
               FILTER (WHERE i.due_on > p.t - 180) AS pay_delay_180,
           avg(greatest(0, least(coalesce(i.paid_on, p.t), p.t) - i.due_on))
               FILTER (WHERE i.due_on <= p.t - 180) AS pay_delay_prev,
           avg((least(coalesce(i.paid_on, p.t), p.t) > i.due_on)::int)
               FILTER (WHERE i.due_on > p.t - 180) AS late_share_180,
           count(*) FILTER (WHERE i.due_on < p.t AND (i.paid_on IS NULL OR i.paid_on > p.t))
               AS overdue_open
    FROM invoices i, p
    WHERE i.deleted_at IS NULL AND i.status NOT IN ('draft', 'cancelled') AND i.net_amount > 0
      AND i.due_on IS NOT NULL AND i.issued_on <= p.t AND i.due_on > p.t - 545
    GROUP BY i.customer_id
),
surveys AS (
    SELECT s.customer_id,
           (array_agg(s.score ORDER BY s.day DESC, s.score))[1] AS nps_last,
           avg(s.score) FILTER (WHERE s.day > p.t - 180) AS nps_180,
           avg(s.score) FILTER (WHERE s.day <= p.t - 180 AND s.day > p.t - 730) AS nps_prev,
           p.t - max(s.day) AS survey_silence_days,
           count(*) FILTER (WHERE s.day > p.t - 365) AS responses_365,
           count(*) FILTER (WHERE s.day <= p.t - 365 AND s.day > p.t - 730)
               AS responses_prev_365
    FROM (SELECT customer_id, score, (answered_at AT TIME ZONE 'UTC')::date AS day
          FROM survey_responses WHERE deleted_at IS NULL) s, p
    WHERE s.day <= p.t
    GROUP BY s.customer_id, p.t
),
purchases AS (
    SELECT i.customer_id,
           count(*) FILTER (WHERE l.kind = 'new_machine' AND i.issued_on > p.t - 400)
               AS new_machines_400,
           count(*) FILTER (WHERE l.kind = 'retrofit' AND i.issued_on > p.t - 365)
               AS retrofits_365
    FROM invoice_lines l
    JOIN invoices i ON i.id = l.invoice_id, p
    WHERE l.deleted_at IS NULL AND i.deleted_at IS NULL AND i.status NOT IN ('draft', 'cancelled')
      AND l.kind IN ('new_machine', 'retrofit') AND i.issued_on > p.t - 400 AND i.issued_on <= p.t
    GROUP BY i.customer_id
)
SELECT pop.customer_id, pop.external_id,
       round(k.annual_value, 2) AS annual_value,
       -- usage
       m.machines::float8 AS machines,
       m.h90 / nullif(m.machines, 0) / (90 / 7.0) AS hours_per_machine_week,
       m.h90 / nullif(m.h_prev90, 0) - 1 AS usage_trend_90,
       (m.h30 / 30.0) / nullif(m.h_prev30 / 90.0, 0) - 1 AS usage_trend_30,
       m.h90 / nullif(m.h_ly90, 0) - 1 AS usage_yoy_90,
       -- maintenance
       least(m.s180 / nullif(m.due180, 0), 2) AS maint_adherence_180,
       least(m.s180 / nullif(m.due180, 0), 2) - least(m.s_prev365 / nullif(m.due_prev365, 0), 2)
           AS maint_adherence_change,
       m.services_overdue::float8 AS services_overdue,
       -- faults
       m.f90 / nullif(m.machines, 0) AS faults_90_per_machine,
       m.f90 - m.f_prev365 / 4.0 AS faults_change,
       -- parts capture
       coalesce(pt.parts_180, 0) / nullif(m.parts_expected_180, 0) AS parts_capture_180,
       coalesce(pt.parts_180, 0) / nullif(m.parts_expected_180, 0)
           - coalesce(pt.parts_prev, 0) / nullif(m.parts_expected_prev, 0)
           AS parts_capture_change,
       -- payments
       pay.pay_delay_180::float8 AS pay_delay_180,
       (pay.pay_delay_180 - pay.pay_delay_prev)::float8 AS pay_delay_change,
       pay.late_share_180::float8 AS late_share_180,
       coalesce(pay.overdue_open, 0)::float8 AS overdue_open,
       -- satisfaction and engagement
       sv.nps_last::float8 AS nps_last,
       (sv.nps_180 - sv.nps_prev)::float8 AS nps_change,
       sv.survey_silence_days::float8 AS survey_silence_days,
       coalesce(sv.responses_365, 0)::float8 AS responses_365,
       (coalesce(sv.responses_365, 0) - coalesce(sv.responses_prev_365, 0))::float8
           AS responses_change,
       -- contract terms
       k.auto_renew::float8 AS auto_renew,
       k.days_to_term_end::float8 AS days_to_term_end,
       k.days_to_notice::float8 AS days_to_notice,
       k.notice_days::float8 AS notice_days,
       k.tier_rank::float8 AS tier_rank,
       ln(1 + coalesce(k.annual_value, 0))::float8 AS log_annual_value,
       coalesce(k.lapse_notified, 0)::float8 AS lapse_notified,
       coalesce(rm.downgrades_365, 0)::float8 AS downgrades_365,
       -- the relationship
       ((SELECT t FROM p) - pop.customer_since) / 365.25 AS tenure_years,
       CASE pop.size_class WHEN 'small' THEN 1 WHEN 'medium' THEN 2 WHEN 'large' THEN 3
                           WHEN 'enterprise' THEN 4 END::float8 AS size_rank,
       pop.key_account::int::float8 AS key_account,
       ln(1 + coalesce(v.revenue_365, 0))::float8 AS log_revenue_365,
       coalesce(pu.new_machines_400, 0)::float8 AS new_machines_400,
       coalesce(pu.retrofits_365, 0)::float8 AS retrofits_365
FROM population pop
LEFT JOIN contract k ON k.customer_id = pop.customer_id
LEFT JOIN machines m ON m.customer_id = pop.customer_id
LEFT JOIN parts pt ON pt.customer_id = pop.customer_id
LEFT JOIN payments pay ON pay.customer_id = pop.customer_id
LEFT JOIN surveys sv ON sv.customer_id = pop.customer_id
LEFT JOIN renewal_moves rm ON rm.customer_id = pop.customer_id
LEFT JOIN invoiced v ON v.customer_id = pop.customer_id
LEFT JOIN purchases pu ON pu.customer_id = pop.customer_id
ORDER BY pop.customer_id

-- name: churn_dates
-- The day each customer churned, as the data known on %(as_of)s says (docs/churn-risk.md):
-- every service contract ended (expired, cancelled or terminated) by as_of and none started
-- after: the end of the last one. A customer that never had a contract churned 365 days after
-- its last invoice, once as_of has reached that day (business stopped).
SELECT customer_id, max(ends_on) AS churned_on
FROM service_contracts
WHERE deleted_at IS NULL AND status <> 'draft'
GROUP BY customer_id
HAVING bool_and(status IN ('expired', 'cancelled', 'terminated') AND ends_on <= %(as_of)s)
UNION ALL
SELECT i.customer_id, max(i.issued_on) + 365
FROM invoices i
WHERE i.deleted_at IS NULL AND i.status NOT IN ('draft', 'cancelled')
  AND NOT EXISTS (SELECT 1 FROM service_contracts sc
                  WHERE sc.customer_id = i.customer_id AND sc.deleted_at IS NULL
                    AND sc.status <> 'draft')
GROUP BY i.customer_id
HAVING max(i.issued_on) + 365 <= %(as_of)s

-- name: data_span
-- The first and last days the business and machine data cover.
SELECT least((SELECT min(issued_on) FROM invoices), (SELECT min(day) FROM machine_days)),
       greatest((SELECT max(issued_on) FROM invoices), (SELECT max(day) FROM machine_days))
