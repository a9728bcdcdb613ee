-- Simplified sliding sync (MSC4186) connections: what each connection of a device
-- was already sent, so an incremental response carries only changes.
--
-- A connection is (user, device, conn_id). Each response that changes what the
-- connection holds gets a new position (a global, increasing id). The rooms table
-- holds, per room, what was sent as of a position; the state at position P is, for
-- each room, its row with the greatest position <= P. When a client uses P, every
-- other position of the connection and every room row after P are deleted (they
-- belong to responses the client never acknowledged), and rows of rooms rewritten at
-- P are pruned below it: a connection holds at most two positions and two rows a room.
CREATE TABLE sliding_sync_connections (
    connection_key BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    last_used_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX sliding_sync_connections_id
    ON sliding_sync_connections (user_id, device_id, conn_id);

CREATE TABLE sliding_sync_positions (
    position BIGINT PRIMARY KEY,
    connection_key BIGINT NOT NULL
);
CREATE INDEX sliding_sync_positions_connection ON sliding_sync_positions (connection_key);
