-- The Synapse user admin API: shadow-banned accounts (Synapse's `users.shadow_banned`,
-- kept with the other admin restrictions), the account type (`users.user_type`:
-- NULL for a normal user, `bot`, `support`) and per-user rate limit overrides
-- (Synapse's `ratelimit_override`; zero messages per second: never rate limited).
ALTER TABLE user_restrictions ADD COLUMN shadow_banned SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN user_type TEXT;
CREATE TABLE ratelimit_override (
    user_id TEXT NOT NULL PRIMARY KEY,
    messages_per_second BIGINT NOT NULL,
    burst_count BIGINT NOT NULL
);
