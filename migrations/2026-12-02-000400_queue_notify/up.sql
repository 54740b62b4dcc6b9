-- Wakes idle workers in other processes the moment messages are queued: an API-only process
-- cannot reach a worker's in-process wake-up. One notification per statement (the group
-- commit writes a whole batch in one), and PostgreSQL folds identical notifications of one
-- transaction into one, so this costs one message per batch, sent at commit. Workers poll as
-- before when a notification is lost (a listener reconnecting).
CREATE FUNCTION notify_message_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wxbind_messages', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER messages_queued_notify
    AFTER INSERT ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION notify_message_queued();
