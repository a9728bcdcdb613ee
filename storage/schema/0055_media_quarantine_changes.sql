-- Every explicit (un)quarantine of a media by the admin API, in order
-- (`GET /_synapse/admin/v1/media/quarantine_changes`).
CREATE TABLE media_quarantine_changes (
    stream_id BIGINT PRIMARY KEY,
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    quarantined SMALLINT NOT NULL
);
