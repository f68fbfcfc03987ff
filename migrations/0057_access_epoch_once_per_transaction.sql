-- A transaction raises the access epoch (migration 0056) once, however many watched rows it
-- changes. Raised once per row, a transaction that changes many (an organization's purge or
-- move, an import, `clientflow seed`) updated the one row as many times, and each update
-- scanned every earlier version of it the transaction had made: ten thousand memberships took
-- nearly a second at commit, twenty thousand three. One raise is all a kept key needs to see:
-- the stamp it was kept with is gone once the transaction commits.
--
-- The row records the transaction that raised it last (`raised_by`, a 64-bit id that never
-- comes back). A raise made in a subtransaction that is rolled back is undone with its
-- `raised_by`, so a later change in the same transaction raises again. The app role still
-- can't write the row, so it can't make a transaction look as if it had raised already.
ALTER TABLE access_epoch ADD COLUMN raised_by xid8;

CREATE OR REPLACE FUNCTION raise_access_epoch() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    UPDATE public.access_epoch
       SET epoch = epoch + 1, stamp = gen_random_uuid(), raised_by = pg_current_xact_id()
     WHERE only_row AND raised_by IS DISTINCT FROM pg_current_xact_id();
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION raise_access_epoch() FROM PUBLIC;
