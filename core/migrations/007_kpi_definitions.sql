-- The definitions every retention number shares (docs/kpis.md), as SQL functions so that KPIs,
-- churn risk and segments all count the same customers and the same money. LANGUAGE sql and
-- STABLE with a single statement each: the planner inlines them into the calling query.

-- A customer is active on a day when it has a live service contract that day (not draft, not
-- cancelled, not deleted, starts_on <= day <= ends_on) or an invoice of positive net amount
-- (not draft, not cancelled, not deleted) issued in the window_days up to and including that
-- day. Customers themselves are not filtered on deleted_at: an ERP archives churned customers,
-- and their history is what retention is measured on.
CREATE FUNCTION active_customers(on_day date, window_days integer DEFAULT 365)
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

-- After-sales (recurring) revenue per customer between two days (both included): net invoice
-- line amounts of kinds service_contract, field_service, spare_parts and retrofit, converted to
-- the reporting currency at the issue day; credit notes count negative, draft, cancelled and
-- deleted invoices (and deleted lines) not at all.
CREATE FUNCTION after_sales_revenue(from_day date, to_day date, reporting char(3))
RETURNS TABLE (customer_id integer, revenue numeric, invoices bigint)
LANGUAGE sql STABLE
AS $$
    SELECT i.customer_id,
           sum(to_reporting(l.net_amount, i.currency, i.issued_on, reporting)),
           count(DISTINCT i.id)
    FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id
    WHERE i.deleted_at IS NULL AND l.deleted_at IS NULL AND i.status NOT IN ('draft', 'cancelled')
      AND l.kind IN ('service_contract', 'field_service', 'spare_parts', 'retrofit')
      AND i.issued_on BETWEEN from_day AND to_day
    GROUP BY i.customer_id
$$;

-- The segment(s) of every customer for a cut, as of a day:
--   all          'all'
--   country, industry, size_class, key_account ('true'/'false')   the customer's attribute
--                (its current value; 'unknown' when empty)
--   model        every model of which the customer has a machine in its installed base on that
--                day (commissioned by then, not deleted): a customer can be in several segments
--   tier         the tier of the customer's most valuable contract live that day, else of its
--                contract that ended last before it, else 'none' ('untiered' if empty): a
--                churned customer keeps the tier it left with.
CREATE FUNCTION customer_segments(dimension text, on_day date)
RETURNS TABLE (customer_id integer, segment text)
LANGUAGE sql STABLE
AS $$
    SELECT c.id, coalesce(CASE dimension
                              WHEN 'all' THEN 'all'
                              WHEN 'country' THEN c.country::text
                              WHEN 'industry' THEN c.industry
                              WHEN 'size_class' THEN c.size_class
                              WHEN 'key_account' THEN c.key_account::text
                          END, 'unknown')
    FROM customers c
    WHERE dimension IN ('all', 'country', 'industry', 'size_class', 'key_account')
    UNION ALL
    SELECT DISTINCT ib.customer_id, ib.model
    FROM installed_base ib
    WHERE dimension = 'model'
      AND (ib.deleted_at IS NULL OR ib.deleted_at::date > on_day)
      AND (ib.commissioned_on IS NULL OR ib.commissioned_on <= on_day)
    UNION ALL
    SELECT c.id, coalesce(
        (SELECT coalesce(sc.tier, 'untiered') FROM service_contracts sc
         WHERE sc.customer_id = c.id AND sc.deleted_at IS NULL
           AND sc.status NOT IN ('draft', 'cancelled') AND sc.starts_on <= on_day
         ORDER BY sc.ends_on >= on_day DESC,
                  CASE WHEN sc.ends_on >= on_day THEN sc.annual_value END DESC NULLS LAST,
                  sc.ends_on DESC, sc.id DESC
         LIMIT 1), 'none')
    FROM customers c
    WHERE dimension = 'tier'
$$;
