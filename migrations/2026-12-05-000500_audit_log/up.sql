-- The audit log: who did what among the admin and key actions (sends to others, broadcasts,
-- retries, key and webhook changes, template syncs, quota resets). `actor` is the username at
-- the time (`key:<name>` for an API key, `cli` for the command line), kept when the account
-- goes: the row must still say who it was. Rows are written in the transaction of the change
-- they record, so a change is never without its row, nor a row without its change.
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor_id BIGINT NULL REFERENCES users (id) ON DELETE SET NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NULL,
    details JSONB NOT NULL DEFAULT '{}'
);

-- `GET /api/audit` reads newest first by id (the primary key serves the unfiltered log); its
-- two filters each have an index in the same order, so a filtered page is a short index scan
-- whatever the log's size.
CREATE INDEX audit_log_action ON audit_log (action, id DESC);
CREATE INDEX audit_log_actor ON audit_log (actor, id DESC);
