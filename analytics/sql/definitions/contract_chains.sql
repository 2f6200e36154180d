-- A customer's contract relationships: its live contracts (not draft, cancelled or deleted;
-- started by on_day; ends capped at on_day), in order of start, form chains. A contract starting
-- within grace_days after the latest end so far continues the chain (Odoo renews a subscription
-- by a new order, often a few days late; co-termed machine contracts overlap); a later one starts
-- a new chain, numbered from 1. The CLV inputs (analytics/sql/clv.sql) read both the valued
-- relationship and the renewal cohorts from here, so the two cannot disagree on what a chain is.
CREATE OR REPLACE FUNCTION contract_chains(on_day date, grace_days integer)
RETURNS TABLE (customer_id integer, chain bigint, started_on date, ended_on date,
               contracts bigint)
LANGUAGE sql STABLE
AS $$
    WITH live AS (
        SELECT id, customer_id, starts_on, least(ends_on, on_day) AS ends_on
        FROM service_contracts
        WHERE deleted_at IS NULL AND status NOT IN ('draft', 'cancelled')
          AND starts_on <= on_day
    ),
    ordered AS (
        SELECT customer_id, id, starts_on, ends_on,
               max(ends_on) OVER (PARTITION BY customer_id ORDER BY starts_on, ends_on, id
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
        FROM live
    ),
    numbered AS (
        SELECT customer_id, starts_on, ends_on,
               sum(CASE WHEN reach IS NULL OR starts_on > reach + grace_days THEN 1 ELSE 0 END)
                   -- The same order as `ordered` (id breaks ties): a chain starts where reach
                   -- was computed to break.
                   OVER (PARTITION BY customer_id ORDER BY starts_on, ends_on, id
                         ROWS UNBOUNDED PRECEDING) AS chain
        FROM ordered
    )
    SELECT customer_id, chain, min(starts_on), max(ends_on), count(*)
    FROM numbered
    GROUP BY customer_id, chain
$$;
