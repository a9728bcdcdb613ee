-- Application services: per-service transaction queues and published room lists.

-- One row per registered service: the highest transaction id handed out, and the
-- events stream position up to which every event has been either put into a
-- transaction or judged of no interest to the service.
CREATE TABLE appservice_state (
    as_id TEXT PRIMARY KEY,
    last_txn_id BIGINT NOT NULL,
    stream_position BIGINT NOT NULL
);

-- Transactions recorded before they are sent and deleted once the service has
-- accepted them; a retry sends the same id with the same body. Sent oldest first.
CREATE TABLE appservice_txns (
    as_id TEXT NOT NULL,
    txn_id BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (as_id, txn_id)
);

-- Rooms a service has published in its own directory for one of its networks
-- (PUT /directory/list/appservice/{networkId}/{roomId}).
CREATE TABLE appservice_room_list (
    as_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (as_id, network_id, room_id)
);
