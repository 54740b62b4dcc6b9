-- The signed (timestamp, nonce) of each server push still inside the replay window (300 s
-- either way of the server's clock). In plaintext and compatible mode WeChat's `signature`
-- covers the token, timestamp and nonce but never the body, so anyone who has seen one signed
-- push URL could post any XML with it: the first body recorded for a pair is the only body the
-- pair may carry. WeChat's own retry (the same pair, the same body) is still accepted.
--
-- The row is written in the transaction that records and applies the push, so a push whose
-- apply fails leaves its pair free for WeChat's retry. Rows are purged once their timestamp
-- is out of the window, when the signature alone no longer gets a push in.
CREATE TABLE push_nonces (
    timestamp   BIGINT      NOT NULL,
    nonce       TEXT        NOT NULL,
    -- SHA-256 hex of the raw request body (of a marker and `echostr` for a URL check).
    body_sha256 TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (timestamp, nonce)
);
