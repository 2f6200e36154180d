-- Scheduled analytics jobs: one run of a job at a time across every process and host.

-- name: try_lock
-- A session lock: released when the job's connection ends, also if the process dies.
SELECT pg_try_advisory_lock(%(lock_class)s::integer, hashtext(%(job)s::text))

-- name: unlock
SELECT pg_advisory_unlock(%(lock_class)s::integer, hashtext(%(job)s::text))

-- name: abandon_runs
UPDATE analytics_job_runs
SET status = 'failed', finished_at = now(),
    detail = 'interrupted: the process ended before the run finished'
WHERE job = %(job)s AND status = 'running'

-- name: start_run
INSERT INTO analytics_job_runs (job) VALUES (%(job)s) RETURNING id

-- name: finish_run
UPDATE analytics_job_runs
SET finished_at = now(), status = %(status)s, detail = %(detail)s
WHERE id = %(run_id)s

-- name: last_success
SELECT max(finished_at) FROM analytics_job_runs WHERE job = %(job)s AND status = 'succeeded'
