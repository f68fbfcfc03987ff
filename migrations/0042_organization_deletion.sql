-- Deleting an organization (privacy/deletion.rs, docs/security/deletion.md): an Owner asks,
-- a grace period runs (access suspended for everyone but Owners, who may cancel), then the
-- worker purges every row holding the organization's id, its files and its data keys, and
-- keeps a signed record that names no one.

-- A pending request: one per organization. Cancelling deletes the row (audited). Tenant data
-- like any other, so the purge removes it with the rest.
CREATE TABLE organization_deletion_requests (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    -- The Owner who asked (no foreign key: the account may go before the organization does).
    requested_by uuid NOT NULL,
    requested_at timestamptz NOT NULL,
    -- When the worker may purge: requested_at + privacy.deletion_grace_days.
    purge_after timestamptz NOT NULL CHECK (purge_after >= requested_at),
    PRIMARY KEY (organization_id)
);
ALTER TABLE organization_deletion_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_deletion_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organization_deletion_requests
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
GRANT SELECT, INSERT, DELETE ON organization_deletion_requests TO clientflow_app;
-- The purge (owner role) finds the requests whose grace period is over, across organizations.
CREATE POLICY owner_finds_due_deletions ON organization_deletion_requests FOR SELECT TO clientflow_owner
    USING (true);
-- The server's worker asks the same (ids only) to know whether a purge is due.
CREATE FUNCTION organization_deletions_due(at timestamptz) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT r.organization_id FROM organization_deletion_requests r WHERE r.purge_after <= at ORDER BY r.purge_after
$$;
REVOKE ALL ON FUNCTION organization_deletions_due(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION organization_deletions_due(timestamptz) TO clientflow_app;

-- What remains of a purged organization: its id, a digest of its name, who asked and when,
-- when it ran, how many rows each table lost, and an HMAC over all of it (a key derived from
-- the master key) so an edited record reads as such. No names, addresses or contents. Written
-- by the owner role (the purge); the app role reads it.
CREATE TABLE organization_deletion_records (
    deleted_organization_id uuid PRIMARY KEY,
    name_sha256 bytea NOT NULL CHECK (octet_length(name_sha256) = 32),
    requested_by uuid NOT NULL,
    requested_at timestamptz NOT NULL,
    executed_at timestamptz NOT NULL,
    row_counts jsonb NOT NULL,
    signature bytea NOT NULL CHECK (octet_length(signature) = 32),
    -- After the commit: the stored files removed and the data keys destroyed (a sweep finishes
    -- what a crash between the commit and these steps left).
    files_removed integer,
    keys_destroyed integer,
    finished_at timestamptz
);
GRANT SELECT ON organization_deletion_records TO clientflow_app;

-- The audit log's one other exception besides retention: the owner role purging an
-- organization that has a deletion request, inside a transaction that names that organization
-- in clientflow.organization_purge. The app role still can't remove a single event.
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_user = 'clientflow_owner' THEN
        IF current_setting('clientflow.organization_purge', true) = OLD.organization_id::text
           AND EXISTS (SELECT 1 FROM organization_deletion_requests r WHERE r.organization_id = OLD.organization_id) THEN
            RETURN OLD;
        END IF;
        -- Retention (0007): old events only, never the head.
        IF current_setting('clientflow.audit_retention', true) = 'on'
           AND OLD.occurred_at < audit_retention_horizon()
           AND OLD.seq < (SELECT h.seq FROM audit_heads h WHERE h.organization_id = OLD.organization_id) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE OR REPLACE FUNCTION audit_refuse_checkpoint_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_user = 'clientflow_owner'
       AND current_setting('clientflow.organization_purge', true) = OLD.organization_id::text
       AND EXISTS (SELECT 1 FROM organization_deletion_requests r WHERE r.organization_id = OLD.organization_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit checkpoints are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
