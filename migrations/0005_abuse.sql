-- Abuse controls (issue 6): the public contact form of each organization and its stored
-- submissions, and per-organization IP allowlists.

ALTER TABLE organizations
    -- The public contact form at /contact/<slug>: off until an Owner or Admin enables it and
    -- names the address that is told about each submission.
    ADD COLUMN contact_form_enabled boolean NOT NULL DEFAULT false,
    ADD COLUMN contact_email text CHECK (contact_email IS NULL OR char_length(contact_email) BETWEEN 3 AND 254),
    -- Addresses and ranges (IPv4 and IPv6; IPv4-mapped IPv6 is stored as IPv4) from which the
    -- organization's dashboard and API keys may be used. Empty: from anywhere.
    ADD COLUMN ip_allowlist cidr[] NOT NULL DEFAULT '{}' CHECK (cardinality(ip_allowlist) <= 200),
    ADD CONSTRAINT organizations_contact_form_needs_address
        CHECK (NOT contact_form_enabled OR contact_email IS NOT NULL);

-- What visitors sent through the contact form. The submitter's address and user agent are kept
-- for handling abuse (they are what a rate limit or a block would be about).
CREATE TABLE contact_submissions (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id uuid NOT NULL,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    email text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    message text NOT NULL CHECK (char_length(message) BETWEEN 1 AND 5000),
    ip inet,
    user_agent text NOT NULL DEFAULT '' CHECK (char_length(user_agent) <= 512),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX contact_submissions_time_idx ON contact_submissions (organization_id, created_at);

ALTER TABLE contact_submissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_submissions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON contact_submissions
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);

GRANT SELECT, INSERT, DELETE ON contact_submissions TO clientflow_app;

-- The contact form is reached by people who are not members. Presenting an organization's slug
-- (app.contact_form_slug) makes that one organization's row readable, and only while its
-- contact form is enabled: the visitor learns the organization exists only if it chose to have
-- a public form. Read-only, like the invitation capability of 0003; the submission itself is
-- written through the tenant door (platform::db::tenant::contact_form).
CREATE POLICY contact_form_by_slug ON organizations FOR SELECT
    USING (contact_form_enabled AND slug = NULLIF(current_setting('app.contact_form_slug', true), ''));
