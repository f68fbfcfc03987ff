-- The identity of the installation: what every server and worker process of it must share.
-- The first process to start records fingerprints of its master key, its audit signing key and
-- its file store; every later process compares its own before serving and refuses to start when
-- one differs (cli/installation.rs), so two processes with their own default keys can't both run
-- and quietly refuse each other's forms, sealed secrets and checkpoints.
--
-- Not tenant data: one row for the whole installation. The app role may read it and add the
-- first row, never change it: a misconfigured process can't rewrite what the others agreed on.
CREATE TABLE installation_identity (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Hex of a key derived from the master key for this purpose only (HMAC), first 16 bytes.
    master_key_fingerprint text NOT NULL CHECK (master_key_fingerprint ~ '^[0-9a-f]{32}$'),
    -- Hex of the SHA-256 of the audit signing key's public half, first 16 bytes.
    audit_key_fingerprint text NOT NULL CHECK (audit_key_fingerprint ~ '^[0-9a-f]{32}$'),
    -- Where files live: `local:<random id>`, the id kept in the store itself.
    file_store text NOT NULL CHECK (char_length(file_store) BETWEEN 1 AND 500),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT ON installation_identity TO clientflow_app;
