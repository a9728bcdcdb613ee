-- Synapse's user admin API, the rest of it.
-- The accounts of users at external auth providers (Synapse's `user_external_ids`):
-- set by an admin (`PUT /_synapse/admin/v2/users/{userId}` `external_ids`) or imported.
-- One provider's id names one user.
CREATE TABLE user_external_ids (
    auth_provider TEXT NOT NULL,
    external_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (auth_provider, external_id)
);
CREATE INDEX user_external_ids_user ON user_external_ids (user_id);
-- Until when (ms) a user may replace their master cross-signing key without UIA
-- (`_allow_cross_signing_replacement_without_uia`); a new key starts at NULL.
ALTER TABLE e2e_cross_signing_keys ADD COLUMN updatable_without_uia_before_ms BIGINT;
-- `sent_invite_count` and `cumulative_joined_room_count` read a sender's memberships.
CREATE INDEX room_memberships_sender ON room_memberships (sender, membership);
