-- Account security: two-factor set-up bound to one session, account requests decided by the
-- worker, and where a Google sign-in returns to.

-- A two-factor secret shown on the set-up page belongs to the session that saw it, for one
-- set-up attempt: it waits here (sealed with AES-256-GCM, the user and session ids as associated
-- data) until a code from it is confirmed together with a re-authentication, and only then moves
-- to users.totp_secret. Showing the page again replaces it; it is refused after expires_at (ten
-- minutes); signing out, a password change or reset, an email change and every session rotation
-- delete the session and with it the secret (identity::service::start_totp_enrollment).
CREATE TABLE totp_enrollments (
    session_id uuid PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret bytea NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX totp_enrollments_user_idx ON totp_enrollments (user_id);

-- Earlier versions kept a set-up secret on the user before it was confirmed, where any later
-- session of the user could be shown it: such secrets are dropped, and users.totp_secret now
-- holds an enrolled secret or nothing.
UPDATE users SET totp_secret = NULL, totp_last_step = NULL WHERE totp_enabled_at IS NULL;
UPDATE users SET totp_enabled_at = NULL WHERE totp_secret IS NULL;
ALTER TABLE users ADD CONSTRAINT users_totp_secret_enrolled
    CHECK ((totp_secret IS NULL) = (totp_enabled_at IS NULL));

-- Requests that name an address: sign-up, password reset, and failed sign-ins. The request only
-- writes this row (after hashing the chosen password for a sign-up, after checking the password
-- and counting the failure for a sign-in), whether or not the address has an account, so the
-- time it takes says nothing about which addresses exist; the mail worker decides what the
-- request means — a new account and its verification link, a note to an existing account's
-- owner, a reset link, the failed sign-in's security event and audit events (and the lockout
-- notice), or nothing — and deletes the row in the same transaction (identity::requests). The
-- IP address and user agent are kept only until then, for the account's security events.
CREATE TABLE account_requests (
    id uuid PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('sign_up', 'password_reset', 'sign_in_failed')),
    -- As typed, normalized (trimmed, lower-cased) like users.email.
    email text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    -- sign_up only: the argon2id hash of the chosen password, and the display name.
    password_hash text,
    display_name text NOT NULL DEFAULT '' CHECK (char_length(display_name) <= 200),
    -- sign_in_failed: whether this failure started a lockout, and for how many minutes.
    detail jsonb NOT NULL DEFAULT '{}',
    ip inet,
    user_agent text NOT NULL DEFAULT '' CHECK (char_length(user_agent) <= 512),
    request_id text NOT NULL DEFAULT '' CHECK (char_length(request_id) <= 64),
    created_at timestamptz NOT NULL,
    CHECK ((kind = 'sign_up') = (password_hash IS NOT NULL))
);
CREATE INDEX account_requests_created_idx ON account_requests (created_at, id);

-- Where the browser goes after a Google sign-in: a path on this site, checked when the flow
-- starts and again when it finishes (identity::return_to).
ALTER TABLE oidc_login_states
    ADD COLUMN return_to text NOT NULL DEFAULT '/app' CHECK (char_length(return_to) <= 2048);

GRANT SELECT, INSERT, UPDATE, DELETE ON totp_enrollments, account_requests TO clientflow_app;
