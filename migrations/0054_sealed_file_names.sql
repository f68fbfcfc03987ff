-- File names sealed with the organization's data key (docs/security/encryption.md), like the
-- files' contents: AES-256-GCM, bound to the organization, `files.name`, the file's id and the
-- key version (the value names its version itself, `platform::keys`).
--
-- A migration can't encrypt (the keys are not in the database), so the plaintext column stays,
-- nullable, for the rows written before this migration: the re-seal job
-- (`privacy::keys::reseal_files`, every minute in `serve` and `worker`, or `clientflow keys
-- reseal`) seals each one and clears its plaintext; readers accept both meanwhile, and
-- `clientflow keys status` counts what is left. From here on, no row may be written or changed
-- with a plaintext name: `files_name_sealed_only` holds for every insert and update now, and for
-- the old rows once they are re-sealed (NOT VALID: it is not checked against them today).

ALTER TABLE files
    ALTER COLUMN name DROP NOT NULL,
    -- 255 characters of up to 4 bytes, and the sealed format's 33 bytes.
    ADD COLUMN name_sealed bytea CHECK (name_sealed IS NULL OR octet_length(name_sealed) BETWEEN 34 AND 1100),
    ADD CONSTRAINT files_name_present CHECK (name IS NOT NULL OR name_sealed IS NOT NULL),
    ADD CONSTRAINT files_name_sealed_only CHECK (name IS NULL) NOT VALID;

-- The data-key version an envelope-sealed value names (`0x02 ‖ version (u32, big endian) ‖ …`),
-- NULL for anything else: lets the re-seal job and its counts see a name's version without
-- a column that could disagree with the value.
CREATE FUNCTION sealed_key_version(value bytea) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog AS $$
    SELECT CASE WHEN octet_length(value) >= 5 AND get_byte(value, 0) = 2 THEN
        ((get_byte(value, 1)::bigint << 24) | (get_byte(value, 2) << 16) | (get_byte(value, 3) << 8) | get_byte(value, 4))::integer
    END
$$;

-- The counts behind rotation and `keys status` now include file names, by the version each
-- one names (NULL: still plaintext). A version is destroyed only when no value of any source
-- uses it, names included.
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
$$;
