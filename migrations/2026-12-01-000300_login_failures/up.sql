-- Failed logins, one row each, in PostgreSQL so that every instance counts the same failures
-- and a restart forgets none. A login is refused while its client address has too many rows in
-- the last minute: for the username tried, or for all usernames together. Both counts read the
-- rows of one address, hence the one index that leads with it. Only a SHA-256 of the username
-- is kept: what people type there includes passwords entered into the wrong field.
CREATE TABLE login_failures (
    id            BIGSERIAL   PRIMARY KEY,
    username_hash TEXT        NOT NULL,
    address       TEXT        NOT NULL,
    failed_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_address_failed_at ON login_failures (address, failed_at);
-- For housekeeping's purge of rows long past the window.
CREATE INDEX login_failures_failed_at ON login_failures (failed_at);
