-- Read receipts: only the latest receipt per (room, type, user, thread) is kept, at the
-- position of the receipts stream where it last changed. thread_id is '' for an
-- unthreaded receipt (NULL cannot take part in a primary key).

CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- The receipted event's position in the events stream: a receipt only moves forward.
    event_stream_ordering BIGINT NOT NULL,
    data TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);
CREATE INDEX receipts_stream ON receipts (stream_id);
