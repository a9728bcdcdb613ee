-- When a destination's current run of failures began (Synapse's `failure_ts`; NULL
-- while it answers). Rows of `destinations` now stay after a success too (zero retry
-- fields), so every server we have sent to is known to the admin API.
ALTER TABLE destinations ADD COLUMN failure_ts BIGINT;
