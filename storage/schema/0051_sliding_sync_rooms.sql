-- Per room and position of a sliding sync connection (0047): the events position up
-- to which the room was sent, the membership it was sent with, and the room config
-- (required_state and timeline_limit, canonical JSON) it was sent under, and the users
-- whose member events it was sent through `$LAZY` (a JSON list).
CREATE TABLE sliding_sync_rooms (
    connection_key BIGINT NOT NULL,
    position BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    stream BIGINT NOT NULL,
    membership TEXT NOT NULL,
    config TEXT NOT NULL,
    lazy_members TEXT NOT NULL,
    PRIMARY KEY (connection_key, room_id, position)
);
