-- A verified API key's standing is kept in the server process that verified it
-- (`access/api_key/cache.rs`) and reused only while this counter is where it was when the key
-- was verified: every committed change to what a key's verification reads raises it, so
-- every process sees the change on its next request with that key, whichever process made it.
--
-- What the verification reads (`access/api_key/mod.rs`): the key's row (all but its name,
-- prefix, creation time and last use), the creator's membership and account (its status, and
-- whether an operator disabled it), the organization's customization of roles and the
-- creator's own overrides, the organization's IP allowlist and existence, and whether it is
-- scheduled for deletion. Expiry is a time, compared on every request, not a change.
--
-- One row per database (each region has its own): changes to keys and memberships are rare
-- beside their use, and one counter has no organization in it to isolate. The app role may
-- read it but not write it, so it only ever moves forward, through the trigger function.
--
-- A process compares `stamp`, a random value drawn anew with each raise, not the count: after a
-- failover to a standby that missed the newest raises, or a restore to an earlier point, the
-- count can come back to a value a process has seen with other rows behind it; a stamp never
-- does, and the same stamp means the same history of changes up to it.
CREATE TABLE access_epoch (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch bigint NOT NULL,
    stamp uuid NOT NULL
);
INSERT INTO access_epoch (only_row, epoch, stamp) VALUES (true, 0, gen_random_uuid());
GRANT SELECT ON access_epoch TO clientflow_app;

-- Raises the counter. Fired by deferred constraint triggers, so at the commit of the changing
-- transaction: the row is locked only while that transaction commits (no deadlock with the
-- rows it changed before), and a change undone by a rollback, or a savepoint's, raises
-- nothing. SECURITY DEFINER so that the app role, whose changes fire it, needs no UPDATE of
-- its own on the counter.
CREATE FUNCTION raise_access_epoch() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    UPDATE public.access_epoch SET epoch = epoch + 1, stamp = gen_random_uuid() WHERE only_row;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION raise_access_epoch() FROM PUBLIC;

-- A process's check that nothing changed since it kept a key: raises SQLSTATE CFA01 when the
-- stamp is not `kept`. Run before the request's `BEGIN` in the same round trip, so a moved
-- epoch stops the transaction from beginning at all and leaves the connection as it was.
CREATE FUNCTION access_epoch_is(kept uuid) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, public AS $$
BEGIN
    IF (SELECT e.stamp FROM public.access_epoch e) IS DISTINCT FROM kept THEN
        RAISE EXCEPTION 'the access epoch moved' USING ERRCODE = 'CFA01';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION access_epoch_is(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION access_epoch_is(uuid) TO clientflow_app;

-- One trigger per table, on every row inserted or deleted and every update of a column a
-- verification reads (a key's creation counts too: a failover that loses it must not leave
-- the stamp where a process kept the key). ALWAYS: they fire in replication mode too
-- (`session_replication_role = replica`, which restores and replication apply use).
CREATE CONSTRAINT TRIGGER raise_access_epoch AFTER INSERT OR DELETE
    OR UPDATE OF organization_id, id, key_hash, role, permissions, created_by, expires_at, revoked_at
    ON api_keys DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION raise_access_epoch();
CREATE CONSTRAINT TRIGGER raise_access_epoch AFTER INSERT OR UPDATE OR DELETE
    ON memberships DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION raise_access_epoch();
CREATE CONSTRAINT TRIGGER raise_access_epoch AFTER INSERT OR UPDATE OR DELETE
    ON role_permissions DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION raise_access_epoch();
CREATE CONSTRAINT TRIGGER raise_access_epoch AFTER INSERT OR UPDATE OR DELETE
    ON member_permissions DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION raise_access_epoch();
CREATE CONSTRAINT TRIGGER raise_access_epoch AFTER INSERT OR UPDATE OR DELETE
    ON organization_deletion_requests DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION raise_access_epoch();
CREATE CONSTRAINT TRIGGER raise_access_epoch AFTER INSERT OR DELETE OR UPDATE OF id, ip_allowlist
    ON organizations DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION raise_access_epoch();
CREATE CONSTRAINT TRIGGER raise_access_epoch AFTER INSERT OR DELETE OR UPDATE OF id, status, disabled_at
    ON users DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION raise_access_epoch();

-- TRUNCATE fires no row trigger: a statement trigger raises for it (the owner role alone may
-- truncate, and the app never does).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_keys', 'memberships', 'role_permissions', 'member_permissions',
                             'organization_deletion_requests', 'organizations', 'users'] LOOP
        EXECUTE format('CREATE TRIGGER raise_access_epoch_on_truncate AFTER TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION raise_access_epoch()', t);
        EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER raise_access_epoch', t);
        EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER raise_access_epoch_on_truncate', t);
    END LOOP;
END
$$;
