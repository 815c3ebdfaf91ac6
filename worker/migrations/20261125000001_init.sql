-- payhook: payments, the transition ledger, refunds, the raw notification audit and
-- the outbox. Postgres is the source of truth for "exactly one effect per business
-- transition": every effect hangs off a unique transition key.

-- One row per (provider, merchant, out_trade_no). Created by order registration or
-- by the first notification that names the order.
CREATE TABLE payments (
    id                 BIGSERIAL PRIMARY KEY,
    provider           TEXT        NOT NULL,
    merchant           TEXT        NOT NULL,
    out_trade_no       TEXT        NOT NULL,
    -- PENDING | PAID | PARTIALLY_REFUNDED | REFUNDED | CLOSED (monotonic, see db/state.rs)
    state              TEXT        NOT NULL DEFAULT 'PENDING',
    registered         BOOLEAN     NOT NULL DEFAULT FALSE,
    expected_amount    BIGINT,                 -- fen, from registration
    currency           TEXT        NOT NULL DEFAULT 'CNY',
    expected_app_id    TEXT,
    expected_mch_id    TEXT,
    expected_payee     TEXT,
    expires_at         TIMESTAMPTZ,
    total_amount       BIGINT,                 -- fen, as the provider reports it
    paid_amount        BIGINT,                 -- fen, what the buyer paid
    refunded_amount    BIGINT      NOT NULL DEFAULT 0,
    provider_trade_no  TEXT,
    paid_at            TIMESTAMPTZ,
    closed_at          TIMESTAMPTZ,
    quarantined        BOOLEAN     NOT NULL DEFAULT FALSE,
    quarantine_reason  TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, merchant, out_trade_no),
    CHECK (state IN ('PENDING', 'PAID', 'PARTIALLY_REFUNDED', 'REFUNDED', 'CLOSED')),
    CHECK (refunded_amount >= 0)
);
CREATE INDEX payments_pending_idx ON payments (created_at) WHERE state = 'PENDING';
CREATE INDEX payments_quarantined_idx ON payments (updated_at) WHERE quarantined;

-- The ledger: one row per business transition, ever. The unique key is the envelope's
-- transition_key, e.g. alipay:shop:payment:O123:PAID or wechat_v3:m:refund:R9:REFUND_SUCCEEDED
-- (a quarantine is its own transition: <key>:QUARANTINED).
CREATE TABLE transitions (
    id              BIGSERIAL PRIMARY KEY,
    transition_key  TEXT        NOT NULL UNIQUE,
    payment_id      BIGINT      NOT NULL REFERENCES payments (id),
    kind            TEXT        NOT NULL,   -- payment | refund | close | quarantine
    status          TEXT        NOT NULL,   -- the envelope status (PAID, REFUND_SUCCEEDED, ...)
    from_state      TEXT        NOT NULL,
    to_state        TEXT        NOT NULL,
    event_id        TEXT        NOT NULL,   -- the notification that caused it
    source          TEXT        NOT NULL,   -- notify | reconcile
    applied_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX transitions_payment_idx ON transitions (payment_id);

-- One row per refund request (out_refund_no), its latest status.
CREATE TABLE refunds (
    id                  BIGSERIAL PRIMARY KEY,
    payment_id          BIGINT      NOT NULL REFERENCES payments (id),
    provider            TEXT        NOT NULL,
    merchant            TEXT        NOT NULL,
    out_refund_no       TEXT        NOT NULL,
    status              TEXT        NOT NULL,   -- REFUND_SUCCEEDED | REFUND_CLOSED | REFUND_ABNORMAL | REFUND_PROCESSING
    amount              BIGINT,                 -- fen, as reported
    amount_cumulative   BOOLEAN     NOT NULL DEFAULT FALSE,  -- Alipay refund_fee is cumulative
    provider_refund_no  TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, merchant, out_refund_no)
);

-- Every distinct notification received (by event_id), for audit and re-verification.
CREATE TABLE notifications (
    event_id        TEXT        PRIMARY KEY,
    provider        TEXT        NOT NULL,
    merchant        TEXT        NOT NULL,
    kind            TEXT        NOT NULL,
    status          TEXT        NOT NULL,
    source          TEXT        NOT NULL,
    out_trade_no    TEXT,
    transition_key  TEXT,
    request_id      TEXT        NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    -- applied | duplicate_transition | quarantined | recorded
    outcome         TEXT        NOT NULL,
    envelope        JSONB       NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (outcome IN ('applied', 'duplicate_transition', 'quarantined', 'recorded'))
);
CREATE INDEX notifications_order_idx ON notifications (provider, merchant, out_trade_no);

-- Downstream events, written in the same transaction as the transition they announce,
-- relayed to the events exchange by outbox.rs. `id` orders the relay; `event_id` is
-- the CloudEvents id consumers deduplicate on. `transition_id` ties an event to the
-- transition it announces; UNIQUE makes "one event per transition" a database fact
-- (nullable so that the relay's own tests can insert bare rows).
CREATE TABLE outbox (
    id            BIGSERIAL   PRIMARY KEY,
    event_id      UUID        NOT NULL UNIQUE,
    transition_id BIGINT      UNIQUE REFERENCES transitions (id),
    routing_key   TEXT        NOT NULL,     -- <kind>.<state>.<provider>
    payload       JSONB       NOT NULL,     -- the CloudEvents 1.0 JSON document
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
