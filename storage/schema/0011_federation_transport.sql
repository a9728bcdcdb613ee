-- Other servers' signing keys, as fetched (directly or through a notary).
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- The durable outbound queue: PDUs and EDUs waiting for a destination.
CREATE TABLE federation_outbox (
    id BIGINT PRIMARY KEY,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, id);

-- Per-destination backoff state.
CREATE TABLE destinations (
    destination TEXT PRIMARY KEY,
    retry_last_ts BIGINT NOT NULL,
    retry_interval_ms BIGINT NOT NULL
);

-- Transactions already processed, so a retried /send gets the same answer.
CREATE TABLE received_transactions (
    origin TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    response_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, transaction_id)
);
