-- Vulnerability disclosure: the reports sent through /security/report, and what the public
-- security page may learn about the audit chains.

-- One row per report. The table is global (a report concerns the installation, not an
-- organization). The report's text is sealed by the server (AES-256-GCM under the master key,
-- bound to the report's id) before it is stored; the reporter's address and the summary are
-- kept in clear so operators can list and answer reports. The reporter's status link is a
-- random token of which only the SHA-256 digest is stored.
CREATE TABLE security_reports (
    id              uuid        PRIMARY KEY,
    -- What the reporter and the operators call the report (`SR-` and 10 characters): shown in
    -- mail and on the command line; it gives no access to anything.
    reference       text        NOT NULL UNIQUE CHECK (reference ~ '^SR-[A-Z2-9]{10}$'),
    reporter_email  text        NOT NULL CHECK (length(reporter_email) BETWEEN 3 AND 320),
    reporter_name   text        NOT NULL DEFAULT '' CHECK (length(reporter_name) <= 200),
    summary         text        NOT NULL CHECK (length(summary) BETWEEN 1 AND 200),
    details_sealed  bytea       NOT NULL,
    status_token_digest bytea   NOT NULL UNIQUE CHECK (octet_length(status_token_digest) = 32),
    status          text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    ip              inet,
    user_agent      text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    closed_at       timestamptz,
    -- What the operator wrote when closing it (shown to the reporter on the status page).
    resolution      text        NOT NULL DEFAULT '' CHECK (length(resolution) <= 2000),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);
CREATE INDEX security_reports_newest ON security_reports (created_at DESC);

-- The server stores reports and shows a reporter the status of theirs (found by the digest of
-- their token); operators list, read and close them (`clientflow security reports`). Nobody
-- deletes one from the application.
GRANT SELECT, INSERT ON security_reports TO clientflow_app;
GRANT UPDATE (status, closed_at, resolution) ON security_reports TO clientflow_app;

-- The security page says how recent the newest signed audit checkpoint is. Checkpoints are
-- tenant rows; this returns only the newest signing time and key id over all organizations
-- (no organization id, no count, no hash), so it is safe to show publicly.
CREATE FUNCTION audit_newest_signed_checkpoint(OUT signed_at timestamptz, OUT key_id text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT c.created_at, c.key_id FROM audit_checkpoints c
     WHERE c.kind = 'signed'
     ORDER BY c.created_at DESC LIMIT 1
$$;
REVOKE ALL ON FUNCTION audit_newest_signed_checkpoint() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_newest_signed_checkpoint() TO clientflow_app;
