-- Identity: credentials, sessions, two-factor, single-use email tokens, Google identities,
-- throttling, security events, and the durable outbox for email.
--
-- All global (per person, not per organization): no organization_id, no tenant policy.
-- Secrets are never stored in the clear: session, device, email and state tokens are stored
-- as SHA-256 digests; passwords as argon2id PHC strings; TOTP secrets sealed with AES-256-GCM
-- (bound to the user id as associated data); recovery codes as SHA-256 digests.

ALTER TABLE users
    ADD COLUMN password_hash text,
    ADD COLUMN email_verified_at timestamptz,
    ADD COLUMN password_changed_at timestamptz,
    -- Sealed TOTP secret; enabled once totp_enabled_at is set (after a confirming code).
    ADD COLUMN totp_secret bytea,
    ADD COLUMN totp_enabled_at timestamptz,
    -- The last accepted 30-second step: a code for this step or an earlier one is refused
    -- (replay protection, compare-and-set on update).
    ADD COLUMN totp_last_step bigint,
    ADD COLUMN disabled_at timestamptz;

CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- 'pending': password (or Google) accepted, second factor outstanding; only the
    -- second-factor page accepts such a session. 'complete': fully signed in.
    stage text NOT NULL CHECK (stage IN ('pending', 'complete')),
    method text NOT NULL CHECK (method IN ('password', 'google', 'reset', 'email_change', 'email_verification', 'invitation')),
    -- Synchronizer token for forms posted with this session.
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    -- Absolute expiry; idle expiry is last_seen_at + the configured idle timeout.
    expires_at timestamptz NOT NULL,
    ip inet,
    user_agent text NOT NULL DEFAULT '' CHECK (char_length(user_agent) <= 512)
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

-- Devices a user has signed in from (a long-lived cookie). A password attempt from a known
-- device is not subject to the account lockout that strangers trigger; see ARCHITECTURE.md.
CREATE TABLE known_devices (
    token_hash bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX known_devices_user_idx ON known_devices (user_id);

CREATE TABLE recovery_codes (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    created_at timestamptz NOT NULL,
    used_at timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- Single-use, expiring, purpose-bound tokens sent by email.
CREATE TABLE email_tokens (
    token_hash bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password', 'change_email')),
    -- For change_email: the address being verified.
    new_email text,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE INDEX email_tokens_user_idx ON email_tokens (user_id, purpose);

-- Identities from OpenID Connect providers, keyed on (issuer, subject) — never on email.
CREATE TABLE oidc_identities (
    issuer text NOT NULL,
    subject text NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email text NOT NULL,
    created_at timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX oidc_identities_user_idx ON oidc_identities (user_id);

-- In-flight OpenID Connect sign-ins: state (hashed), nonce and PKCE verifier, single use.
CREATE TABLE oidc_login_states (
    state_hash bytea PRIMARY KEY,
    -- The browser that started the flow holds the matching cookie.
    browser_hash bytea NOT NULL,
    nonce text NOT NULL,
    pkce_verifier text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);

-- Failed-attempt counters, keyed by a digest of what is being guessed at (an account's
-- normalized email for passwords, the user id for second factors, a device for known
-- devices), so unknown and known emails are throttled identically.
CREATE TABLE auth_throttle (
    key bytea NOT NULL,
    kind text NOT NULL CHECK (kind IN ('password', 'second_factor', 'device')),
    failures integer NOT NULL,
    window_started_at timestamptz NOT NULL,
    locked_until timestamptz,
    PRIMARY KEY (key, kind)
);

-- What happened to an account, for the user's security page and the audit log.
CREATE TABLE security_events (
    id uuid PRIMARY KEY,
    user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    occurred_at timestamptz NOT NULL,
    kind text NOT NULL,
    ip inet,
    user_agent text NOT NULL DEFAULT '',
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX security_events_user_idx ON security_events (user_id, occurred_at DESC);

-- The durable outbox: a message is a row written in the same transaction as the action that
-- causes it, delivered by a worker (FOR UPDATE SKIP LOCKED) with retries and backoff.
CREATE TABLE outbox (
    id uuid PRIMARY KEY,
    -- Deduplicates a message that an action might enqueue twice.
    idempotency_key text NOT NULL UNIQUE,
    kind text NOT NULL CHECK (kind IN ('email')),
    -- 'critical' mail (authentication, security, billing) will bypass suppression.
    category text NOT NULL CHECK (category IN ('critical', 'transactional', 'marketing')),
    recipient text NOT NULL,
    subject text NOT NULL,
    body_text text NOT NULL,
    created_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    sent_at timestamptz,
    failed_at timestamptz,
    last_error text,
    provider_message_id text
);
CREATE INDEX outbox_pending_idx ON outbox (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON
    sessions, known_devices, recovery_codes, email_tokens, oidc_identities, oidc_login_states,
    auth_throttle, outbox
TO clientflow_app;
-- Security events are append-only for the server.
GRANT SELECT, INSERT ON security_events TO clientflow_app;
