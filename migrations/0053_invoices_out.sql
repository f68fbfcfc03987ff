-- Invoices out: the organization's default tax rate for new invoices, and attachments on
-- outgoing mail (the invoice's PDF goes with the mail that sends or recalls it).

-- Basis points, like invoices.tax_rate_bp (19% is 1900): what a new invoice starts with.
ALTER TABLE organizations
    ADD COLUMN default_tax_rate_bp integer NOT NULL DEFAULT 0 CHECK (default_tax_rate_bp BETWEEN 0 AND 10000);

-- The outbox is the region's delivery queue, not tenant data, so an attachment's bytes (the
-- organization's data) are kept apart, in a tenant table under row-level security like every
-- other, and the outbox row only says whose they are and how many it expects. The worker
-- reads them through the tenant door as a permissionless system principal
-- (access::mail_delivery) and deletes them once the message is sent; the organization's purge
-- empties the table with the others (it has organization_id), and a message whose
-- attachments are gone is given up rather than sent without them.
ALTER TABLE outbox
    ADD COLUMN attachments_org uuid,
    ADD COLUMN attachment_count smallint NOT NULL DEFAULT 0 CHECK (attachment_count BETWEEN 0 AND 10),
    ADD CONSTRAINT outbox_attachments_owner CHECK ((attachment_count = 0) = (attachments_org IS NULL));

-- No foreign key to outbox: the outbox is not a tenant table (an organization moved to
-- another region takes these rows along; its old region's queue then no longer finds them).
CREATE TABLE outbox_attachments (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    outbox_id uuid NOT NULL,
    position smallint NOT NULL CHECK (position BETWEEN 0 AND 9),
    -- A plain name (the writer makes it so): it goes into a MIME header and Resend's JSON.
    filename text NOT NULL CHECK (filename ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$'),
    content_type text NOT NULL CHECK (content_type ~ '^[a-z]+/[a-z0-9.+-]{1,100}$'),
    -- At most 5 MiB each (mail::outbox::MAX_ATTACHMENT_BYTES; 10 MiB for a whole message).
    content bytea NOT NULL CHECK (octet_length(content) BETWEEN 1 AND 5242880),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, outbox_id, position)
);

ALTER TABLE outbox_attachments ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox_attachments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox_attachments
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
GRANT SELECT, INSERT, DELETE ON outbox_attachments TO clientflow_app;
