-- Idempotency keys are unique per sender; most messages have none. The table-wide UNIQUE
-- constraint indexed every row anyway, NULL keys included, and every row version: a message
-- is written three times (queued, claimed, sent) and none of those updates can be HOT, so
-- that was three index insertions per message for nothing. Index only the keyed rows.
--
-- The cost: deleting a user (wxbind never does; an operator might) now finds that user's sent
-- messages for ON DELETE CASCADE by scanning the table, once, instead of through this index.
ALTER TABLE messages DROP CONSTRAINT messages_sender_id_idempotency_key_key;
CREATE UNIQUE INDEX messages_idempotency ON messages (sender_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
