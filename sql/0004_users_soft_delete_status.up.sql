-- Soft delete visible to every reader.
--
-- A soft-deleted user (deleted_at set) kept status = 'active', so a reader
-- that filters on status alone (another service, a report, an ORM model)
-- counted deleted users as active. From here on, for every writer, the
-- library or plain SQL:
--   - status = 'deleted' exactly when deleted_at IS NOT NULL (a trigger
--     keeps them together, a CHECK states it);
--   - the status a user had is kept in status_before_delete and comes back
--     on restore (deleted_at set to NULL), so a suspended user is restored
--     suspended, never active;
--   - setting status = 'deleted' soft-deletes (deleted_at = now()).
-- So `WHERE status = 'active'` and `WHERE deleted_at IS NULL` both leave
-- deleted users out. (No view of live users: a view would pin the column
-- types of users and make every later ALTER COLUMN TYPE drop and recreate
-- it.)
--
-- Online: every statement is a catalog change (brief locks, bounded by the
-- runner's lock_timeout) except the backfill, which touches only the
-- soft-deleted rows, found through users_deleted_at_idx. The widened status
-- check and the new pairing check are added NOT VALID, which skips a scan
-- of the table: every existing row passed the narrower check, and the
-- backfill makes the pairing true for the rows before the check is added,
-- so a validation would find nothing.

-- The runner's lock_timeout when it set one, else a few seconds, however
-- the file is run: DDL queued behind a long query queues all later ones.
SELECT set_config('lock_timeout', '5s', true)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

ALTER TABLE users ADD COLUMN IF NOT EXISTS status_before_delete text;

-- The status check of 0001, whatever its name, gives way to one that also
-- admits 'deleted'.
DO $widen$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'users'::regclass AND contype = 'c'
               AND pg_get_constraintdef(oid) LIKE '%status%'
               AND pg_get_constraintdef(oid) NOT LIKE '%deleted%'
    LOOP
        EXECUTE format('ALTER TABLE users DROP CONSTRAINT %I', c.conname);
    END LOOP;
END
$widen$;
ALTER TABLE users ADD CONSTRAINT users_status_check
    CHECK (status IN ('active', 'pending', 'suspended', 'deleted')) NOT VALID;

CREATE FUNCTION ds_users_soft_delete_status() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF NEW.deleted_at IS NULL AND NEW.status = 'deleted' THEN
        IF TG_OP = 'UPDATE' AND OLD.deleted_at IS NOT NULL
           AND OLD.status = 'deleted' THEN
            -- a restore that left status alone
            NEW.status := coalesce(OLD.status_before_delete, 'active');
            NEW.status_before_delete := NULL;
            RETURN NEW;
        END IF;
        -- status = 'deleted' written directly: that is a soft delete
        NEW.deleted_at := now();
    END IF;
    IF NEW.deleted_at IS NOT NULL THEN
        IF NEW.status <> 'deleted' THEN
            IF TG_OP = 'INSERT' OR OLD.deleted_at IS NULL THEN
                NEW.status_before_delete := NEW.status;
                NEW.status := 'deleted';
            ELSIF OLD.status = 'deleted' THEN
                -- a deleted user stays deleted until restored
                NEW.status := 'deleted';
            END IF;
        ELSIF TG_OP = 'UPDATE' AND OLD.deleted_at IS NULL THEN
            NEW.status_before_delete := OLD.status;
        END IF;
    ELSIF TG_OP = 'UPDATE' AND OLD.deleted_at IS NOT NULL THEN
        -- restored with a status of the writer's choosing
        NEW.status_before_delete := NULL;
    END IF;
    RETURN NEW;
END
$fn$;

-- On every update rather than UPDATE OF status, deleted_at: a column list
-- would make the trigger a dependent of those columns.
CREATE TRIGGER users_soft_delete_status
    BEFORE INSERT OR UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION ds_users_soft_delete_status();

-- Users soft-deleted before this migration.
UPDATE users SET status_before_delete = status, status = 'deleted'
WHERE deleted_at IS NOT NULL AND status <> 'deleted';

ALTER TABLE users ADD CONSTRAINT users_deleted_status_check
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL)) NOT VALID;

