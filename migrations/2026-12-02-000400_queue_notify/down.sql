DROP TRIGGER messages_queued_notify ON messages;
DROP FUNCTION notify_message_queued();
