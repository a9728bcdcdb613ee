-- The Synapse media admin API: media an admin protected from quarantine (Synapse's
-- `local_media_repository.safe_from_quarantine`). Quarantine itself is the existing
-- `media.quarantined_by` (the admin's user id; NULL: not quarantined).
ALTER TABLE media ADD COLUMN safe_from_quarantine SMALLINT NOT NULL DEFAULT 0;
-- Deleting by age (local media) and purging the remote cache read media by time.
CREATE INDEX media_server_created ON media (server_name, created_ts);
