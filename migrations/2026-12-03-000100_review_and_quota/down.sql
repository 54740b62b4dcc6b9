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
    WITH expired AS (
        SELECT e.id FROM messages e
        WHERE e.status = 'sending' AND e.lease_until <= now()
        ORDER BY e.lease_until
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), queued AS (
        SELECT q.id FROM messages q
        WHERE q.status = 'queued' AND q.next_attempt_at <= now()
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
DROP TABLE quota_resets;
DROP TABLE send_pause;
DROP INDEX messages_unreported;
DROP INDEX messages_under_review;
DROP TABLE review_cursors;
ALTER TABLE messages DROP COLUMN review_ref;
ALTER TABLE messages DROP COLUMN review_openid;
ALTER TABLE messages DROP COLUMN review_record_id;
-- Not `failed`: a caller would resend, and WeChat may still deliver the held one.
UPDATE messages SET status = 'sent', errmsg = 'under review when the migration was reverted'
    WHERE status = 'under_review';
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('queued', 'sending', 'sent', 'failed'));
