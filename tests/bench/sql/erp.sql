-- The ERP benchmark's baseline write: one plain INSERT .. SELECT unnest per page, no upsert,
-- no change detection, no parent lookup (the invoice ids are resolved before timing).

-- name: insert_invoice_lines
INSERT INTO invoice_lines (source, external_id, invoice_id, kind, product_code, description,
                           quantity, unit_price, net_amount)
SELECT %(source)s::text, r.*
FROM unnest(%(external_id)s::text[], %(invoice_id)s::integer[], %(kind)s::text[],
            %(product_code)s::text[], %(description)s::text[], %(quantity)s::numeric[],
            %(unit_price)s::numeric[], %(net_amount)s::numeric[]) AS r

-- name: invoice_ids
SELECT external_id, id FROM invoices WHERE source = %(source)s
