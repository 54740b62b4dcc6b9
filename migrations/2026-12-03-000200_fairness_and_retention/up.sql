-- Fair claims across senders, retention of finished messages, per-sender send limits.
--
-- Fairness is start-time fair queueing: a message waiting for its first attempt gets a
-- `fair_rank` when queued, one past the later of its sender's last queued rank and the rank at
-- the head of the queue. A sender with a backlog of 200,000 holds ranks head..head+200,000; a
-- sender who queues one message now gets head+1, so the claim (in rank order) takes it in the
-- next round instead of after the backlog. Retries are claimed by due time, ahead of first
-- attempts (they are older, and bounded by their backoff).
ALTER TABLE messages ADD COLUMN fair_rank BIGINT NOT NULL DEFAULT 0;
DROP INDEX messages_due;
CREATE INDEX messages_fresh ON messages (fair_rank) WHERE status = 'queued' AND attempts = 0;
CREATE INDEX messages_fresh_by_sender ON messages (sender_id, fair_rank)
    WHERE status = 'queued' AND attempts = 0;
CREATE INDEX messages_retry ON messages (next_attempt_at) WHERE status = 'queued' AND attempts > 0;

-- Housekeeping deletes finished messages past the retention in small batches, oldest first.
CREATE INDEX messages_finished ON messages (created_at) WHERE status IN ('sent', 'failed');

-- Messages accepted per sender and clock minute, for the limit on non-admin senders.
CREATE TABLE send_rate (
    sender_id    BIGINT      NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    sends        INTEGER     NOT NULL,
    PRIMARY KEY (sender_id, window_start)
);

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
    RETURNING m.id, m.user_id, m.template_id, m.url, m.data, m.attempts, u.openid, m.miniprogram
$$;
