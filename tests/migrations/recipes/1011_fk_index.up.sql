-- ds:no-transaction
-- Add a foreign key: first the index on the referencing column, so that
-- deleting a user does not scan recipe_notes.
SELECT set_config('lock_timeout', '5s', false)
 WHERE current_setting('lock_timeout') IN ('0', '0ms');

CREATE INDEX CONCURRENTLY IF NOT EXISTS recipe_notes_owner_idx
    ON recipe_notes (owner_id);
