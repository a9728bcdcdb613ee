-- Abuse reports from clients, as Synapse keeps them (its admin API lists them): one
-- table per kind of target. `content` is the request body of an event report as sent.
CREATE TABLE event_reports (
    id BIGINT PRIMARY KEY,
    received_ts BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT,
    content TEXT
);
CREATE INDEX event_reports_room_id ON event_reports (room_id);

CREATE TABLE room_reports (
    id BIGINT PRIMARY KEY,
    received_ts BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT NOT NULL
);

CREATE TABLE user_reports (
    id BIGINT PRIMARY KEY,
    received_ts BIGINT NOT NULL,
    target_user_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT NOT NULL
);
