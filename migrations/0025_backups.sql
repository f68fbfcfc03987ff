-- Backups of the private cluster (pgBackRest): what ran, and the drill's canaries.
--
-- Both tables are global (no organization's data): they describe the installation. They live
-- in the database they describe, so a restored copy carries its own history, and a drill's
-- canary row travels through WAL archiving and restore like any other write.

-- One row per backup or restore drill, written by whoever ran it (the worker's schedule or the
-- `clientflow backup` command). `/metrics` reads the newest of each; `doctor` and the schedule
-- read the repository itself.
CREATE TABLE backup_log (
    id          bigserial PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('backup', 'drill')),
    -- full, diff or incr for a backup; NULL for a drill.
    backup_type text        CHECK (backup_type IN ('full', 'diff', 'incr')),
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    ok          boolean     NOT NULL,
    -- The backup's label in the repository, the drill's figures (RPO, RTO, row counts) or the
    -- error, as the command printed them.
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CHECK (finished_at >= started_at),
    CHECK ((kind = 'backup') = (backup_type IS NOT NULL))
);
CREATE INDEX backup_log_newest ON backup_log (kind, ok, finished_at DESC);

-- A row written just before a drill restores the newest recovery point: the restored copy must
-- contain it. The token is random per drill, so an older copy can't pass for a newer one.
CREATE TABLE backup_canaries (
    token      text        PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT now()
);

-- The server's worker runs the schedule and the metrics read the log. Canaries are written by
-- the drill over the cluster's administrative connection, never by the app role.
GRANT SELECT, INSERT ON backup_log TO clientflow_app;
GRANT USAGE ON SEQUENCE backup_log_id_seq TO clientflow_app;
