-- The mini-program page a template message opens, `{"appid", "pagepath"}` as WeChat takes it
-- (WeChat opens it instead of `url` when both are given). One JSONB column rather than two
-- TEXT ones: it is read and sent as a whole, and NULL means "no mini program" in one place.
-- The check keeps the worker from ever sending a shape WeChat would refuse with 47001.
ALTER TABLE messages
    ADD COLUMN miniprogram JSONB
        CONSTRAINT messages_miniprogram_shape CHECK (
            miniprogram IS NULL
            OR (jsonb_typeof(miniprogram -> 'appid') = 'string'
                AND jsonb_typeof(miniprogram -> 'pagepath') = 'string')
        );

-- The WeChat user's unionid, when the code exchange returned one (the account is bound to an
-- Open Platform account and the scope was snsapi_userinfo); scan binding has no code exchange
-- and stores none. A unionid is one person across the company's apps, and within this
-- official account one person has one openid, which is bound to at most one account: so a
-- unionid belongs to at most one account too, and admins look accounts up by it. Unique, so
-- that lookup has one answer and a duplicate is refused like a doubly bound openid; partial,
-- so the many accounts without one cost the index nothing.
ALTER TABLE users
    ADD COLUMN unionid TEXT,
    ADD CONSTRAINT users_unionid_needs_openid CHECK (unionid IS NULL OR openid IS NOT NULL);
CREATE UNIQUE INDEX users_unionid ON users (unionid) WHERE unionid IS NOT NULL;
