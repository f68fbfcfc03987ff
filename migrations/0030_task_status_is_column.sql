-- A task's status is its board column. Each column stands for one of the statuses the API
-- speaks of (todo, in_progress, blocked, done), and a task's status is always its column's:
-- a trigger sets it from the column on every insert and update, and a column's new status
-- reaches its tasks. Moving a card is changing its status; setting a status moves the card.

ALTER TABLE board_columns ADD COLUMN status text NOT NULL DEFAULT 'in_progress'
    CHECK (status IN ('todo', 'in_progress', 'blocked', 'done'));

-- Existing data, read as the owner (row-level security is forced for the owner too, so it is
-- lifted for these statements only): a column's status from its name when the name says it,
-- otherwise from its place (first: to do, last: done, between: in progress).
ALTER TABLE board_columns NO FORCE ROW LEVEL SECURITY;
ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY;

UPDATE board_columns c SET status = CASE
    WHEN lower(c.name) IN ('to do', 'todo', 'backlog', 'new', 'open') THEN 'todo'
    WHEN lower(c.name) IN ('done', 'complete', 'completed', 'finished', 'closed', 'shipped') THEN 'done'
    WHEN lower(c.name) IN ('blocked', 'on hold', 'waiting') THEN 'blocked'
    WHEN lower(c.name) IN ('in progress', 'doing', 'review', 'in review', 'qa') THEN 'in_progress'
    WHEN c.position = (SELECT min(o.position) FROM board_columns o
                       WHERE o.organization_id = c.organization_id AND o.project_id = c.project_id) THEN 'todo'
    WHEN c.position = (SELECT max(o.position) FROM board_columns o
                       WHERE o.organization_id = c.organization_id AND o.project_id = c.project_id) THEN 'done'
    ELSE 'in_progress'
END;

-- The card is where people saw it: where a task's stored status disagreed with its column
-- (cards in Done that said "todo"), the column wins.
UPDATE tasks t SET status = c.status
FROM board_columns c
WHERE c.organization_id = t.organization_id AND c.id = t.column_id AND t.status <> c.status;

ALTER TABLE board_columns FORCE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;

-- Runs as the caller (no SECURITY DEFINER): the column is read under the same tenant policy
-- as the task, and the composite foreign key already ties the column to the task's project.
CREATE FUNCTION tasks_status_from_column() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT c.status INTO NEW.status FROM board_columns c
    WHERE c.organization_id = NEW.organization_id AND c.id = NEW.column_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER tasks_status_is_column BEFORE INSERT OR UPDATE OF column_id, status ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_status_from_column();

CREATE FUNCTION board_columns_status_to_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks SET status = NEW.status
    WHERE organization_id = NEW.organization_id AND column_id = NEW.id AND status <> NEW.status;
    RETURN NULL;
END
$$;
CREATE TRIGGER board_columns_status_reaches_tasks AFTER UPDATE OF status ON board_columns
    FOR EACH ROW EXECUTE FUNCTION board_columns_status_to_tasks();
