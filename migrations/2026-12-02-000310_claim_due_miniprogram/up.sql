-- The worker sends a message's mini-program page, so the claim returns `miniprogram` too.
-- Adding a returned column changes the function's return type, which CREATE OR REPLACE cannot
-- do: it is dropped and created again, within this migration's one transaction (a claim that
-- races the switch fails at worst, and the worker retries failed claims). A binary from before
-- this column reads the claim by column name and ignores the new one, sending the `url` only,
-- as it always did.
DROP FUNCTION claim_due_messages(BIGINT, BIGINT);

-- Claims up to `batch_size` due messages for delivery under a lease of `lease_ms`: messages
-- whose lease ran out (a crashed or stalled worker) first, then queued messages that are due,
-- oldest first. Rows another worker is claiming right now are skipped.
--
-- A claim must cost O(batch_size), not O(backlog): each half walks its partial index in order
-- and stops at the limit. Without fresh statistics (a new table, or one growing faster than
-- autovacuum analyses it) the planner prefers a bitmap scan that reads every queued row and
-- sorts them all, which made each claim cost milliseconds under a backlog of a few thousand.
-- So the function turns bitmap scans off for its own statements; an index scan is the only
-- sensible plan left.
CREATE FUNCTION claim_due_messages(batch_size BIGINT, lease_ms BIGINT)
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
