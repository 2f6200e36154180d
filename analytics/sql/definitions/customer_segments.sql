-- The segment(s) of every customer for a cut, as of a day (docs/kpis.md, "Cuts"):
--   all          'all'
--   country, industry, size_class, key_account ('true'/'false')   the customer's attribute
--                (its current value; 'unknown' when empty)
--   model        every model of which the customer has a machine in its installed base on that
--                day (commissioned by then, not deleted): a customer can be in several segments
--   tier         the tier of the customer's most valuable contract live that day, else of its
--                contract that ended last before it, else 'none' ('untiered' if empty): a
--                churned customer keeps the tier it left with.
CREATE OR REPLACE FUNCTION customer_segments(dimension text, on_day date)
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
