-- Hardening of the audit log: a retention horizon the app role can't move, signed retention
-- checkpoints, deletes refused row by row unless they are retention of old events, and a
-- narrow way for the server to find chain heads that are due for a signature.

-- The retention horizon, owned by the owner role. The app role reads it and can't change it:
-- a compromised server can never make retention cut younger events. `clientflow migrate` (and
-- `serve`, when it migrates) writes audit.retention_days into it.
CREATE TABLE audit_retention_policy (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    keep_days integer NOT NULL CHECK (keep_days BETWEEN 1 AND 36500)
);
INSERT INTO audit_retention_policy (keep_days) VALUES (365);
GRANT SELECT ON audit_retention_policy TO clientflow_app;

-- The oldest moment an event must have to be removable.
CREATE FUNCTION audit_retention_horizon() RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, public AS $$
    SELECT now() - make_interval(days => keep_days) FROM audit_retention_policy
$$;

-- UPDATE and TRUNCATE are refused for every role. DELETE of an event is refused unless all of
-- this holds: the owner role is deleting (it runs audit_apply_retention), the retention flag
-- is on in this transaction, the event is older than the horizon and it is not the chain's
-- head. The app role can set the flag (any role can set a custom setting) but it is never the
-- owner, and even the owner can't remove a young event this way.
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    -- Nested so that OLD is only read for row-level DELETEs (TRUNCATE has no row).
    IF TG_OP = 'DELETE' AND current_user = 'clientflow_owner'
       AND current_setting('clientflow.audit_retention', true) = 'on' THEN
        IF OLD.occurred_at < audit_retention_horizon()
           AND OLD.seq < (SELECT h.seq FROM audit_heads h WHERE h.organization_id = OLD.organization_id) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Checkpoints are never changed or removed, retention included.
CREATE FUNCTION audit_refuse_checkpoint_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    RAISE EXCEPTION 'audit checkpoints are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints;
DROP TRIGGER audit_checkpoints_no_truncate ON audit_checkpoints;
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_checkpoint_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_checkpoint_change();

-- The server writes signed heads only; retention checkpoints come from audit_apply_retention.
CREATE POLICY app_inserts_signed_heads_only ON audit_checkpoints AS RESTRICTIVE FOR INSERT TO clientflow_app
    WITH CHECK (kind = 'signed');

-- Retention now records a signed checkpoint: the server finds the cut (audit_retention_cut),
-- signs (organization, seq, hash, time) with the audit key, and hands the signature here.
-- Signing needs the key, which the database never sees; the verifier checks the signature.
DROP FUNCTION audit_apply_retention(uuid, timestamptz);

-- Where retention would cut `org`'s chain now: the newest event older than the horizon that
-- is not the head (NULL when nothing is due). Runs with the caller's rights.
CREATE FUNCTION audit_retention_cut(org uuid, OUT seq bigint, OUT hash bytea)
LANGUAGE sql STABLE SET search_path = pg_catalog, public AS $$
    SELECT e.seq, e.hash FROM audit_events e
     WHERE e.organization_id = org AND e.occurred_at < audit_retention_horizon()
       AND e.seq < (SELECT h.seq FROM audit_heads h WHERE h.organization_id = org)
     ORDER BY e.seq DESC LIMIT 1
$$;
GRANT EXECUTE ON FUNCTION audit_retention_cut(uuid) TO clientflow_app;

-- Deletes `org`'s events up to `cut_seq` after recording the signed retention checkpoint.
-- SECURITY DEFINER (the owner is the only role the trigger lets delete), search_path pinned,
-- sets the tenant itself so it touches only `org`. Refuses a cut that is not an event with
-- that hash, is the head, or reaches an event younger than the horizon (the trigger checks
-- the horizon again, row by row). Returns the number of events deleted.
CREATE FUNCTION audit_apply_retention(
    org uuid, cut_seq bigint, cut_hash bytea, signed_at timestamptz, signing_key_id text, cut_signature bytea
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    stored bytea;
    newest timestamptz;
    deleted bigint;
BEGIN
    PERFORM set_config('app.org_id', org::text, true);
    SELECT e.hash INTO stored FROM audit_events e WHERE e.organization_id = org AND e.seq = cut_seq;
    IF stored IS NULL OR stored <> cut_hash THEN
        RAISE EXCEPTION 'retention cut % is not an event of this chain with that hash', cut_seq
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cut_seq >= (SELECT h.seq FROM audit_heads h WHERE h.organization_id = org) THEN
        RAISE EXCEPTION 'retention never removes the chain head' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT max(e.occurred_at) INTO newest FROM audit_events e WHERE e.organization_id = org AND e.seq <= cut_seq;
    IF newest >= audit_retention_horizon() THEN
        RAISE EXCEPTION 'retention only removes events older than % days',
            (SELECT keep_days FROM audit_retention_policy) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO audit_checkpoints (organization_id, seq, kind, hash, created_at, key_id, signature)
    VALUES (org, cut_seq, 'retention', cut_hash, signed_at, signing_key_id, cut_signature);
    PERFORM set_config('clientflow.audit_retention', 'on', true);
    DELETE FROM audit_events WHERE organization_id = org AND seq <= cut_seq;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('clientflow.audit_retention', 'off', true);
    RETURN deleted;
END
$$;
REVOKE ALL ON FUNCTION audit_apply_retention(uuid, bigint, bytea, timestamptz, text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_apply_retention(uuid, bigint, bytea, timestamptz, text, bytea) TO clientflow_app;

-- Retention checkpoints are signed from now on, like heads.
ALTER TABLE audit_checkpoints DROP CONSTRAINT audit_checkpoints_check;
ALTER TABLE audit_checkpoints ADD CONSTRAINT audit_checkpoints_signed
    CHECK (signature IS NOT NULL AND key_id IS NOT NULL) NOT VALID;

-- Periodic signing: the server (and the worker) ask which organizations have events after
-- their newest signed head while that head is older than `signed_before`, then sign each
-- through the tenant door. The owner reads heads and checkpoints across organizations for
-- this (it owns the tables and could lift row-level security anyway); the function returns
-- organization ids only.
CREATE POLICY owner_reads_for_signing ON audit_heads FOR SELECT TO clientflow_owner USING (true);
CREATE POLICY owner_reads_for_signing ON audit_checkpoints FOR SELECT TO clientflow_owner USING (true);
CREATE FUNCTION audit_heads_due_for_signing(signed_before timestamptz) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT h.organization_id FROM audit_heads h
     WHERE h.seq > 0
       AND NOT EXISTS (SELECT 1 FROM audit_checkpoints c
                        WHERE c.organization_id = h.organization_id AND c.kind = 'signed'
                          AND (c.seq >= h.seq OR c.created_at > signed_before))
$$;
REVOKE ALL ON FUNCTION audit_heads_due_for_signing(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_heads_due_for_signing(timestamptz) TO clientflow_app;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'clientflow_auditor') THEN
        GRANT SELECT ON audit_retention_policy TO clientflow_auditor;
    END IF;
END
$$;
