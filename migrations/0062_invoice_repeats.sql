-- Repeating invoices: an invoice copied on a schedule (a retainer billed every month, a
-- licence every year). Each repeat names the invoice it copies; on each of its days the
-- worker copies that invoice as it is then (client, currency, tax rate, notes, lines) into a
-- new invoice issued on that day, and sends it to the client when the repeat says so
-- (work/repeats.rs). The days are counted from the first one, never from the last copy, so a
-- repeat started on the 31st is issued on the last day of shorter months and on the 31st again
-- after them.
CREATE TABLE invoice_repeats (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    -- The invoice copied. An invoice is repeated by at most one schedule; deleting a draft
    -- that is repeated ends its repeat.
    invoice_id uuid NOT NULL,
    every smallint NOT NULL,
    unit text NOT NULL CHECK (unit IN ('week', 'month')),
    starts_on date NOT NULL,
    -- The last day a copy may be issued on; none: until stopped.
    ends_on date CHECK (ends_on IS NULL OR ends_on >= starts_on),
    -- Send each copy and mail it to the client's billing contact, or leave it a draft.
    send boolean NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    -- How many copies were made.
    made integer NOT NULL DEFAULT 0 CHECK (made >= 0),
    -- The next copy's place in the schedule (the first day is 0) and its day; resuming a
    -- paused repeat moves both past the days that went by.
    nth integer NOT NULL DEFAULT 0 CHECK (nth >= 0),
    next_on date NOT NULL,
    last_invoice_id uuid,
    -- Why the last attempt made no copy (the repeat pauses itself then); cleared on resuming.
    problem text CHECK (char_length(problem) <= 500),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id),
    UNIQUE (organization_id, invoice_id),
    CHECK ((unit = 'week' AND every BETWEEN 1 AND 52) OR (unit = 'month' AND every BETWEEN 1 AND 12)),
    FOREIGN KEY (organization_id, invoice_id) REFERENCES invoices (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, last_invoice_id) REFERENCES invoices (organization_id, id)
        ON DELETE SET NULL (last_invoice_id)
);
-- The worker's question: which repeats are due.
CREATE INDEX invoice_repeats_due_idx ON invoice_repeats (organization_id, next_on) WHERE NOT paused;

ALTER TABLE invoice_repeats ENABLE ROW LEVEL SECURITY;
ALTER TABLE invoice_repeats FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON invoice_repeats
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON invoice_repeats TO clientflow_app;

-- The worker finds the organizations with a repeat that may be due without entering each one:
-- per organization, its time zone and the earliest day one of its running repeats is next due
-- (whether that day has come is decided in the organization's time zone by the caller). It
-- returns ids, zones and dates only.
CREATE POLICY owner_reads_for_repeating ON invoice_repeats FOR SELECT TO clientflow_owner USING (true);
CREATE FUNCTION invoice_repeat_organizations(OUT id uuid, OUT timezone text, OUT next_on date)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT o.id, o.timezone, min(r.next_on)
      FROM invoice_repeats r JOIN organizations o ON o.id = r.organization_id
     WHERE NOT r.paused AND (r.ends_on IS NULL OR r.next_on <= r.ends_on)
     GROUP BY o.id, o.timezone
$$;
REVOKE ALL ON FUNCTION invoice_repeat_organizations() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION invoice_repeat_organizations() TO clientflow_app;

-- A copy says which invoice's repeat made it (the invoice's page links to it); the link goes
-- when that invoice is deleted.
ALTER TABLE invoices ADD COLUMN repeated_from uuid,
    ADD FOREIGN KEY (organization_id, repeated_from) REFERENCES invoices (organization_id, id)
        ON DELETE SET NULL (repeated_from);

-- The organization's Owners and Admins are told when a repeat pauses itself, and when a copy
-- waits as a draft to be checked and sent: two notification kinds, and their preferences.
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check,
    ADD CONSTRAINT notifications_kind_check CHECK (kind IN ('assigned', 'mentioned', 'commented', 'task_changed',
        'invoice_viewed', 'invoice_paid', 'invoice_repeat_made', 'invoice_repeat_paused', 'invitation_accepted',
        'budget_used'));
ALTER TABLE notification_preferences DROP CONSTRAINT notification_preferences_kind_check,
    ADD CONSTRAINT notification_preferences_kind_check CHECK (kind IN ('assigned', 'mentioned', 'commented',
        'task_changed', 'invoice_viewed', 'invoice_paid', 'invoice_repeat_made', 'invoice_repeat_paused',
        'invitation_accepted', 'digest', 'budget_used'));
