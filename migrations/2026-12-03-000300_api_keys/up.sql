-- API keys for server-to-server calls. Only an HMAC-SHA256 of each key is stored, keyed with
-- the deployment's own secret (`api_key_secret`), so the table alone verifies nothing. Each
-- key sends as a service principal: a `users` row named `key:<name>` that cannot log in (no
-- valid username has a colon, and its password hash is not a hash).
CREATE TABLE api_key_secret (
    id     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    secret BYTEA   NOT NULL
);

CREATE TABLE api_keys (
    id           BIGSERIAL   PRIMARY KEY,
    name         TEXT        NOT NULL UNIQUE,
    scope        TEXT        NOT NULL CHECK (scope IN ('send', 'admin')),
    key_hash     TEXT        NOT NULL UNIQUE,
    prefix       TEXT        NOT NULL,
    user_id      BIGINT      NOT NULL REFERENCES users (id),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
