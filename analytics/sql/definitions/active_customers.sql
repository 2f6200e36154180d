-- Who is an active customer (docs/kpis.md, "Shared definitions"): the KPIs, churn risk and
-- segments all count the same customers through this function. LANGUAGE sql and STABLE with a
-- single statement: the planner inlines it into the calling query.
--
-- A customer is active on a day when it has a live service contract that day (not draft, not
-- cancelled, not deleted, starts_on <= day <= ends_on) or an invoice of positive net amount
-- (not draft, not cancelled, not deleted) issued in the window_days up to and including that
-- day. Customers themselves are not filtered on deleted_at: an ERP archives churned customers,
-- and their history is what retention is measured on.
CREATE OR REPLACE FUNCTION active_customers(on_day date, window_days integer DEFAULT 365)
RETURNS TABLE (customer_id integer)
LANGUAGE sql STABLE
AS $$
    SELECT sc.customer_id FROM service_contracts sc
    WHERE sc.deleted_at IS NULL AND sc.status NOT IN ('draft', 'cancelled')
      AND sc.starts_on <= on_day AND on_day <= sc.ends_on
    UNION
    SELECT i.customer_id FROM invoices i
    WHERE i.deleted_at IS NULL AND i.status NOT IN ('draft', 'cancelled') AND i.net_amount > 0
      AND i.issued_on > on_day - window_days AND i.issued_on <= on_day
$$;
