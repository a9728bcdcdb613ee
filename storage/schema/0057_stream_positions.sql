-- Per stream with several writer processes (PostgreSQL), each writer's last published
-- position: every id it allocated at or below it has committed. Read by a process at
-- start-up, before the writers' next announcements arrive over the bus.
CREATE TABLE stream_positions (
    stream_name TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (stream_name, instance_name)
);
