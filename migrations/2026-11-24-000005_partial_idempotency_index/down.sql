DROP INDEX messages_idempotency;
ALTER TABLE messages ADD CONSTRAINT messages_sender_id_idempotency_key_key
    UNIQUE (sender_id, idempotency_key);
