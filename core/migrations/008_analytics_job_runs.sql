-- Runs of the scheduled analytics jobs (rollups, KPIs and scores, retraining): when, how it
-- ended, and what it did, so a stale job is visible and a restarted scheduler knows what is due.
CREATE TABLE analytics_job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text        NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'succeeded', 'failed')),
    detail      text
);
CREATE INDEX analytics_job_runs_job ON analytics_job_runs (job, started_at DESC);
