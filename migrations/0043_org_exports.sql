-- Organization data exports (promise 12, "Data export and deletion by owners").
--
-- An Owner asks for an export on the organization's "Data export" settings page; a worker
-- writes the archive (a ZIP of NDJSON parts, the files, the audit log and a manifest) to the
-- server's data directory and records its progress here; the archive is downloaded through a
-- signed, expiring link and deleted by the worker once it expires.
--
-- A tenant table like every other: organization_id first in the key, row-level security
-- enabled and forced, the tenant policy for reads and writes. The archive's path is not
-- stored: it is made from the two ids (privacy/export.rs), never taken from a row.
CREATE TABLE org_exports (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id uuid NOT NULL,
    -- Who asked (NULL: the operator's command line, or an account since removed).
    requested_by uuid REFERENCES users (id) ON DELETE SET NULL,
    requested_at timestamptz NOT NULL,
    -- queued → running → ready (or failed); ready → expired when the archive is deleted.
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'ready', 'failed', 'expired')),
    started_at timestamptz,
    -- Written while running: a worker that stops mid-way leaves a stale heartbeat, and the
    -- export is taken up again by the next sweep.
    heartbeat_at timestamptz,
    finished_at timestamptz,
    rows_done bigint NOT NULL DEFAULT 0 CHECK (rows_done >= 0),
    rows_total bigint NOT NULL DEFAULT 0 CHECK (rows_total >= 0),
    size_bytes bigint CHECK (size_bytes >= 0),
    -- SHA-256 of the whole archive, shown on the page so a download can be checked.
    sha256 bytea CHECK (sha256 IS NULL OR octet_length(sha256) = 32),
    -- What went wrong, for the page (never a secret: the worker writes a generic message).
    error text CHECK (char_length(error) <= 500),
    -- When the archive and its link stop existing.
    expires_at timestamptz,
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX org_exports_recent_idx ON org_exports (organization_id, requested_at DESC);

ALTER TABLE org_exports ENABLE ROW LEVEL SECURITY;
ALTER TABLE org_exports FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON org_exports
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE ON org_exports TO clientflow_app;

-- The worker's sweep: which exports need it (queued, running with a stale heartbeat, or
-- expired with an archive still on disk), as (organization, export) ids only. Each is then
-- opened through the tenant door. Same shape as audit_heads_due_for_signing (0007): the owner
-- may read the table across organizations for this one function.
CREATE POLICY owner_reads_for_export_worker ON org_exports FOR SELECT TO clientflow_owner USING (true);
CREATE FUNCTION org_exports_due(now timestamptz, stale_before timestamptz)
RETURNS TABLE (organization_id uuid, id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT e.organization_id, e.id FROM org_exports e
     WHERE e.status = 'queued'
        OR (e.status = 'running' AND (e.heartbeat_at IS NULL OR e.heartbeat_at < stale_before))
        OR (e.status IN ('ready', 'failed') AND e.expires_at < now)
     ORDER BY e.requested_at
     LIMIT 100
$$;
REVOKE ALL ON FUNCTION org_exports_due(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION org_exports_due(timestamptz, timestamptz) TO clientflow_app;
