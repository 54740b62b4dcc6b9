DROP TABLE wechat_tokens;
DROP TABLE messages;
DROP TABLE bind_states;
DROP TABLE users;
