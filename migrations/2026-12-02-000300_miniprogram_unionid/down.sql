DROP INDEX users_unionid;
ALTER TABLE users DROP CONSTRAINT users_unionid_needs_openid, DROP COLUMN unionid;
ALTER TABLE messages DROP COLUMN miniprogram;
