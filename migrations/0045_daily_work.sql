-- The daily work: full-text search over an organization's clients, projects, tasks, comments
-- and invoices; notifications (an in-app inbox per person, with per-kind preferences and email
-- through the outbox); explicit follows of tasks; and the once-a-day "due soon" digest.

-- Search. Each searchable table gets a generated tsvector (the 'simple' configuration: no
-- stemming and no stop words, so names, numbers and words of any language are found as
-- typed) and a GIN index on it. Queries always run under row-level security and name the
-- organization, and the index narrows to the matching rows first; a GIN index can't lead with
-- organization_id without the btree_gin extension, which only a superuser may create on an
-- installation we don't own.
ALTER TABLE clients ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', name || ' ' || company || ' ' || coalesce(email, '') || ' ' || notes)) STORED;
CREATE INDEX clients_search_idx ON clients USING gin (search);

ALTER TABLE projects ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', name || ' ' || description)) STORED;
CREATE INDEX projects_search_idx ON projects USING gin (search);

ALTER TABLE tasks ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', title || ' ' || description)) STORED;
CREATE INDEX tasks_search_idx ON tasks USING gin (search);

ALTER TABLE comments ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', body)) STORED;
CREATE INDEX comments_search_idx ON comments USING gin (search);

-- An invoice is found by its number and its notes.
ALTER TABLE invoices ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', coalesce(number::text, '') || ' ' || notes)) STORED;
CREATE INDEX invoices_search_idx ON invoices USING gin (search);

-- My work: a person's assigned tasks, by due date.
CREATE INDEX tasks_due_idx ON tasks (organization_id, due_date) WHERE status <> 'done';

-- One notification for one person. Who receives it is decided by the code that records it
-- (the task, comment, invoice or invitation it is about); a person only ever reads, marks and
-- counts rows addressed to them. `email_state` is 'pending' until the worker decides, with the
-- person's preference as it is then, whether it is mailed ('sent') or not ('skipped').
CREATE TABLE notifications (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id uuid NOT NULL,
    recipient_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('assigned', 'mentioned', 'commented', 'task_changed', 'invoice_viewed',
                                       'invoice_paid', 'invitation_accepted')),
    -- Who did it (NULL: an API key without a person, or the system).
    actor_id uuid REFERENCES users (id) ON DELETE SET NULL,
    title text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 300),
    body text NOT NULL DEFAULT '' CHECK (char_length(body) <= 2000),
    -- Where it leads, inside the application (a path, never an absolute URL).
    link text NOT NULL CHECK (link ~ '^/[A-Za-z0-9/_-]*$' AND char_length(link) <= 300),
    created_at timestamptz NOT NULL,
    read_at timestamptz,
    email_state text NOT NULL DEFAULT 'pending' CHECK (email_state IN ('pending', 'sent', 'skipped')),
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, recipient_id) REFERENCES memberships (organization_id, user_id) ON DELETE CASCADE
);
CREATE INDEX notifications_inbox_idx ON notifications (organization_id, recipient_id, created_at DESC);
CREATE INDEX notifications_unread_idx ON notifications (organization_id, recipient_id) WHERE read_at IS NULL;
CREATE INDEX notifications_email_idx ON notifications (organization_id, created_at) WHERE email_state = 'pending';

-- How a person wants each kind: 'email' (in the inbox and by email), 'in_app' (the inbox
-- only) or 'off'. No row: 'email'. The digest is a kind of its own here ('digest').
CREATE TABLE notification_preferences (
    organization_id uuid NOT NULL,
    user_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('assigned', 'mentioned', 'commented', 'task_changed', 'invoice_viewed',
                                       'invoice_paid', 'invitation_accepted', 'digest')),
    channel text NOT NULL CHECK (channel IN ('email', 'in_app', 'off')),
    PRIMARY KEY (organization_id, user_id, kind),
    FOREIGN KEY (organization_id, user_id) REFERENCES memberships (organization_id, user_id) ON DELETE CASCADE
);

-- Explicit follows and unfollows of a task. Without a row a person follows the tasks they
-- are assigned to, created or commented on; a row says otherwise either way.
CREATE TABLE task_followers (
    organization_id uuid NOT NULL,
    task_id uuid NOT NULL,
    user_id uuid NOT NULL,
    following boolean NOT NULL,
    PRIMARY KEY (organization_id, task_id, user_id),
    FOREIGN KEY (organization_id, task_id) REFERENCES tasks (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, user_id) REFERENCES memberships (organization_id, user_id) ON DELETE CASCADE
);

-- The days for which an organization's digest has gone out (in its own time zone): the
-- worker looks at an organization once a day. Each person's digest is also an outbox message
-- with an idempotency key naming the person and the day, so it is queued once whatever happens.
CREATE TABLE notification_digest_days (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    day date NOT NULL,
    done_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, day)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['notifications', 'notification_preferences', 'task_followers', 'notification_digest_days'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO clientflow_app', t);
    END LOOP;
END
$$;

-- The notification worker opens, through the tenant door, only the organizations that have
-- something for it: mail waiting for a decision, or a digest not yet sent for the day. This
-- returns, for every organization, its id, its time zone, whether mail is waiting and the last
-- digest day (ids and those facts only, nothing of their content), like
-- audit_heads_due_for_signing does for the signer.
CREATE POLICY owner_reads_for_notifying ON notifications FOR SELECT TO clientflow_owner USING (true);
CREATE POLICY owner_reads_for_notifying ON notification_digest_days FOR SELECT TO clientflow_owner USING (true);
CREATE POLICY owner_reads_for_notifying ON organizations FOR SELECT TO clientflow_owner USING (true);
CREATE FUNCTION notify_organizations(OUT id uuid, OUT timezone text, OUT mail_waiting boolean, OUT last_digest date)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT o.id, o.timezone,
           EXISTS (SELECT 1 FROM notifications n WHERE n.organization_id = o.id AND n.email_state = 'pending'),
           (SELECT max(d.day) FROM notification_digest_days d WHERE d.organization_id = o.id)
      FROM organizations o
$$;
REVOKE ALL ON FUNCTION notify_organizations() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notify_organizations() TO clientflow_app;
