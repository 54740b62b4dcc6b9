DROP FUNCTION claim_due_messages(BIGINT, BIGINT, BOOLEAN);
DROP FUNCTION release_held_messages(BIGINT);
DROP TRIGGER followers_updated ON wechat_followers;
DROP TRIGGER followers_inserted ON wechat_followers;
DROP FUNCTION followers_changed();
DROP TRIGGER users_binding_changed ON users;
DROP FUNCTION users_binding_changed();
DROP TRIGGER messages_changed ON messages;
DROP FUNCTION messages_changed();
DROP FUNCTION webhook_fan_out(JSONB);
DROP TABLE user_day_sends;
DROP INDEX messages_fresh_urgent;
DROP INDEX messages_fresh_by_sender;
DROP INDEX messages_fresh;
DROP INDEX messages_held;
DROP INDEX messages_broadcast;
ALTER TABLE messages
    DROP COLUMN broadcast_id,
    DROP COLUMN send_at,
    DROP COLUMN held,
    DROP COLUMN urgent,
    DROP COLUMN reason;
CREATE INDEX messages_fresh ON messages (fair_rank) WHERE status = 'queued' AND attempts = 0;
CREATE INDEX messages_fresh_by_sender ON messages (sender_id, fair_rank)
    WHERE status = 'queued' AND attempts = 0;
DROP TABLE broadcasts;
DROP TABLE message_events;
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;

CREATE FUNCTION claim_due_messages(batch_size BIGINT, lease_ms BIGINT)
RETURNS TABLE (
    id          UUID,
    user_id     BIGINT,
    template_id TEXT,
    url         TEXT,
    data        JSONB,
    attempts    INTEGER,
    openid      TEXT,
    miniprogram JSONB,
    created_at  TIMESTAMPTZ
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
    ), retries AS (
        SELECT r.id FROM messages r
        WHERE r.status = 'queued' AND r.attempts > 0 AND r.next_attempt_at <= now()
          AND NOT (SELECT yes FROM paused)
        ORDER BY r.next_attempt_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), fresh AS (
        SELECT f.id FROM messages f
        WHERE f.status = 'queued' AND f.attempts = 0 AND f.next_attempt_at <= now()
          AND NOT (SELECT yes FROM paused)
        ORDER BY f.fair_rank
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), due AS (
        SELECT x.id FROM expired x
        UNION ALL
        SELECT y.id FROM retries y
        UNION ALL
        SELECT z.id FROM fresh z
        LIMIT batch_size
    )
    UPDATE messages m
    SET status = 'sending',
        attempts = m.attempts + 1,
        lease_until = now() + lease_ms * interval '1 millisecond'
    FROM due, users u
    WHERE m.id = due.id AND u.id = m.user_id
    RETURNING m.id, m.user_id, m.template_id, m.url, m.data, m.attempts, u.openid, m.miniprogram,
              m.created_at
$$;
