-- Expenses: what a project cost beyond time (travel, stock photos, printing, a subcontractor),
-- recorded by a person on a day, billable to the project's client or not, and billed onto a
-- draft invoice as a line of its own (work/expenses.rs). Like billed time, a billed expense
-- points at the invoice line that billed it and is fixed from then on; deleting or voiding the
-- draft releases it.
CREATE TABLE expenses (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    -- Who recorded it. The person, not the membership: an expense stays when its author leaves
    -- (or becomes a tombstone after deleting their account), as time entries do.
    user_id uuid NOT NULL REFERENCES users (id),
    spent_on date NOT NULL,
    -- What it was for, as people name it ("Travel", "Stock photos"); offered again as choices.
    category text NOT NULL CHECK (char_length(category) BETWEEN 1 AND 100),
    note text NOT NULL DEFAULT '' CHECK (char_length(note) <= 2000),
    -- In minor units of `currency`: the organization's currency when it was recorded, so a
    -- later change of that currency never reinterprets what was spent. Only an invoice in the
    -- same currency can bill it.
    amount_minor bigint NOT NULL CHECK (amount_minor BETWEEN 1 AND 100000000000),
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    billable boolean NOT NULL,
    invoice_id uuid,
    invoice_line integer,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT expenses_billed_line FOREIGN KEY (organization_id, invoice_id, invoice_line)
        REFERENCES invoice_lines (organization_id, invoice_id, position) ON DELETE SET NULL (invoice_id, invoice_line),
    CONSTRAINT expenses_billed_both CHECK ((invoice_id IS NULL) = (invoice_line IS NULL))
);
CREATE INDEX expenses_project_idx ON expenses (organization_id, project_id, spent_on);
CREATE INDEX expenses_unbilled_idx ON expenses (organization_id, project_id, spent_on)
    WHERE billable AND invoice_id IS NULL;
CREATE INDEX expenses_invoice_idx ON expenses (organization_id, invoice_id) WHERE invoice_id IS NOT NULL;
CREATE INDEX expenses_user_idx ON expenses (user_id);

ALTER TABLE expenses ENABLE ROW LEVEL SECURITY;
ALTER TABLE expenses FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON expenses
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON expenses TO clientflow_app;
