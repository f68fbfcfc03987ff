-- The answers the API keeps for Idempotency-Key replays (`idempotency_keys.response_body`)
-- are sealed with the organization's data key, bound to the organization, this table and
-- column, the API key and the Idempotency-Key, and the key version (`api::idempotency`): an
-- answer repeats what the request created (a file's name, a contact's details), and is kept
-- until its key is used again, so it must be no easier to read than the values themselves.
--
-- Answers stored before this migration are JSON in plaintext: the re-seal job
-- (`privacy::keys::reseal_api_answers`) seals them; replays read both meanwhile.

-- The counts behind rotation and `keys status` include them, by the version each one names
-- (NULL: plaintext), so a data-key version is not destroyed while an answer uses it, and the
-- re-seal job moves them to the newest version like every other value.
CREATE POLICY owner_counts_key_versions ON idempotency_keys FOR SELECT TO clientflow_owner USING (true);
CREATE OR REPLACE FUNCTION sealed_values_by_key_version()
RETURNS TABLE (organization_id uuid, source text, key_version integer, sealed_values bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT f.organization_id, 'files', f.key_version, count(*) FROM files f GROUP BY 1, 3
    UNION ALL
    SELECT f.organization_id, 'file_names', sealed_key_version(f.name_sealed), count(*) FROM files f GROUP BY 1, 3
    UNION ALL
    SELECT c.organization_id, 'client_contacts', c.key_version, count(*) FROM client_contacts c
     WHERE c.key_version IS NOT NULL OR c.email IS NOT NULL OR c.phone IS NOT NULL
     GROUP BY 1, 3
    UNION ALL
    SELECT i.organization_id, 'api_answers', sealed_key_version(i.response_body), count(*) FROM idempotency_keys i
     WHERE i.response_body IS NOT NULL
     GROUP BY 1, 3
$$;
