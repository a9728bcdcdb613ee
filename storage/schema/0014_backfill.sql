-- Backward extremities: events a room's timeline points at (prev_events) that we do
-- not hold as timeline events; backfill fetches history from them. ``depth`` is the
-- highest depth of an event of ours that points at it, so /messages can tell when a
-- backwards page reaches the gap.
CREATE TABLE event_backward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    depth BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
CREATE INDEX event_backward_extremities_depth ON event_backward_extremities (room_id, depth);

INSERT INTO event_backward_extremities (room_id, event_id, depth)
SELECT e.room_id, ed.prev_event_id, MAX(e.topological_ordering)
FROM event_edges ed JOIN events e ON e.event_id = ed.event_id
WHERE e.outlier = 0 AND NOT EXISTS (
    SELECT 1 FROM events p WHERE p.event_id = ed.prev_event_id AND p.outlier = 0
)
GROUP BY e.room_id, ed.prev_event_id;
