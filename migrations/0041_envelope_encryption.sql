-- Envelope encryption (platform/keys.rs, docs/security/encryption.md): values sealed with the
-- organization's own data key, which lives in the key store and never in this database.
--
-- A migration can't encrypt (the keys are not in the database), so the plaintext columns stay
-- until `clientflow keys reseal` (or the worker) has moved every row's value into its sealed
-- column and cleared the plaintext one; readers accept both meanwhile.

-- A client contact's email address and phone number, sealed (AES-256-GCM, bound to the
-- organization, this table, the column, the contact's id and the key version). NULL: none, or
-- not resealed yet (then `email`/`phone` still hold the plaintext).
ALTER TABLE client_contacts
    ADD COLUMN email_sealed bytea CHECK (email_sealed IS NULL OR octet_length(email_sealed) <= 1024),
    ADD COLUMN phone_sealed bytea CHECK (phone_sealed IS NULL OR octet_length(phone_sealed) <= 1024),
    -- The data-key version the sealed columns use (NULL: nothing sealed yet). Rotation re-seals
    -- the rows below the organization's newest version and counts them by this column.
    ADD COLUMN key_version integer CHECK (key_version IS NULL OR key_version >= 1);
CREATE INDEX client_contacts_key_version_idx ON client_contacts (organization_id, key_version);

-- The data-key version of a file's stored contents (NULL: sealed with the master key before
-- envelope encryption; the contents themselves carry the version too).
ALTER TABLE files
    ADD COLUMN key_version integer CHECK (key_version IS NULL OR key_version >= 1);
CREATE INDEX files_key_version_idx ON files (organization_id, key_version);

-- Progress of re-sealing (`clientflow keys status`, the worker's re-seal job): how many sealed
-- values each organization has under each key version (NULL: not yet envelope-sealed). Counts
-- and ids only, never a value. The owner reads across organizations for this, SELECT only.
CREATE POLICY owner_counts_key_versions ON files FOR SELECT TO clientflow_owner USING (true);
CREATE POLICY owner_counts_key_versions ON client_contacts FOR SELECT TO clientflow_owner USING (true);
CREATE FUNCTION sealed_values_by_key_version()
RETURNS TABLE (organization_id uuid, source text, key_version integer, sealed_values bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT f.organization_id, 'files', f.key_version, count(*) FROM files f GROUP BY 1, 3
    UNION ALL
    SELECT c.organization_id, 'client_contacts', c.key_version, count(*) FROM client_contacts c
     WHERE c.key_version IS NOT NULL OR c.email IS NOT NULL OR c.phone IS NOT NULL
     GROUP BY 1, 3
$$;
REVOKE ALL ON FUNCTION sealed_values_by_key_version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sealed_values_by_key_version() TO clientflow_app;

-- Vulnerability reports' text moves from the master key to the installation's data key: the
-- re-seal step rewrites it (the rest of a report stays as written).
GRANT UPDATE (details_sealed) ON security_reports TO clientflow_app;
