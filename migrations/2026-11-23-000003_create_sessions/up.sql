-- Browser refresh sessions (actix-session state). Only a SHA-256 of the session key is
-- stored, so a database read does not hand out usable cookies.
CREATE TABLE sessions (
    key_hash   TEXT        PRIMARY KEY,
    state      JSONB       NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
