-- Admin restrictions on local accounts (MSC3823 suspension, locking), as Synapse's
-- `users.suspended` / `users.locked`: a row only for users ever restricted.
CREATE TABLE user_restrictions (
    user_id TEXT NOT NULL PRIMARY KEY,
    suspended SMALLINT NOT NULL DEFAULT 0,
    locked SMALLINT NOT NULL DEFAULT 0
);
