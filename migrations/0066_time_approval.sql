-- Approving time (work/approvals.rs, docs/security/work.md): someone with `projects.update`
-- approves another person's week, as they saw it; each of the week's entries then records when
-- and by whom. Approved time is fixed (nobody changes or deletes it) until the week is reopened,
-- which clears both columns again. The approver's users row stays when their account is deleted
-- (a tombstone), so `approved_by` needs no ON DELETE.
ALTER TABLE time_entries
    ADD COLUMN approved_at timestamptz,
    ADD COLUMN approved_by uuid REFERENCES users (id),
    ADD CONSTRAINT time_entries_approved_both CHECK ((approved_at IS NULL) = (approved_by IS NULL));

-- The services refuse to change approved time (`time_entries::may_change`, and the conditional
-- UPDATE after it); this refuses it below them, for any statement of any role: an approved
-- entry's recorded facts stay as approved unless the same statement reopens it. Billing it
-- stays possible (invoice_id, invoice_line, and the rate it is billed at when it had none), and
-- so does deleting it with its project or its task.
CREATE FUNCTION time_entries_keep_approved() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF OLD.approved_at IS NOT NULL AND NEW.approved_at IS NOT NULL
       AND (NEW.project_id, NEW.task_id, NEW.user_id, NEW.minutes, NEW.spent_on, NEW.note, NEW.billable)
           IS DISTINCT FROM
           (OLD.project_id, OLD.task_id, OLD.user_id, OLD.minutes, OLD.spent_on, OLD.note, OLD.billable)
    THEN
        RAISE EXCEPTION 'approved time can''t be changed; reopen its week first'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'time_entries_approved_fixed', TABLE = 'time_entries';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER time_entries_keep_approved BEFORE UPDATE ON time_entries
    FOR EACH ROW EXECUTE FUNCTION time_entries_keep_approved();

-- A person's week (the week page, approving, the approvals page) is read through
-- time_entries_user_idx (organization_id, user_id, spent_on); no index is added.
