-- name: set_scope
-- The transaction's scope, read by the row-level security policies of migration 019.
SELECT set_config('app.scope', %(scope)s, true),
       set_config('app.customer_id', %(customer_id)s, true);

-- name: user_for_login
SELECT id, username, password_hash, role, customer_id, disabled
FROM api_users WHERE username = %(username)s;

-- name: user_by_id
SELECT id, username, role, customer_id, disabled FROM api_users WHERE id = %(id)s;

-- name: user_by_username
SELECT id, username, role, customer_id, disabled, created_at FROM api_users
WHERE username = %(username)s;

-- name: key_by_id
SELECT id, prefix, name, role, customer_id, created_at, last_used_at, revoked_at
FROM api_keys WHERE id = %(id)s;

-- name: rehash_password
UPDATE api_users SET password_hash = %(password_hash)s WHERE id = %(id)s;

-- name: key_by_prefix
SELECT id, secret_hash, name, role, customer_id, revoked_at FROM api_keys WHERE prefix = %(prefix)s;

-- name: touch_key
-- Last use to the minute: a busy program does not write a row per request.
UPDATE api_keys SET last_used_at = now()
WHERE id = %(id)s AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');

-- name: add_user
INSERT INTO api_users (username, password_hash, role, customer_id)
VALUES (%(username)s, %(password_hash)s, %(role)s, %(customer_id)s)
ON CONFLICT (username) DO UPDATE
    SET password_hash = EXCLUDED.password_hash, role = EXCLUDED.role,
        customer_id = EXCLUDED.customer_id, disabled = false
RETURNING id, username, role, customer_id, disabled, created_at;

-- name: list_users
SELECT id, username, role, customer_id, disabled, created_at FROM api_users ORDER BY id;

-- name: update_user
UPDATE api_users
SET role = coalesce(%(role)s, role),
    customer_id = CASE WHEN coalesce(%(role)s, role) = 'customer'
                       THEN coalesce(%(customer_id)s, customer_id) END,
    disabled = coalesce(%(disabled)s, disabled),
    password_hash = coalesce(%(password_hash)s, password_hash)
WHERE id = %(id)s
RETURNING id, username, role, customer_id, disabled, created_at;

-- name: add_key
INSERT INTO api_keys (prefix, secret_hash, name, role, customer_id, created_by)
VALUES (%(prefix)s, %(secret_hash)s, %(name)s, %(role)s, %(customer_id)s, %(created_by)s)
RETURNING id, prefix, name, role, customer_id, created_at, last_used_at, revoked_at;

-- name: list_keys
SELECT id, prefix, name, role, customer_id, created_at, last_used_at, revoked_at
FROM api_keys ORDER BY id;

-- name: revoke_key
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %(id)s
RETURNING id, prefix, name, role, customer_id, created_at, last_used_at, revoked_at;

-- name: audit
INSERT INTO audit_log (actor, actor_role, action, entity, entity_id, before, after, request_id)
VALUES (%(actor)s, %(actor_role)s, %(action)s, %(entity)s, %(entity_id)s, %(before)s,
        %(after)s, %(request_id)s);

-- name: audit_page
SELECT id, at, actor, actor_role, action, entity, entity_id, before, after, request_id
FROM audit_log
WHERE (%(entity)s::text IS NULL OR entity = %(entity)s)
  AND (%(actor)s::text IS NULL OR actor = %(actor)s)
  AND (%(after_id)s::bigint IS NULL OR id < %(after_id)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: idempotency_lock
-- Two requests with one key wait for each other: the second then finds the first's answer.
SELECT pg_advisory_xact_lock(hashtextextended(%(actor)s || E'\n' || %(key)s, 19));

-- name: idempotency_find
SELECT route, request_hash, status, response FROM idempotency_keys
WHERE actor = %(actor)s AND key = %(key)s;

-- name: idempotency_store
INSERT INTO idempotency_keys (actor, key, route, request_hash, status, response)
VALUES (%(actor)s, %(key)s, %(route)s, %(request_hash)s, %(status)s, %(response)s);
