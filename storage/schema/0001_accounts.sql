-- Accounts, sessions, devices, profiles and account data.

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    creation_ts BIGINT NOT NULL,
    admin SMALLINT NOT NULL DEFAULT 0,
    is_guest SMALLINT NOT NULL DEFAULT 0,
    deactivated SMALLINT NOT NULL DEFAULT 0,
    appservice_id TEXT
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    last_seen_user_agent TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hashes, never in clear.
CREATE TABLE refresh_tokens (
    id BIGINT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    next_token_id BIGINT,
    expiry_ts BIGINT,
    ultimate_session_expiry_ts BIGINT
);

CREATE TABLE access_tokens (
    id BIGINT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    device_id TEXT,
    valid_until_ms BIGINT,
    refresh_token_id BIGINT,
    used SMALLINT NOT NULL DEFAULT 0
);
CREATE INDEX access_tokens_user_device ON access_tokens (user_id, device_id);

CREATE TABLE profiles (
    user_id TEXT PRIMARY KEY,
    displayname TEXT,
    avatar_url TEXT,
    -- Other profile fields (m.tz, namespaced custom keys) as a JSON object.
    custom_fields TEXT
);

-- room_id is '' for global account data.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    account_data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, account_data_type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_id);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed INTEGER,
    pending INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_time BIGINT
);

CREATE TABLE ui_auth_sessions (
    session_id TEXT PRIMARY KEY,
    creation_ts BIGINT NOT NULL,
    uri TEXT NOT NULL,
    method TEXT NOT NULL,
    description TEXT NOT NULL,
    clientdict TEXT NOT NULL,
    completed TEXT NOT NULL,
    user_id TEXT
);
