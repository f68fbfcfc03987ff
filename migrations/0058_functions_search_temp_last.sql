-- Every function that pins its search_path now names pg_temp last.
--
-- A function's `SET search_path = pg_catalog, public` does not leave the session's temporary
-- schema out: where pg_temp is not named, PostgreSQL looks for tables in it *first*. A session
-- of the app role could then create a temporary table with the name of one a SECURITY DEFINER
-- function reads unqualified (`account_deletion_requests`, `audit_heads`,
-- `audit_retention_policy`...), fill it as it likes, and have the function act on that with the
-- owner's rights: erase an account's security events that no deletion is purging, or cut an
-- audit chain past the retention horizon. The same holds for the invoker functions a definer
-- function fires (the audit log's triggers run as the owner inside `audit_apply_retention`).
-- Named last, pg_temp is searched after every real schema, so a temporary table can't shadow
-- one of ours (PostgreSQL's "Writing SECURITY DEFINER Functions Safely"). The server's role
-- also loses the right to create temporary tables at all (`platform::db::provision`); this
-- holds where an operator provisioned the database by hand.
--
-- `catalog::every_function_that_pins_its_search_path_names_pg_temp_last` keeps it so for
-- functions added later.
DO $$
DECLARE
    f regprocedure;
    path text;
BEGIN
    FOR f, path IN
        SELECT p.oid::regprocedure, substr(c, length('search_path=') + 1)
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        CROSS JOIN LATERAL unnest(p.proconfig) AS c
        WHERE n.nspname = 'public' AND c LIKE 'search_path=%'
          -- Ours: not an extension's, nor a function another role put in the schema (its
          -- owner alone may alter it; the catalog test names any such function).
          AND p.proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        IF path !~ '(^|, *)pg_temp *$' THEN
            EXECUTE format('ALTER FUNCTION %s SET search_path = %s, pg_temp', f, path);
        END IF;
    END LOOP;
END
$$;
