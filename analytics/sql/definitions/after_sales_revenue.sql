-- After-sales (recurring) revenue per customer between two days (both included): net invoice
-- line amounts of kinds service_contract, field_service, spare_parts and retrofit, converted to
-- the reporting currency at the issue day; credit notes count negative, draft, cancelled and
-- deleted invoices (and deleted lines) not at all. docs/kpis.md, "Shared definitions".
-- depends on: to_reporting
CREATE OR REPLACE FUNCTION after_sales_revenue(from_day date, to_day date, reporting char(3))
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
