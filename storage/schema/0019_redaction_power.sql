-- Whether a redaction's sender held the `redact` power level in the state it was
-- authorised against (homeserver/events/redaction.py). A redaction whose target
-- arrives later is applied on the target's arrival only if this holds or the two
-- senders share a server. Rows written before this column: 0 (only same-server
-- redactions apply when their target arrives), which fails closed.
ALTER TABLE redactions ADD COLUMN sender_had_power SMALLINT NOT NULL DEFAULT 0;
