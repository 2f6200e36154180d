-- Records rejected only because a parent they name has not arrived yet (an invoice synced before
-- its customer, a customer whose sync failed this run). An incremental cursor moves past them, so
-- they are kept here and tried again at the start of every run of their entity until they bind,
-- are replaced by a newer version from the source, or are gone from it (a complete read).
CREATE TABLE sync_pending (
    source            text        NOT NULL,
    entity            text        NOT NULL,
    external_id       text        NOT NULL,
    record            jsonb       NOT NULL,
    line_number       integer,
    reason            text        NOT NULL,
    first_rejected_at timestamptz NOT NULL DEFAULT now(),
    last_tried_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, entity, external_id)
);
