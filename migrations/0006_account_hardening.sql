-- Account hardening.

-- A password reset for an account with two-factor authentication does not change anything until
-- the second factor is given: the new password's hash waits on the pending session the reset
-- created, and completing the second factor applies it (identity::service::reset_password).
-- Only a pending session can hold one.
ALTER TABLE sessions ADD COLUMN pending_password_hash text;
ALTER TABLE sessions ADD CONSTRAINT sessions_pending_password_only_pending
    CHECK (pending_password_hash IS NULL OR stage = 'pending');

-- Re-authentication inside a signed-in session (before turning off two-factor, changing the
-- email…) has a budget of its own per user, 'reauth': its failures do not count towards the
-- sign-in lockout, and a sign-in lockout does not stop the account's owner, already signed in,
-- from re-authenticating.
ALTER TABLE auth_throttle DROP CONSTRAINT auth_throttle_kind_check;
ALTER TABLE auth_throttle ADD CONSTRAINT auth_throttle_kind_check
    CHECK (kind IN ('password', 'second_factor', 'device', 'reauth'));
