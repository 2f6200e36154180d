-- Queries of the API benchmark (tests/bench/api.py): what its URLs are filled with, and the
-- synthetic machines that grow a demo world's installed base to --machines.

-- name: world_size
SELECT (SELECT count(*) FROM customers WHERE deleted_at IS NULL),
       (SELECT count(*) FROM installed_base WHERE deleted_at IS NULL),
       (SELECT count(*) FROM installed_base WHERE source = 'bench'),
       (SELECT count(*) FROM machines),
       (SELECT count(*) FROM service_contracts WHERE deleted_at IS NULL),
       (SELECT count(*) FROM machine_days),
       (SELECT count(*) FROM churn_scores)

-- name: customer_ids
-- The world's customers with a machine on the books (the former ones have none; the synthetic
-- ones have no invoices, scores or values: a 360 of them would be a cheap one).
SELECT DISTINCT ib.customer_id FROM installed_base ib
WHERE ib.deleted_at IS NULL AND ib.source <> 'bench'
ORDER BY 1

-- name: machine_ids
-- Machines that reported in the last 30 days (a chart of a machine that never did is empty).
SELECT DISTINCT md.machine_id FROM machine_days md JOIN machines m ON m.id = md.machine_id
WHERE md.day >= %(today)s::date - 30 AND md.samples > 0 AND m.serial NOT LIKE 'BENCH-%%'
ORDER BY 1

-- name: installed_base_ids
-- The installed-base rows of those machines.
SELECT DISTINCT ib.id FROM installed_base ib
JOIN machines m ON m.serial = ib.serial
JOIN machine_days md ON md.machine_id = m.id
WHERE ib.deleted_at IS NULL AND ib.source <> 'bench' AND md.day >= %(today)s::date - 30
  AND md.samples > 0
ORDER BY 1

-- name: grow_customers
-- A synthetic customer per five synthetic machines (the demo world's ratio), each a copy of a
-- world customer's industry, country and size class, so every filter keeps its spread.
WITH world AS (
    SELECT row_number() OVER (ORDER BY id) - 1 AS i, industry, country, size_class
    FROM customers WHERE source <> 'bench' AND deleted_at IS NULL
)
INSERT INTO customers (source, external_id, name, industry, country, size_class, key_account,
                       customer_since)
SELECT 'bench', format('BC-%%s', lpad(n::text, 6, '0')), format('Bench customer %%s', n),
       w.industry, w.country, w.size_class, n %% 20 = 0, DATE '2008-01-01' + (n * 37) %% 6000
FROM generate_series(1, %(customers)s::int) AS n
JOIN world w ON w.i = n %% (SELECT count(*) FROM world)
ON CONFLICT (source, external_id) DO NOTHING

-- name: grow_sites
INSERT INTO sites (source, external_id, customer_id, name, country, city)
SELECT 'bench', 'BS-' || substr(c.external_id, 4), c.id, c.name || ' plant', c.country, 'Bench'
FROM customers c WHERE c.source = 'bench'
ON CONFLICT (source, external_id) DO NOTHING

-- name: grow_installed_base
-- Machine n belongs to synthetic customer (n - 1) / 5 + 1, of the world's models in turn,
-- commissioned over the last ten years with two years of warranty. Customers and models are
-- arrays indexed by n: a join on a computed key ran as a nested loop (two minutes for 100,000).
WITH c AS (
    SELECT array_agg(id ORDER BY id) AS ids FROM customers WHERE source = 'bench'
), models AS (
    SELECT array_agg(DISTINCT model ORDER BY model) AS names
    FROM installed_base WHERE source <> 'bench'
), m AS (
    SELECT n, c.ids[(n - 1) / 5 + 1] AS customer_id,
           models.names[1 + n %% cardinality(models.names)] AS model
    FROM generate_series(1, %(machines)s::int) AS n, c, models
)
INSERT INTO installed_base (source, external_id, serial, model, customer_id, site_id,
                            commissioned_on, warranty_end)
SELECT 'bench', format('BIB-%%s', lpad(m.n::text, 7, '0')),
       format('BENCH-%%s', lpad(m.n::text, 7, '0')), m.model, m.customer_id, s.id,
       %(today)s::date - (m.n * 7919) %% 3650, %(today)s::date - (m.n * 7919) %% 3650 + 730
FROM m JOIN sites s ON s.customer_id = m.customer_id AND s.source = 'bench'
ON CONFLICT (source, external_id) DO NOTHING

-- name: grow_machines
-- Registered as the ingester registers a JSON machine, in the world's tenant; one in 17 offline.
INSERT INTO machines (tenant, serial, protocol, first_seen_at, online, online_changed_at)
SELECT %(tenant)s, ib.serial, 'json', ib.commissioned_on::timestamptz,
       ib.id %% 17 <> 0, %(today)s::date - 1 - ib.id %% 30
FROM installed_base ib WHERE ib.source = 'bench'
ON CONFLICT (tenant, serial) DO NOTHING

-- name: grow_machine_days
-- Daily usage on the days before today (--usage-days): a shift of 8, 16 or 22 hours on
-- workdays at a load drawn per machine-day; one machine in 20 silent for its last 14 days, one
-- in 9 with a fault every few days.
INSERT INTO machine_days (machine_id, day, operating_hours, running_hours, fault_hours, samples,
                          faults, services, last_seen)
SELECT m.id, u.day, u.hours, u.hours * 0.9, CASE WHEN u.fault THEN 1.5 ELSE 0 END,
       ceil(u.hours)::int, u.fault::int, 0,
       (u.day::timestamp AT TIME ZONE 'UTC') + make_interval(secs => u.hours::float8 * 3600)
FROM machines m
CROSS JOIN LATERAL (
    SELECT g.day,
           (ARRAY[8, 16, 22])[1 + m.id %% 3]
             * (0.4 + ((m.id::bigint * 2654435761 + g.i * 40503) %% 1000) / 1666.0) AS hours,
           m.id %% 9 = 0 AND (m.id + g.i) %% 5 = 0 AS fault
    FROM (SELECT i, %(today)s::date - i AS day
          FROM generate_series(1, %(days)s::int) AS i) AS g
    WHERE extract(isodow FROM g.day) < 6 AND NOT (m.id %% 20 = 0 AND g.i <= 14)
) AS u
WHERE m.serial LIKE 'BENCH-%%'
ON CONFLICT (machine_id, day) DO NOTHING

-- name: grow_machine_states
-- Each synthetic machine's state since its last day seen.
INSERT INTO machine_states (time, machine_id, state)
SELECT last.seen, last.machine_id,
       (CASE WHEN last.machine_id %% 23 = 0 THEN 'fault' WHEN last.machine_id %% 3 = 0 THEN 'idle'
             WHEN last.machine_id %% 17 = 0 THEN 'off' ELSE 'running' END)::machine_state
FROM (SELECT md.machine_id, max(md.last_seen) AS seen
      FROM machine_days md JOIN machines m ON m.id = md.machine_id
      WHERE m.serial LIKE 'BENCH-%%' GROUP BY md.machine_id) AS last
ON CONFLICT DO NOTHING

-- name: grow_contracts
-- Seven synthetic customers in ten hold a customer-scope contract in EUR, of one to three years,
-- ending over the next 20 months, on the world's tiers.
WITH tiers AS (
    SELECT row_number() OVER (ORDER BY tier) - 1 AS i, tier
    FROM (SELECT DISTINCT tier FROM service_contracts
          WHERE source <> 'bench' AND tier IS NOT NULL) AS t
), c AS (
    SELECT id, (row_number() OVER (ORDER BY id))::int AS k FROM customers WHERE source = 'bench'
)
INSERT INTO service_contracts (source, external_id, customer_id, scope, contract_number, tier,
                               starts_on, ends_on, notice_period_days, auto_renew, annual_value,
                               currency, status)
SELECT 'bench', format('BSC-%%s', lpad(c.k::text, 6, '0')), c.id, 'customer',
       format('BENCH-%%s', c.k), tiers.tier,
       %(today)s::date + (c.k * 13) %% 600 - 365 * (1 + c.k %% 3),
       %(today)s::date + (c.k * 13) %% 600, 90, c.k %% 3 = 0,
       (1000 + (c.k * 7919) %% 24000)::numeric(14, 2), 'EUR', 'active'
FROM c JOIN tiers ON tiers.i = c.k %% (SELECT greatest(count(*), 1) FROM tiers)
WHERE c.k %% 10 < 7
ON CONFLICT (source, external_id) DO NOTHING

-- name: api_busy
-- The API's connections to this database in a statement or a transaction.
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'oemr-api' AND state <> 'idle'

-- name: bench_contracts
SELECT count(*) FROM service_contracts WHERE source = 'bench'

-- name: world_tenant
SELECT coalesce((SELECT tenant FROM machines WHERE serial NOT LIKE 'BENCH-%%' LIMIT 1), 'demo')

-- name: analyze_grown
ANALYZE customers, sites, installed_base, machines, machine_days, machine_states,
        service_contracts
