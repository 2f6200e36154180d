-- Trained churn models (analytics/churn_models.py, docs/churn-risk.md). The weekly retraining
-- stores its model here and the daily scoring, in whichever process runs it, reads the newest:
-- two schedulers never score with two different models, and a restart does not retrain.
-- The newest is the one trained on the latest data (trained_until, then the last stored), so a
-- backfill that trains on an old day does not displace the current model.
-- Only the newest 12 are kept (pruned when one is stored, in the same transaction): about a
-- quarter of weekly retrainings, enough to look into what produced the recent scores
-- (churn_scores.model_version = version); a fitted model pickles to about 1 MB.
CREATE TABLE churn_models (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version         text        NOT NULL,   -- ChurnModel.version_, stored with every score
    method          text        NOT NULL CHECK (method IN ('model', 'rules')),
    trained_until   date        NOT NULL,   -- nothing after this day was read
    horizon_days    integer     NOT NULL CHECK (horizon_days > 0),
    churn_events    integer     NOT NULL CHECK (churn_events >= 0),
    training_rows   integer     NOT NULL CHECK (training_rows >= 0),  -- (customer, cut-off) rows
    -- A pickled model is only read back by the scikit-learn version that wrote it.
    sklearn_version text        NOT NULL,
    trained_at      timestamptz NOT NULL DEFAULT now(),
    model           bytea       NOT NULL    -- the pickled ChurnModel
);
CREATE INDEX churn_models_newest ON churn_models (trained_until DESC, id DESC);
