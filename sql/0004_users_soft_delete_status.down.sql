-- Back to deleted_at alone: soft-deleted users get their earlier status
-- back, and the check admits the three statuses of 0001 again.
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_deleted_status_check;
DROP TRIGGER IF EXISTS users_soft_delete_status ON users;
DROP FUNCTION IF EXISTS ds_users_soft_delete_status();
UPDATE users SET status = coalesce(status_before_delete, 'active')
WHERE status = 'deleted';
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_status_check;
-- Validated at once (a scan under the table lock), so the schema is 0003's
-- to the byte; a down migration is a rare, planned step.
ALTER TABLE users ADD CONSTRAINT users_status_check
    CHECK (status IN ('active', 'pending', 'suspended'));
ALTER TABLE users DROP COLUMN IF EXISTS status_before_delete;
