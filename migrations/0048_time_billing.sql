-- Time tracking that bills: running timers, billable time with the hourly rate it was worth
-- when it was recorded, time turned into invoice lines (and never billed twice), and invoice
-- numbers as a yearly sequence per organization behind a prefix (`INV-2026-0007`).
--
-- Money is in minor units of the organization's currency, like every other amount.

-- The organization's defaults: the prefix of its invoice numbers, its hourly rate when nothing
-- more specific has one, and its payment terms (days from issue to due date).
ALTER TABLE organizations
    ADD COLUMN invoice_prefix text NOT NULL DEFAULT 'INV' CHECK (invoice_prefix ~ '^[A-Za-z0-9]{1,10}$'),
    ADD COLUMN hourly_rate_minor bigint CHECK (hourly_rate_minor BETWEEN 0 AND 100000000000),
    ADD COLUMN payment_terms_days integer NOT NULL DEFAULT 30 CHECK (payment_terms_days BETWEEN 0 AND 365);

-- Rates, from the most specific: a person on a project, the project, the client. The first one
-- set wins (work/rates.rs); the organization's is the last resort.
ALTER TABLE clients
    ADD COLUMN hourly_rate_minor bigint CHECK (hourly_rate_minor BETWEEN 0 AND 100000000000);
ALTER TABLE projects
    ADD COLUMN hourly_rate_minor bigint CHECK (hourly_rate_minor BETWEEN 0 AND 100000000000),
    -- New time on the project is billable unless the person says otherwise.
    ADD COLUMN billable boolean NOT NULL DEFAULT true;
ALTER TABLE project_members
    ADD COLUMN hourly_rate_minor bigint CHECK (hourly_rate_minor BETWEEN 0 AND 100000000000);

-- Invoice numbers: a gapless sequence per organization and year, handed out under a row lock
-- when an invoice is sent. (invoice_counters, the earlier sequence per organization, numbered
-- the invoices sent before this migration; they keep their numbers.)
CREATE TABLE invoice_number_counters (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    year integer NOT NULL CHECK (year BETWEEN 1 AND 9999),
    next_number bigint NOT NULL DEFAULT 1 CHECK (next_number >= 1),
    PRIMARY KEY (organization_id, year)
);

ALTER TABLE invoices
    -- The year of `number`'s sequence; NULL for numbers of the earlier per-organization sequence.
    ADD COLUMN number_year integer CHECK (number_year BETWEEN 1 AND 9999),
    -- The number as printed (prefix, year, sequence), fixed when the invoice is sent: a later
    -- change of the prefix doesn't renumber what clients already hold.
    ADD COLUMN reference text CHECK (char_length(reference) BETWEEN 1 AND 40),
    -- Days from issue to due date the invoice was given (NULL: a due date typed in).
    ADD COLUMN payment_terms_days integer CHECK (payment_terms_days BETWEEN 0 AND 365),
    -- When a Client user first opened it in the portal (staff opening it doesn't count).
    ADD COLUMN viewed_at timestamptz,
    -- When the billing contact was last reminded of it (at most once a day).
    ADD COLUMN reminded_at timestamptz,
    DROP CONSTRAINT invoices_organization_id_number_key;
-- Unique per organization and year; the earlier numbers (no year) stay unique among themselves.
CREATE UNIQUE INDEX invoices_organization_id_number_key ON invoices (organization_id, coalesce(number_year, 0), number);
CREATE UNIQUE INDEX invoices_reference_key ON invoices (organization_id, reference);

-- Billable time, its rate as it was when recorded, and the invoice line that billed it. The
-- link is a foreign key to the line: deleting a draft (its lines cascade) releases the time.
ALTER TABLE time_entries
    ADD COLUMN billable boolean NOT NULL DEFAULT false,
    ADD COLUMN rate_minor bigint CHECK (rate_minor BETWEEN 0 AND 100000000000),
    ADD COLUMN invoice_id uuid,
    ADD COLUMN invoice_line integer,
    ADD CONSTRAINT time_entries_billed_line FOREIGN KEY (organization_id, invoice_id, invoice_line)
        REFERENCES invoice_lines (organization_id, invoice_id, position) ON DELETE SET NULL (invoice_id, invoice_line),
    ADD CONSTRAINT time_entries_billed_both CHECK ((invoice_id IS NULL) = (invoice_line IS NULL));
CREATE INDEX time_entries_unbilled_idx ON time_entries (organization_id, project_id, spent_on)
    WHERE billable AND invoice_id IS NULL;
CREATE INDEX time_entries_invoice_idx ON time_entries (organization_id, invoice_id) WHERE invoice_id IS NOT NULL;
CREATE INDEX time_entries_user_idx ON time_entries (organization_id, user_id, spent_on);

-- Timers: started on a project (and optionally a task), stopped into a time entry. One running
-- timer per person, enforced by the partial unique index so two racing starts can't both win.
CREATE TABLE timers (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    user_id uuid NOT NULL,
    project_id uuid NOT NULL,
    task_id uuid,
    note text NOT NULL DEFAULT '' CHECK (char_length(note) <= 2000),
    started_at timestamptz NOT NULL,
    stopped_at timestamptz,
    -- The entry the stop recorded (none when it ran under a minute).
    time_entry_id uuid,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, project_id, task_id) REFERENCES tasks (organization_id, project_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, user_id) REFERENCES memberships (organization_id, user_id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, time_entry_id) REFERENCES time_entries (organization_id, id) ON DELETE SET NULL (time_entry_id),
    CHECK (stopped_at IS NULL OR stopped_at >= started_at)
);
CREATE UNIQUE INDEX timers_one_running ON timers (organization_id, user_id) WHERE stopped_at IS NULL;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['invoice_number_counters', 'timers']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO clientflow_app', t);
    END LOOP;
END
$$;
