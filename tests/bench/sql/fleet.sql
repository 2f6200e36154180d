-- The fleet benchmark's world (tests/bench/fleet.py): a synthetic installed base of
-- %(machines)s machines, 10 per customer, 95% of them reporting, with 60 days of machine_days,
-- a state each and a live customer-scope contract for 6 customers in 10. Written straight into
-- an empty, migrated database (no telemetry: the fleet list reads the rollups).

-- name: customers
INSERT INTO customers (source, external_id, name, country)
SELECT 'bench', 'C' || i, 'Customer ' || lpad(i::text, 6, '0'),
       (ARRAY['DE', 'FR', 'IT', 'US', 'CN', 'PL', 'ES', 'SE'])[1 + i %% 8]
FROM generate_series(1, %(machines)s / 10) i

-- name: sites
INSERT INTO sites (source, external_id, customer_id, name, country)
SELECT 'bench', 'S' || c.id, c.id, 'Plant ' || c.id, c.country FROM customers c

-- name: installed_base
INSERT INTO installed_base (source, external_id, serial, model, customer_id, site_id,
                            commissioned_on, warranty_end)
SELECT 'bench', 'IB' || i, 'B-' || lpad(i::text, 7, '0'),
       (ARRAY['VMC650', 'VMC1000', 'HMC630', 'TL300', '5AX400', 'GR800'])[1 + i %% 6],
       s.customer_id, s.id, date '2021-01-01' + (i %% 1500),
       date '2021-01-01' + (i %% 1500) + 730
FROM generate_series(1, %(machines)s) i
JOIN sites s ON s.external_id = 'S' || (1 + (i - 1) / 10)

-- name: machines
INSERT INTO machines (tenant, serial, protocol)
SELECT 'bench', serial, 'json' FROM installed_base WHERE id %% 20 <> 0

-- name: machine_days
-- Each machine's own level (2-20 h a day), a tenth of them halving over the last 30 days.
INSERT INTO machine_days (machine_id, day, operating_hours, running_hours, samples, faults,
                          last_seen)
SELECT m.id, d::date,
       (2 + m.id %% 19) * CASE WHEN m.id %% 10 = 0 AND d >= current_date - 30 THEN 0.4 ELSE 1 END,
       (2 + m.id %% 19) * 0.8, 10, CASE WHEN (m.id + extract(day FROM d)::int) %% 97 = 0
                                        THEN 1 ELSE 0 END,
       d + interval '20 hours'
FROM machines m
CROSS JOIN generate_series(current_date - 60, current_date - 1 - (m.id %% 50 = 0)::int * 20,
                           interval '1 day') d

-- name: states
INSERT INTO machine_states (time, machine_id, state)
SELECT current_date - interval '4 hours', id,
       (ARRAY['running', 'idle', 'off', 'fault'])[1 + id %% 4]::machine_state
FROM machines

-- name: contracts
INSERT INTO service_contracts (source, external_id, customer_id, scope, tier, starts_on,
                               ends_on, annual_value, currency, status)
SELECT 'bench', 'K' || id, id, 'customer', 'gold', current_date - 100, current_date + 265,
       12000, 'EUR', 'active'
FROM customers WHERE id %% 10 < 6

-- name: analyze
ANALYZE

-- name: sizes
SELECT (SELECT count(*) FROM installed_base) AS machines,
       (SELECT count(*) FROM machine_days) AS machine_days,
       pg_size_pretty(pg_total_relation_size('fleet_status')) AS fleet_status_size

-- name: as_api
-- The API's role and a staff scope, as a request runs (row-level security on).
SELECT set_config('role', 'oemr_api', true), set_config('app.scope', 'staff', true)

-- name: as_customer
SELECT set_config('role', 'oemr_api', true), set_config('app.scope', 'customer', true),
       set_config('app.customer_id', %(customer_id)s, true)
