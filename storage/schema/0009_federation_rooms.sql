-- Memberships of local users in rooms we do not hold (remote invites, rejected
-- invites, knocks): the event itself is stored as an outlier.
CREATE TABLE out_of_band_memberships (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    stripped_state TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
