-- Deleting one's own account (identity/account_deletion.rs, docs/security/deletion.md): the
-- person asks (re-authenticated, typing their email address), a grace period runs during which
-- every sign-in leads only to a page offering to cancel, then the worker purges the account.
--
-- The purge keeps the users row as a tombstone: the id stays (what the person wrote in
-- organizations — tasks, comments, time entries, audit events — keeps pointing at it) and
-- everything that identified them goes: the email address becomes `deleted:<id>` (not an
-- address: nobody can sign up or be mailed with it, and the real address is free again), the
-- name 'Deleted user', every credential NULL, and status 'deleted'.

-- 'deleting': a deletion is pending (the grace period); 'deleted': the tombstone. The status is
-- also copied into the other regions' `users` rows (access/directory.rs), where an API key's
-- check reads it.
ALTER TABLE users DROP CONSTRAINT users_status_check;
ALTER TABLE users ADD CONSTRAINT users_status_check CHECK (status IN ('active', 'disabled', 'deleting', 'deleted'));
ALTER TABLE users ADD COLUMN deleted_at timestamptz;
ALTER TABLE users ADD CONSTRAINT users_tombstone CHECK (
    (status = 'deleted') = (deleted_at IS NOT NULL)
    AND (status <> 'deleted' OR (password_hash IS NULL AND totp_secret IS NULL AND email_verified_at IS NULL
                                 AND email = 'deleted:' || id::text AND display_name = 'Deleted user'))
);

-- A pending account deletion: one per person, in the directory's database (the default
-- region), like the account itself. Cancelling deletes the row (audited); the purge too.
CREATE TABLE account_deletion_requests (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    requested_at timestamptz NOT NULL,
    -- When the worker may purge: requested_at + privacy.deletion_grace_days.
    purge_after timestamptz NOT NULL CHECK (purge_after >= requested_at),
    -- The purge found the person the last Owner of an organization: postponed (they were told
    -- by mail); the worker tries again a day later.
    postponed_at timestamptz,
    -- The worker began purging (memberships go first): from then on it can't be cancelled, so
    -- a cancel can never leave an account that lost its memberships half-way.
    purge_started_at timestamptz
);
CREATE INDEX account_deletion_requests_due_idx ON account_deletion_requests (purge_after);
GRANT SELECT, INSERT, UPDATE, DELETE ON account_deletion_requests TO clientflow_app;

-- Time entries stay when their author's membership goes (an account deleted, a member
-- removed): they point at the person (the tombstone after a deletion), not at the membership.
ALTER TABLE time_entries DROP CONSTRAINT time_entries_organization_id_user_id_fkey;
ALTER TABLE time_entries ADD CONSTRAINT time_entries_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id);

-- A sign-in during the grace period gets a 'departing' session: only the page offering to
-- cancel the deletion accepts it (identity::guard), like a 'pending' one only the
-- second-factor page.
ALTER TABLE sessions DROP CONSTRAINT sessions_stage_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_stage_check CHECK (stage IN ('pending', 'complete', 'departing'));

-- Security events stay append-only for the server, with one exception: the purge of an account
-- whose deletion was requested removes that account's events (their addresses and devices).
CREATE FUNCTION account_purge_security_events(account uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE n bigint;
BEGIN
    -- Only for a request whose purge has begun (the worker marks it once the grace period,
    -- by the application's clock, is over).
    IF NOT EXISTS (SELECT 1 FROM account_deletion_requests WHERE user_id = account
                   AND purge_started_at IS NOT NULL) THEN
        RAISE EXCEPTION 'no due deletion is being purged for this account' USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM security_events WHERE user_id = account;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION account_purge_security_events(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION account_purge_security_events(uuid) TO clientflow_app;
