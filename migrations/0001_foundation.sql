-- ClientFlow schema v1: global identities, organizations, memberships, and the first tenant
-- tables (clients, projects) that set the pattern every later tenant table follows.
--
-- Runs as the owner role (clientflow_owner), which owns every object created here. The server
-- runs as clientflow_app, which owns nothing and gets exactly the grants written below.
--
-- The tenant pattern (docs/ARCHITECTURE.md, "Tenant isolation"):
--   * organization_id uuid NOT NULL, first column of the primary key;
--   * foreign keys to other tenant tables are composite and include organization_id, so a row
--     can never point into another organization;
--   * ROW LEVEL SECURITY enabled AND forced (the owner is subject to it too);
--   * policy tenant_isolation: organization_id = the transaction's app.org_id, for reads
--     (USING) and writes (WITH CHECK). NULLIF turns the empty string a reset setting leaves
--     behind into NULL, so "no tenant set" compares as unknown: zero rows, never an error.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'clientflow_app') THEN
        RAISE EXCEPTION 'role clientflow_app does not exist; create it first (docs/operations.md, "Database roles")';
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO clientflow_app;
-- /readyz compares applied migrations with the ones compiled into the binary.
GRANT SELECT ON _sqlx_migrations TO clientflow_app;

-- People. Global: one identity may belong to many organizations.
CREATE TABLE users (
    id uuid PRIMARY KEY,
    -- Stored as entered after trimming and lower-casing (the Email domain type does that).
    email text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    display_name text NOT NULL DEFAULT '' CHECK (char_length(display_name) <= 200),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (email);

GRANT SELECT, INSERT, UPDATE, DELETE ON users TO clientflow_app;

-- Organizations (tenants). Keyed by id rather than organization_id, but isolated the same way:
-- a transaction sees its own organization, plus (read-only) the organizations the signed-in
-- user is an active member of, for the organization switcher.
CREATE TABLE organizations (
    id uuid PRIMARY KEY,
    slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'),
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    -- Data residency: the region whose database holds this organization.
    region text NOT NULL DEFAULT 'default',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Client records of an organization.
CREATE TABLE clients (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id uuid NOT NULL,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    notes text NOT NULL DEFAULT '' CHECK (char_length(notes) <= 20000),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);

-- Who belongs to which organization, with which role. A Client-role membership is linked
-- explicitly to one client record of the same organization (never matched by email).
CREATE TABLE memberships (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    user_id uuid NOT NULL REFERENCES users (id),
    role text NOT NULL CHECK (role IN ('owner', 'admin', 'manager', 'member', 'client')),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    client_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, user_id),
    FOREIGN KEY (organization_id, client_id) REFERENCES clients (organization_id, id),
    CONSTRAINT memberships_client_link CHECK ((role = 'client') = (client_id IS NOT NULL))
);
-- Listing one user's organizations (the only lookup not scoped by organization first).
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE projects (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id uuid NOT NULL,
    client_id uuid,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('planned', 'active', 'on_hold', 'completed', 'archived')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id),
    -- Composite: a project can only reference a client of its own organization.
    FOREIGN KEY (organization_id, client_id) REFERENCES clients (organization_id, id)
);
CREATE INDEX projects_client_idx ON projects (organization_id, client_id);

-- Row-level security.

ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organizations
    USING (id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (id = NULLIF(current_setting('app.org_id', true), '')::uuid);
CREATE POLICY member_directory ON organizations FOR SELECT
    USING (EXISTS (
        SELECT 1 FROM memberships m
        WHERE m.organization_id = organizations.id
          AND m.user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
          AND m.status = 'active'
    ));

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memberships
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
-- A signed-in user may read (never write) their own memberships across organizations.
CREATE POLICY own_memberships ON memberships FOR SELECT
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid);

ALTER TABLE clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE clients FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON clients
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE projects FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON projects
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE, DELETE ON organizations, memberships, clients, projects TO clientflow_app;
