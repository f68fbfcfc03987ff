-- The work domain: clients and contacts, projects and their members, task boards, tasks,
-- assignees, comments, activity, time, invoices, files; and organization API keys with
-- idempotency records for the public API.
--
-- Every reference between records is a composite foreign key that includes organization_id,
-- and references that must stay inside one project include project_id too: a task's column,
-- parent task and time entries belong to the task's own project by construction.

ALTER TABLE clients
    ADD COLUMN company text NOT NULL DEFAULT '' CHECK (char_length(company) <= 200),
    ADD COLUMN email text CHECK (email IS NULL OR char_length(email) <= 254),
    ADD COLUMN phone text CHECK (phone IS NULL OR char_length(phone) <= 50),
    ADD COLUMN archived_at timestamptz;
CREATE INDEX clients_name_idx ON clients (organization_id, lower(name));

CREATE TABLE client_contacts (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id uuid NOT NULL,
    client_id uuid NOT NULL,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    email text CHECK (email IS NULL OR char_length(email) <= 254),
    phone text CHECK (phone IS NULL OR char_length(phone) <= 50),
    title text NOT NULL DEFAULT '' CHECK (char_length(title) <= 200),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, client_id) REFERENCES clients (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX client_contacts_client_idx ON client_contacts (organization_id, client_id);

ALTER TABLE projects
    ADD COLUMN description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 20000),
    -- Budget in minor units of the organization's currency.
    ADD COLUMN budget_minor bigint CHECK (budget_minor IS NULL OR budget_minor >= 0),
    ADD COLUMN start_date date,
    ADD COLUMN due_date date,
    -- Shown in the client portal (to Client users of the project's client).
    ADD COLUMN visible_to_client boolean NOT NULL DEFAULT false,
    ADD COLUMN archived_at timestamptz;
CREATE INDEX projects_name_idx ON projects (organization_id, lower(name));

-- Who works in a project (Members see only these projects).
CREATE TABLE project_members (
    organization_id uuid NOT NULL,
    project_id uuid NOT NULL,
    user_id uuid NOT NULL,
    added_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, project_id, user_id),
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, user_id) REFERENCES memberships (organization_id, user_id) ON DELETE CASCADE
);
CREATE INDEX project_members_user_idx ON project_members (organization_id, user_id);

CREATE TABLE board_columns (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    position integer NOT NULL,
    PRIMARY KEY (organization_id, id),
    UNIQUE (organization_id, project_id, id),
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX board_columns_project_idx ON board_columns (organization_id, project_id, position);

CREATE TABLE tasks (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    column_id uuid NOT NULL,
    -- A subtask's parent, in the same project.
    parent_id uuid,
    title text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 300),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 50000),
    status text NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'blocked', 'done')),
    priority text NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    due_date date,
    estimate_minutes integer CHECK (estimate_minutes IS NULL OR estimate_minutes BETWEEN 0 AND 1000000),
    visible_to_client boolean NOT NULL DEFAULT false,
    position integer NOT NULL DEFAULT 0,
    created_by uuid REFERENCES users (id),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id),
    UNIQUE (organization_id, project_id, id),
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    -- The column belongs to the task's own project.
    FOREIGN KEY (organization_id, project_id, column_id) REFERENCES board_columns (organization_id, project_id, id),
    FOREIGN KEY (organization_id, project_id, parent_id) REFERENCES tasks (organization_id, project_id, id) ON DELETE CASCADE,
    CHECK (parent_id IS NULL OR parent_id <> id)
);
CREATE INDEX tasks_board_idx ON tasks (organization_id, project_id, column_id, position);
-- The API's default listing: newest first within an organization.
CREATE INDEX tasks_list_idx ON tasks (organization_id, created_at DESC, id DESC);
CREATE INDEX tasks_parent_idx ON tasks (organization_id, parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE task_assignees (
    organization_id uuid NOT NULL,
    task_id uuid NOT NULL,
    user_id uuid NOT NULL,
    PRIMARY KEY (organization_id, task_id, user_id),
    FOREIGN KEY (organization_id, task_id) REFERENCES tasks (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, user_id) REFERENCES memberships (organization_id, user_id) ON DELETE CASCADE
);
CREATE INDEX task_assignees_user_idx ON task_assignees (organization_id, user_id);

CREATE TABLE comments (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    task_id uuid NOT NULL,
    author_id uuid REFERENCES users (id),
    -- The API key that wrote it, when one did.
    api_key_id uuid,
    body text NOT NULL CHECK (char_length(body) BETWEEN 1 AND 20000),
    client_visible boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, task_id) REFERENCES tasks (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX comments_task_idx ON comments (organization_id, task_id, created_at);

-- What changed on a task, field by field.
CREATE TABLE task_activity (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    task_id uuid NOT NULL,
    actor_label text NOT NULL,
    field text NOT NULL,
    old_value text,
    new_value text,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, task_id) REFERENCES tasks (organization_id, id) ON DELETE CASCADE
);
CREATE INDEX task_activity_task_idx ON task_activity (organization_id, task_id, occurred_at);

CREATE TABLE time_entries (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    task_id uuid,
    user_id uuid NOT NULL,
    minutes integer NOT NULL CHECK (minutes BETWEEN 1 AND 1440),
    spent_on date NOT NULL,
    note text NOT NULL DEFAULT '' CHECK (char_length(note) <= 2000),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, project_id, task_id) REFERENCES tasks (organization_id, project_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, user_id) REFERENCES memberships (organization_id, user_id)
);
CREATE INDEX time_entries_project_idx ON time_entries (organization_id, project_id, spent_on);

-- Invoice numbers: a gapless sequence per organization (row-locked counter).
CREATE TABLE invoice_counters (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    next_number bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (organization_id)
);

CREATE TABLE invoices (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    -- Assigned when the invoice is sent (gapless per organization); NULL while a draft.
    number bigint,
    client_id uuid NOT NULL,
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- Tax rate in basis points (1/100 of a percent).
    tax_rate_bp integer NOT NULL DEFAULT 0 CHECK (tax_rate_bp BETWEEN 0 AND 10000),
    status text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'sent', 'paid', 'void')),
    issue_date date NOT NULL,
    due_date date NOT NULL,
    notes text NOT NULL DEFAULT '' CHECK (char_length(notes) <= 5000),
    -- Totals in minor units, computed by the application from the lines.
    subtotal_minor bigint NOT NULL DEFAULT 0,
    tax_minor bigint NOT NULL DEFAULT 0,
    total_minor bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    sent_at timestamptz,
    paid_at timestamptz,
    voided_at timestamptz,
    PRIMARY KEY (organization_id, id),
    UNIQUE (organization_id, number),
    FOREIGN KEY (organization_id, client_id) REFERENCES clients (organization_id, id),
    CHECK (due_date >= issue_date)
);
CREATE INDEX invoices_client_idx ON invoices (organization_id, client_id, issue_date DESC);

CREATE TABLE invoice_lines (
    organization_id uuid NOT NULL,
    invoice_id uuid NOT NULL,
    position integer NOT NULL CHECK (position >= 0),
    description text NOT NULL CHECK (char_length(description) BETWEEN 1 AND 500),
    -- Quantity in thousandths (1.5 hours = 1500).
    quantity_milli bigint NOT NULL CHECK (quantity_milli > 0 AND quantity_milli <= 1000000000),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor >= 0 AND unit_price_minor <= 100000000000),
    amount_minor bigint NOT NULL,
    PRIMARY KEY (organization_id, invoice_id, position),
    FOREIGN KEY (organization_id, invoice_id) REFERENCES invoices (organization_id, id) ON DELETE CASCADE
);

-- Files: metadata here, encrypted content in the storage adapter.
CREATE TABLE files (
    organization_id uuid NOT NULL,
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    task_id uuid,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    content_type text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    sha256 bytea NOT NULL CHECK (octet_length(sha256) = 32),
    storage_key text NOT NULL,
    shared_with_client boolean NOT NULL DEFAULT false,
    uploaded_by uuid REFERENCES users (id),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id),
    FOREIGN KEY (organization_id, project_id, task_id) REFERENCES tasks (organization_id, project_id, id)
);
CREATE INDEX files_project_idx ON files (organization_id, project_id, created_at DESC);

-- Organization API keys. The key is shown once; only its SHA-256 is kept (it has 256 bits of
-- entropy, so a slow hash adds nothing). `prefix` is the recognizable start shown in lists.
CREATE TABLE api_keys (
    organization_id uuid NOT NULL REFERENCES organizations (id),
    id uuid NOT NULL,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    prefix text NOT NULL,
    key_hash bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    role text NOT NULL CHECK (role IN ('admin', 'manager', 'member')),
    -- An explicit subset of the role's permissions, or NULL for the role's.
    permissions text[],
    created_by uuid REFERENCES users (id),
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    last_used_at timestamptz,
    revoked_at timestamptz,
    PRIMARY KEY (organization_id, id)
);

-- Stored responses for Idempotency-Key on creating POSTs, per API key.
CREATE TABLE idempotency_keys (
    organization_id uuid NOT NULL,
    api_key_id uuid NOT NULL,
    key text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    method text NOT NULL,
    path text NOT NULL,
    request_hash bytea NOT NULL,
    -- NULL while the first request is still being processed.
    status integer,
    response_body bytea,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (organization_id, api_key_id, key),
    FOREIGN KEY (organization_id, api_key_id) REFERENCES api_keys (organization_id, id) ON DELETE CASCADE
);

-- Row-level security, the same pattern for every table above.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['client_contacts', 'project_members', 'board_columns', 'tasks', 'task_assignees',
        'comments', 'task_activity', 'time_entries', 'invoice_counters', 'invoices', 'invoice_lines', 'files',
        'api_keys', 'idempotency_keys']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)
            WITH CHECK (organization_id = NULLIF(current_setting('app.org_id', true), '')::uuid)$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO clientflow_app', t);
    END LOOP;
END
$$;

-- An API key is a capability too: a transaction presenting a key's digest
-- (app.api_key_hash, hex) may read that one key row, to learn its organization.
CREATE POLICY api_key_by_hash ON api_keys FOR SELECT
    USING (key_hash = decode(NULLIF(current_setting('app.api_key_hash', true), ''), 'hex'));
