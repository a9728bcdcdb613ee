-- Rooms a server admin blocked (Synapse's `blocked_rooms`): no local user may join or
-- be invited to them any more.
CREATE TABLE blocked_rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL
);
