-- OpenID tokens (`POST /user/{userId}/openid/request_token`), which another server
-- exchanges for the user id at `/_matrix/federation/v1/openid/userinfo`. Only the
-- token's SHA-256 is stored, as for access tokens.
CREATE TABLE open_id_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    ts_valid_until_ms BIGINT NOT NULL,
    user_id TEXT NOT NULL
);
CREATE INDEX open_id_tokens_ts_valid_until_ms ON open_id_tokens (ts_valid_until_ms);
