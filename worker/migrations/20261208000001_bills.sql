-- Daily bill reconciliation (worker/src/bills.rs, docs/design.md "Daily bills").

-- One run per provider, merchant and bill date (China Standard Time): the latest
-- attempt's state and what both sides held.
CREATE TABLE bill_runs (
    id                  BIGSERIAL   PRIMARY KEY,
    provider            TEXT        NOT NULL,
    merchant            TEXT        NOT NULL,
    bill_date           DATE        NOT NULL,
    -- running | reconciled | failed (no_bill: the provider has none for the day yet)
    state               TEXT        NOT NULL,
    attempts            INTEGER     NOT NULL DEFAULT 0,
    bill_sha256         TEXT,
    bill_payments       BIGINT,
    bill_payment_fen    BIGINT,
    bill_refunds        BIGINT,
    bill_refund_fen     BIGINT,
    bill_fee_millifen   BIGINT,
    ledger_payments     BIGINT,
    ledger_payment_fen  BIGINT,
    ledger_refunds      BIGINT,
    ledger_refund_fen   BIGINT,
    open_differences    BIGINT,
    error               TEXT,
    started_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at         TIMESTAMPTZ,
    UNIQUE (provider, merchant, bill_date),
    CHECK (state IN ('running', 'reconciled', 'no_bill', 'failed'))
);

-- A run's bill lines while it compares them (COPY in, compared in SQL, deleted at the
-- end of the run): the worker's memory does not grow with the bill.
CREATE TABLE bill_lines (
    run_id              BIGINT      NOT NULL REFERENCES bill_runs (id) ON DELETE CASCADE,
    line                BIGINT      NOT NULL,
    kind                TEXT        NOT NULL,   -- payment | refund
    provider_trade_no   TEXT        NOT NULL,
    out_trade_no        TEXT        NOT NULL,
    out_refund_no       TEXT,
    refund_id           TEXT,
    amount              BIGINT      NOT NULL,   -- fen: the order amount, or the refund's
    settled             BIGINT,                 -- fen: what the merchant is settled (payments)
    fee_millifen        BIGINT      NOT NULL,
    at                  TIMESTAMPTZ,
    PRIMARY KEY (run_id, line),
    CHECK (kind IN ('payment', 'refund'))
);

-- What did not match, one row per (day, category, order or refund), kept across runs:
-- a run again updates it, a difference gone from a later run is marked settled.
CREATE TABLE bill_differences (
    id                  BIGSERIAL   PRIMARY KEY,
    provider            TEXT        NOT NULL,
    merchant            TEXT        NOT NULL,
    bill_date           DATE        NOT NULL,
    category            TEXT        NOT NULL,
    out_trade_no        TEXT        NOT NULL,
    out_refund_no       TEXT        NOT NULL DEFAULT '',
    provider_trade_no   TEXT,
    bill_amount         BIGINT,
    ledger_amount       BIGINT,
    registered_amount   BIGINT,
    -- open | settled (a later run no longer finds it) | resolved (by a person)
    status              TEXT        NOT NULL DEFAULT 'open',
    -- the reconciler was asked to query the order (missing_in_payhook)
    query_requested     BOOLEAN     NOT NULL DEFAULT FALSE,
    resolved_by         TEXT,
    resolution          TEXT,
    resolved_at         TIMESTAMPTZ,
    found_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, merchant, bill_date, category, out_trade_no, out_refund_no),
    CHECK (category IN ('missing_in_payhook', 'missing_at_provider', 'amount_mismatch',
                        'state_mismatch', 'refund_mismatch')),
    CHECK (status IN ('open', 'settled', 'resolved'))
);
CREATE INDEX bill_differences_open_idx ON bill_differences (found_at) WHERE status = 'open';

-- The ledger side of a day: payments by when they were paid.
CREATE INDEX payments_paid_at_idx ON payments (provider, merchant, paid_at)
    WHERE paid_at IS NOT NULL;
