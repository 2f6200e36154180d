-- The installed base joined to what the ingester registered, through the serial: not a foreign
-- key, because the ERP and the machines are synced independently and either may know a serial
-- first (machine_id is NULL until the machine has sent something). Deleted rows left out.
CREATE OR REPLACE VIEW installed_machines WITH (security_invoker = true) AS
SELECT ib.id AS installed_base_id, ib.serial, ib.model, ib.customer_id, ib.site_id,
       ib.commissioned_on, ib.warranty_end, m.id AS machine_id, m.online, m.first_seen_at
FROM installed_base ib
LEFT JOIN machines m ON m.serial = ib.serial
WHERE ib.deleted_at IS NULL;
