-- The media repository: metadata of stored files, their thumbnails and per-user usage.
-- The bytes live in the media store (homeserver/media/storage.py), never in the database.

-- One row per mxc://<server_name>/<media_id>. For local media server_name is ours and
-- user_id the uploader. A row whose size is NULL is a pending upload: a media id handed
-- out by POST /_matrix/media/v1/create that waits for its content until
-- created_ts + unused_expiration_time.
CREATE TABLE media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    user_id TEXT,
    created_ts BIGINT NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT,
    sha256 TEXT,
    -- Uploaded while enable_authenticated_media was on: never served by the
    -- unauthenticated /_matrix/media/v3 endpoints.
    authenticated SMALLINT NOT NULL DEFAULT 1,
    -- Stored by the URL previewer, not uploaded by the user: outside quotas.
    url_cache SMALLINT NOT NULL DEFAULT 0,
    quarantined_by TEXT,
    -- What the thumbnailer learnt about an image: its size, whether it is animated,
    -- or why it cannot be thumbnailed ('too_large', 'unreadable').
    image_width INTEGER,
    image_height INTEGER,
    image_animated SMALLINT NOT NULL DEFAULT 0,
    thumbnail_error TEXT,
    PRIMARY KEY (server_name, media_id)
);
CREATE INDEX media_user_created ON media (user_id, created_ts);
CREATE INDEX media_sha256 ON media (sha256);

CREATE TABLE media_thumbnails (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    animated SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (server_name, media_id, width, height, method, content_type, animated)
);

-- Running totals of what each local user has stored. Updated in the transaction that
-- records an upload, so concurrent uploads of one user serialise on this row and the
-- quota check in that transaction sees every earlier upload.
CREATE TABLE media_usage (
    user_id TEXT PRIMARY KEY,
    media_count BIGINT NOT NULL,
    total_bytes BIGINT NOT NULL
);
