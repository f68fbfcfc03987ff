-- Subtasks form a forest, whoever writes them.
--
-- The composite foreign key keeps a parent in the task's own project and the CHECK of 0004
-- stops a task from being its own parent, but neither stops a longer loop (T under S under T):
-- the tasks of a loop have no top-level ancestor, so they vanish from the board, and deleting
-- one deletes them all through ON DELETE CASCADE. This trigger refuses any parent change that
-- would close a loop, and bounds nesting.
--
-- Depth: a top-level task and at most four levels of subtasks below it (five levels in all).
-- Deeper trees are unreadable on a board and in the portal, and the bound keeps every walk of
-- the tree short. Moving a task moves its whole subtree, so the check counts the subtree's
-- height too.
--
-- Concurrency: two transactions could each pass the check against the other's old state
-- (T → S while S → T) and together commit a loop. Parent changes within one project are
-- therefore serialized by a transaction-scoped advisory lock taken before the check; in READ
-- COMMITTED (what the application uses) the trigger's queries then see the other's commit.
--
-- Errors carry a constraint name the application maps to a field error on `parent_id`.

CREATE FUNCTION tasks_check_hierarchy() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    max_levels constant integer := 5;
    parent_depth integer;
    loops boolean;
    subtree_height integer;
BEGIN
    IF NEW.parent_id IS NULL THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.parent_id IS NOT DISTINCT FROM OLD.parent_id THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(
        hashtextextended('clientflow:task-tree:' || NEW.organization_id::text || ':' || NEW.project_id::text, 0));

    -- The new parent and its ancestors; `n` is the level of each (the parent is 1).
    WITH RECURSIVE up (id, parent_id, n) AS (
        SELECT t.id, t.parent_id, 1 FROM tasks t
         WHERE t.organization_id = NEW.organization_id AND t.id = NEW.parent_id
        UNION ALL
        SELECT t.id, t.parent_id, up.n + 1 FROM tasks t
          JOIN up ON t.organization_id = NEW.organization_id AND t.id = up.parent_id
         WHERE up.n <= max_levels AND up.id <> NEW.id
    )
    SELECT coalesce(max(n), 0), coalesce(bool_or(id = NEW.id), false) INTO parent_depth, loops FROM up;
    IF loops THEN
        RAISE EXCEPTION 'a task can''t be placed under its own subtask'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tasks_parent_acyclic', TABLE = 'tasks';
    END IF;

    -- The height of the subtree that moves with the task (1 for a task without subtasks).
    IF TG_OP = 'UPDATE' THEN
        WITH RECURSIVE down (id, n) AS (
            SELECT NEW.id, 1
            UNION ALL
            SELECT t.id, down.n + 1 FROM tasks t
              JOIN down ON t.organization_id = NEW.organization_id AND t.parent_id = down.id
             WHERE down.n <= max_levels
        )
        SELECT max(n) INTO subtree_height FROM down;
    ELSE
        subtree_height := 1;
    END IF;

    IF parent_depth + subtree_height > max_levels THEN
        RAISE EXCEPTION 'subtasks nest at most % levels deep', max_levels
            USING ERRCODE = 'check_violation', CONSTRAINT = 'tasks_parent_depth', TABLE = 'tasks';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER tasks_hierarchy
    BEFORE INSERT OR UPDATE OF parent_id ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_check_hierarchy();

-- Loops written before this trigger existed: every task on one is detached (becomes a top-level
-- task), so it is on the board again and deleting it deletes only its own subtree. Row-level
-- security is forced on `tasks` for every role, the owner included; it is lifted for this one
-- statement, inside the migration's transaction.
ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY;
WITH RECURSIVE walk (organization_id, start, cur, n) AS (
    SELECT organization_id, id, parent_id, 1 FROM tasks WHERE parent_id IS NOT NULL
    UNION ALL
    SELECT w.organization_id, w.start, t.parent_id, w.n + 1 FROM walk w
      JOIN tasks t ON t.organization_id = w.organization_id AND t.id = w.cur
     WHERE w.cur <> w.start AND t.parent_id IS NOT NULL AND w.n < 1000
)
UPDATE tasks SET parent_id = NULL
 WHERE (organization_id, id) IN (SELECT organization_id, start FROM walk WHERE cur = start);
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
