-- event_push_actions keyed by (user, stream position) alone. Each notifying event adds
-- a row per member, and every index led by user_id takes one random page write per
-- member: with three such indexes a 500-member room spent ~30 ms of database time per
-- message (SQLite). The key also serves the per-user reads ordered by stream (counts,
-- /notifications, the pusher's catch-up); a stream position names one event, so it is
-- as unique as (user_id, event_id) was.
CREATE TABLE event_push_actions_by_stream (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    notif SMALLINT NOT NULL,
    highlight SMALLINT NOT NULL,
    actions TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_ordering)
);
INSERT INTO event_push_actions_by_stream (user_id, room_id, event_id, stream_ordering,
        thread_id, notif, highlight, actions, received_ts)
    SELECT user_id, room_id, event_id, stream_ordering, thread_id, notif, highlight, actions,
        received_ts
    FROM event_push_actions;
DROP TABLE event_push_actions;
ALTER TABLE event_push_actions_by_stream RENAME TO event_push_actions;
-- Append-only (stream order): the catch-up after a restart finds stored events with it.
CREATE INDEX event_push_actions_stream ON event_push_actions (stream_ordering);
