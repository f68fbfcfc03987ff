-- Budget alerts: when a project's billable time reaches 80% of its budget, and again when it
-- goes over, the people who answer for the project are told once (work/projects.rs,
-- `check_budget_alert`).

-- The highest alert already given for the project's budget: 80 or 100 (percent), NULL for
-- none. It comes down again when the time used falls below it or the budget is raised, so that
-- a later crossing is told again; it rises under the project row's lock, so two entries
-- recorded at once tell it once.
ALTER TABLE projects
    ADD COLUMN budget_alerted smallint CHECK (budget_alerted IN (80, 100));

-- The notification kind, and its preference.
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check,
    ADD CONSTRAINT notifications_kind_check CHECK (kind IN ('assigned', 'mentioned', 'commented', 'task_changed',
        'invoice_viewed', 'invoice_paid', 'invitation_accepted', 'budget_used'));
ALTER TABLE notification_preferences DROP CONSTRAINT notification_preferences_kind_check,
    ADD CONSTRAINT notification_preferences_kind_check CHECK (kind IN ('assigned', 'mentioned', 'commented',
        'task_changed', 'invoice_viewed', 'invoice_paid', 'invitation_accepted', 'digest', 'budget_used'));
