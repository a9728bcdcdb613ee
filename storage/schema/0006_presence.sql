-- The last presence state of each user, so a restart keeps status messages and states.
-- stream_id is the position of the presence stream at the user's last visible change.

CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    last_user_sync_ts BIGINT NOT NULL,
    currently_active SMALLINT NOT NULL DEFAULT 0,
    stream_id BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_id);
