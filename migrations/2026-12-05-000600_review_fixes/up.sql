-- From the review of the backends' features.
--
-- The daily cap counts each message once: `counted_day` is set in the statement that counts
-- it, so a message handed back for the quota, retaken after a crash or retried after a failed
-- count is not counted twice (nor left uncounted).
ALTER TABLE messages ADD COLUMN counted_day DATE;

-- Held (scheduled) messages count against WXBIND_MAX_QUEUED_PER_SENDER like waiting ones.
CREATE INDEX messages_held_by_sender ON messages (sender_id) WHERE status = 'queued' AND held;

-- Deliveries in flight per endpoint, so one slow endpoint cannot take every delivery slot.
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (webhook_id)
    WHERE state = 'pending' AND lease_until IS NOT NULL;
-- The claim takes each endpoint's due deliveries in due order.
CREATE INDEX webhook_deliveries_endpoint_due ON webhook_deliveries (webhook_id, next_attempt_at)
    WHERE state = 'pending';

-- A message handed back unspent (the account's quota ran out: its attempt is given back) is
-- `requeued` in its history, not `retry_scheduled`: no attempt was spent. The function as
-- 2026-12-05-000100_backends defined it plus that case.
CREATE OR REPLACE FUNCTION messages_changed() RETURNS trigger LANGUAGE plpgsql AS $$
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
                 CASE WHEN n.status = 'queued' AND o.status = 'sending'
                           AND n.attempts < o.attempts THEN 'requeued'
                      WHEN n.status = 'queued' AND o.status = 'sending' THEN 'retry_scheduled'
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
