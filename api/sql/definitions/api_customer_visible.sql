-- Whether the transaction's scope lets it see a customer's rows: staff see every customer, a
-- portal user (scope 'customer') its own, and a transaction with no scope none (fail closed).
-- Set per transaction by the API (api/deps.py) with set_config(..., true).
CREATE OR REPLACE FUNCTION api_customer_visible(customer integer) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE current_setting('app.scope', true)
               WHEN 'staff' THEN true
               WHEN 'customer' THEN customer = nullif(current_setting('app.customer_id', true), '')::integer
               ELSE false
           END
$$;
