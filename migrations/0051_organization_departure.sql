-- Moving an organization to another region (`clientflow org move`, docs/security/residency.md)
-- ends with removing it from the region it left, audit log included. The audit log stays
-- append-only for the server: only the owner role (which the server never runs as; the move
-- command connects as it) may delete an organization's events and checkpoints, and only the
-- one organization it names in `clientflow.org_departure` for its transaction, after the move
-- copied the chain to the new region and verified it there. The purge of a deleted
-- organization (migration 0042) keeps its own exception.

CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_user = 'clientflow_owner' THEN
        -- An organization leaving this region: every event of that one organization.
        IF current_setting('clientflow.org_departure', true) = OLD.organization_id::text THEN
            RETURN OLD;
        END IF;
        -- An organization purged after its deletion request's grace period (migration 0042).
        IF current_setting('clientflow.organization_purge', true) = OLD.organization_id::text
           AND EXISTS (SELECT 1 FROM organization_deletion_requests r WHERE r.organization_id = OLD.organization_id) THEN
            RETURN OLD;
        END IF;
        -- Retention, as before (migration 0007).
        IF current_setting('clientflow.audit_retention', true) = 'on'
           AND OLD.occurred_at < audit_retention_horizon()
           AND OLD.seq < (SELECT h.seq FROM audit_heads h WHERE h.organization_id = OLD.organization_id) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE OR REPLACE FUNCTION audit_refuse_checkpoint_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_user = 'clientflow_owner'
       AND (current_setting('clientflow.org_departure', true) = OLD.organization_id::text
            OR (current_setting('clientflow.organization_purge', true) = OLD.organization_id::text
                AND EXISTS (SELECT 1 FROM organization_deletion_requests r WHERE r.organization_id = OLD.organization_id))) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit checkpoints are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
