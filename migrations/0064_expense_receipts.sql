-- An expense's receipt: one of its project's files (uploaded on the project's Files tab). The
-- key names the project too, so a receipt is always a file of the expense's own project, by
-- construction; deleting the file leaves the expense without a receipt.
CREATE UNIQUE INDEX files_project_id_key ON files (organization_id, project_id, id);
ALTER TABLE expenses
    ADD COLUMN receipt_file_id uuid,
    ADD CONSTRAINT expenses_receipt FOREIGN KEY (organization_id, project_id, receipt_file_id)
        REFERENCES files (organization_id, project_id, id) ON DELETE SET NULL (receipt_file_id);
CREATE INDEX expenses_receipt_idx ON expenses (organization_id, receipt_file_id) WHERE receipt_file_id IS NOT NULL;
