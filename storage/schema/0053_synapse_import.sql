-- `homeserver import-synapse` checkpoints: one row per import step, with the position
-- (in the step's own Synapse ordering) up to which its rows are written. A batch and its
-- checkpoint are written in one transaction, so an interrupted import resumes where it
-- stopped. done = 1 once the step finished; step 'finished' marks the whole import.
CREATE TABLE synapse_import_progress (
    step TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    done SMALLINT NOT NULL DEFAULT 0
);
