-- Organizations in full: settings, invitations, permission customization, and the immutable,
-- hash-chained audit log.

-- Organization settings, enforced server-side on every request.
ALTER TABLE organizations
    ADD COLUMN brand_color text NOT NULL DEFAULT '#2457d6' CHECK (brand_color ~ '^#[0-9a-f]{6}$'),
    ADD COLUMN timezone text NOT NULL DEFAULT 'UTC' CHECK (char_length(timezone) BETWEEN 1 AND 64),
    ADD COLUMN currency text NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    -- Idle timeout for sessions inside this organization (shorter than the server's, or NULL).
    ADD COLUMN session_timeout_minutes integer CHECK (session_timeout_minutes BETWEEN 5 AND 1440),
    ADD COLUMN require_two_factor boolean NOT NULL DEFAULT false;

-- Small logo, stored in the database (PNG or JPEG only: no SVG, which can carry script).
CREATE TABLE organization_logos (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    content_type text NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg')),
    bytes bytea NOT NULL CHECK (octet_length(bytes) <= 262144),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id)
);

-- Invitations: bound to an email, a role (and for the Client role, a client record), hashed
-- single-use token, expiry.
CREATE TABLE invitations (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id uuid NOT NULL,
    email text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    role text NOT NULL CHECK (role IN ('owner', 'admin', 'manager', 'member', 'client')),
    client_id uuid,
    token_hash bytea NOT NULL UNIQUE,
    invited_by uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    accepted_at timestamptz,
    accepted_by uuid REFERENCES users (id),
    declined_at timestamptz,
    revoked_at timestamptz,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, client_id) REFERENCES clients (organization_id, id),
    CONSTRAINT invitations_client_link CHECK ((role = 'client') = (client_id IS NOT NULL))
);
-- At most one open invitation per address and organization.
CREATE UNIQUE INDEX invitations_open_email ON invitations (organization_id, email)
    WHERE accepted_at IS NULL AND declined_at IS NULL AND revoked_at IS NULL;

-- Per-organization customization of the Manager and Member roles (within bounds the
-- application enforces: never beyond Admin).
CREATE TABLE role_permissions (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    role text NOT NULL CHECK (role IN ('manager', 'member')),
    permission text NOT NULL,
    granted boolean NOT NULL,
    PRIMARY KEY (organization_id, role, permission)
);

-- Per-member overrides on top of the role.
CREATE TABLE member_permissions (
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    permission text NOT NULL,
    granted boolean NOT NULL,
    PRIMARY KEY (organization_id, user_id, permission),
    FOREIGN KEY (organization_id, user_id) REFERENCES memberships (organization_id, user_id) ON DELETE CASCADE
);

-- The audit log. Append-only: the app role may INSERT and SELECT, nothing else, and a trigger
-- refuses UPDATE, DELETE and TRUNCATE for every role (retention goes through
-- audit_apply_retention below). Each row carries the SHA-256 of the previous row's hash and
-- its own canonical encoding, per organization, with a gapless sequence.
CREATE TABLE audit_events (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    seq bigint NOT NULL CHECK (seq >= 1),
    occurred_at timestamptz NOT NULL,
    actor_type text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'system')),
    actor_id text NOT NULL,
    actor_label text NOT NULL,
    ip inet,
    user_agent text NOT NULL DEFAULT '',
    action text NOT NULL,
    target_type text NOT NULL,
    target_id text NOT NULL,
    before jsonb,
    after jsonb,
    request_id text NOT NULL DEFAULT '',
    prev_hash bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (organization_id, seq)
);
CREATE INDEX audit_events_time_idx ON audit_events (organization_id, occurred_at);
CREATE INDEX audit_events_action_idx ON audit_events (organization_id, action, seq);

-- The head of each organization's chain: locked FOR UPDATE by every append, which serializes
-- concurrent appends per organization (gapless sequence, valid links).
CREATE TABLE audit_heads (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    seq bigint NOT NULL,
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (organization_id)
);

-- Checkpoints: where retention cut the chain (the verifier starts from that hash), and
-- signed heads (Ed25519) that let a verifier detect a rewrite of the whole chain.
CREATE TABLE audit_checkpoints (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    seq bigint NOT NULL,
    kind text NOT NULL CHECK (kind IN ('retention', 'signed')),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    created_at timestamptz NOT NULL,
    key_id text,
    signature bytea,
    PRIMARY KEY (organization_id, seq, kind),
    CHECK ((kind = 'signed') = (signature IS NOT NULL AND key_id IS NOT NULL))
);

CREATE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    -- The one exception: retention, inside audit_apply_retention, which runs as the owner
    -- and sets this transaction-local flag.
    IF TG_OP = 'DELETE' AND current_user = 'clientflow_owner'
       AND current_setting('clientflow.audit_retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Retention: deletes one organization's events older than `cutoff`, first recording a
-- 'retention' checkpoint with the hash of the last deleted event so the remaining chain still
-- verifies from there. SECURITY DEFINER (runs as the owner, the only role that may delete),
-- search_path pinned; it sets the tenant itself, so it can only ever touch the organization
-- it is given. Returns the number of events deleted.
CREATE FUNCTION audit_apply_retention(org uuid, cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    last_seq bigint;
    last_hash bytea;
    deleted bigint;
BEGIN
    PERFORM set_config('app.org_id', org::text, true);
    -- Never cut the head: the newest event stays, whatever its age.
    SELECT e.seq, e.hash INTO last_seq, last_hash FROM audit_events e
     WHERE e.organization_id = org AND e.occurred_at < cutoff
       AND e.seq < (SELECT h.seq FROM audit_heads h WHERE h.organization_id = org)
     ORDER BY e.seq DESC LIMIT 1;
    IF last_seq IS NULL THEN
        RETURN 0;
    END IF;
    INSERT INTO audit_checkpoints (organization_id, seq, kind, hash, created_at)
    VALUES (org, last_seq, 'retention', last_hash, now())
    ON CONFLICT DO NOTHING;
    PERFORM set_config('clientflow.audit_retention', 'on', true);
    DELETE FROM audit_events WHERE organization_id = org AND seq <= last_seq;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('clientflow.audit_retention', 'off', true);
    RETURN deleted;
END
$$;
REVOKE ALL ON FUNCTION audit_apply_retention(uuid, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_apply_retention(uuid, timestamptz) TO clientflow_app;

-- Row-level security on the new tenant tables (the pattern of 0001).
ALTER TABLE organization_logos ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_logos FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organization_logos
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

ALTER TABLE invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON invitations
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
-- The token is a capability: a transaction that presents the digest of an invitation's token
-- (app.invitation_token, hex) may read that one invitation, and the name of its organization
-- (policy on organizations below), and nothing else. Read-only.
CREATE POLICY invitation_by_token ON invitations FOR SELECT
    USING (token_hash = decode(NULLIF(current_setting('app.invitation_token', true), ''), 'hex'));
CREATE POLICY invited_organization ON organizations FOR SELECT
    USING (EXISTS (
        SELECT 1 FROM invitations i
        WHERE i.organization_id = organizations.id
          AND i.token_hash = decode(NULLIF(current_setting('app.invitation_token', true), ''), 'hex')
    ));

ALTER TABLE role_permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE role_permissions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON role_permissions
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

ALTER TABLE member_permissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE member_permissions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON member_permissions
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

ALTER TABLE audit_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_heads
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

ALTER TABLE audit_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_checkpoints
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE, DELETE ON organization_logos, invitations, role_permissions, member_permissions
    TO clientflow_app;
GRANT SELECT, INSERT, UPDATE ON audit_heads TO clientflow_app;
-- Append-only for the server.
GRANT SELECT, INSERT ON audit_events, audit_checkpoints TO clientflow_app;

-- The auditor role (operator commands: audit verify, checkpoints, retention across all
-- organizations) reads across tenants; it is never what the server runs as.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'clientflow_auditor') THEN
        GRANT USAGE ON SCHEMA public TO clientflow_auditor;
        GRANT SELECT ON organizations, audit_events, audit_checkpoints, audit_heads TO clientflow_auditor;
    END IF;
END
$$;
