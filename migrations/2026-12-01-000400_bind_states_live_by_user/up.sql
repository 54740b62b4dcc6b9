-- A user's live bind states, found without reading the table: a successful binding revokes
-- the user's other live states, and each new state trims the user's live ones to the newest
-- five, so both run on every binding and every bind link.
CREATE INDEX bind_states_live_by_user ON bind_states (user_id, expires_at)
    WHERE used_at IS NULL;
