-- Reconciliation bookkeeping: when a pending payment is next queried, how many times
-- it was, and what the last answer said. NULL next_at = not scheduled yet (the sweeper
-- starts from created_at + reconcile.pending_after_secs); 'infinity' = no longer queried.
ALTER TABLE payments
    ADD COLUMN reconcile_next_at   TIMESTAMPTZ,
    ADD COLUMN reconcile_attempts  INTEGER     NOT NULL DEFAULT 0,
    ADD COLUMN reconcile_last      TEXT,
    ADD COLUMN reconciled_at       TIMESTAMPTZ;
-- The sweeper looks only at payments that can be due: pending ones, and those known
-- only from a refund. A partial index keeps each sweep proportional to those rows, not
-- to the whole table.
CREATE INDEX payments_reconcile_watch_idx
    ON payments (created_at)
    WHERE state = 'PENDING' OR (paid_at IS NULL AND refunded_amount > 0);

-- Refund registration: the merchant tells payhook about a refund it asked the provider
-- for, so that a refund whose notification never comes is found by a refund query.
ALTER TABLE refunds
    ADD COLUMN registered          BOOLEAN     NOT NULL DEFAULT FALSE,
    ADD COLUMN expected_amount     BIGINT,
    ADD COLUMN reconcile_next_at   TIMESTAMPTZ,
    ADD COLUMN reconcile_attempts  INTEGER     NOT NULL DEFAULT 0,
    ADD COLUMN reconcile_last      TEXT,
    ADD COLUMN reconciled_at       TIMESTAMPTZ;
CREATE INDEX refunds_reconcile_due_idx
    ON refunds (COALESCE(reconcile_next_at, created_at))
    WHERE status = 'REFUND_PROCESSING' AND registered;
