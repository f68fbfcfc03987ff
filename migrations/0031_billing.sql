-- Billing: each organization's subscription as Stripe last told us, and the Stripe events
-- already processed.
--
-- Billing is off unless Stripe is configured; then an organization without a row here is on
-- the free plan. Nothing in this migration deletes data: a canceled or unpaid subscription only
-- changes the limits (and, after the grace period, makes the organization read-only).

-- One row per organization that has started a checkout. `state_at` is the Stripe `created`
-- time of the newest event whose object decided `status` and `plan`: an older event arriving
-- late never overwrites a newer state (webhooks arrive out of order and more than once).
CREATE TABLE billing_accounts (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    plan text NOT NULL CHECK (char_length(plan) BETWEEN 1 AND 50),
    status text NOT NULL DEFAULT 'none'
        CHECK (status IN ('none', 'trialing', 'active', 'past_due', 'canceled')),
    stripe_customer_id text UNIQUE CHECK (char_length(stripe_customer_id) <= 255),
    stripe_subscription_id text CHECK (char_length(stripe_subscription_id) <= 255),
    state_at timestamptz,
    current_period_end timestamptz,
    -- Set when a payment first fails; cleared when an invoice is paid. Read-only starts
    -- `billing.grace_days` after it.
    past_due_since timestamptz,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id)
);

ALTER TABLE billing_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing_accounts
    USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
    WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid);
-- A verified Stripe event names a customer: a transaction presenting that customer id
-- (app.stripe_customer) may read that one row, to learn its organization (as an API key's
-- digest does for its key row).
CREATE POLICY billing_by_stripe_customer ON billing_accounts FOR SELECT
    USING (stripe_customer_id = NULLIF(current_setting('app.stripe_customer', true), ''));
GRANT SELECT, INSERT, UPDATE ON billing_accounts TO clientflow_app;

-- Stripe event ids already applied (exactly once per id). Global: an event is recorded in the
-- same transaction as its effect, before its organization is known.
CREATE TABLE stripe_events (
    event_id text PRIMARY KEY CHECK (char_length(event_id) BETWEEN 1 AND 255),
    type text NOT NULL CHECK (char_length(type) <= 100),
    received_at timestamptz NOT NULL
);
GRANT SELECT, INSERT ON stripe_events TO clientflow_app;
