-- Payments against an invoice: a client may pay a sent invoice in parts. Each payment is a
-- row; what an invoice has been paid is their sum, and what it still owes is its total less
-- that (work/invoice_payments.rs). The invoice becomes `paid` when the payments reach its
-- total, in the transaction that records the last one, under the invoice row's lock; deleting
-- a payment (one recorded by mistake) turns a paid invoice back into a sent one.
CREATE TABLE invoice_payments (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    invoice_id uuid NOT NULL,
    -- Minor units, in the invoice's currency; never more than what the invoice still owed
    -- (checked by the application, which holds the invoice's row while it adds them up).
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    -- The day the money came, in the organization's calendar.
    paid_on date NOT NULL,
    -- How or what: "Bank transfer, ref 1234".
    note text NOT NULL DEFAULT '' CHECK (char_length(note) <= 500),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, invoice_id) REFERENCES invoices (organization_id, id) ON DELETE CASCADE
);
-- An invoice's payments (added up wherever an invoice is read), and the money received in a
-- range of days ("Payments received").
CREATE INDEX invoice_payments_invoice_idx ON invoice_payments (organization_id, invoice_id, paid_on);
CREATE INDEX invoice_payments_paid_on_idx ON invoice_payments (organization_id, paid_on);

ALTER TABLE invoice_payments ENABLE ROW LEVEL SECURITY;
ALTER TABLE invoice_payments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON invoice_payments
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
GRANT SELECT, INSERT, DELETE ON invoice_payments TO clientflow_app;

-- Invoices marked paid before payments were kept were paid in full on the day they were
-- marked: one payment each, so that every paid invoice's payments add up to its total (an
-- invoice of 0.00 has none).
-- The zone is the organization's, where PostgreSQL knows it (UTC otherwise).
ALTER TABLE organizations NO FORCE ROW LEVEL SECURITY;
ALTER TABLE invoices NO FORCE ROW LEVEL SECURITY;
ALTER TABLE invoice_payments NO FORCE ROW LEVEL SECURITY;
WITH zones AS (SELECT name FROM pg_timezone_names)
INSERT INTO invoice_payments (organization_id, id, invoice_id, amount_minor, paid_on, note, created_at)
SELECT i.organization_id, gen_random_uuid(), i.id, i.total_minor,
       (coalesce(i.paid_at, i.created_at) AT TIME ZONE coalesce(z.name, 'UTC'))::date, '',
       coalesce(i.paid_at, i.created_at)
  FROM invoices i JOIN organizations o ON o.id = i.organization_id
  LEFT JOIN zones z ON z.name = o.timezone
 WHERE i.status = 'paid' AND i.total_minor > 0;
ALTER TABLE invoice_payments FORCE ROW LEVEL SECURITY;
ALTER TABLE invoices FORCE ROW LEVEL SECURITY;
ALTER TABLE organizations FORCE ROW LEVEL SECURITY;
