-- Mail that arrives and respects people: what happens to a message after it leaves (provider
-- events), the suppression list those events and unsubscribe links feed, and the outbox states
-- that show what the worker decided. Every table here is global (not organization data): an
-- address is suppressed for the whole installation, whichever organization's mail bounced.

-- What the worker decided. `suppressed_at`: the message was not sent because the address is
-- suppressed for its category (recorded, never silently dropped). `delivery`: the last event the
-- provider reported for it (delivered, delayed, bounced, complained). `org_name`: the
-- organization a message speaks for, shown in its HTML part.
ALTER TABLE outbox
    ADD COLUMN suppressed_at timestamptz,
    ADD COLUMN suppression text,
    ADD COLUMN delivery text CHECK (delivery IN ('delivered', 'delayed', 'bounced', 'complained')),
    ADD COLUMN delivery_at timestamptz,
    ADD COLUMN org_name text;

-- One state per message, derived so it can never disagree with the timestamps it comes from.
ALTER TABLE outbox ADD COLUMN state text GENERATED ALWAYS AS (
    CASE
        WHEN sent_at IS NOT NULL THEN 'sent'
        WHEN suppressed_at IS NOT NULL THEN 'suppressed'
        WHEN failed_at IS NOT NULL THEN 'dead'
        ELSE 'queued'
    END) STORED;

DROP INDEX outbox_pending_idx;
CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL AND suppressed_at IS NULL;
CREATE INDEX outbox_state_idx ON outbox (state, created_at);
-- Provider events name the message by the provider's id.
CREATE INDEX outbox_provider_message_idx ON outbox (provider_message_id) WHERE provider_message_id IS NOT NULL;

-- The suppression list: one row per (normalised address, reason, category). `category` is '*'
-- for reasons that stop every category (bounces, complaints, manual) and the category itself
-- for an unsubscribe. Which categories a reason stops is decided in code (mail::suppression's
-- policy table), so critical mail can bypass all of them.
CREATE TABLE mail_suppressions (
    address text NOT NULL CHECK (address = lower(address) AND address <> ''),
    reason text NOT NULL CHECK (reason IN ('hard_bounce', 'soft_bounce', 'complaint', 'unsubscribe', 'manual')),
    category text NOT NULL CHECK (category IN ('*', 'transactional', 'marketing')),
    -- What put it there: a provider event id, an SMTP reply, an unsubscribe link, an operator.
    source text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (address, reason, category)
);

-- Soft bounces, counted per address within a window; enough of them suppress the address.
CREATE TABLE mail_soft_bounces (
    address text NOT NULL,
    occurred_at timestamptz NOT NULL,
    source text NOT NULL
);
CREATE INDEX mail_soft_bounces_idx ON mail_soft_bounces (address, occurred_at);

-- Every change to the suppression list, by whom and why: append-only for the server, like the
-- audit log (the list itself is global, so it has no organization's chain to join).
CREATE TABLE mail_suppression_log (
    id uuid PRIMARY KEY,
    at timestamptz NOT NULL,
    address text NOT NULL,
    change text NOT NULL CHECK (change IN ('added', 'removed')),
    reason text NOT NULL,
    category text NOT NULL,
    source text NOT NULL,
    -- 'provider', 'recipient' (an unsubscribe link), 'user:<id>', 'operator', 'worker'.
    actor text NOT NULL
);
CREATE INDEX mail_suppression_log_address_idx ON mail_suppression_log (address, at);

CREATE FUNCTION mail_suppression_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    RAISE EXCEPTION 'the suppression log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER mail_suppression_log_append_only BEFORE UPDATE OR DELETE ON mail_suppression_log
    FOR EACH ROW EXECUTE FUNCTION mail_suppression_log_refuse_change();
CREATE TRIGGER mail_suppression_log_no_truncate BEFORE TRUNCATE ON mail_suppression_log
    FOR EACH STATEMENT EXECUTE FUNCTION mail_suppression_log_refuse_change();

-- Provider events seen, by the provider's event id (`svix-id`): each is processed once, a
-- replay is acknowledged and ignored.
CREATE TABLE mail_provider_events (
    provider text NOT NULL,
    event_id text NOT NULL,
    type text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (provider, event_id)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON mail_suppressions, mail_soft_bounces TO clientflow_app;
GRANT SELECT, INSERT ON mail_suppression_log, mail_provider_events TO clientflow_app;
