-- Short-lived `m.login.token`s issued by `POST /login/get_token` (MSC3882). Only the
-- token's SHA-256 is stored; a token is deleted when used, so it logs in once.
CREATE TABLE login_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    expiry_ts BIGINT NOT NULL
);
CREATE INDEX login_tokens_expiry_ts ON login_tokens (expiry_ts);
