-- What the backends that send notifications build on: signed webhooks fed by an outbox, each
-- message's history, broadcasts, scheduled sends, quiet hours and a daily cap per user.
--
-- The outbox and the history are written by statement-level triggers on the tables whose
-- changes they report, so every code path that changes a message, a binding or a follower
-- writes its events in the same transaction as the change, and one statement that changes
-- 512 rows runs its trigger once, with set-based inserts.

-- Webhook endpoints. The secret signs deliveries and is kept to do so; the API shows it once.
CREATE TABLE webhooks (
    id              UUID        PRIMARY KEY,
    url             TEXT        NOT NULL,
    events          TEXT[]      NOT NULL,
    secret          TEXT        NOT NULL,
    created_by      BIGINT      REFERENCES users (id) ON DELETE SET NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at     TIMESTAMPTZ,
    disabled_reason TEXT
);

-- The outbox: one row per event and endpoint. `pending` rows are delivered in id order per
-- (endpoint, ordering_key): a message's events arrive in the order they happened.
CREATE TABLE webhook_deliveries (
    id              BIGSERIAL   PRIMARY KEY,
    webhook_id      UUID        NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    ordering_key    TEXT        NOT NULL,
    payload         JSONB       NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'pending',
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until     TIMESTAMPTZ,
    last_attempt_at TIMESTAMPTZ,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_in_order ON webhook_deliveries (webhook_id, ordering_key, id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (webhook_id, id DESC);
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at)
    WHERE state <> 'pending';

-- Each message's history after it was queued (its `created_at`): attempts that will be
-- retried, the outcome, a manual retry, WeChat's delivery report.
CREATE TABLE message_events (
    id         BIGSERIAL   PRIMARY KEY,
    message_id UUID        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    event      TEXT        NOT NULL,
    attempt    INTEGER     NOT NULL,
    errcode    INTEGER,
    errmsg     TEXT
);
CREATE INDEX message_events_message ON message_events (message_id, id);

-- Broadcasts: one request, one message per recipient.
CREATE TABLE broadcasts (
    id              UUID        PRIMARY KEY,
    sender_id       BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    template_id     TEXT        NOT NULL,
    idempotency_key TEXT,
    all_bound       BOOLEAN     NOT NULL,
    total           INTEGER     NOT NULL,
    queued          INTEGER     NOT NULL,
    skipped         JSONB       NOT NULL DEFAULT '{}',
    send_at         TIMESTAMPTZ,
    urgent          BOOLEAN     NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    cancelled_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX broadcasts_idempotency ON broadcasts (sender_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX broadcasts_created ON broadcasts (created_at);

-- `broadcast_id` has no foreign key: 100,000 rows of one broadcast would each check the same
-- parent row. `send_at` is kept for display; `held` is true until it is due, and a held
-- message gets its fair rank when released (so a scheduled backlog does not jump the queue).
-- `reason` says why wxbind itself ended a message `failed` (`frequency_cap`, `cancelled`).
ALTER TABLE messages
    ADD COLUMN broadcast_id UUID,
    ADD COLUMN send_at      TIMESTAMPTZ,
    ADD COLUMN held         BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN urgent       BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN reason       TEXT;
CREATE INDEX messages_broadcast ON messages (broadcast_id, created_at DESC, id DESC)
    WHERE broadcast_id IS NOT NULL;
CREATE INDEX messages_held ON messages (send_at) WHERE status = 'queued' AND held;
DROP INDEX messages_fresh;
CREATE INDEX messages_fresh ON messages (fair_rank)
    WHERE status = 'queued' AND attempts = 0 AND NOT held;
DROP INDEX messages_fresh_by_sender;
CREATE INDEX messages_fresh_by_sender ON messages (sender_id, fair_rank)
    WHERE status = 'queued' AND attempts = 0 AND NOT held;
CREATE INDEX messages_fresh_urgent ON messages (fair_rank)
    WHERE status = 'queued' AND attempts = 0 AND NOT held AND urgent;

-- Messages sent (or being sent) to each user per day of the account's time zone, for
-- WXBIND_MAX_MESSAGES_PER_USER_PER_DAY; shared by every process.
CREATE TABLE user_day_sends (
    user_id BIGINT  NOT NULL,
    day     DATE    NOT NULL,
    sends   INTEGER NOT NULL,
    PRIMARY KEY (user_id, day)
);

-- The outbox's fan-out: `events` (event_id, type, ordering_key, data, ord) to every enabled
-- endpoint that subscribed to the type, in `ord` order.
CREATE FUNCTION webhook_fan_out(events JSONB) RETURNS VOID LANGUAGE sql AS $$
    INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, ordering_key, payload)
    SELECT w.id, (e ->> 'event_id')::uuid, e ->> 'type', e ->> 'ordering_key',
           jsonb_build_object('id', e ->> 'event_id', 'type', e ->> 'type',
                              'created_at', now(), 'data', e -> 'data')
    FROM jsonb_array_elements(events) WITH ORDINALITY AS x (e, ord)
    JOIN webhooks w ON w.disabled_at IS NULL AND (e ->> 'type') = ANY (w.events)
    ORDER BY x.ord, w.id
$$;

CREATE FUNCTION messages_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    events JSONB;
BEGIN
    -- History: every change of status (but the claim) and every delivery report.
    INSERT INTO message_events (message_id, event, attempt, errcode, errmsg)
    SELECT n.id, c.event, n.attempts,
           CASE WHEN c.ord = 1 THEN n.errcode END, CASE WHEN c.ord = 1 THEN n.errmsg END
    FROM new_rows n
    JOIN old_rows o ON o.id = n.id
    CROSS JOIN LATERAL (VALUES
        (1, CASE WHEN n.status IS DISTINCT FROM o.status AND n.status <> 'sending' THEN
                 CASE WHEN n.status = 'queued' AND o.status = 'sending' THEN 'retry_scheduled'
                      ELSE n.status END
            END),
        (2, CASE WHEN n.delivery IS DISTINCT FROM o.delivery AND n.delivery IS NOT NULL THEN
                 CASE WHEN n.delivery = 'failed' THEN 'delivery_failed' ELSE n.delivery END
            END)
    ) AS c (ord, event)
    WHERE c.event IS NOT NULL
    ORDER BY n.id, c.ord;

    IF NOT EXISTS (SELECT 1 FROM webhooks WHERE disabled_at IS NULL) THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_agg(jsonb_build_object(
               'event_id', gen_random_uuid(),
               'type', c.type,
               'ordering_key', 'message:' || n.id,
               'data', jsonb_build_object(
                   'message_id', n.id, 'user_id', n.user_id, 'template_id', n.template_id,
                   'status', n.status, 'delivery', coalesce(n.delivery, 'unknown'),
                   'attempts', n.attempts, 'msgid', n.msgid, 'errcode', n.errcode,
                   'errmsg', n.errmsg, 'reason', n.reason, 'broadcast_id', n.broadcast_id,
                   'idempotency_key', n.idempotency_key, 'created_at', n.created_at,
                   'sent_at', n.sent_at))
           ORDER BY n.id, c.ord)
    INTO events
    FROM new_rows n
    JOIN old_rows o ON o.id = n.id
    CROSS JOIN LATERAL (VALUES
        (1, CASE WHEN n.status IS DISTINCT FROM o.status
                      AND n.status IN ('sent', 'failed', 'under_review')
                 THEN 'message.' || n.status END),
        (2, CASE WHEN n.delivery IS DISTINCT FROM o.delivery
                      AND n.delivery IN ('delivered', 'blocked')
                 THEN 'message.' || n.delivery END)
    ) AS c (ord, type)
    WHERE c.type IS NOT NULL;
    IF events IS NOT NULL THEN
        PERFORM webhook_fan_out(events);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER messages_changed
    AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION messages_changed();

CREATE FUNCTION users_binding_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    events JSONB;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhooks WHERE disabled_at IS NULL) THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_agg(jsonb_build_object(
               'event_id', gen_random_uuid(),
               'type', c.type,
               'ordering_key', 'user:' || n.id,
               'data', jsonb_build_object('user_id', n.id, 'username', n.username,
                                          'openid', c.openid, 'unionid', n.unionid))
           ORDER BY n.id, c.ord)
    INTO events
    FROM new_rows n
    JOIN old_rows o ON o.id = n.id
    CROSS JOIN LATERAL (VALUES
        (1, CASE WHEN o.openid IS NOT NULL AND o.openid IS DISTINCT FROM n.openid
                 THEN 'binding.removed' END, o.openid),
        (2, CASE WHEN n.openid IS NOT NULL AND o.openid IS DISTINCT FROM n.openid
                 THEN 'binding.created' END, n.openid)
    ) AS c (ord, type, openid)
    WHERE c.type IS NOT NULL;
    IF events IS NOT NULL THEN
        PERFORM webhook_fan_out(events);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_binding_changed
    AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION users_binding_changed();

-- A follower row changes on subscribe and unsubscribe events: `followed` when it becomes (or
-- is first seen) subscribed, `unfollowed` when it stops.
CREATE FUNCTION followers_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    events JSONB;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhooks WHERE disabled_at IS NULL) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT jsonb_agg(jsonb_build_object(
                   'event_id', gen_random_uuid(),
                   'type', CASE WHEN n.subscribed THEN 'user.followed' ELSE 'user.unfollowed' END,
                   'ordering_key', 'openid:' || n.openid,
                   'data', jsonb_build_object('openid', n.openid, 'user_id', u.id)))
        INTO events
        FROM new_rows n LEFT JOIN users u ON u.openid = n.openid;
    ELSE
        SELECT jsonb_agg(jsonb_build_object(
                   'event_id', gen_random_uuid(),
                   'type', CASE WHEN n.subscribed THEN 'user.followed' ELSE 'user.unfollowed' END,
                   'ordering_key', 'openid:' || n.openid,
                   'data', jsonb_build_object('openid', n.openid, 'user_id', u.id)))
        INTO events
        FROM new_rows n
        JOIN old_rows o ON o.openid = n.openid AND o.subscribed IS DISTINCT FROM n.subscribed
        LEFT JOIN users u ON u.openid = n.openid;
    END IF;
    IF events IS NOT NULL THEN
        PERFORM webhook_fan_out(events);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER followers_inserted
    AFTER INSERT ON wechat_followers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION followers_changed();
CREATE TRIGGER followers_updated
    AFTER UPDATE ON wechat_followers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION followers_changed();

-- Held (scheduled) messages that came due join the queue, ranked as if queued now.
CREATE FUNCTION release_held_messages(batch_size BIGINT) RETURNS BIGINT
LANGUAGE sql VOLATILE AS $$
    WITH due AS (
        SELECT h.id, h.sender_id, h.send_at, h.created_at FROM messages h
        WHERE h.status = 'queued' AND h.held AND h.send_at <= now()
        ORDER BY h.send_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), head AS (
        SELECT coalesce((SELECT q.fair_rank FROM messages q
                         WHERE q.status = 'queued' AND q.attempts = 0 AND NOT q.held
                         ORDER BY q.fair_rank LIMIT 1), 0) AS rank
    ), starts AS (
        SELECT d.sender_id,
               greatest((SELECT rank FROM head),
                        coalesce((SELECT t.fair_rank FROM messages t
                                  WHERE t.sender_id = d.sender_id
                                    AND t.status = 'queued' AND t.attempts = 0 AND NOT t.held
                                  ORDER BY t.fair_rank DESC LIMIT 1), 0)) AS start
        FROM (SELECT DISTINCT sender_id FROM due) d
    ), released AS (
        UPDATE messages m
        SET held = false,
            next_attempt_at = now(),
            fair_rank = r.rank
        FROM (SELECT d.id,
                     s.start + row_number() OVER (PARTITION BY d.sender_id
                                                  ORDER BY d.send_at, d.created_at, d.id) AS rank
              FROM due d JOIN starts s ON s.sender_id = d.sender_id) r
        WHERE m.id = r.id
        RETURNING 1
    )
    SELECT count(*) FROM released
$$;

-- The claim learns whether it is quiet hours: then only urgent messages are taken (expired
-- leases are sends already under way). Dropped and created again, as
-- 2026-12-04-000100_claim_due_created_at defined it plus that parameter, the lane of urgent
-- first attempts and held messages left out of the first-attempt lane.
DROP FUNCTION claim_due_messages(BIGINT, BIGINT);

CREATE FUNCTION claim_due_messages(batch_size BIGINT, lease_ms BIGINT, quiet BOOLEAN)
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
          AND (NOT quiet OR r.urgent)
          AND NOT (SELECT yes FROM paused)
        ORDER BY r.next_attempt_at
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), fresh AS (
        SELECT f.id FROM messages f
        WHERE NOT quiet
          AND f.status = 'queued' AND f.attempts = 0 AND NOT f.held
          AND NOT (SELECT yes FROM paused)
        ORDER BY f.fair_rank
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    ), fresh_urgent AS (
        SELECT f.id FROM messages f
        WHERE quiet
          AND f.status = 'queued' AND f.attempts = 0 AND NOT f.held AND f.urgent
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
        UNION ALL
        SELECT w.id FROM fresh_urgent w
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
