DROP INDEX messages_msgid;
ALTER TABLE messages DROP COLUMN delivery;
DROP TABLE wechat_followers;
DROP TABLE wechat_events;
