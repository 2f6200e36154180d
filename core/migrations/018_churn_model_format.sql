-- Churn models are stored with skops (analytics/churn_models.py, docs/churn-risk.md), which
-- builds only the types it is told to trust, no longer pickled: unpickling runs whatever code
-- its bytes name, so whoever could write this table could run code in the analytics process.
-- The rows stored before are pickles: they say so here and are never loaded (the daily run
-- trains a model in their place). New rows name their format: no default.
ALTER TABLE churn_models
    ADD COLUMN format text NOT NULL DEFAULT 'pickle' CHECK (format IN ('pickle', 'skops'));
ALTER TABLE churn_models ALTER COLUMN format DROP DEFAULT;
