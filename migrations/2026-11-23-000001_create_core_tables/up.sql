-- Accounts of the website, and the WeChat openid each one is bound to.
CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT        NOT NULL UNIQUE,
    password_hash TEXT        NOT NULL,
    role          TEXT        NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    -- One openid belongs to at most one account: a second binding is refused, never moved.
    openid        TEXT UNIQUE,
    bound_at      TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((openid IS NULL) = (bound_at IS NULL))
);

-- Single-use OAuth `state` nonces. Only a SHA-256 of the nonce is stored, so a database
-- read does not hand out usable bind links.
CREATE TABLE bind_states (
    state_hash TEXT        PRIMARY KEY,
    user_id    BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX bind_states_expires_at ON bind_states (expires_at);

-- Template messages. This table is the delivery queue: rows go queued -> sending -> sent | failed.
CREATE TABLE messages (
    id              UUID        PRIMARY KEY,
    sender_id       BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_id         BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    template_id     TEXT        NOT NULL,
    url             TEXT,
    data            JSONB       NOT NULL,
    idempotency_key TEXT,
    status          TEXT        NOT NULL DEFAULT 'queued'
                                CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until     TIMESTAMPTZ,
    msgid           BIGINT,
    errcode         INTEGER,
    errmsg          TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ,
    -- NULL keys never collide, so messages without a key are unaffected.
    UNIQUE (sender_id, idempotency_key)
);
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status = 'queued';
CREATE INDEX messages_leased ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_user_id ON messages (user_id);

-- The global access token, shared by every process of one official account.
CREATE TABLE wechat_tokens (
    app_id       TEXT        PRIMARY KEY,
    access_token TEXT        NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    fetched_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
