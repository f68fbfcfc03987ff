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

-- A session's token is rotated when its user's privileges change. Any change to what a user may
-- do in any organization — a membership added, removed, suspended or given another role or
-- client, a per-member override, a customization of the user's role in an organization — bumps
-- users.privilege_epoch (by trigger, so no code path can forget it). A session remembers the
-- epoch it was issued at; the first request of a session issued before the change gets a new
-- token (the old one stops working) with the same lifetime (identity::guard::require_session).
-- Permissions themselves are read from the membership on every request, so this is about the
-- token, not about access: a token that leaked while its user had few privileges does not carry
-- the new ones.
ALTER TABLE users ADD COLUMN privilege_epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN privilege_epoch bigint NOT NULL DEFAULT 0;

CREATE FUNCTION bump_privilege_epoch() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    changed record;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    IF TG_TABLE_NAME = 'role_permissions' THEN
        UPDATE users SET privilege_epoch = privilege_epoch + 1
        WHERE id IN (SELECT m.user_id FROM memberships m
                     WHERE m.organization_id = changed.organization_id AND m.role = changed.role);
    ELSE
        UPDATE users SET privilege_epoch = privilege_epoch + 1 WHERE id = changed.user_id;
        IF TG_OP = 'UPDATE' AND OLD.user_id IS DISTINCT FROM NEW.user_id THEN
            UPDATE users SET privilege_epoch = privilege_epoch + 1 WHERE id = OLD.user_id;
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER memberships_privilege_epoch
    AFTER INSERT OR DELETE OR UPDATE OF role, status, client_id, user_id ON memberships
    FOR EACH ROW EXECUTE FUNCTION bump_privilege_epoch();
CREATE TRIGGER member_permissions_privilege_epoch
    AFTER INSERT OR DELETE OR UPDATE ON member_permissions
    FOR EACH ROW EXECUTE FUNCTION bump_privilege_epoch();
CREATE TRIGGER role_permissions_privilege_epoch
    AFTER INSERT OR DELETE OR UPDATE ON role_permissions
    FOR EACH ROW EXECUTE FUNCTION bump_privilege_epoch();
