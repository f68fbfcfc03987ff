-- People are told when their week's time is approved or reopened (work/approvals.rs): a
-- notification kind of its own, with its preference.
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check,
    ADD CONSTRAINT notifications_kind_check CHECK (kind IN ('assigned', 'mentioned', 'commented', 'task_changed',
        'invoice_viewed', 'invoice_paid', 'invoice_repeat_made', 'invoice_repeat_paused', 'invitation_accepted',
        'budget_used', 'time_approved'));
ALTER TABLE notification_preferences DROP CONSTRAINT notification_preferences_kind_check,
    ADD CONSTRAINT notification_preferences_kind_check CHECK (kind IN ('assigned', 'mentioned', 'commented',
        'task_changed', 'invoice_viewed', 'invoice_paid', 'invoice_repeat_made', 'invoice_repeat_paused',
        'invitation_accepted', 'digest', 'budget_used', 'time_approved'));

-- Such a notification leads to the week it is about, a page with a query
-- (`/o/acme/time/week?week=2026-11-30`). A link stays a path of this site: letters, digits and
-- `/_-` in the path, `=&` too in the query, and never a second slash first (`//host` would name
-- another site when followed).
ALTER TABLE notifications DROP CONSTRAINT notifications_link_check,
    ADD CONSTRAINT notifications_link_check
        CHECK (link ~ '^/([A-Za-z0-9_-][A-Za-z0-9/_-]*)?(\?[A-Za-z0-9=&_-]*)?$' AND char_length(link) <= 300);
