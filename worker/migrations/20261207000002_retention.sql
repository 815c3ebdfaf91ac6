-- Retention (worker/src/retention.rs): notifications are pruned by age, so they get an
-- index on it (appended at its right edge: cheap to maintain); redaction is recorded
-- per row; how far pruning and redaction went is kept for the payment history.
CREATE INDEX notifications_recorded_at_idx ON notifications (recorded_at);
ALTER TABLE notifications ADD COLUMN redacted_at TIMESTAMPTZ;
CREATE TABLE retention_state (
    what        TEXT        PRIMARY KEY,   -- notifications | events | redaction
    before      TIMESTAMPTZ NOT NULL,      -- everything older is pruned (redacted)
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
