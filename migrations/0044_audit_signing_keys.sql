-- The public keys that signed an organization's audit checkpoints.
--
-- A checkpoint names its key by id only (audit_checkpoints.key_id). An organization's export
-- carries its audit log to another installation, whose own signing key is different; this
-- table travels with it (it is a tenant table, so exports include it), so an import can verify
-- the chain's signed checkpoints with the keys that made them. The export records the
-- exporting installation's key here before it takes its snapshot (privacy/export.rs).
--
-- Public keys only: nothing here lets anyone sign.
CREATE TABLE audit_signing_keys (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    key_id text NOT NULL CHECK (char_length(key_id) BETWEEN 1 AND 100),
    -- Ed25519 public key (32 bytes).
    public_key bytea NOT NULL CHECK (octet_length(public_key) = 32),
    PRIMARY KEY (organization_id, key_id)
);

ALTER TABLE audit_signing_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_signing_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_signing_keys
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
-- Appended, never changed: a key once trusted for a chain stays what it was.
GRANT SELECT, INSERT ON audit_signing_keys TO clientflow_app;
