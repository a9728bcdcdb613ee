-- Sessions validating that a user owns an email address (the homeserver sends the mail
-- itself): one per (client_secret, medium, address). Only the token's SHA-256 is kept.
CREATE TABLE threepid_validation_sessions (
    session_id TEXT NOT NULL PRIMARY KEY,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    last_send_attempt BIGINT NOT NULL,
    token_hash TEXT NOT NULL,
    token_expires BIGINT NOT NULL,
    next_link TEXT,
    validated_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX threepid_validation_sessions_secret
    ON threepid_validation_sessions (client_secret, medium, address);
