-- Edits through the public API and the web.

-- A comment's text can be corrected by its author; readers (the client portal included) see
-- that it was, and when. The audit log keeps the text before and after.
ALTER TABLE comments ADD COLUMN edited_at timestamptz;
