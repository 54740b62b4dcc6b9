DROP INDEX messages_sender_created;
DROP INDEX messages_created;
