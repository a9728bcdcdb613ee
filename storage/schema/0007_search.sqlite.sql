-- Full-text search over room events (POST /search, category room_events).
-- One row per indexed event: m.room.message (content.body), m.room.name
-- (content.name) or m.room.topic (content.topic). Rows are written in the transaction
-- that persists the event and deleted in the one that persists its redaction.
-- The rowid is the event's stream_ordering, so FTS5 can walk matches newest first.
-- Only `value` is tokenised (porter stemming over unicode61, accents folded).

CREATE VIRTUAL TABLE event_search USING fts5(
    value,
    event_id UNINDEXED,
    room_id UNINDEXED,
    sender UNINDEXED,
    key UNINDEXED,
    origin_server_ts UNINDEXED,
    tokenize = 'porter unicode61 remove_diacritics 2'
);
