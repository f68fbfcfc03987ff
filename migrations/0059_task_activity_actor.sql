-- Who made a task change, by account as well as by the label it was recorded with (their email
-- at the time): pages name the person as they are called now, and a label can't be taken for
-- whoever holds that address later. NULL for changes recorded before this column, and for those
-- an API key or the system made.
ALTER TABLE task_activity ADD COLUMN actor_id uuid REFERENCES users (id);
