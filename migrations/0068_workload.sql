-- Workload: how many hours a week each person has for planned work (work/workload.rs). The
-- workload page sets it beside what their open, estimated tasks due each week still need. A
-- person without a row has the default, 40 hours; a row exists once someone sets it. It belongs
-- to the membership: leaving the organization (or its purge) takes it along.
CREATE TABLE member_capacities (
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    -- 0 (not available for planned work) to every hour of the week.
    weekly_minutes integer NOT NULL CHECK (weekly_minutes BETWEEN 0 AND 10080),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, user_id),
    FOREIGN KEY (organization_id, user_id) REFERENCES memberships (organization_id, user_id) ON DELETE CASCADE
);
CREATE INDEX member_capacities_user_idx ON member_capacities (user_id);

ALTER TABLE member_capacities ENABLE ROW LEVEL SECURITY;
ALTER TABLE member_capacities FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON member_capacities
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON member_capacities TO clientflow_app;

-- The workload reads each person's open assigned tasks and the time logged on them.
CREATE INDEX time_entries_task_idx ON time_entries (organization_id, task_id) WHERE task_id IS NOT NULL;
