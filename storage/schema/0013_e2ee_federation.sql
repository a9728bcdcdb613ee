-- End-to-end encryption over federation: the device list update stream we announce for
-- our users, the cache of remote users' device lists, and inbound to-device dedup.

-- The last m.device_list_update stream id sent for each local user: the next update's
-- prev_id, and the stream_id /user/devices answers. Kept so ids survive a restart.
CREATE TABLE device_lists_outbound (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL
);

-- Remote users whose device lists we cache (we share a room with them). stream_id is
-- the last update applied (the extremity an EDU's prev_id must name); the cross-signing
-- keys are canonical JSON or NULL.
CREATE TABLE remote_device_lists (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    master_key TEXT,
    self_signing_key TEXT
);

-- One row per cached remote device; keys_json NULL for a device without keys.
CREATE TABLE remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    keys_json TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- m.direct_to_device messages already delivered, by (origin, message_id); stream_id
-- keeps the to-device stream position alive like device_inbox_txns.
CREATE TABLE device_federation_inbox (
    origin TEXT NOT NULL,
    message_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, message_id)
);
