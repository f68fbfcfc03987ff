-- Whether a project's budget counts its billable expenses (those in the organization's
-- currency) as well as its billable time. Off for every project until someone chooses it, so
-- what an existing budget's figures and alerts mean doesn't change under anyone.
ALTER TABLE projects ADD COLUMN budget_counts_expenses boolean NOT NULL DEFAULT false;
