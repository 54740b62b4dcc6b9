-- Messages WeChat holds for review (errcode 40252) and the account-wide pause on 45009.
--
-- `under_review`: WeChat took the message but holds it for review; it is neither retried
-- (a resend would deliver twice once approved) nor failed. The reconciliation task ends it
-- `failed` (blocked) or `sent` (not listed as blocked an hour after its send). `sent_at` is
-- the time WeChat answered 40252; `review_ref` keeps the id the answer carried, if any.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'under_review'));
ALTER TABLE messages ADD COLUMN review_ref TEXT;
-- The openid the held message went to: review's records name it, and the recipient may
-- unbind (or the openid be bound to someone else) before review ends.
ALTER TABLE messages ADD COLUMN review_openid TEXT;
-- The `queryblocktmplmsg` record a blocked message was matched to: each record settles one
-- message, however long WeChat keeps listing it.
ALTER TABLE messages ADD COLUMN review_record_id BIGINT;
CREATE UNIQUE INDEX messages_review_record ON messages (review_record_id)
    WHERE review_record_id IS NOT NULL;
CREATE INDEX messages_under_review ON messages (sent_at) WHERE status = 'under_review';
-- Messages a late delivery report may belong to (WeChat delivered one it held for review under
-- a msgid the service never learnt): few, so the lookup by recipient stays cheap.
CREATE INDEX messages_unreported ON messages (review_openid)
    WHERE msgid IS NULL AND delivery IS NULL AND status IN ('under_review', 'sent');

-- Per `queryblocktmplmsg` key, the largest record id all of whose predecessors are too old to
-- match a message under review: each round reads on from there instead of from the start.
CREATE TABLE review_cursors (
    key        TEXT        PRIMARY KEY,
    largest_id BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- At most one row: while `paused_until` is ahead, no process claims messages (WeChat said the
-- account's daily quota is used up). Lifted by the clock (midnight Beijing time) or by an
-- admin's quota reset, which deletes the row.
CREATE TABLE send_pause (
    id           BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (id),
    paused_until TIMESTAMPTZ NOT NULL,
    errcode      INTEGER,
    errmsg       TEXT        NOT NULL,
    paused_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Quota resets made through this service (WeChat allows 10 a month and does not say how many
-- are left).
CREATE TABLE quota_resets (
    id       BIGSERIAL   PRIMARY KEY,
    reset_by BIGINT      REFERENCES users (id) ON DELETE SET NULL,
    reset_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The claim, as before (see 2026-12-02-000310_claim_due_miniprogram for why each half walks
-- its index), but nothing while the account is paused. The pause test is a one-time filter
-- evaluated before either index is walked (a read of the one-row table).
CREATE OR REPLACE FUNCTION claim_due_messages(batch_size BIGINT, lease_ms BIGINT)
RETURNS TABLE (
    id          UUID,
    user_id     BIGINT,
    template_id TEXT,
    url         TEXT,
    data        JSONB,
    attempts    INTEGER,
    openid      TEXT,
    miniprogram JSONB
)
LANGUAGE sql VOLATILE
SET enable_bitmapscan = off
AS $$
    WITH paused AS (
        SELECT EXISTS (SELECT 1 FROM send_pause p WHERE p.paused_until > now()) AS yes
    ), expired AS (
        SELECT e.id FROM messages e
        WHERE e.status = 'sending' AND e.lease_until <= now()
          AND NOT (SELECT yes FROM paused)
        ORDER BY e.lease_until
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), queued AS (
        SELECT q.id FROM messages q
        WHERE q.status = 'queued' AND q.next_attempt_at <= now()
          AND NOT (SELECT yes FROM paused)
        ORDER BY q.next_attempt_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), due AS (
        SELECT x.id FROM expired x
        UNION ALL
        SELECT y.id FROM queued y
        LIMIT batch_size
    )
    UPDATE messages m
    SET status = 'sending',
        attempts = m.attempts + 1,
        lease_until = now() + lease_ms * interval '1 millisecond'
    FROM due, users u
    WHERE m.id = due.id AND u.id = m.user_id
    RETURNING m.id, m.user_id, m.template_id, m.url, m.data, m.attempts, u.openid, m.miniprogram
$$;
