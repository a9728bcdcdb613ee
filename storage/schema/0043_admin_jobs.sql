-- Long admin jobs (Synapse's scheduled tasks for the admin API): purging a room's
-- history (`purge_history`) and deleting a room (`shutdown_and_purge_room`). A job is
-- written before its id is handed out and its status changes as it runs, so a restart
-- finds every job not yet finished and resumes it.
CREATE TABLE admin_jobs (
    job_id TEXT NOT NULL PRIMARY KEY,
    action TEXT NOT NULL,
    room_id TEXT NOT NULL,
    -- scheduled, active, complete or failed
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    -- JSON: what the job has done so far (a room deletion's shutdown result)
    result TEXT,
    error TEXT,
    created_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);
CREATE INDEX admin_jobs_room ON admin_jobs (room_id, created_ts);
CREATE INDEX admin_jobs_status ON admin_jobs (status);
