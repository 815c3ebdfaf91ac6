-- Every operate action on the admin API (and payhook-admin's): who, what, on what,
-- when, with what result. Append-only; read by `payhook-admin audit`.
CREATE TABLE admin_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    result text NOT NULL
);
CREATE INDEX admin_audit_at ON admin_audit (at DESC);
