-- A signed-in person without an organization sees the invitations waiting for them and can
-- accept one from the getting-started page, without the link from the email.
--
-- The capability is the person's own verified email address (app.invitee_email), which only the
-- access layer sets, from the verified session's user row and only when that address is
-- verified (access/invitation.rs). It reveals the open invitations to exactly that address and
-- the names of the organizations that sent them: what the invitation email itself says to
-- whoever reads that mailbox. Read-only; accepting still writes through the tenant door. Expiry
-- is the application's check, against its clock (the same as for the token).

CREATE POLICY invitation_by_email ON invitations FOR SELECT
    USING (
        lower(email) = lower(NULLIF(current_setting('app.invitee_email', true), ''))
        AND accepted_at IS NULL AND declined_at IS NULL AND revoked_at IS NULL
    );

CREATE POLICY invited_organization_by_email ON organizations FOR SELECT
    USING (EXISTS (
        SELECT 1 FROM invitations i
        WHERE i.organization_id = organizations.id
          AND lower(i.email) = lower(NULLIF(current_setting('app.invitee_email', true), ''))
          AND i.accepted_at IS NULL AND i.declined_at IS NULL AND i.revoked_at IS NULL
    ));
