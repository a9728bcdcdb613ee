-- Durable push: the events stream position up to which push actions have been
-- computed (written in the transaction that stores a batch's actions), and each
-- pusher's position in event_push_actions. Both start at the newest event: what was
-- persisted before this migration was counted and pushed by the previous code.

-- One row: every event at or below stream_ordering has its push actions stored.
CREATE TABLE push_actions_position (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    stream_ordering BIGINT NOT NULL
);
INSERT INTO push_actions_position (id, stream_ordering)
    SELECT 1, COALESCE(MAX(stream_ordering), 0) FROM events;

-- Every notifying action at or below last_stream_ordering was sent, given up on or
-- skipped (the user was online); the rest are pushed after a restart.
ALTER TABLE pushers ADD COLUMN last_stream_ordering BIGINT NOT NULL DEFAULT 0;
UPDATE pushers SET last_stream_ordering = (SELECT COALESCE(MAX(stream_ordering), 0) FROM events);

-- The catch-up after a restart finds the events whose actions are already stored.
CREATE INDEX event_push_actions_stream ON event_push_actions (stream_ordering);
