-- The message log (`GET /api/messages`): newest first, all messages (admins) or one sender's
-- (a key's own), read in pages by (created_at, id).
CREATE INDEX messages_created ON messages (created_at DESC, id DESC);
CREATE INDEX messages_sender_created ON messages (sender_id, created_at DESC, id DESC);
