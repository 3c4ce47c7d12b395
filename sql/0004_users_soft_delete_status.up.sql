-- ds:no-transaction
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
-- Online: users may hold millions of rows that sign-in reads and writes
-- while this runs. So the file runs outside a transaction, statement by
-- statement, each its own short transaction: the catalog changes take
-- their lock for an instant (bounded by lock_timeout, retried by the
-- runner when it fires), the checks are added NOT VALID and then validated
-- (a scan that blocks neither reads nor writes), and the soft-deleted rows
-- are backfilled in batches, each committed on its own, after the trigger
-- is in place (so every row written meanwhile is already paired). Every
-- statement can run again, so a run that stopped half-way is simply run
-- again.

-- The runner's lock_timeout when it set one, else a few seconds, however
-- the file is run: DDL queued behind a long query queues all later ones.
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

ALTER TABLE users ADD COLUMN IF NOT EXISTS status_before_delete text;

-- The status check of 0001, whatever its name, gives way to one that also
-- admits 'deleted', in one transaction (the table is never without one).
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
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'users'::regclass
                     AND conname = 'users_status_check') THEN
        ALTER TABLE users ADD CONSTRAINT users_status_check
            CHECK (status IN ('active', 'pending', 'suspended', 'deleted')) NOT VALID;
    END IF;
END
$widen$;
ALTER TABLE users VALIDATE CONSTRAINT users_status_check;

CREATE OR REPLACE FUNCTION ds_users_soft_delete_status() RETURNS trigger
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
DO $trigger$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'users'::regclass
                     AND tgname = 'users_soft_delete_status') THEN
        CREATE TRIGGER users_soft_delete_status
            BEFORE INSERT OR UPDATE ON users
            FOR EACH ROW EXECUTE FUNCTION ds_users_soft_delete_status();
    END IF;
END
$trigger$;

-- Users soft-deleted before this migration, 1000 at a time in id order
-- (a batch holds its rows' locks until it commits: writers of those users
-- wait for it, so it stays short).
-- The session setting ds.users_paired_to remembers the highest id done, so
-- each batch starts where the last one ended and the whole backfill reads
-- the table once (it is the runner's own session; a new run starts from
-- the beginning and finds the rows done already paired). The condition is
-- repeated outside the subquery so that a row changed meanwhile is checked
-- again as it is now.
-- ds:batch (SELECT count(*) FROM users WHERE deleted_at IS NOT NULL AND status <> 'deleted')
UPDATE users SET status_before_delete = status, status = 'deleted'
 WHERE id IN (SELECT id FROM users
               WHERE id > coalesce(nullif(current_setting('ds.users_paired_to', true), ''), '0')::bigint
                 AND deleted_at IS NOT NULL AND status <> 'deleted'
               ORDER BY id LIMIT 1000)
   AND deleted_at IS NOT NULL AND status <> 'deleted'
RETURNING set_config('ds.users_paired_to',
                     greatest(id, coalesce(nullif(current_setting('ds.users_paired_to', true), ''), '0')::bigint)::text,
                     false);

DO $pairing$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'users'::regclass
                     AND conname = 'users_deleted_status_check') THEN
        ALTER TABLE users ADD CONSTRAINT users_deleted_status_check
            CHECK ((status = 'deleted') = (deleted_at IS NOT NULL)) NOT VALID;
    END IF;
END
$pairing$;
ALTER TABLE users VALIDATE CONSTRAINT users_deleted_status_check;
