-- API keys made with the command line before keys had to act for a member stand for nobody
-- (`created_by` NULL): they could read within their role but not record time or edit "their
-- own" comments. The command line now binds a key to a member, by default the organization's
-- earliest active Owner; the keys made before are bound the same way here, so every key acts
-- for someone and works as its documented role. A key of an organization without an active
-- Owner stays unbound (and is listed as "nobody (replace this key)").
--
-- Row-level security is forced on both tables for every role, the owner included; it is lifted
-- for this one statement, inside the migration's transaction.
ALTER TABLE api_keys NO FORCE ROW LEVEL SECURITY;
ALTER TABLE memberships NO FORCE ROW LEVEL SECURITY;
UPDATE api_keys k
   SET created_by = (
       SELECT m.user_id FROM memberships m
        WHERE m.organization_id = k.organization_id AND m.role = 'owner' AND m.status = 'active'
        ORDER BY m.created_at, m.user_id
        LIMIT 1)
 WHERE k.created_by IS NULL;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
