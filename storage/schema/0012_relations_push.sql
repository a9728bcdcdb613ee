-- Event relationships (edits, annotations, threads, references), the threads of each
-- room, push rules, pushers and the push actions behind unread counts.

-- One row per event that relates to another through `m.relates_to` with a `rel_type`,
-- written in the transaction that persists the event and deleted in the one that
-- persists its redaction. Positions are copied from `events` so that pagination and
-- aggregation never need a join.
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    aggregation_key TEXT,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    topological_ordering BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL
);
CREATE INDEX event_relations_parent ON event_relations
    (relates_to_id, rel_type, topological_ordering, stream_ordering);
CREATE INDEX event_relations_annotation ON event_relations
    (relates_to_id, rel_type, type, aggregation_key, sender);

-- One row per thread root: the latest event of the thread in history order.
CREATE TABLE threads (
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    latest_event_id TEXT NOT NULL,
    topological_ordering BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (room_id, thread_id)
);
CREATE INDEX threads_room_order ON threads (room_id, topological_ordering, stream_ordering);

-- Each user's changes to their push rules (homeserver.push.rules storage JSON).
CREATE TABLE push_rules (
    user_id TEXT PRIMARY KEY,
    rules TEXT NOT NULL
);

-- HTTP pushers: unique per (app_id, pushkey, user_id).
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    device_id TEXT,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    pushkey_ts BIGINT NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id);

-- The notifying push actions of each event for each local user. thread_id is 'main'
-- for the main timeline. A count is the number of rows after the user's read receipt.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    notif SMALLINT NOT NULL,
    highlight SMALLINT NOT NULL,
    actions TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_user_room ON event_push_actions
    (user_id, room_id, stream_ordering);
CREATE INDEX event_push_actions_user_stream ON event_push_actions (user_id, stream_ordering);
