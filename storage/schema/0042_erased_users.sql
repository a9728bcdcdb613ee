-- Users who deactivated their account with `erase: true` (as Synapse's
-- `erased_users`): their events are shown redacted to users who were not joined
-- when they were sent.
CREATE TABLE erased_users (
    user_id TEXT NOT NULL PRIMARY KEY
);
