-- Every server push WeChat delivered, recorded before it is acted on. WeChat retries a push
-- it got no answer to (3 times, 5 s apart); the unique key makes each apply exactly once.
CREATE TABLE wechat_events (
    id          BIGSERIAL   PRIMARY KEY,
    dedup_key   TEXT        NOT NULL UNIQUE,
    from_user   TEXT        NOT NULL,
    msg_type    TEXT        NOT NULL,
    event       TEXT,
    event_key   TEXT,
    create_time BIGINT      NOT NULL,
    fields      JSONB       NOT NULL,
    -- The passive reply sent for it, so a retry gets the same answer.
    reply       TEXT,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX wechat_events_received_at ON wechat_events (received_at);

-- Follow state per openid, bound or not (a later binding finds it here).
CREATE TABLE wechat_followers (
    openid        TEXT        PRIMARY KEY,
    subscribed    BOOLEAN     NOT NULL,
    subscribed_at TIMESTAMPTZ,
    -- CreateTime of the push that set this state: an older push never overwrites a newer one.
    event_time    BIGINT      NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- WeChat's delivery report (TEMPLATESENDJOBFINISH); NULL until one arrives.
ALTER TABLE messages
    ADD COLUMN delivery TEXT CHECK (delivery IN ('delivered', 'blocked', 'failed'));
CREATE INDEX messages_msgid ON messages (msgid) WHERE msgid IS NOT NULL;
