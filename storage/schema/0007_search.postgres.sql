-- Full-text search over room events (POST /search, category room_events).
-- One row per indexed event: m.room.message (content.body), m.room.name
-- (content.name) or m.room.topic (content.topic). Rows are written in the transaction
-- that persists the event and deleted in the one that persists its redaction.

CREATE TABLE event_search (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    key TEXT NOT NULL,
    vector tsvector NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX event_search_fts_idx ON event_search USING GIN (vector);
CREATE INDEX event_search_room_stream ON event_search (room_id, stream_ordering);
CREATE INDEX event_search_stream ON event_search (stream_ordering);
