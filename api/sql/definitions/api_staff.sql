-- Whether the transaction is a staff member's (admin, service, finance, viewer): the policies of
-- platform-wide tables, and the short way through the policies of rows reached via a parent.
CREATE OR REPLACE FUNCTION api_staff() RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT current_setting('app.scope', true) = 'staff' $$;
