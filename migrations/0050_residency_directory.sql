-- Data residency (docs/security/residency.md): every organization lives in one region, and each
-- region has a PostgreSQL database of its own. The same migrations run on every region's
-- database; the default region's database is also the global directory: accounts, sessions and
-- this table, which says where each organization lives. Outside the default region it stays
-- empty.
--
-- Not a tenant table: it is read before any organization is known (which database holds the
-- organization behind a slug, a signed link, a CLI argument?). Its key column is named `org`,
-- not `organization_id`, because its rows are not the organization's data and must not be
-- carried off with them by an export or a move. What it holds of an organization is what
-- routing needs and no more: the id, the slug (public: it is in every URL and contact form
-- address) and the region.
CREATE TABLE organization_directory (
    org uuid PRIMARY KEY,
    slug text NOT NULL,
    region text NOT NULL CHECK (region ~ '^[a-z][a-z0-9-]{0,15}$'),
    -- While a move to another region runs (`clientflow org move`): writes are refused.
    moving_to text CHECK (moving_to ~ '^[a-z][a-z0-9-]{0,15}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Slugs are unique across regions, not just within one database.
    CONSTRAINT organization_directory_slug_key UNIQUE (slug)
);

-- The organizations that exist already live in the region every installation starts with.
-- `organizations` forces row-level security on its owner too; lifted for this one statement.
ALTER TABLE organizations NO FORCE ROW LEVEL SECURITY;
INSERT INTO organization_directory (org, slug, region) SELECT id, slug, 'us' FROM organizations;
ALTER TABLE organizations FORCE ROW LEVEL SECURITY;

GRANT SELECT, INSERT, UPDATE, DELETE ON organization_directory TO clientflow_app;

-- A move of an organization from one region to another, step by step: the command records
-- each step it finished, so an interrupted move continues (or is rolled back) from there.
-- Lives in the directory's database, next to the entry it switches.
CREATE TABLE organization_moves (
    org uuid PRIMARY KEY,
    from_region text NOT NULL,
    to_region text NOT NULL,
    -- 'frozen' (writes refused) → 'copied' → 'verified' → 'switched' → 'purged' (done).
    step text NOT NULL CHECK (step IN ('frozen', 'copied', 'verified', 'switched', 'purged')),
    -- What verification counted, per table (JSON), for the report.
    counts jsonb,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE, DELETE ON organization_moves TO clientflow_app;
