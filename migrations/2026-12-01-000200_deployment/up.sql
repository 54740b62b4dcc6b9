-- What this database serves: the official account's app id, or 'sandbox'. One row, written by
-- the first process that starts on the database; every later process must serve the same, so
-- a sandbox (credentials missing) never runs on real data and one account's data never mixes
-- with another's.
CREATE TABLE deployment (
    id         BOOLEAN     PRIMARY KEY DEFAULT true CHECK (id),
    serves     TEXT        NOT NULL CHECK (serves <> ''),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Accounts the sandbox created for itself (`demo`, `admin`). Only these may it touch again;
-- an account of the same name made any other way is left as it is.
ALTER TABLE users ADD COLUMN demo BOOLEAN NOT NULL DEFAULT false;
